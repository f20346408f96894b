//! Files of job input values: `comfyc render --inputs FILE`, and the daemon's job files.
//!
//! A `.toml` or `.json` file holds one set of values, a `.jsonl` file one per line; in each,
//! the values sit at the top level or under `inputs` (the job-file layout, whose other keys
//! are the caller's). A byte-order mark is skipped in every format. Errors name the line and
//! column in the file, and values JSON cannot carry (NaN, infinities) are refused by name
//! rather than turned into `null`.

use serde_json::{Map, Value};

/// One set of input values and the 1-based line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSet {
    pub line: usize,
    pub values: Map<String, Value>,
}

/// Why an inputs file cannot be read, and where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{message}", location(*line, *column))]
pub struct InputsFileError {
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    pub message: String,
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!("line {l}, column {c}: "),
        (Some(l), None) => format!("line {l}: "),
        _ => String::new(),
    }
}

impl InputsFileError {
    fn new(line: Option<usize>, column: Option<usize>, message: impl Into<String>) -> Self {
        Self {
            line,
            column,
            message: message.into(),
        }
    }
}

/// The format of an inputs file, from its name: `.toml`, `.jsonl`/`.ndjson`, else JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Json,
    Jsonl,
}

impl Format {
    pub fn of(name: &str) -> Self {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".toml") {
            Format::Toml
        } else if lower.ends_with(".jsonl") || lower.ends_with(".ndjson") {
            Format::Jsonl
        } else {
            Format::Json
        }
    }
}

/// Parses an inputs file: one set for TOML and JSON, one per non-blank line for JSONL.
pub fn parse(format: Format, text: &str) -> Result<Vec<InputSet>, InputsFileError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match format {
        Format::Toml => {
            let table: toml::Table = toml::from_str(text).map_err(|e| {
                let (line, column) = e
                    .span()
                    .map(|s| line_col(text, s.start))
                    .map_or((None, None), |(l, c)| (Some(l), Some(c)));
                InputsFileError::new(line, column, e.message().trim().to_owned())
            })?;
            let value = toml_to_json(&toml::Value::Table(table), &mut Vec::new())
                .map_err(|m| InputsFileError::new(None, None, m))?;
            Ok(vec![InputSet {
                line: 1,
                values: values_of(value).map_err(|m| InputsFileError::new(None, None, m))?,
            }])
        }
        Format::Json => {
            let value: Value = serde_json::from_str(text).map_err(|e| json_error(&e, 0))?;
            Ok(vec![InputSet {
                line: 1,
                values: values_of(value).map_err(|m| InputsFileError::new(None, None, m))?,
            }])
        }
        Format::Jsonl => {
            let mut sets = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let value: Value = serde_json::from_str(line).map_err(|e| json_error(&e, i))?;
                let values =
                    values_of(value).map_err(|m| InputsFileError::new(Some(i + 1), None, m))?;
                sets.push(InputSet {
                    line: i + 1,
                    values,
                });
            }
            Ok(sets)
        }
    }
}

/// A JSON error at its place in the file (`first_line` lines above the text parsed).
fn json_error(e: &serde_json::Error, first_line: usize) -> InputsFileError {
    let message = e.to_string();
    // serde_json appends " at line L column C"; the location is reported on its own.
    let message = match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message,
    };
    InputsFileError::new(Some(first_line + e.line()), Some(e.column()), message)
}

/// The values of a document: its `inputs` table when it has one (the job-file layout), else
/// the whole document.
fn values_of(value: Value) -> Result<Map<String, Value>, String> {
    let value = match value {
        Value::Object(mut m) if m.get("inputs").is_some_and(Value::is_object) => {
            m.remove("inputs").unwrap_or_default()
        }
        v => v,
    };
    match value {
        Value::Object(m) => Ok(m),
        other => Err(format!(
            "expected a table of input values, found {}",
            crate::graph::kind_of(&other)
        )),
    }
}

