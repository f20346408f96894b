//! Command-line interface of `comfyc`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use serde_json::{Map, Value, json};

use comfyc::catalogue::{Catalogue, normalize_snapshot};
use comfyc::compile::{CONFIG_FILE, Compilation};
use comfyc::definition::InputType;
use comfyc::diagnostic::{self, RenderOptions};
use comfyc::fsutil::write_atomic;
use comfyc::{FsLoader, Workflow, compile};

const AFTER_HELP: &str = "\
A workflow repository has a `comfyc.toml` at its root, a node catalogue snapshot
(`nodes/object_info.json`, written by `comfyc nodes pull`), and definitions under
`workflows/`: a TOML file per workflow beside its graph (API JSON or a `.j2` template).

Examples:
  comfyc check                         check the repository around the current directory
  comfyc build --out build/            write graphs, input schemas and an index
  comfyc render txt2img --set prompt='a red fox' --set steps=30 | curl -d @- http://127.0.0.1:8188/prompt
  comfyc nodes pull --url http://127.0.0.1:8188
  comfyc nodes diff nodes/object_info.json new.json   what a ComfyUI upgrade would break
  comfyc completions bash > ~/.local/share/bash-completion/completions/comfyc

Exit status: 0 clean (warnings allowed), 1 errors found, 2 usage or I/O error.";

