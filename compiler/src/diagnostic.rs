//! One diagnostic model for every problem the compiler finds, and its renderers.
//!
//! Checks push [`Diagnostic`]s into a `Vec` and keep going; nothing stops at the first problem.
//! A diagnostic has a stable [`Code`], a severity, a message, labels that point into source
//! files by byte span, and an optional `help`. It renders for people with carets
//! ([`render_human`]) and for tools as JSON ([`to_json`]); the daemon stores the JSON form in
//! `failed/*.error.json`.

use std::fmt::Write as _;
use std::ops::Range;

use serde::Serialize;

use crate::source::{FileId, SourceMap};

/// How bad a problem is. Errors make `check` exit 1 and stop `build`; warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

macro_rules! codes {
    ($($variant:ident = $name:literal, $sev:ident, $comfy:expr;)*) => {
        /// Stable identifiers of every kind of problem. The string form appears in output and
        /// in the fixture folder names (`tests/fixtures/diagnostics/<code>*`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum Code { $($variant,)* }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $name,)* }
            }

            /// The severity this kind of problem has unless a check says otherwise.
            pub fn severity(self) -> Severity {
                match self { $(Code::$variant => Severity::$sev,)* }
            }

            /// The error type ComfyUI itself reports for the same problem (`error.type` of a
            /// 400, or a `node_errors[..].errors[..].type`), where it has one.
            pub fn comfy_error_type(self) -> Option<&'static str> {
                match self { $(Code::$variant => $comfy,)* }
            }
        }
    };
}

codes! {
    // Reading files.
    Io = "io", Error, None;
    TomlSyntax = "toml-syntax", Error, None;
    DefinitionInvalid = "definition-invalid", Error, None;
    GraphSyntax = "graph-syntax", Error, Some("invalid_prompt");
    GraphShape = "graph-shape", Error, Some("invalid_prompt");
    DuplicateWorkflow = "duplicate-workflow", Error, None;
    CatalogueInvalid = "catalogue-invalid", Error, None;
    // Templates.
    TemplateError = "template-error", Error, None;
    TemplateOutput = "template-output", Error, Some("invalid_prompt");
    TemplateInjection = "template-injection", Error, None;
    // Graph structure.
    DuplicateNodeId = "duplicate-node-id", Error, Some("invalid_prompt");
    LinkMissingNode = "link-missing-node", Error, Some("exception_during_validation");
    LinkBadSlot = "link-bad-slot", Error, Some("exception_during_validation");
    BadLink = "bad-link", Error, Some("exception_during_validation");
    Cycle = "cycle", Error, Some("prompt_outputs_failed_validation");
    NoOutputNode = "no-output-node", Error, Some("prompt_no_outputs");
    // Against the node catalogue.
    UnknownClass = "unknown-class", Error, Some("invalid_prompt");
    MissingInput = "missing-input", Error, Some("required_input_missing");
    UnknownInput = "unknown-input", Warning, None;
    WrongType = "wrong-type", Error, Some("invalid_input_type");
    ValueTooSmall = "value-too-small", Error, Some("value_smaller_than_min");
    ValueTooLarge = "value-too-large", Error, Some("value_bigger_than_max");
    NotInList = "not-in-list", Error, Some("value_not_in_list");
    LinkTypeMismatch = "link-type-mismatch", Error, Some("return_type_mismatch");
    ModelNotAvailable = "model-not-available", Warning, Some("value_not_in_list");
    InputFileMissing = "input-file-missing", Warning, Some("custom_validation_failed");
    // Definition inputs and outputs.
    BadBinding = "bad-binding", Error, None;
    BindingConflict = "binding-conflict", Error, None;
    TypeMismatch = "type-mismatch", Error, None;
    RangeWidened = "range-widened", Error, None;
    OptionNotAccepted = "option-not-accepted", Error, None;
    InvalidDefault = "invalid-default", Error, None;
    InputInvalid = "input-invalid", Error, None;
    OutputNotOutputNode = "output-not-output-node", Error, None;
    // UI-format graphs (converted as the front end does).
    UiBrokenLink = "ui-broken-link", Warning, None;
    UiWidgetCount = "ui-widget-count", Warning, None;
    // Lints.
    PartnerNode = "partner-node", Warning, None;
    HardcodedSeed = "hardcoded-seed", Warning, None;
    UnreachableNode = "unreachable-node", Warning, None;
    Base64Blob = "base64-blob", Warning, None;
    // Job inputs (rendering).
    JobInput = "job-input", Error, None;
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A span of a source file with something to say about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub file: FileId,
    pub span: Range<usize>,
    pub message: String,
    /// The primary label is where the problem is; secondary labels give context.
    pub primary: bool,
}

/// One problem.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub code: Code,
    pub severity: Severity,
    pub message: String,
    pub labels: Vec<Label>,
    pub help: Option<String>,
    pub notes: Vec<String>,
    /// The error type ComfyUI answers for this very problem, if it answers one: the code's
    /// [`Code::comfy_error_type`] unless the check knows better (a broken link below the
    /// output node, a problem on a node ComfyUI never validates).
    pub comfy_error_type: Option<&'static str>,
}

