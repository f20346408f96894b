//! Compiling a workflow repository: `comfyc.toml` → catalogue → each definition → [`Workflow`].
//!
//! This is the pipeline behind `comfyc check`, `build`, `schema` and `render`, and what the
//! daemon calls to load its workflows. It reads only through the [`Loader`], keeps every file
//! in a [`SourceMap`], and collects every problem as a [`Diagnostic`]; a definition with an
//! error yields no [`Workflow`], the others still compile.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use toml::Spanned;

use crate::catalogue::Catalogue;
use crate::checks::GraphCheck;
use crate::definition::{Definition, InputDef, InputType, ModelDecl, RepoConfig};
use crate::diagnostic::{Code, Diagnostic, Severity};
use crate::graph::{Format, Graph, InputValue, classify, detect_format};
use crate::inputs::{Resolve, WorkflowInput, binding_conflicts};
use crate::json_spans::{JsonSpans, pointer};
use crate::schema::{SchemaMeta, workflow_schema};
use crate::source::{FileId, Loader, SourceMap, normalize};
use crate::template::TemplateSet;

/// The name of the repository configuration file.
pub const CONFIG_FILE: &str = "comfyc.toml";

/// How a workflow's graph is produced.
#[derive(Debug, Clone)]
pub enum GraphSource {
    /// A fixed API graph (the node map); bound inputs are written into it.
    Api(Value),
    /// A template rendered with the inputs, then bound inputs written into it.
    Template(TemplateSet),
}

/// A named output of a workflow.
#[derive(Debug, Clone, Serialize)]
pub struct WorkflowOutput {
    pub name: String,
    pub node: String,
    pub class_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A model file a workflow uses.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ModelUse {
    pub folder: String,
    pub name: String,
    pub node: String,
    pub input: String,
    /// The workflow input that sets it, if any (the name is then its default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bound_by: Option<String>,
    /// Declared in `comfyc.toml` (with its sha256 and url, if given).
    pub declared: bool,
}

/// A compiled workflow: everything needed to validate inputs and render graphs.
#[derive(Debug, Clone)]
pub struct Workflow {
    pub name: String,
    pub version: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub class: String,
    pub definition_path: PathBuf,
    pub graph_path: PathBuf,
    pub source: GraphSource,
    pub inputs: Vec<WorkflowInput>,
    pub outputs: Vec<WorkflowOutput>,
    pub models: Vec<ModelUse>,
    /// The graph rendered with every default (seeds without a default keep the graph's value).
    pub default_graph: Value,
    /// `sha256:` over the definition, the graph and every template it includes.
    pub hash: String,
    /// JSON Schema of the job inputs.
    pub schema: Value,
    /// Built on first use: `check` and `build` never validate job inputs.
    pub(crate) validator: Arc<OnceLock<Result<jsonschema::Validator, String>>>,
    /// The catalogue, for the model inputs of rendered graphs (shared, not copied).
    pub(crate) catalogue: Catalogue,
}

impl Workflow {
    /// `name@version`, or `name` when unversioned.
    pub fn id(&self) -> String {
        match &self.version {
            Some(v) => format!("{}@{v}", self.name),
            None => self.name.clone(),
        }
    }

    pub fn input(&self, name: &str) -> Option<&WorkflowInput> {
        self.inputs.iter().find(|i| i.name == name)
    }