/// Compile typed ComfyUI workflow definitions into validated API graphs and input schemas.
#[derive(Parser)]
#[command(name = "comfyc", version, after_help = AFTER_HELP, max_term_width = 100)]
struct Cli {
    /// Workflow repository (default: the nearest directory upward holding a `comfyc.toml`).
    #[arg(long, short = 'C', global = true, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Output format for diagnostics and results.
    #[arg(long, global = true, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// When to colour human output.
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    color: Color,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Diagnostics with carets under the offending source, like rustc.
    Human,
    /// One JSON document on stdout, for tools and CI annotations.
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Color {
    Auto,
    Always,
    Never,
}

#[derive(Subcommand)]
enum Command {
    /// Check every workflow definition: structure, node catalogue, bindings, templates, lints.
    ///
    /// All problems are reported, not just the first. Templates are rendered with their
    /// defaults, with every enum and model option, both booleans and each range's ends, and
    /// every result is checked.
    Check {
        /// Workflow repository (same as --dir).
        dir: Option<PathBuf>,
        /// Treat warnings as errors (exit 1 when there are any).
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Compile every workflow into DIR: NAME.workflow.json, NAME.schema.json and index.json.
    ///
    /// Output is byte-for-byte deterministic, so it can be committed and diffed. Nothing is
    /// written when any workflow has errors.
    Build {
        /// Workflow repository (same as --dir).
        dir: Option<PathBuf>,
        /// Where to write the compiled files.
        #[arg(long, short, value_name = "DIR")]
        out: PathBuf,
    },
    /// Print the JSON Schema (draft 2020-12) of one workflow's inputs.
    Schema {
        /// Workflow name, or NAME@VERSION.
        name: String,
        /// Print the RJSF uiSchema of the workflow's form instead (what `build` writes as
        /// `NAME.uischema.json`). Default: the input schema.
        #[arg(long)]
        ui: bool,
    },
    /// Render one workflow with inputs into the request body for ComfyUI's `POST /prompt`.
    ///
    /// Inputs come from a file (`--inputs`: JSON, TOML or JSON Lines, with the values at the
    /// top level or under `inputs`, as in a job file) and from `--set`, which wins. Absent seed inputs
    /// get a random value, reported on stderr.
    Render {
        /// Workflow name, or NAME@VERSION.
        name: String,
        /// File with input values: JSON, TOML, or JSON Lines (`.jsonl`, one set a line).
        #[arg(long, short, value_name = "FILE")]
        inputs: Option<PathBuf>,
        /// The line of a JSON Lines `--inputs` file to render, when it holds several.
        #[arg(long, value_name = "N", requires = "inputs")]
        line: Option<usize>,
        /// Set one input: `--set prompt='a red fox'`, `--set steps=30`. Values of string-like
        /// inputs are taken as text; others are parsed as JSON, else as a TOML value
        /// (`--set color=0xff0000`).
        #[arg(long = "set", short = 's', value_name = "NAME=VALUE")]
        set: Vec<String>,
        /// Print only the graph, not the `{"prompt": ...}` request body.
        #[arg(long)]
        graph_only: bool,
    },
    /// Convert a UI-format workflow (what ComfyUI's Save writes) into the API format.
    ///
    /// Prints the graph ComfyUI's front end would submit for it, converted with the
    /// repository's node catalogue; problems (node types the catalogue lacks, broken links,
    /// widget counts that do not match) go to stderr.
    Convert {
        /// The UI-format workflow file.
        file: PathBuf,
        /// Node catalogue to convert with (default: the repository's).
        #[arg(long, value_name = "FILE")]
        catalogue: Option<PathBuf>,
    },
    /// Write a definition for a UI-format workflow, beside it.
    ///
    /// Lifts the usual parameters into typed inputs bound to their nodes: the inputs chosen
    /// in App Mode first, then prompts, seeds (those left on `randomize` become `seed`
    /// inputs), steps, cfg, sampler, scheduler, denoise, size, batch size, loaded images and
    /// model choices. Model files the loaders name become `[[models]]`. Prints what it lifted.
    Import {
        /// The UI-format workflow file.
        file: PathBuf,
        /// Workflow name (default: the file's stem); the definition is written as NAME.toml.
        #[arg(long)]
        name: Option<String>,
        /// Replace NAME.toml if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Work with the node catalogue snapshot.
    #[command(subcommand)]
    Nodes(NodesCommand),
    /// Print a shell completion script.
    ///
    /// Install for bash: `comfyc completions bash > ~/.local/share/bash-completion/completions/comfyc`;
    /// zsh: `comfyc completions zsh > ~/.zfunc/_comfyc` (with `~/.zfunc` in `fpath`);
    /// fish: `comfyc completions fish > ~/.config/fish/completions/comfyc.fish`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages: `comfyc.1` and one per subcommand (`comfyc-check.1`, ...).
    ///
    /// Install with `comfyc man --out ~/.local/share/man/man1`, then `man comfyc`. Without
    /// `--out`, the page of `comfyc` itself is printed.
    Man {
        /// Folder to write the pages into.
        #[arg(long, short, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum NodesCommand {
    /// Save a running ComfyUI's node catalogue (`GET /object_info`), sorted and pretty.
    ///
    /// Written to the repository's catalogue path (see `catalogue` in comfyc.toml) unless
    /// `--out` is given, so a ComfyUI upgrade becomes a reviewable diff.
    Pull(PullArgs),
    /// Compare two catalogue snapshots: classes, inputs and options that changed, and which
    /// workflows of the repository the new snapshot breaks.
    ///
    /// Every workflow is compiled against OLD and against NEW; one that compiles with OLD and
    /// has errors with NEW is broken by the upgrade, and its errors are shown. Exit status 1
    /// when any workflow breaks.
    Diff(DiffArgs),
}

#[derive(Args)]
struct DiffArgs {
    /// The snapshot in use (for example the committed `nodes/object_info.json`).
    old: PathBuf,
    /// The snapshot to compare it with (for example one saved with `nodes pull --out`).
    new: PathBuf,
    /// Workflow repository whose workflows to check (default: --dir, or the nearest one
    /// upward; without one only the snapshots are compared).
    dir: Option<PathBuf>,
}

#[derive(Args)]
struct PullArgs {
    /// Base URL of the ComfyUI server. An `https://` server's certificate must be signed by
    /// an authority the system trusts, or by one in the PEM file named by `SSL_CERT_FILE`.
    #[arg(long, default_value = "http://127.0.0.1:8188")]
    url: String,
    /// An extra request header, `Name: value`, for example
    /// `--header 'Authorization: Bearer TOKEN'` for a proxy in front of ComfyUI. Repeatable;
    /// values are never printed. Default: none.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    header: Vec<String>,
    /// Where to write the snapshot (`-` for stdout).
    #[arg(long, short, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Seconds to wait for the answer (the catalogue of a large install takes a while).
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

/// A failure that is not a diagnostic: bad usage, unreadable files, network errors.
struct Fatal {
    message: String,
    help: Option<String>,
    /// The reader of stdout went away (`comfyc render | head -1`): stop without a word, as
    /// `cat` and ripgrep do.
    quiet: bool,
}

impl Fatal {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            help: None,
            quiet: false,
        }
    }

    fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let color = match cli.color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let ctx = Ctx {
        format: cli.format,
        render: RenderOptions { color },
    };
    let result = match cli.command {
        Command::Check { dir, deny_warnings } => {
            repo_dir(dir.or(cli.dir)).and_then(|d| ctx.check(&d, deny_warnings))
        }
        Command::Build { dir, out } => repo_dir(dir.or(cli.dir)).and_then(|d| ctx.build(&d, &out)),
        Command::Schema { name, ui } => repo_dir(cli.dir).and_then(|d| ctx.schema(&d, &name, ui)),
        Command::Render {
            name,
            inputs,
            line,
            set,
            graph_only,
        } => repo_dir(cli.dir)
            .and_then(|d| ctx.render(&d, &name, inputs.as_deref(), line, &set, graph_only)),
        Command::Completions { shell } => completions(shell),
        Command::Man { out: dir } => man(dir.as_deref()),
        Command::Convert { file, catalogue } => ctx.convert(cli.dir, &file, catalogue.as_deref()),
        Command::Import { file, name, force } => ctx.import(cli.dir, &file, name.as_deref(), force),
        Command::Nodes(NodesCommand::Pull(args)) => ctx.pull(cli.dir, &args),
        Command::Nodes(NodesCommand::Diff(args)) => {
            let dir = args.dir.clone().or(cli.dir);
            ctx.diff(dir, &args)
        }
    };
    match result {
        Ok(code) => code,
        Err(f) if f.quiet => ExitCode::SUCCESS,
        Err(f) => {
            let mut err = std::io::stderr().lock();
            if ctx.format == Format::Json {
                let doc = json!({"error": f.message, "help": f.help});
                let _ = writeln!(
                    err,
                    "{}",
                    serde_json::to_string_pretty(&doc).unwrap_or_default()
                );
            } else {
                let _ = writeln!(err, "error: {}", f.message);
                if let Some(h) = f.help {
                    let _ = writeln!(err, "  = help: {h}");
                }
            }
            ExitCode::from(2)
        }
    }
}

/// The nearest directory from `start` upward that holds a `comfyc.toml`.
fn find_repo(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|d| d.join(CONFIG_FILE).is_file())
        .map(Path::to_path_buf)
}

/// The repository directory: given, or found upward from the current directory.
fn repo_dir(given: Option<PathBuf>) -> Result<PathBuf, Fatal> {
    if let Some(d) = given {
        if !d.join(CONFIG_FILE).is_file() {
            return Err(
                Fatal::new(format!("`{}` has no `{CONFIG_FILE}`", d.display()))
                    .help("point --dir at the root of a workflow repository"),
            );
        }
        return Ok(d);
    }
    let cwd = std::env::current_dir()
        .map_err(|e| Fatal::new(format!("cannot read the current directory: {e}")))?;
    let mut dir = cwd.as_path();
    loop {
        if dir.join(CONFIG_FILE).is_file() {
            return Ok(dir.to_path_buf());
        }
        match dir.parent() {
            Some(p) => dir = p,
            None => {
                return Err(Fatal::new(format!("no `{CONFIG_FILE}` in `{}` or any parent directory", cwd.display()))
                    .help("run inside a workflow repository, or pass --dir; `examples/` in the comfyc repo is one"));
            }
        }
    }
}

struct Ctx {
    format: Format,
    render: RenderOptions,
}

impl Ctx {
    fn compile(&self, dir: &Path) -> Compilation {
        compile(Arc::new(FsLoader::new(dir)))
    }