impl Diagnostic {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            severity: code.severity(),
            message: message.into(),
            labels: Vec::new(),
            help: None,
            notes: Vec::new(),
            comfy_error_type: code.comfy_error_type(),
        }
    }

    /// Sets the error type ComfyUI answers for this problem (`None`: it accepts the prompt).
    pub fn with_comfy_error_type(mut self, ty: Option<&'static str>) -> Self {
        self.comfy_error_type = ty;
        self
    }

    pub fn with_severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    /// Adds the primary label.
    pub fn primary(mut self, file: FileId, span: Range<usize>, message: impl Into<String>) -> Self {
        self.labels.push(Label {
            file,
            span,
            message: message.into(),
            primary: true,
        });
        self
    }

    /// Adds a secondary label.
    pub fn secondary(
        mut self,
        file: FileId,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> Self {
        self.labels.push(Label {
            file,
            span,
            message: message.into(),
            primary: false,
        });
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Counts of errors and warnings, for summaries and exit codes.
pub fn count(diags: &[Diagnostic]) -> (usize, usize) {
    let errors = diags.iter().filter(|d| d.is_error()).count();
    (errors, diags.len() - errors)
}

/// Options for [`render_human`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RenderOptions {
    /// ANSI colours, for terminals.
    pub color: bool,
}

struct Paint {
    on: bool,
}

impl Paint {
    fn wrap(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}

/// Source lines longer than this many characters are shown as a window of this width.
const MAX_LINE: usize = 120;
/// Characters of context kept before a label in a windowed line.
const WINDOW_BEFORE: usize = 30;

/// How a tab in a source line is shown (and measured, so carets line up under it).
const TAB: &str = "    ";

/// Terminal columns `s` takes when shown with tabs as [`TAB`].
fn display_width(s: &str) -> usize {
    s.chars()
        .map(|c| {
            if c == '\t' {
                TAB.len()
            } else {
                unicode_width::UnicodeWidthChar::width(c).unwrap_or(0)
            }
        })
        .sum()
}

/// Renders one diagnostic the way rustc and ruff do: a header, then each labelled line with
/// carets under the span, then notes and help.
pub fn render_human(diag: &Diagnostic, sources: &SourceMap, opts: RenderOptions) -> String {
    let paint = Paint { on: opts.color };
    let sev_color = match diag.severity {
        Severity::Error => "1;31",
        Severity::Warning => "1;33",
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}{}",
        paint.wrap(
            sev_color,
            &format!("{}[{}]", diag.severity.as_str(), diag.code)
        ),
        paint.wrap("1", &format!(": {}", diag.message))
    );

    // Primary label's file first, then others in order of appearance.
    let mut labels: Vec<&Label> = diag.labels.iter().collect();
    labels.sort_by_key(|l| !l.primary);
    let mut files: Vec<FileId> = Vec::new();
    for l in &labels {
        if !files.contains(&l.file) {
            files.push(l.file);
        }
    }
    let max_line = labels
        .iter()
        .map(|l| {
            let span = sources.clamp(l.file, l.span.clone());
            sources.get(l.file).line_col(span.start).0 + 1
        })
        .max()
        .unwrap_or(1);
    let gutter = max_line.to_string().len();
    let pad = " ".repeat(gutter);
    let blue = |s: &str| paint.wrap("1;34", s);

    for (fi, file_id) in files.iter().enumerate() {
        let file = sources.get(*file_id);
        let mut in_file: Vec<(&Label, Range<usize>)> = labels
            .iter()
            .filter(|l| l.file == *file_id)
            .map(|l| (*l, sources.clamp(*file_id, l.span.clone())))
            .collect();
        in_file.sort_by_key(|(l, span)| (span.start, !l.primary));
        // The header names where the problem is: the primary label, else the first one.
        let first = in_file
            .iter()
            .find(|(l, _)| l.primary)
            .map_or(&in_file[0].1, |(_, s)| s);
        let (line0, _) = file.line_col(first.start);
        let arrow = if fi == 0 { "-->" } else { ":::" };
        let _ = writeln!(
            out,
            "{pad}{} {}:{}:{}",
            blue(arrow),
            file.name(),
            line0 + 1,
            file.char_col(first.start) + 1
        );
        let _ = writeln!(out, "{pad} {}", blue("|"));
        let mut last_line: Option<usize> = None;
        let mut window = (0usize, 0usize);
        for (label, span) in &in_file {
            let (line, _) = file.line_col(span.start);
            let (end_line, _) = file.line_col(span.end);
            if let Some(prev) = last_line
                && line > prev + 1
            {
                let _ = writeln!(out, "{}", blue("..."));
            }
            let text = file.line(line);
            let line_chars = text.chars().count();
            let start_col = file.char_col(span.start);
            let end_col = if end_line == line {
                file.char_col(span.end)
            } else {
                line_chars
            };
            if last_line != Some(line) {
                // Very long lines (minified JSON, embedded data) are shown as a window
                // around the first label on them.
                window = if line_chars > MAX_LINE {
                    let from = start_col.saturating_sub(WINDOW_BEFORE);
                    (from, (from + MAX_LINE).min(line_chars))
                } else {
                    (0, line_chars)
                };
                let mut shown: String = text
                    .chars()
                    .skip(window.0)
                    .take(window.1 - window.0)
                    .map(|c| {
                        if c == '\t' {
                            TAB.to_owned()
                        } else {
                            c.to_string()
                        }
                    })
                    .collect();
                if window.0 > 0 {
                    shown.insert(0, '…');
                }
                if window.1 < line_chars {
                    shown.push('…');
                }
                let _ = writeln!(
                    out,
                    "{} {} {}",
                    blue(&format!("{:>gutter$}", line + 1)),
                    blue("|"),
                    shown
                );
            }
            last_line = Some(line);
            let shift = usize::from(window.0 > 0);
            let start_col = start_col.clamp(window.0, window.1);
            let end_col = end_col.clamp(window.0, window.1);
            // Carets go under what the terminal shows: tabs as shown above, wide (CJK,
            // emoji) characters two columns, combining marks none.
            let before: String = text
                .chars()
                .skip(window.0)
                .take(start_col - window.0)
                .collect();
            let inside: String = text
                .chars()
                .skip(start_col)
                .take(end_col.saturating_sub(start_col))
                .collect();
            let width = display_width(&inside).max(1);
            let start_col = display_width(&before) + shift;
            let (mark, color) = if label.primary {
                ('^', sev_color)
            } else {
                ('-', "1;34")
            };
            let marks: String = std::iter::repeat_n(mark, width).collect();
            let suffix = if end_line > line && label.message.is_empty() {
                "...".to_owned()
            } else if end_line > line {
                format!("... {}", label.message)
            } else {
                label.message.clone()
            };
            let tail = if suffix.is_empty() {
                marks
            } else {
                format!("{marks} {suffix}")
            };
            let _ = writeln!(
                out,
                "{pad} {} {}{}",
                blue("|"),
                " ".repeat(start_col),
                paint.wrap(color, &tail)
            );
        }
        let _ = writeln!(out, "{pad} {}", blue("|"));
    }
    for note in &diag.notes {
        let _ = writeln!(out, "{pad} {} note: {note}", blue("="));
    }
    if let Some(help) = &diag.help {
        let _ = writeln!(
            out,
            "{pad} {} {}: {help}",
            blue("="),
            paint.wrap("1", "help")
        );
    }
    out
}

/// Renders a list of diagnostics followed by a one-line summary.
pub fn render_all(diags: &[Diagnostic], sources: &SourceMap, opts: RenderOptions) -> String {
    let mut out = String::new();
    for d in diags {
        out.push_str(&render_human(d, sources, opts));
        out.push('\n');
    }
    out
}

#[derive(Serialize)]
struct JsonLabel<'a> {
    file: &'a str,
    /// Byte offsets into the file.
    start: usize,
    end: usize,
    /// 1-based line and character column of `start`.
    line: usize,
    column: usize,
    end_line: usize,
    end_column: usize,
    message: &'a str,
    primary: bool,
}