    /// The partner (paid, remote) nodes of a rendered graph, `api_node` in the catalogue:
    /// `(node id, class)`, sorted.
    pub fn partner_nodes_in(&self, graph: &Value) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = graph
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(id, node)| {
                let class = node.get("class_type").and_then(Value::as_str)?;
                self.catalogue
                    .get(class)
                    .filter(|c| c.api_node)
                    .map(|c| (id.clone(), c.name.clone()))
            })
            .collect();
        out.sort();
        out
    }

    /// The model files a rendered graph names: `(folder, file name)`, sorted and unique.
    pub fn models_in(&self, graph: &Value) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for node in graph.as_object().into_iter().flat_map(|m| m.values()) {
            let Some(class) = node.get("class_type").and_then(Value::as_str) else {
                continue;
            };
            let Some(class) = self.catalogue.get(class) else {
                continue;
            };
            for spec in &class.inputs {
                let Some(folder) = &spec.model_folder else {
                    continue;
                };
                if let Some(Value::String(name)) =
                    node.get("inputs").and_then(|i| i.get(&spec.name))
                {
                    out.push((folder.clone(), name.clone()));
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// The result of compiling a repository.
#[derive(Debug, Default)]
pub struct Compilation {
    pub sources: SourceMap,
    pub diagnostics: Vec<Diagnostic>,
    pub workflows: Vec<Workflow>,
    pub config: RepoConfig,
    pub catalogue: Option<Catalogue>,
    /// Definition files found.
    pub definitions: usize,
    /// Definitions that yielded no workflow, in path order.
    pub failed: Vec<FailedDefinition>,
}

/// A definition that did not compile.
#[derive(Debug, Clone, Serialize)]
pub struct FailedDefinition {
    /// Its path in the repository.
    pub definition: PathBuf,
    /// How many errors it produced (those of its graph and templates included).
    pub errors: usize,
    /// Its diagnostics: indices into [`Compilation::diagnostics`].
    #[serde(skip)]
    pub diagnostics: std::ops::Range<usize>,
}

impl Compilation {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// Finds a workflow by `name` (its highest version) or `name@version`; see
    /// [`crate::version::find_workflow`].
    pub fn find(&self, spec: &str) -> Result<&Workflow, String> {
        crate::version::find_workflow(&self.workflows, spec)
    }
}

/// Compiles every definition of the repository `loader` reads.
pub fn compile(loader: Arc<dyn Loader>) -> Compilation {
    let mut c = Compilation::default();
    let Some(config) = load_config(&*loader, &mut c) else {
        return c;
    };
    c.config = config;
    let Some(catalogue) = load_catalogue(&*loader, &mut c) else {
        return c;
    };

    let mut paths = Vec::new();
    for dir in &c.config.workflows {
        match loader.list(Path::new(dir)) {
            Ok(list) => paths.extend(
                list.into_iter()
                    .filter(|p| p.extension().is_some_and(|e| e == "toml")),
            ),
            Err(e) => c.diagnostics.push(Diagnostic::new(
                Code::Io,
                format!("cannot list `{dir}`: {e}"),
            )),
        }
    }
    paths.sort();
    paths.dedup();
    c.definitions = paths.len();
    let models: Vec<ModelDecl> = c
        .config
        .models
        .iter()
        .map(|m| m.get_ref().clone())
        .collect();
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    for path in paths {
        let errors_before = c.diagnostics.iter().filter(|d| d.is_error()).count();
        let first_diagnostic = c.diagnostics.len();
        let mut unit = Unit {
            loader: &loader,
            config: &c.config,
            models: models.clone(),
            catalogue: &catalogue,
            sources: &mut c.sources,
            out: &mut c.diagnostics,
        };
        let compiled = unit.definition(&path);
        let errors = c.diagnostics.iter().filter(|d| d.is_error()).count() - errors_before;
        if compiled.is_none() {
            c.failed.push(FailedDefinition {
                definition: path.clone(),
                errors,
                diagnostics: first_diagnostic..c.diagnostics.len(),
            });
        }
        if let Some(w) = compiled {
            let id = w.id();
            if let Some(first) = seen.get(&id) {
                c.diagnostics.push(
                    Diagnostic::new(
                        Code::DuplicateWorkflow,
                        format!(
                            "workflow `{id}` is defined twice: in `{}` and in `{}`",
                            first.display(),
                            path.display()
                        ),
                    )
                    .help("give one of them another `name` or `version` under `[workflow]`"),
                );
                c.failed.push(FailedDefinition {
                    definition: path.clone(),
                    errors: errors + 1,
                    diagnostics: first_diagnostic..c.diagnostics.len(),
                });
                continue;
            }
            seen.insert(id, path.clone());
            c.workflows.push(w);
        }
    }
    c.catalogue = Some(catalogue);
    c
}

fn load_config(loader: &dyn Loader, c: &mut Compilation) -> Option<RepoConfig> {
    let text = match loader.read(Path::new(CONFIG_FILE)) {
        Ok(t) => t,
        Err(e) => {
            c.diagnostics.push(
                Diagnostic::new(Code::Io, format!("cannot read `{CONFIG_FILE}`: {e}"))
                    .help("a workflow repository has a `comfyc.toml` at its root; an empty file uses every default"),
            );
            return None;
        }
    };
    let file = c.sources.add(CONFIG_FILE, text.as_str());
    parse_toml::<RepoConfig>(&text, file, &mut c.diagnostics)
}

fn load_catalogue(loader: &dyn Loader, c: &mut Compilation) -> Option<Catalogue> {
    let path = c.config.catalogue.clone();
    let text = match loader.read(Path::new(&path)) {
        Ok(t) => t,
        Err(e) => {
            c.diagnostics.push(
                Diagnostic::new(Code::Io, format!("cannot read the node catalogue `{path}`: {e}"))
                    .help("save one from a running ComfyUI: `comfyc nodes pull --url http://127.0.0.1:8188`"),
            );
            return None;
        }
    };
    match Catalogue::from_json(&text) {
        Ok((cat, issues)) => {
            for i in issues {
                c.diagnostics.push(
                    Diagnostic::new(
                        Code::CatalogueInvalid,
                        format!(
                            "node class `{}` in `{path}` is skipped: {}",
                            i.class, i.message
                        ),
                    )
                    .with_severity(Severity::Warning),
                );
            }
            Some(cat)
        }
        Err(e) => {
            let file = c.sources.add(path.clone(), text.as_str());
            c.diagnostics.push(
                Diagnostic::new(
                    Code::CatalogueInvalid,
                    format!("the node catalogue `{path}` is not valid: {e}"),
                )
                .primary(file, 0..0, "here"),
            );
            None
        }
    }
}

/// Parses TOML into `T`, separating syntax errors from errors of shape.
fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    file: FileId,
    out: &mut Vec<Diagnostic>,
) -> Option<T> {
    if let Err(e) = toml::from_str::<toml::Table>(text) {
        let span = e.span().unwrap_or(0..0);
        out.push(Diagnostic::new(Code::TomlSyntax, "invalid TOML").primary(
            file,
            span,
            e.message().trim().to_owned(),
        ));
        return None;
    }
    match toml::from_str::<T>(text) {
        Ok(v) => Some(v),
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let message = e.message().trim().to_owned();
            let mut d = Diagnostic::new(Code::DefinitionInvalid, message.clone())
                .primary(file, span, "here");
            if let Some(rest) = message.strip_prefix("unknown field `") {
                let field = rest.split('`').next().unwrap_or_default();
                let expected: Vec<&str> = rest.split('`').skip(2).step_by(2).collect();
                d = match crate::catalogue::closest(field, expected.iter().copied()) {
                    Some(s) => d.help(format!("did you mean `{s}`?")),
                    None => d.help("see `schemas/workflow.schema.json` for every field; editors that read `#:schema` check as you type"),
                };
            }
            out.push(d);
            None
        }
    }
}

/// Byte offset of a 1-based line and column.
pub(crate) fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            return (offset + column.saturating_sub(1)).min(text.len());
        }
        offset += l.len();
    }
    text.len()
}

fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && !s.starts_with('.')
}

/// One definition's compilation.
struct Unit<'a> {
    loader: &'a Arc<dyn Loader>,
    config: &'a RepoConfig,
    /// `comfyc.toml`'s models, then the definition's own.
    models: Vec<ModelDecl>,
    catalogue: &'a Catalogue,
    sources: &'a mut SourceMap,
    out: &'a mut Vec<Diagnostic>,
}

/// A parsed graph with where it came from.
struct Parsed {
    value: Value,
    graph: Graph,
    spans: JsonSpans,
    base: String,
    file: FileId,
    /// For a converted UI graph: the UI file, and each API node's JSON pointer there.
    ui_nodes: Option<(FileId, Vec<(String, String)>)>,
}

impl Unit<'_> {
    fn errors(&self) -> usize {
        self.out.iter().filter(|d| d.is_error()).count()
    }

    fn definition(&mut self, path: &Path) -> Option<Workflow> {
        let errors_before = self.errors();
        let text = match self.loader.read(path) {
            Ok(t) => t,
            Err(e) => {
                self.out.push(Diagnostic::new(
                    Code::Io,
                    format!("cannot read `{}`: {e}", path.display()),
                ));
                return None;
            }
        };
        let file = self.sources.add(path.display().to_string(), text.as_str());
        let def: Definition = parse_toml(&text, file, self.out)?;
        self.models
            .extend(def.models.iter().map(|m| m.get_ref().clone()));

        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = def
            .workflow
            .name
            .as_ref()
            .map(|n| n.get_ref().clone())
            .unwrap_or(stem);
        if !is_safe_name(&name) {
            let span = def
                .workflow
                .name
                .as_ref()
                .map(Spanned::span)
                .unwrap_or(0..0);
            self.out.push(
                Diagnostic::new(
                    Code::DefinitionInvalid,
                    format!("`{name}` is not a usable workflow name"),
                )
                .primary(file, span, "name")
                .help("use letters, digits, `_`, `-` and `.` (it names output files)"),
            );
        }
        if let Some(v) = &def.workflow.version
            && !is_safe_name(v.get_ref())
        {
            self.out.push(
                Diagnostic::new(
                    Code::DefinitionInvalid,
                    format!("`{}` is not a usable version", v.get_ref()),
                )
                .primary(file, v.span(), "version")
                .help("use letters, digits, `_`, `-` and `.`, such as `1.2.0`"),
            );
        }

        let graph_decl = &def.workflow.graph;
        let dir = path.parent().unwrap_or(Path::new(""));
        let Some(graph_path) = normalize(&dir.join(graph_decl.get_ref())) else {
            self.out.push(
                Diagnostic::new(
                    Code::Io,
                    format!("graph `{}` is outside the repository", graph_decl.get_ref()),
                )
                .primary(file, graph_decl.span(), "outside the repository"),
            );
            return None;
        };
        let graph_text = match self.loader.read(&graph_path) {
            Ok(t) => t,
            Err(e) => {
                self.out.push(
                    Diagnostic::new(
                        Code::Io,
                        format!("cannot read graph `{}`: {e}", graph_path.display()),
                    )
                    .primary(file, graph_decl.span(), "graph file"),
                );
                return None;
            }
        };
        let gfile = self
            .sources
            .add(graph_path.display().to_string(), graph_text.as_str());
        let defs: Vec<(Spanned<String>, &InputDef)> =
            def.inputs.iter().map(|(k, v)| (k.clone(), v)).collect();

        let is_template = graph_path.extension().is_some_and(|e| e == "j2");
        let (source, inputs, default_graph, template_sources) = if is_template {
            self.template(file, gfile, &graph_path, &graph_text, &defs)?
        } else {
            self.api(file, gfile, &graph_text, &defs)?
        };

        self.out.extend(binding_conflicts(file, &inputs, &defs));
        let outputs = self.outputs(file, &def, &default_graph);
        let models = self.models(&default_graph, &inputs);

        if self.errors() > errors_before {
            return None;
        }

        let mut h = Sha256::new();
        h.update(b"comfyc-workflow-1\0");
        for (name, text) in [
            (path.display().to_string(), text.as_str()),
            (graph_path.display().to_string(), graph_text.as_str()),
        ] {
            h.update(name.as_bytes());
            h.update(b"\0");
            h.update(text.as_bytes());
            h.update(b"\0");
        }
        for (name, text) in &template_sources {
            h.update(name.as_bytes());
            h.update(b"\0");
            h.update(text.as_bytes());
            h.update(b"\0");
        }
        let hash = format!("sha256:{}", hex::encode(h.finalize()));
        let version = def.workflow.version.as_ref().map(|v| v.get_ref().clone());
        let schema = workflow_schema(
            &SchemaMeta {
                name: &name,
                version: version.as_deref(),
                title: def.workflow.title.as_deref(),
                description: def.workflow.description.as_deref(),
                hash: &hash,
            },
            &inputs,
        );
        Some(Workflow {
            name,
            version,
            title: def.workflow.title.clone(),
            description: def.workflow.description.clone(),
            class: def
                .workflow
                .class
                .as_ref()
                .map(|c| c.get_ref().clone())
                .unwrap_or_else(|| "default".into()),
            definition_path: path.to_path_buf(),
            graph_path,
            source,
            inputs,
            outputs,
            models,
            default_graph,
            hash,
            schema,
            validator: Arc::default(),
            catalogue: self.catalogue.clone(),
        })
    }

    /// Parses and checks graph text; `None` when it is not usable at all.
    fn parse_graph(&mut self, gfile: FileId, text: &str, template: Option<&str>) -> Option<Parsed> {
        let rendered = template.is_some();
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                let at = offset_of(text, e.line(), e.column());
                let (code, msg) = if rendered {
                    (
                        Code::TemplateOutput,
                        format!("the template did not render valid JSON: {e}"),
                    )
                } else {
                    (
                        Code::GraphSyntax,
                        format!("the graph is not valid JSON: {e}"),
                    )
                };
                let mut d = Diagnostic::new(code, msg).primary(gfile, at..at + 1, "here");
                if template.is_some_and(|t| t.contains("\"{{")) {
                    d = d.help("values render as JSON literals with their own quotes: write `{{ prompt }}`, not `\"{{ prompt }}\"`");
                }
                self.out.push(d);
                return None;
            }
        };
        let mut unknown = Vec::new();
        let mut origins = Vec::new();
        let converted;
        let ui_file = gfile;
        let is_ui = detect_format(&value) == Format::Ui;
        let (value, text, gfile) = if is_ui {
            let conv = self.convert_ui(gfile, text, &value);
            unknown = conv.unknown_nodes().map(str::to_owned).collect();
            origins = conv
                .origins
                .iter()
                .map(|(id, ptr)| (id.clone(), format!("{ptr}/id")))
                .collect();
            converted = serde_json::to_string_pretty(&conv.prompt).unwrap_or_default();
            let name = format!("{} (converted)", self.sources.get(gfile).name());
            let cfile = self.sources.add(name, converted.as_str());
            (Value::Object(conv.prompt), converted.as_str(), cfile)
        } else {
            (value, text, gfile)
        };
        let spans = JsonSpans::index(text);
        let (mut graph, problems, base) = Graph::parse(&value);
        // Nodes of classes the catalogue lacks were reported by the conversion; links to
        // them are not reported again.
        for id in unknown {
            graph.nodes.shift_remove(&id);
            graph.broken.insert(id);
        }
        let ui_nodes = is_ui.then_some((ui_file, origins));
        for p in problems {
            let mut d = Diagnostic::new(Code::GraphShape, p.message).primary(
                gfile,
                spans.nearest(&p.pointer),
                "here",
            );
            d.help = p.help;
            self.out.push(d);
        }
        let value = if base.is_empty() {
            value
        } else {
            value.get("prompt").cloned().unwrap_or(Value::Null)
        };
        Some(Parsed {
            value,
            graph,
            spans,
            base,
            file: gfile,
            ui_nodes,
        })
    }

    /// Converts a UI-format graph, reporting its problems against the UI file.
    fn convert_ui(&mut self, gfile: FileId, text: &str, value: &Value) -> crate::ui::Conversion {
        let conv = crate::ui::convert(value, self.catalogue);
        // Spans of a UI file are costly (every position of every node): only for problems.
        if !conv.problems.is_empty() {
            let spans =
                JsonSpans::index_only(text, conv.problems.iter().map(|p| p.pointer.as_str()));
            for p in &conv.problems {
                self.out.push(crate::ui::diagnostic(p, gfile, &spans));
            }
        }
        conv
    }

    fn check_graph(&mut self, parsed: &Parsed, inputs: &[WorkflowInput]) -> Vec<Diagnostic> {
        let bound: HashSet<(String, String)> = inputs
            .iter()
            .flat_map(|i| i.bindings.iter().map(|b| (b.node.clone(), b.input.clone())))
            .collect();
        let mut diags = GraphCheck {
            graph: &parsed.graph,
            spans: &parsed.spans,
            base: &parsed.base,
            file: parsed.file,
            catalogue: self.catalogue,
            bound: &bound,
            models: &self.models,
        }
        .run();
        // Problems found in a converted graph also point at the node of the UI file.
        if let Some((ui_file, origins)) = &parsed.ui_nodes
            && !diags.is_empty()
        {
            let ui_spans = JsonSpans::index_only(
                self.sources.get(*ui_file).text(),
                origins.iter().map(|(_, ui)| ui.as_str()),
            );
            let nodes: Vec<(Range<usize>, Range<usize>)> = origins
                .iter()
                .filter_map(|(id, ui)| {
                    let ptr = pointer([id.as_str()]);
                    let value = parsed.spans.value(&ptr)?;
                    let start = parsed.spans.key(&ptr).map_or(value.start, |k| k.start);
                    Some((start..value.end, ui_spans.nearest(ui)))
                })
                .collect();
            for d in &mut diags {
                let Some(at) = d.labels.iter().find(|l| l.primary && l.file == parsed.file) else {
                    continue;
                };
                if let Some((_, ui)) = nodes
                    .iter()
                    .find(|(api, _)| api.start <= at.span.start && at.span.end <= api.end)
                {
                    *d = d
                        .clone()
                        .secondary(*ui_file, ui.clone(), "this node in the UI file");
                }
            }
        }
        diags
    }

    #[allow(clippy::type_complexity)]
    fn api(
        &mut self,
        file: FileId,
        gfile: FileId,
        text: &str,
        defs: &[(Spanned<String>, &InputDef)],
    ) -> Option<(
        GraphSource,
        Vec<WorkflowInput>,
        Value,
        Vec<(String, String)>,
    )> {
        let parsed = self.parse_graph(gfile, text, None)?;
        let resolve = Resolve {
            file,
            catalogue: self.catalogue,
            graph: Some(&parsed.graph),
            models: &self.models,
            template: false,
        };
        let inputs: Vec<WorkflowInput> = defs
            .iter()
            .filter_map(|(k, d)| resolve.input(k, d, self.out))
            .collect();
        let diags = self.check_graph(&parsed, &inputs);
        self.out.extend(diags);
        let mut default_graph = parsed.value.clone();
        apply_bindings(&mut default_graph, &inputs, &defaults(&inputs));
        Some((
            GraphSource::Api(parsed.value),
            inputs,
            default_graph,
            Vec::new(),
        ))
    }

    #[allow(clippy::type_complexity)]
    fn template(
        &mut self,
        file: FileId,
        gfile: FileId,
        graph_path: &Path,
        text: &str,
        defs: &[(Spanned<String>, &InputDef)],
    ) -> Option<(
        GraphSource,
        Vec<WorkflowInput>,
        Value,
        Vec<(String, String)>,
    )> {
        let main = graph_path.display().to_string();
        let templates = PathBuf::from(&self.config.templates);
        let set = match TemplateSet::new(&main, text, self.loader.clone(), templates) {
            Ok(s) => s,
            Err(e) => {
                self.template_error(gfile, &main, None, e);
                return None;
            }
        };
        // Template variables first (they need no graph), then bindings against the graph the
        // defaults render.
        let models = self.models.clone();
        let vars = Resolve {
            file,
            catalogue: self.catalogue,
            graph: None,
            models: &models,
            template: true,
        };
        let mut resolved: Vec<Option<WorkflowInput>> = defs
            .iter()
            .map(|(k, d)| {
                if d.to.is_none() {
                    vars.input(k, d, self.out)
                } else {
                    None
                }
            })
            .collect();
        let variables: Vec<WorkflowInput> = resolved.iter().flatten().cloned().collect();
        if defs
            .iter()
            .zip(&resolved)
            .any(|((_, d), r)| d.to.is_none() && r.is_none())
        {
            return None;
        }
        let base: Map<String, Value> = variables
            .iter()
            .map(|i| (i.name.clone(), i.sample()))
            .collect();
        let rendered = match set.render(&base) {
            Ok(r) => r,
            Err(e) => {
                self.template_error(gfile, &main, None, e);
                return None;
            }
        };
        let rfile = self.sources.add(
            format!("{main} (rendered with defaults)"),
            rendered.as_str(),
        );
        let parsed = self.parse_graph(rfile, &rendered, Some(text))?;
        let bindings = Resolve {
            graph: Some(&parsed.graph),
            ..vars
        };
        for ((k, d), slot) in defs.iter().zip(resolved.iter_mut()) {
            if d.to.is_some() {
                *slot = bindings.input(k, d, self.out);
            }
        }
        if defs.iter().zip(&resolved).any(|(_, r)| r.is_none()) {
            return None;
        }
        let inputs: Vec<WorkflowInput> = resolved.into_iter().flatten().collect();
        let has_seed_input = inputs.iter().any(|i| i.ty == InputType::Seed);

        let mut seen: HashSet<(Code, String)> = HashSet::new();
        let mut first = self.check_graph(&parsed, &inputs);
        if has_seed_input {
            first.retain(|d| d.code != Code::HardcodedSeed);
        }
        for d in first {
            seen.insert((d.code, d.message.clone()));
            self.out.push(d);
        }
        for (label, ctx) in variants(&variables, &base) {
            let before = self.out.len();
            let rendered = match set.render(&ctx) {
                Ok(r) => r,
                Err(e) => {
                    self.template_error(gfile, &main, Some(&label), e);
                    continue;
                }
            };
            if rendered == self.sources.get(rfile).text() {
                continue;
            }
            let vfile = self
                .sources
                .add(format!("{main} (rendered with {label})"), rendered.as_str());
            let Some(p) = self.parse_graph(vfile, &rendered, Some(text)) else {
                for d in &mut self.out[before..] {
                    d.notes.push(format!("when rendered with {label}"));
                }
                continue;
            };
            for mut d in self.check_graph(&p, &inputs) {
                if (has_seed_input && d.code == Code::HardcodedSeed)
                    || !seen.insert((d.code, d.message.clone()))
                {
                    continue;
                }
                d.notes.push(format!("when rendered with {label}"));
                self.out.push(d);
            }
        }
        self.probe_escaping(file, &set, &inputs, &base);
        let frozen = set.freeze();
        let sources: Vec<(String, String)> = frozen.sources().into_iter().collect();
        for (name, text) in &sources {
            if name != &main {
                self.sources
                    .add(format!("{}/{name}", self.config.templates), text.as_str());
            }
        }
        let mut default_graph = parsed.value.clone();
        apply_bindings(&mut default_graph, &inputs, &defaults(&inputs));
        Some((
            GraphSource::Template(frozen),
            inputs,
            default_graph,
            sources,
        ))
    }

    /// Renders with each input's text replaced by strings that break out of a JSON string
    /// when printed unescaped, and reports an input whose text then changes the graph: the
    /// template escapes its values some other way than minijinja's JSON auto-escaping.
    fn probe_escaping(
        &mut self,
        file: FileId,
        set: &TemplateSet,
        inputs: &[WorkflowInput],
        base: &Map<String, Value>,
    ) {
        const PROBES: [&str; 2] = [r#"x", "comfyc_probe": "y"#, r#"{"comfyc_probe": [1, 0]}"#];
        let render = |ctx: &Map<String, Value>| {
            set.render(ctx)
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        };
        let marked_ctx = crate::render::mark_free_text(inputs, base);
        if &marked_ctx == base {
            return;
        }
        let marked = render(&marked_ctx);
        for input in inputs {
            let Some(value) = base.get(&input.name) else {
                continue;
            };
            for probe in PROBES {
                let mut v = value.clone();
                crate::render::map_free_text(Some(input), &mut v, &|_| probe.to_owned());
                if &v == value {
                    break;
                }
                let mut ctx = marked_ctx.clone();
                ctx.insert(input.name.clone(), v);
                let ok = match (&marked, render(&ctx)) {
                    (Some(m), Some(r)) => crate::template::same_shape(m, &r).is_ok(),
                    _ => false,
                };
                if !ok {
                    self.out.push(
                        Diagnostic::new(
                            Code::TemplateInjection,
                            format!(
                                "the text of input `{}` can change the graph's structure",
                                input.name
                            ),
                        )
                        .primary(file, input.span.clone(), "this text escapes its JSON string")
                        .note(format!(
                            "rendered with `{} = {}`, the graph changed beyond that string",
                            input.name,
                            serde_json::to_string(probe).unwrap_or_default()
                        ))
                        .help("print values as `{{ value }}`: minijinja writes them as JSON literals; do not rework escaped output (`replace`, `safe`, string building)"),
                    );
                    break;
                }
            }
        }
    }

    fn template_error(
        &mut self,
        gfile: FileId,
        main: &str,
        variant: Option<&str>,
        e: crate::template::RenderError,
    ) {
        let name = e.template.clone().unwrap_or_else(|| main.to_owned());
        let file = if name == main {
            gfile
        } else {
            let text = crate::template::BUILTIN
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, t)| (*t).to_owned())
                .or_else(|| {
                    self.loader
                        .read(&Path::new(&self.config.templates).join(&name))
                        .ok()
                })
                .unwrap_or_default();
            self.sources
                .add(format!("{}/{name}", self.config.templates), text)
        };
        let span = e.span.clone().unwrap_or_else(|| {
            let text = self.sources.get(file).text();
            let start = offset_of(text, e.line.unwrap_or(1), 1);
            let end = text[start..].find('\n').map_or(text.len(), |i| start + i);
            start..end
        });
        let mut d = Diagnostic::new(
            Code::TemplateError,
            format!("the template failed: {}", e.message),
        )
        .primary(file, span, "here");
        if let Some(v) = variant {
            d = d.note(format!("when rendered with {v}"));
        }
        if e.message.contains("undefined") {
            d = d.help("every variable a template uses must be declared under `[inputs]`");
        }
        self.out.push(d);
    }

    fn outputs(&mut self, file: FileId, def: &Definition, graph: &Value) -> Vec<WorkflowOutput> {
        let mut outputs = Vec::new();
        for (name, o) in &def.outputs {
            let id = o.from.get_ref();
            let class = graph
                .get(id)
                .and_then(|n| n.get("class_type"))
                .and_then(Value::as_str);
            match class {
                None => self.out.push(
                    Diagnostic::new(
                        Code::OutputNotOutputNode,
                        format!(
                            "output `{}` is taken from node `{id}`, which the graph does not have",
                            name.get_ref()
                        ),
                    )
                    .primary(file, o.from.span(), format!("no node `{id}`")),
                ),
                Some(class) if !self.catalogue.get(class).is_some_and(|c| c.output_node) => {
                    if self.catalogue.get(class).is_some() {
                        self.out.push(
                            Diagnostic::new(
                                Code::OutputNotOutputNode,
                                format!("output `{}` is taken from node `{id}` ({class}), which is not an output node", name.get_ref()),
                            )
                            .primary(file, o.from.span(), "not an output node")
                            .help("name a node that saves or shows its result, such as `SaveImage`"),
                        );
                    }
                }
                Some(class) => outputs.push(WorkflowOutput {
                    name: name.get_ref().clone(),
                    node: id.clone(),
                    class_type: class.to_owned(),
                    description: o.description.clone(),
                }),
            }
        }
        outputs
    }

    fn models(&self, graph: &Value, inputs: &[WorkflowInput]) -> Vec<ModelUse> {
        let mut uses = Vec::new();
        let Some(nodes) = graph.as_object() else {
            return uses;
        };
        for (id, node) in nodes {
            let Some(class) = node
                .get("class_type")
                .and_then(Value::as_str)
                .and_then(|c| self.catalogue.get(c))
            else {
                continue;
            };
            for spec in class.visible_inputs() {
                let Some(folder) = &spec.model_folder else {
                    continue;
                };
                let Some(v) = node.get("inputs").and_then(|i| i.get(&spec.name)) else {
                    continue;
                };
                let InputValue::Literal(Value::String(name)) = classify(v) else {
                    continue;
                };
                let bound_by = inputs
                    .iter()
                    .find(|i| {
                        i.bindings
                            .iter()
                            .any(|b| &b.node == id && b.input == spec.name)
                    })
                    .map(|i| i.name.clone());
                uses.push(ModelUse {
                    folder: folder.clone(),
                    name: name.clone(),
                    node: id.clone(),
                    input: spec.name.clone(),
                    bound_by,
                    declared: self
                        .models
                        .iter()
                        .any(|m| &m.name == name && &m.folder == folder),
                });
            }
        }
        uses.sort();
        uses
    }
}