    /// Prints diagnostics: for people on stderr (or stdout for `check`), for tools as JSON.
    fn report(&self, c: &Compilation, to_stdout: bool) -> Result<(), Fatal> {
        if self.format == Format::Json {
            return Ok(());
        }
        let text = diagnostic::render_all(&c.diagnostics, &c.sources, self.render);
        if to_stdout {
            out(&text)
        } else {
            let mut stderr = std::io::stderr().lock();
            let _ = stderr.write_all(text.as_bytes());
            Ok(())
        }
    }

    fn diagnostics_json(c: &Compilation) -> Value {
        Value::Array(
            c.diagnostics
                .iter()
                .map(|d| diagnostic::to_json(d, &c.sources))
                .collect(),
        )
    }

    fn check(&self, dir: &Path, deny_warnings: bool) -> Result<ExitCode, Fatal> {
        let c = self.compile(dir);
        let (errors, warnings) = diagnostic::count(&c.diagnostics);
        if self.format == Format::Json {
            out_json(&json!({
                "definitions": c.definitions,
                "workflows": c.workflows.iter().map(Workflow::id).collect::<Vec<_>>(),
                "failed": c.failed.iter().map(|f| json!({
                    "definition": f.definition.display().to_string(),
                    "errors": f.errors,
                })).collect::<Vec<_>>(),
                "errors": errors,
                "warnings": warnings,
                "diagnostics": Self::diagnostics_json(&c),
            }))?;
        } else {
            self.report(&c, true)?;
            out(&format!(
                "checked {}: {}, {}\n",
                plural(c.definitions, "workflow"),
                plural(errors, "error"),
                plural(warnings, "warning")
            ))?;
        }
        Ok(exit(errors > 0 || (deny_warnings && warnings > 0)))
    }

