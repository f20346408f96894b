//! Graph templates: minijinja templates of API-format JSON (`*.j2`).
//!
//! Every template renders with JSON auto-escaping, so `{{ prompt }}` always becomes one JSON
//! literal (a quoted, escaped string; a number; an array) and no input value can add nodes or
//! change the graph's structure. Undefined variables are errors, not empty strings. Templates
//! may include others from the repo's `templates/` folder and the built-in `comfyc/` library.
//!
//! While a workflow compiles, includes are read through the [`Loader`]; afterwards the
//! template set is frozen (every file it read is kept in memory), so rendering a job never
//! touches the filesystem and gives the same result as at compile time.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use minijinja::value::Serde;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde_json::{Map, Value};

use crate::source::Loader;

/// Templates shipped with comfyc, includable as `comfyc/NAME`.
pub const BUILTIN: &[(&str, &str)] = &[(
    "comfyc/lora_chain.j2",
    include_str!("../../templates/lora_chain.j2"),
)];

/// Upper bound on template work per render, so a runaway loop fails instead of hanging.
const FUEL: u64 = 50_000_000;

/// A graph template and every template it includes.
#[derive(Clone)]
pub struct TemplateSet {
    env: Arc<Environment<'static>>,
    main: String,
    read: Arc<Mutex<BTreeMap<String, String>>>,
}

impl std::fmt::Debug for TemplateSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemplateSet")
            .field("main", &self.main)
            .finish_non_exhaustive()
    }
}

/// A render failure, located in one of the templates.
#[derive(Debug, Clone)]
pub struct RenderError {
    /// Template name (the main template's repo path, or an include's name).
    pub template: Option<String>,
    pub span: Option<Range<usize>>,
    pub line: Option<usize>,
    pub message: String,
}

fn base_env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::Json);
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    // minijinja names the undefined variable (`height` is undefined) only in debug mode,
    // which defaults to on in debug builds and off in release ones; users run release
    // binaries and must see the same messages as the tests.
    env.set_debug(true);
    // `safe` would print an input's text without JSON escaping, so a crafted value could add
    // nodes; graph templates have no use for it.
    env.add_filter(
        "safe",
        |_: minijinja::Value| -> Result<minijinja::Value, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                "the `safe` filter is not allowed in graph templates: it would let an input's text out of its JSON string",
            ))
        },
    );
    env
}

/// Refuses `{% autoescape %}` blocks: turning JSON escaping off would let input text change
/// the graph. (The other ways out of escaping are caught by [`same_shape`] after rendering.)
fn forbid_escape_bypass(name: &str, text: &str) -> Result<(), RenderError> {
    let mut from = 0;
    while let Some(i) = text[from..].find("{%") {
        let start = from + i;
        let tag = text[start + 2..]
            .trim_start_matches(['-', '+', '~'])
            .trim_start();
        if tag.starts_with("autoescape") {
            let end = text[start..]
                .find("%}")
                .map_or(text.len(), |j| start + j + 2);
            return Err(RenderError {
                template: Some(name.to_owned()),
                span: Some(start..end),
                line: Some(text[..start].matches('\n').count() + 1),
                message: "`autoescape` blocks are not allowed in graph templates: every value must stay a JSON literal".into(),
            });
        }
        from = start + 2;
    }
    Ok(())
}

impl TemplateSet {
    /// A template whose includes are read, as they are needed, from `templates_dir` through
    /// `loader` (and from the built-in library).
    pub fn new(
        main_name: &str,
        main_text: &str,
        loader: Arc<dyn Loader>,
        templates_dir: PathBuf,
    ) -> Result<Self, RenderError> {
        let read: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
        let mut env = base_env();
        let seen = read.clone();
        env.set_loader(move |name| {
            let text = match BUILTIN.iter().find(|(n, _)| *n == name) {
                Some((_, t)) => (*t).to_owned(),
                None => match crate::source::normalize(Path::new(name)) {
                    Some(rel) => match loader.read(&templates_dir.join(rel)) {
                        Ok(t) => t,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                        Err(e) => {
                            return Err(minijinja::Error::new(
                                minijinja::ErrorKind::InvalidOperation,
                                format!("cannot read template `{name}`: {e}"),
                            ));
                        }
                    },
                    None => return Ok(None),
                },
            };
            if let Err(e) = forbid_escape_bypass(name, &text) {
                return Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    format!("in `{name}`: {}", e.message),
                ));
            }
            if let Ok(mut m) = seen.lock() {
                m.insert(name.to_owned(), text.clone());
            }
            Ok(Some(text))
        });
        forbid_escape_bypass(main_name, main_text)?;
        env.add_template_owned(main_name.to_owned(), main_text.to_owned())
            .map_err(convert)?;
        if let Ok(mut m) = read.lock() {
            m.insert(main_name.to_owned(), main_text.to_owned());
        }
        Ok(Self {
            env: Arc::new(env),
            main: main_name.to_owned(),
            read,
        })
    }

    /// The same templates, with every file read so far held in memory and no loader.
    pub fn freeze(&self) -> Self {
        let sources = self.sources();
        let mut env = base_env();
        for (name, text) in &sources {
            // Each already compiled once, so adding it again cannot fail.
            let _ = env.add_template_owned(name.clone(), text.clone());
        }
        Self {
            env: Arc::new(env),
            main: self.main.clone(),
            read: Arc::new(Mutex::new(sources)),
        }
    }

    /// Every template text read so far, by name (the main one included).
    pub fn sources(&self) -> BTreeMap<String, String> {
        self.read.lock().map(|m| m.clone()).unwrap_or_default()
    }

    pub fn main(&self) -> &str {
        &self.main
    }

    /// Renders with `ctx` as the variables.
    pub fn render(&self, ctx: &Map<String, Value>) -> Result<String, RenderError> {
        let tmpl = self.env.get_template(&self.main).map_err(convert)?;
        tmpl.render(minijinja::Value::from(Serde(ctx)))
            .map_err(convert)
    }
}