/// Each input's default, where it has one.
pub fn defaults(inputs: &[WorkflowInput]) -> Map<String, Value> {
    inputs
        .iter()
        .filter_map(|i| i.default.clone().map(|d| (i.name.clone(), d)))
        .collect()
}

/// Writes each bound input's value into the graph's node inputs.
pub fn apply_bindings(graph: &mut Value, inputs: &[WorkflowInput], values: &Map<String, Value>) {
    for input in inputs {
        let Some(v) = values.get(&input.name) else {
            continue;
        };
        for b in &input.bindings {
            if let Some(Value::Object(node)) = graph.get_mut(&b.node) {
                let entry = node
                    .entry("inputs")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(ins) = entry {
                    ins.insert(b.input.clone(), v.clone());
                }
            }
        }
    }
}

/// Input sets to render a template with besides the defaults: every enum and model option,
/// both booleans, each range's ends, and arrays of one and two sample items.
fn variants(
    vars: &[WorkflowInput],
    base: &Map<String, Value>,
) -> Vec<(String, Map<String, Value>)> {
    const MAX_OPTIONS: usize = 32;
    let mut out = Vec::new();
    for input in vars {
        let mut values: Vec<Value> = Vec::new();
        match input.ty {
            InputType::Enum | InputType::Model => {
                values.extend(input.options.iter().flatten().take(MAX_OPTIONS).cloned());
            }
            InputType::Boolean => values.extend([Value::Bool(true), Value::Bool(false)]),
            InputType::Integer | InputType::Number | InputType::Seed => {
                values.extend(input.min.iter().chain(input.max.iter()).cloned());
            }
            InputType::Array => {
                if let Some(item) = &input.items {
                    let one = item.sample();
                    values.push(Value::Array(vec![one.clone()]));
                    if input.max_items.is_none_or(|m| m >= 2) {
                        values.push(Value::Array(vec![one.clone(), one]));
                    }
                }
                if input.min_items.is_none_or(|m| m == 0) {
                    values.push(Value::Array(Vec::new()));
                }
            }
            _ => {}
        }
        for v in values {
            if base.get(&input.name) == Some(&v) {
                continue;
            }
            let mut ctx = base.clone();
            let shown = v.to_string();
            let shown = if shown.chars().count() > 60 {
                format!("{}…", shown.chars().take(57).collect::<String>())
            } else {
                shown
            };
            ctx.insert(input.name.clone(), v);
            out.push((format!("`{} = {shown}`", input.name), ctx));
        }
    }
    out
}