    fn build(&self, dir: &Path, out_dir: &Path) -> Result<ExitCode, Fatal> {
        let c = self.compile(dir);
        let (errors, warnings) = diagnostic::count(&c.diagnostics);
        self.report(&c, false)?;
        if errors > 0 {
            if self.format == Format::Json {
                out_json(
                    &json!({"errors": errors, "warnings": warnings, "diagnostics": Self::diagnostics_json(&c)}),
                )?;
            } else {
                say(&format!(
                    "build failed: {}, {}; nothing written",
                    plural(errors, "error"),
                    plural(warnings, "warning")
                ));
            }
            return Ok(ExitCode::from(1));
        }
        let files = comfyc::build::outputs(&c);
        std::fs::create_dir_all(out_dir)
            .map_err(|e| Fatal::new(format!("cannot create `{}`: {e}", out_dir.display())))?;
        let mut changed = 0;
        for f in &files {
            let path = out_dir.join(&f.path);
            if std::fs::read_to_string(&path).ok().as_deref() == Some(f.contents.as_str()) {
                continue;
            }
            write_atomic(&path, f.contents.as_bytes())
                .map_err(|e| Fatal::new(format!("cannot write `{}`: {e}", path.display())))?;
            changed += 1;
        }
        if self.format == Format::Json {
            out_json(
                &json!({"written": files.iter().map(|f| &f.path).collect::<Vec<_>>(), "changed": changed, "warnings": warnings, "diagnostics": Self::diagnostics_json(&c)}),
            )?;
        } else {
            say(&format!(
                "built {} into {} ({} changed, {})",
                plural(c.workflows.len(), "workflow"),
                out_dir.display(),
                plural(changed, "file"),
                plural(warnings, "warning")
            ));
        }
        Ok(ExitCode::SUCCESS)
    }

    /// Compiles and finds one workflow; diagnostics of other workflows are not shown.
    fn workflow<'c>(&self, c: &'c Compilation, name: &str) -> Result<&'c Workflow, Fatal> {
        match c.find(name) {
            Ok(w) => Ok(w),
            Err(msg) => {
                let (errors, _) = diagnostic::count(&c.diagnostics);
                if errors > 0 {
                    self.report(c, false)?;
                    return Err(Fatal::new(msg)
                        .help("the repository has errors (above); `comfyc check` lists them"));
                }
                Err(Fatal::new(msg))
            }
        }
    }

    fn schema(&self, dir: &Path, name: &str, ui: bool) -> Result<ExitCode, Fatal> {
        let c = self.compile(dir);
        let w = self.workflow(&c, name)?;
        if ui {
            out_json(&comfyc::uischema::ui_schema(w))?;
        } else {
            out_json(&w.schema)?;
        }
        Ok(ExitCode::SUCCESS)
    }

    fn render(
        &self,
        dir: &Path,
        name: &str,
        inputs_file: Option<&Path>,
        line: Option<usize>,
        set: &[String],
        graph_only: bool,
    ) -> Result<ExitCode, Fatal> {
        let c = self.compile(dir);
        let w = self.workflow(&c, name)?;
        let mut inputs = match inputs_file {
            Some(p) => read_inputs(p, line)?,
            None => Map::new(),
        };
        for s in set {
            let (k, v) = s.split_once('=').ok_or_else(|| {
                Fatal::new(format!("`--set {s}` is not NAME=VALUE"))
                    .help("for example `--set steps=30`")
            })?;
            let text_like = w.input(k).is_none_or(|i| {
                matches!(i.ty, InputType::String | InputType::Enum | InputType::Model)
                    || i.ty.is_file()
            });
            let value = if text_like {
                Value::String(v.to_owned())
            } else {
                comfyc::inputs_file::parse_set_value(v)
                    .map_err(|e| Fatal::new(format!("`--set {s}`: {e}")))?
            };
            inputs.insert(k.to_owned(), value);
        }
        let resolved = match w.resolve(&inputs, &mut || fastrand::u64(..(1 << 53))) {
            Ok(r) => r,
            Err(errors) => {
                if self.format == Format::Json {
                    out_json(&json!({"errors": errors}))?;
                } else {
                    for e in &errors {
                        say(&format!("error[job-input]: {}", e.message));
                        if let Some(h) = &e.help {
                            say(&format!("  = help: {h}"));
                        }
                    }
                    say(&format!(
                        "`comfyc schema {}` shows every input with its type and range",
                        w.id()
                    ));
                }
                return Ok(ExitCode::from(1));
            }
        };
        for s in &resolved.picked_seeds {
            say(&format!(
                "seed `{s}`: picked {} (pass `--set {s}=N` to choose)",
                resolved.values[s]
            ));
        }
        let graph = match w.render(&resolved.values) {
            Ok(g) => g,
            Err(e) => {
                if self.format == Format::Json {
                    out_json(&json!({"errors": [e]}))?;
                } else {
                    say(&format!("error[job-input]: {}", e.message));
                    if let Some(h) = &e.help {
                        say(&format!("  = help: {h}"));
                    }
                }
                return Ok(ExitCode::from(1));
            }
        };
        let body = if graph_only {
            graph
        } else {
            json!({ "prompt": graph })
        };
        out_json(&body)?;
        Ok(ExitCode::SUCCESS)
    }