/// What free text is replaced with to learn where a template puts it: the same number of
/// characters, the first a private-use mark, so an empty string stays empty.
pub fn mark_text(s: &str) -> String {
    let n = s.chars().count();
    if n == 0 {
        String::new()
    } else {
        std::iter::once(TEXT_MARK)
            .chain(std::iter::repeat_n('x', n - 1))
            .collect()
    }
}

/// The character [`mark_text`] starts with.
pub const TEXT_MARK: char = '\u{E000}';

/// Checks that `real` (rendered with the job's text) has the shape of `marked` (rendered with
/// every free-text value replaced by [`mark_text`]): the same keys, array lengths and values
/// everywhere, except that a string holding a mark may be any string. So text lands only
/// inside the JSON strings the template put it in: it cannot add a node, an input or a link,
/// nor change a value elsewhere. The error is the JSON pointer of the first difference.
pub fn same_shape(marked: &Value, real: &Value) -> Result<(), String> {
    fn walk(marked: &Value, real: &Value, at: &mut String) -> Result<(), String> {
        match (marked, real) {
            (Value::Object(a), Value::Object(b)) => {
                if let Some(k) = a
                    .keys()
                    .find(|k| !b.contains_key(*k))
                    .or_else(|| b.keys().find(|k| !a.contains_key(*k)))
                {
                    return Err(format!("{at}/{}", crate::json_spans::escape_token(k)));
                }
                for (k, v) in a {
                    let len = at.len();
                    at.push('/');
                    at.push_str(&crate::json_spans::escape_token(k));
                    walk(v, &b[k], at)?;
                    at.truncate(len);
                }
                Ok(())
            }
            (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
                for (i, (x, y)) in a.iter().zip(b).enumerate() {
                    let len = at.len();
                    at.push_str(&format!("/{i}"));
                    walk(x, y, at)?;
                    at.truncate(len);
                }
                Ok(())
            }
            (Value::String(a), Value::String(_)) if a.contains(TEXT_MARK) => Ok(()),
            (a, b) if a == b => Ok(()),
            _ => Err(if at.is_empty() {
                "/".into()
            } else {
                at.clone()
            }),
        }
    }
    walk(marked, real, &mut String::new())
}

fn convert(outer: minijinja::Error) -> RenderError {
    // An error inside an include is wrapped by one at the `{% include %}`; the innermost one
    // says what went wrong and where.
    let mut e = &outer;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&outer);
    while let Some(s) = cur {
        if let Some(m) = s.downcast_ref::<minijinja::Error>()
            && m.name().is_some()
        {
            e = m;
        }
        cur = s.source();
    }
    let mut message = e.kind().to_string();
    if let Some(d) = e.detail() {
        message = format!("{message}: {d}");
    }
    RenderError {
        template: e.name().map(str::to_owned),
        span: e.range(),
        line: e.line(),
        message: lower_first(&message),
    }
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::MemLoader;

    fn set(text: &str) -> TemplateSet {
        let loader = Arc::new(MemLoader::new().with("templates/part.j2", "{\"p\": {{ x }}}"));
        TemplateSet::new("main.j2", text, loader, PathBuf::from("templates"))
            .unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn values_render_as_json_literals() {
        let t = set(r#"{"a": {{ s }}, "b": {{ n }}}"#);
        let mut ctx = Map::new();
        ctx.insert("s".into(), Value::from("x\"}, \"99\": {"));
        ctx.insert("n".into(), Value::from(3));
        let out = t.render(&ctx).unwrap_or_default();
        let v: Value = serde_json::from_str(&out).unwrap_or_default();
        assert_eq!(v["a"], "x\"}, \"99\": {");
        assert_eq!(v["b"], 3);
    }

    #[test]
    fn undefined_is_an_error_with_a_span() {
        let t = set("{\"a\": {{ nope }}}");
        let e = t
            .render(&Map::new())
            .err()
            .unwrap_or_else(|| panic!("expected an error"));
        assert_eq!(e.template.as_deref(), Some("main.j2"));
        // Named in every build: minijinja only names it with debug info, which release
        // builds turn off unless asked.
        assert!(e.message.contains("`nope` is undefined"), "{}", e.message);
    }

    #[test]
    fn includes_are_recorded_and_frozen() {
        let t = set("{% include \"part.j2\" %}");
        let mut ctx = Map::new();
        ctx.insert("x".into(), Value::from(1));
        assert_eq!(t.render(&ctx).unwrap_or_default(), "{\"p\": 1}");
        let frozen = t.freeze();
        assert_eq!(frozen.sources().len(), 2);
        assert_eq!(frozen.render(&ctx).unwrap_or_default(), "{\"p\": 1}");
    }
}
