//! UI-format workflows: what ComfyUI's "Save" writes, turned into the API format.
//!
//! A UI-format file holds nodes with positional `widgets_values`, a links table, groups and
//! subgraphs (`definitions.subgraphs`). Only ComfyUI's web front end turns one into the API
//! graph `POST /prompt` takes; [`convert`] does the same offline, with the node catalogue
//! standing in for the widgets the front end builds. It sits before [`crate::graph`] in the
//! pipeline: the compiler converts a UI graph, then checks and binds the result like any API
//! graph. [`import`] writes a definition scaffold for a UI file.
//!
//! Problems are [`UiProblem`]s with JSON pointers into the file; nothing here panics on a
//! malformed document.

mod convert;
pub mod import;

pub use convert::{
    Conversion, UiProblem, UiProblemKind, convert, is_front_end_widget, is_widget_type,
};

use crate::diagnostic::{Code, Diagnostic};
use crate::json_spans::JsonSpans;
use crate::source::FileId;

/// A conversion problem as a diagnostic pointing into the UI file.
pub fn diagnostic(p: &UiProblem, file: FileId, spans: &JsonSpans) -> Diagnostic {
    let (code, label) = match p.kind {
        UiProblemKind::UnknownClass => (Code::UnknownClass, "not in the catalogue"),
        UiProblemKind::MissingLink | UiProblemKind::BrokenLink => {
            (Code::UiBrokenLink, "broken link")
        }
        UiProblemKind::WidgetCount => (Code::UiWidgetCount, "widget values"),
        UiProblemKind::Shape => (Code::GraphShape, "here"),
    };
    let mut d =
        Diagnostic::new(code, p.message.clone()).primary(file, spans.nearest(&p.pointer), label);
    d.help = p.help.clone();
    d
}

/// A UI file converted on its own (`comfyc convert`): the API graph, and every problem.
#[derive(Debug, Default)]
pub struct FileConversion {
    /// `None` when the file could not be read as a UI workflow at all.
    pub graph: Option<serde_json::Map<String, serde_json::Value>>,
    pub sources: crate::source::SourceMap,
    pub diagnostics: Vec<Diagnostic>,
}

/// Converts the UI-format file `name` holding `text`.
pub fn convert_text(
    name: &str,
    text: &str,
    catalogue: &crate::catalogue::Catalogue,
) -> FileConversion {
    let mut out = FileConversion::default();
    let file = out.sources.add(name, text);
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let at = crate::compile::offset_of(text, e.line(), e.column());
            out.diagnostics.push(
                Diagnostic::new(
                    Code::GraphSyntax,
                    format!("the file is not valid JSON: {e}"),
                )
                .primary(file, at..at + 1, "here"),
            );
            return out;
        }
    };
    if crate::graph::detect_format(&value) != crate::graph::Format::Ui {
        out.diagnostics.push(
            Diagnostic::new(
                Code::GraphShape,
                "this is not a UI-format workflow (it has no `nodes` and `links`)",
            )
            .primary(file, 0..1, "not the UI format")
            .help("an API-format graph needs no conversion: point `graph` at it directly"),
        );
        return out;
    }
    let conv = convert(&value, catalogue);
    let spans = JsonSpans::index_only(text, conv.problems.iter().map(|p| p.pointer.as_str()));
    out.diagnostics
        .extend(conv.problems.iter().map(|p| diagnostic(p, file, &spans)));
    out.graph = Some(conv.prompt);
    out
}