    fn diff(&self, dir: Option<PathBuf>, args: &DiffArgs) -> Result<ExitCode, Fatal> {
        let read = |p: &Path| -> Result<(String, Catalogue), Fatal> {
            let text = std::fs::read_to_string(p)
                .map_err(|e| Fatal::new(format!("cannot read `{}`: {e}", p.display())))?;
            let (cat, _) = Catalogue::from_json(&text).map_err(|e| {
                Fatal::new(format!("`{}` is not a node catalogue: {e}", p.display()))
            })?;
            Ok((text, cat))
        };
        let (old_text, old) = read(&args.old)?;
        let (new_text, new) = read(&args.new)?;
        let changes = comfyc::catalogue_diff::diff(&old, &new);
        // The repository is optional: given, or found upward, or none.
        let repo = match dir {
            Some(d) => Some(repo_dir(Some(d))?),
            None => repo_dir(None).ok(),
        };
        let mut broken: Vec<(String, Vec<comfyc::Diagnostic>)> = Vec::new();
        let mut sources = comfyc::source::SourceMap::new();
        let mut checked = 0;
        if let Some(repo) = &repo {
            let base: Arc<dyn comfyc::Loader> = Arc::new(FsLoader::new(repo));
            let catalogue_path = compile(base.clone()).config.catalogue;
            let with = |text: &str| {
                compile(Arc::new(comfyc::catalogue_diff::OverlayLoader::new(
                    base.clone(),
                    &catalogue_path,
                    text,
                )))
            };
            let before = with(&old_text);
            let after = with(&new_text);
            checked = after.definitions;
            for f in &after.failed {
                if before.failed.iter().any(|b| b.definition == f.definition) {
                    continue;
                }
                broken.push((
                    f.definition.display().to_string(),
                    after.diagnostics[f.diagnostics.clone()].to_vec(),
                ));
            }
            sources = after.sources;
        }
        if self.format == Format::Json {
            out_json(&json!({
                "added": changes.added,
                "removed": changes.removed,
                "changed": changes.changed,
                "checked": checked,
                "broken": broken.iter().map(|(d, diags)| json!({
                    "definition": d,
                    "diagnostics": diags.iter().map(|x| diagnostic::to_json(x, &sources)).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            }))?;
        } else {
            let mut text = format!(
                "{} → {} node classes: {} added, {} removed, {} changed\n",
                old.len(),
                new.len(),
                changes.added.len(),
                changes.removed.len(),
                changes.changed.len()
            );
            for c in &changes.added {
                text.push_str(&format!("+ {c}\n"));
            }
            for c in &changes.removed {
                text.push_str(&format!("- {c}\n"));
            }
            for c in &changes.changed {
                text.push_str(&format!("~ {}\n", c.class));
                for line in &c.changes {
                    text.push_str(&format!("    {line}\n"));
                }
            }
            if repo.is_some() {
                text.push('\n');
                for (definition, diags) in &broken {
                    text.push_str(&format!("broken: {definition}\n"));
                    text.push_str(&diagnostic::render_all(diags, &sources, self.render));
                }
                text.push_str(&format!(
                    "{} of {} broken by `{}`\n",
                    plural(broken.len(), "workflow"),
                    checked,
                    args.new.display()
                ));
            }
            out(&text)?;
        }
        Ok(exit(!broken.is_empty()))
    }

    /// The catalogue given, or the one of the repository holding `near` (or `dir`).
    fn catalogue_for(
        dir: Option<PathBuf>,
        near: &Path,
        given: Option<&Path>,
    ) -> Result<Catalogue, Fatal> {
        let path = match given {
            Some(p) => p.to_path_buf(),
            None => {
                let start = match dir {
                    Some(d) => d,
                    None => {
                        let parent = near
                            .parent()
                            .filter(|p| !p.as_os_str().is_empty())
                            .unwrap_or(Path::new("."));
                        parent
                            .canonicalize()
                            .unwrap_or_else(|_| parent.to_path_buf())
                    }
                };
                let root = find_repo(&start).ok_or_else(|| {
                    Fatal::new(format!(
                        "no `{CONFIG_FILE}` in `{}` or any parent directory, so no node catalogue",
                        start.display()
                    ))
                    .help("pass `--catalogue nodes/object_info.json`, or run inside a workflow repository")
                })?;
                let text = std::fs::read_to_string(root.join(CONFIG_FILE)).map_err(|e| {
                    Fatal::new(format!(
                        "cannot read `{}`: {e}",
                        root.join(CONFIG_FILE).display()
                    ))
                })?;
                let config: comfyc::definition::RepoConfig =
                    toml::from_str(&text).map_err(|e| {
                        Fatal::new(format!(
                            "`{}` is not valid: {}",
                            root.join(CONFIG_FILE).display(),
                            e.message()
                        ))
                        .help("`comfyc check` shows where")
                    })?;
                root.join(config.catalogue)
            }
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Fatal::new(format!(
                "cannot read the node catalogue `{}`: {e}",
                path.display()
            ))
        })?;
        Catalogue::from_json(&text).map(|(c, _)| c).map_err(|e| {
            Fatal::new(format!(
                "the node catalogue `{}` is not valid: {e}",
                path.display()
            ))
        })
    }

    fn convert(
        &self,
        dir: Option<PathBuf>,
        file: &Path,
        catalogue: Option<&Path>,
    ) -> Result<ExitCode, Fatal> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| Fatal::new(format!("cannot read `{}`: {e}", file.display())))?;
        let cat = Self::catalogue_for(dir, file, catalogue)?;
        let conv = comfyc::ui::convert_text(&file.display().to_string(), &text, &cat);
        let (errors, warnings) = diagnostic::count(&conv.diagnostics);
        let graph = conv.graph.clone().map(Value::Object);
        if self.format == Format::Json {
            let diagnostics = conversion_json(&conv);
            out_json(&json!({
                "graph": graph,
                "errors": errors,
                "warnings": warnings,
                "diagnostics": diagnostics,
            }))?;
        } else {
            self.say_conversion(&conv);
            if let Some(g) = &graph {
                out_json(g)?;
                say(&format!(
                    "converted {}: {}, {}",
                    plural(g.as_object().map_or(0, Map::len), "node"),
                    plural(errors, "error"),
                    plural(warnings, "warning")
                ));
            }
        }
        Ok(exit(errors > 0 || graph.is_none()))
    }