/// A TOML value as JSON. Datetimes become their text; a NaN or infinite float is an error
/// naming where it is, since JSON (and so every input schema) has no such numbers.
pub fn toml_to_json(v: &toml::Value, path: &mut Vec<String>) -> Result<Value, String> {
    Ok(match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => (*i).into(),
        toml::Value::Float(f) => match serde_json::Number::from_f64(*f) {
            Some(n) => Value::Number(n),
            None => {
                let at = if path.is_empty() {
                    String::new()
                } else {
                    format!("`{}` is ", path.join("."))
                };
                return Err(format!(
                    "{at}`{f}`, which is not a number a job can carry (JSON has no NaN or infinity)"
                )
                .replace("`NaN`", "`nan`"));
            }
        },
        toml::Value::Boolean(b) => (*b).into(),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => {
            let mut out = Vec::with_capacity(a.len());
            for (i, item) in a.iter().enumerate() {
                path.push(i.to_string());
                out.push(toml_to_json(item, path)?);
                path.pop();
            }
            Value::Array(out)
        }
        toml::Value::Table(t) => {
            let mut out = Map::new();
            for (k, item) in t {
                path.push(k.clone());
                out.insert(k.clone(), toml_to_json(item, path)?);
                path.pop();
            }
            Value::Object(out)
        }
    })
}

/// A `--set NAME=VALUE` value for an input that is not text: JSON (`30`, `[1, 2]`,
/// `{"a": 1}`), else a TOML value (`0xff0000`, `1_000`, `inf`, `1979-05-27`, `{ a = 1 }`),
/// else the text itself (which the schema then judges).
pub fn parse_set_value(text: &str) -> Result<Value, String> {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return Ok(v);
    }
    if let Ok(mut t) = toml::from_str::<toml::Table>(&format!("v = {text}"))
        && let Some(v) = t.remove("v")
    {
        return toml_to_json(&v, &mut Vec::new());
    }
    Ok(Value::String(text.to_owned()))
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .chars()
        .count()
        + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byte_order_mark_is_skipped_in_every_format() {
        for (format, text) in [
            (Format::Json, "\u{feff}{\"color\": 5}"),
            (Format::Toml, "\u{feff}color = 5\n"),
            (Format::Jsonl, "\u{feff}{\"color\": 5}\n"),
        ] {
            let sets = parse(format, text).unwrap_or_else(|e| panic!("{format:?}: {e}"));
            assert_eq!(sets[0].values["color"], 5, "{format:?}");
        }
    }

    #[test]
    fn a_bad_jsonl_line_is_reported_at_its_line() {
        let e = parse(Format::Jsonl, "{\"a\": 1}\n\n{\"a\": x}\n")
            .err()
            .unwrap_or_else(|| panic!("expected an error"));
        assert_eq!((e.line, e.column), (Some(3), Some(7)));
        assert_eq!(e.to_string(), "line 3, column 7: expected value");
    }

    #[test]
    fn non_finite_numbers_are_refused_by_name() {
        for text in [
            "color = nan\n",
            "color = -inf\n",
            "[inputs]\ncolor = [1, inf]\n",
        ] {
            let e = parse(Format::Toml, text)
                .err()
                .unwrap_or_else(|| panic!("{text}: expected an error"));
            assert!(
                e.message.contains("not a number a job can carry") && e.message.contains("color"),
                "{e}"
            );
            assert!(!e.message.contains("null"), "{e}");
        }
    }

    #[test]
    fn set_values_accept_what_toml_job_files_accept() {
        assert_eq!(parse_set_value("0xff0000"), Ok(Value::from(0xff0000)));
        assert_eq!(parse_set_value("1_000"), Ok(Value::from(1000)));
        assert_eq!(parse_set_value("[1, 2]"), Ok(serde_json::json!([1, 2])));
        assert_eq!(
            parse_set_value("{ a = 1 }"),
            Ok(serde_json::json!({"a": 1}))
        );
        assert_eq!(parse_set_value("1979-05-27"), Ok(Value::from("1979-05-27")));
        assert_eq!(parse_set_value("red"), Ok(Value::from("red")));
        assert!(parse_set_value("nan").is_err());
    }
}