#[derive(Serialize)]
struct JsonDiagnostic<'a> {
    code: &'static str,
    severity: Severity,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    comfy_error_type: Option<&'static str>,
    labels: Vec<JsonLabel<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    help: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    notes: &'a [String],
}

/// The machine-readable form of a diagnostic: file names, byte offsets and 1-based
/// line/column for each label.
pub fn to_json(diag: &Diagnostic, sources: &SourceMap) -> serde_json::Value {
    let labels = diag
        .labels
        .iter()
        .map(|l| {
            let file = sources.get(l.file);
            let span = sources.clamp(l.file, l.span.clone());
            let (line, _) = file.line_col(span.start);
            let (end_line, _) = file.line_col(span.end);
            JsonLabel {
                file: file.name(),
                start: span.start,
                end: span.end,
                line: line + 1,
                column: file.char_col(span.start) + 1,
                end_line: end_line + 1,
                end_column: file.char_col(span.end) + 1,
                message: &l.message,
                primary: l.primary,
            }
        })
        .collect();
    let json = JsonDiagnostic {
        code: diag.code.as_str(),
        severity: diag.severity,
        message: &diag.message,
        comfy_error_type: diag.comfy_error_type,
        labels,
        help: diag.help.as_deref(),
        notes: &diag.notes,
    };
    serde_json::to_value(json).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_carets_under_the_span() {
        let mut sources = SourceMap::new();
        let f = sources.add("w.toml", "[inputs.steps]\nto = \"3.stepz\"\n");
        let d = Diagnostic::new(Code::BadBinding, "node `3` has no input `stepz`")
            .primary(f, 20..28, "no such input")
            .help("did you mean `steps`?");
        let text = render_human(&d, &sources, RenderOptions::default());
        assert_eq!(
            text,
            "error[bad-binding]: node `3` has no input `stepz`\n \
             --> w.toml:2:6\n  |\n2 | to = \"3.stepz\"\n  |      ^^^^^^^^ no such input\n  |\n  \
             = help: did you mean `steps`?\n"
        );
    }

    #[test]
    fn codes_are_unique() {
        let mut names: Vec<_> = Code::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }
}