    /// A conversion's diagnostics on stderr, for people.
    fn say_conversion(&self, conv: &comfyc::ui::FileConversion) {
        let shown = diagnostic::render_all(&conv.diagnostics, &conv.sources, self.render);
        if !shown.is_empty() {
            say(shown.trim_end_matches('\n'));
        }
    }

    fn import(
        &self,
        dir: Option<PathBuf>,
        file: &Path,
        name: Option<&str>,
        force: bool,
    ) -> Result<ExitCode, Fatal> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| Fatal::new(format!("cannot read `{}`: {e}", file.display())))?;
        let cat = Self::catalogue_for(dir, file, None)?;
        let shown = file.display().to_string();
        let conv = comfyc::ui::convert_text(&shown, &text, &cat);
        let (errors, warnings) = diagnostic::count(&conv.diagnostics);
        if conv.graph.is_none() {
            self.say_conversion(&conv);
            return Ok(ExitCode::from(1));
        }
        let doc: Value = serde_json::from_str(&text).unwrap_or_default();
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = match name {
            Some(n) => n.to_owned(),
            None => stem
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                        c
                    } else {
                        '_'
                    }
                })
                .collect(),
        };
        let graph_file = file
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let out = file.with_file_name(format!("{name}.toml"));
        if out.exists() && !force {
            return Err(Fatal::new(format!("`{}` exists", out.display()))
                .help("pass --force to replace it, or --name to pick another name"));
        }
        let conversion = comfyc::ui::convert(&doc, &cat);
        let imported = comfyc::ui::import::scaffold(&doc, &conversion, &cat, &name, &graph_file);
        std::fs::write(&out, &imported.toml)
            .map_err(|e| Fatal::new(format!("cannot write `{}`: {e}", out.display())))?;
        if self.format == Format::Json {
            let diagnostics = conversion_json(&conv);
            out_json(&json!({
                "definition": out.display().to_string(),
                "lifted": imported.report,
                "errors": errors,
                "warnings": warnings,
                "diagnostics": diagnostics,
            }))?;
        } else {
            self.say_conversion(&conv);
            let mut lifted = imported.report.join("\n");
            lifted.push('\n');
            if !imported.report.is_empty() {
                self::out(&lifted)?;
            }
            say(&format!(
                "wrote {} ({}); `comfyc check` checks it",
                out.display(),
                plural(imported.report.len(), "item")
            ));
            if errors > 0 {
                say(&format!(
                    "the graph has {}: the definition will not compile until they are fixed",
                    plural(errors, "error")
                ));
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    fn pull(&self, dir: Option<PathBuf>, args: &PullArgs) -> Result<ExitCode, Fatal> {
        let dest: Option<PathBuf> = match &args.out {
            Some(p) if p.as_os_str() == "-" => None,
            Some(p) => Some(p.clone()),
            None => {
                let d = repo_dir(dir).map_err(|f| {
                    Fatal::new(format!("{}; and no --out was given", f.message))
                        .help("pass `--out FILE` (or `-` for stdout)")
                })?;
                let text = std::fs::read_to_string(d.join(CONFIG_FILE)).unwrap_or_default();
                let config: comfyc::definition::RepoConfig =
                    toml::from_str(&text).map_err(|e| {
                        Fatal::new(format!("`{CONFIG_FILE}` is invalid: {}", e.message()))
                            .help("`comfyc check` shows where")
                    })?;
                Some(d.join(config.catalogue))
            }
        };
        let headers = comfy_net::Headers::from_lines(args.header.iter().map(String::as_str))
            .map_err(|e| {
                Fatal::new(format!("--header: {e}")).help("write it as `--header 'Name: value'`")
            })?;
        let tls = comfy_net::client_config().map_err(|e| Fatal::new(e.to_string()))?;
        let base = args.url.trim_end_matches('/');
        let url = format!("{base}/object_info");
        let client = reqwest::blocking::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .default_headers(headers.map().clone())
            .timeout(Duration::from_secs(args.timeout))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Fatal::new(format!("cannot set up HTTP: {}", comfy_net::describe(&e))))?;
        let response = client.get(&url).send().map_err(|e| {
            let fatal = if e.is_timeout() {
                Fatal::new(format!("cannot fetch `{url}`: timed out"))
            } else if comfy_net::tls_error(&e).is_some() {
                // The message says what is wrong with the certificate and what to do.
                return Fatal::new(format!("cannot fetch `{url}`: {}", comfy_net::describe(&e)));
            } else if e.is_connect() {
                Fatal::new(format!(
                    "cannot fetch `{url}`: could not connect: {}",
                    comfy_net::describe(&e)
                ))
            } else {
                Fatal::new(format!("cannot fetch `{url}`: {}", comfy_net::describe(&e)))
            };
            fatal.help(format!(
                "is ComfyUI running there? check the address with `curl {url}`"
            ))
        })?;
        let status = response.status();
        let body = response.text().map_err(|e| {
            Fatal::new(format!(
                "reading `{url}` failed: {}",
                comfy_net::describe(&e)
            ))
        })?;
        if !status.is_success() {
            return Err(Fatal::new(format!(
                "`{url}` answered {status}: {}",
                body.chars().take(200).collect::<String>()
            )));
        }
        let value: Value = serde_json::from_str(&body).map_err(|e| {
            Fatal::new(format!("`{url}` did not answer with JSON: {e}"))
                .help("is that address a ComfyUI server?")
        })?;
        let (catalogue, issues) = Catalogue::from_value(&value).map_err(Fatal::new)?;
        let text = normalize_snapshot(&value);
        let Some(path) = dest else {
            out(&text)?;
            return Ok(ExitCode::SUCCESS);
        };
        let summary = match std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| Catalogue::from_json(&t).ok())
        {
            Some((old, _)) => {
                let added = catalogue
                    .classes()
                    .filter(|c| old.get(&c.name).is_none())
                    .count();
                let removed = old
                    .classes()
                    .filter(|c| catalogue.get(&c.name).is_none())
                    .count();
                let changed = catalogue
                    .classes()
                    .filter(|c| old.get(&c.name).is_some_and(|o| o != *c))
                    .count();
                format!(" ({added} added, {removed} removed, {changed} changed)")
            }
            None => String::new(),
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| Fatal::new(format!("cannot create `{}`: {e}", parent.display())))?;
        }
        write_atomic(&path, text.as_bytes())
            .map_err(|e| Fatal::new(format!("cannot write `{}`: {e}", path.display())))?;
        for i in &issues {
            say(&format!(
                "warning: node class `{}` was not understood: {}",
                i.class, i.message
            ));
        }
        say(&format!(
            "pulled {} from {base} into {}{summary}",
            plural(catalogue.len(), "node class"),
            path.display()
        ));
        Ok(ExitCode::SUCCESS)
    }
}

