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

pub use convert::{Conversion, UiProblem, UiProblemKind, convert, is_front_end_widget};

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