/// Reads job inputs from JSON, TOML or JSONL (`line` picks a line of a JSONL file holding
/// more than one set); a job file's `inputs` table is used when present.
fn read_inputs(path: &Path, line: Option<usize>) -> Result<Map<String, Value>, Fatal> {
    use comfyc::inputs_file::{Format as InputsFormat, parse};
    let text = std::fs::read_to_string(path)
        .map_err(|e| Fatal::new(format!("cannot read `{}`: {e}", path.display())))?;
    let format = InputsFormat::of(&path.to_string_lossy());
    let mut sets = parse(format, &text).map_err(|e| {
        let what = match format {
            InputsFormat::Toml => "TOML input values",
            InputsFormat::Json => "JSON input values",
            InputsFormat::Jsonl => "JSON Lines of input values",
        };
        Fatal::new(format!("`{}` is not valid {what}: {e}", path.display()))
    })?;
    match (line, sets.len()) {
        (None, 1) => Ok(sets.remove(0).values),
        (None, 0) => Err(Fatal::new(format!(
            "`{}` holds no input values",
            path.display()
        ))),
        (None, n) => Err(Fatal::new(format!(
            "`{}` holds {n} sets of input values",
            path.display()
        ))
        .help(format!(
            "pick one with `--line N`: lines {}",
            sets.iter()
                .map(|s| s.line.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        (Some(n), _) => sets
            .into_iter()
            .find(|s| s.line == n)
            .map(|s| s.values)
            .ok_or_else(|| {
                Fatal::new(format!(
                    "line {n} of `{}` holds no input values",
                    path.display()
                ))
            }),
    }
}

fn completions(shell: clap_complete::Shell) -> Result<ExitCode, Fatal> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "comfyc", &mut buf);
    out(&String::from_utf8_lossy(&buf))?;
    Ok(ExitCode::SUCCESS)
}

/// `comfyc.1` and a page per subcommand, named as git names its own (`comfyc-nodes-pull.1`).
fn man(dir: Option<&Path>) -> Result<ExitCode, Fatal> {
    let all = comfyc::manpages::render(Cli::command());
    let Some(dir) = dir else {
        out(&String::from_utf8_lossy(&all[0].1))?;
        return Ok(ExitCode::SUCCESS);
    };
    comfyc::manpages::write(dir, &all).map_err(Fatal::new)?;
    say(&format!(
        "wrote {} into {}",
        plural(all.len(), "man page"),
        dir.display()
    ));
    Ok(ExitCode::SUCCESS)
}

/// Writes to stdout. A closed pipe ends the command quietly; any other write error is fatal.
fn out(text: &str) -> Result<(), Fatal> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                Fatal {
                    quiet: true,
                    ..Fatal::new("stdout was closed")
                }
            } else {
                Fatal::new(format!("cannot write to stdout: {e}"))
            }
        })
}

/// Prints a JSON document on stdout: every command formats its JSON the same way (pretty,
/// two-space indent, one trailing newline).
/// A conversion's diagnostics as JSON.
fn conversion_json(conv: &comfyc::ui::FileConversion) -> Vec<Value> {
    conv.diagnostics
        .iter()
        .map(|d| diagnostic::to_json(d, &conv.sources))
        .collect()
}

fn out_json(value: &Value) -> Result<(), Fatal> {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    out(&text)
}

/// Writes to stderr; when stderr is gone there is no one left to tell, so errors are ignored.
fn say(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(text.as_bytes());
    let _ = stderr.write_all(b"\n");
}

fn exit(failed: bool) -> ExitCode {
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else if what.ends_with("ss") {
        format!("{n} {what}es")
    } else {
        format!("{n} {what}s")
    }
}
