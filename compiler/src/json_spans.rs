//! Byte spans for the values of a JSON document, by JSON pointer.
//!
//! `serde_json` parses the graph but forgets where things were. This scanner walks the same
//! text once and records, for every object member and array element, the span of its value
//! and (for members) of its key, so checks can point at `"class_type": "Nope"` in the graph
//! file. It also reports duplicate keys, which `serde_json` silently collapses (ComfyUI would
//! too, so a duplicated node id silently loses a node).
//!
//! The scanner never panics: on text that is not valid JSON it stops and keeps what it found.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

/// Spans of one JSON document.
#[derive(Debug, Default, Clone)]
pub struct JsonSpans {
    values: HashMap<String, Range<usize>>,
    keys: HashMap<String, Range<usize>>,
    /// `(pointer of the member, span of its first key, span of the repeated key)`.
    pub duplicates: Vec<(String, Range<usize>, Range<usize>)>,
}

impl JsonSpans {
    pub fn index(text: &str) -> Self {
        let mut s = Scanner {
            b: text.as_bytes(),
            text,
            i: 0,
            out: JsonSpans::default(),
            only: None,
        };
        s.ws();
        let _ = s.value(String::new(), 0);
        s.out
    }

    /// Like [`JsonSpans::index`], recording only `wanted` pointers and their ancestors: for
    /// large documents (UI-format workflows) where a few spans are needed.
    pub fn index_only<'p>(text: &str, wanted: impl IntoIterator<Item = &'p str>) -> Self {
        let mut prefixes = HashSet::new();
        for w in wanted {
            let mut p = w;
            loop {
                if !prefixes.insert(p.to_owned()) {
                    break;
                }
                match p.rfind('/') {
                    Some(i) => p = &p[..i],
                    None => break,
                }
            }
        }
        prefixes.insert(String::new());
        let mut s = Scanner {
            b: text.as_bytes(),
            text,
            i: 0,
            out: JsonSpans::default(),
            only: Some(prefixes),
        };
        s.ws();
        let _ = s.value(String::new(), 0);
        s.out
    }

    /// Span of the value at `pointer` (`""` is the whole document).
    pub fn value(&self, pointer: &str) -> Option<Range<usize>> {
        self.values.get(pointer).cloned()
    }

    /// Span of the key of the member at `pointer`, or of its value when there is no key.
    pub fn key(&self, pointer: &str) -> Option<Range<usize>> {
        self.keys
            .get(pointer)
            .cloned()
            .or_else(|| self.value(pointer))
    }

    /// The best span for `pointer`: its value, else the nearest ancestor's.
    pub fn nearest(&self, pointer: &str) -> Range<usize> {
        let mut p = pointer;
        loop {
            if let Some(r) = self.values.get(p) {
                return r.clone();
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return 0..0,
            }
        }
    }
}

/// Escapes one reference token of a JSON pointer (RFC 6901).
pub fn escape_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Builds a JSON pointer from reference tokens.
pub fn pointer<'a>(tokens: impl IntoIterator<Item = &'a str>) -> String {
    let mut p = String::new();
    for t in tokens {
        p.push('/');
        p.push_str(&escape_token(t));
    }
    p
}

const MAX_DEPTH: usize = 256;

struct Scanner<'a> {
    b: &'a [u8],
    text: &'a str,
    i: usize,
    out: JsonSpans,
    /// Pointers to record (with their ancestors); `None` records every one.
    only: Option<HashSet<String>>,
}

impl Scanner<'_> {
    fn ws(&mut self) {
        while let Some(c) = self.b.get(self.i) {
            if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn value(&mut self, ptr: String, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        let start = self.i;
        if self.only.as_ref().is_some_and(|o| !o.contains(&ptr)) {
            return self.skip();
        }
        match self.peek()? {
            b'{' => {
                self.i += 1;
                let mut seen: HashMap<String, ()> = HashMap::new();
                self.ws();
                if self.peek()? == b'}' {
                    self.i += 1;
                } else {
                    loop {
                        self.ws();
                        let kstart = self.i;
                        let key = self.string()?;
                        let kspan = kstart..self.i;
                        let child = format!("{ptr}/{}", escape_token(&key));
                        if seen.insert(key, ()).is_some() {
                            let first = self.out.keys.get(&child).cloned().unwrap_or(kspan.clone());
                            self.out
                                .duplicates
                                .push((child.clone(), first, kspan.clone()));
                        }
                        // The last occurrence wins, as it does for serde_json and ComfyUI.
                        self.out.keys.insert(child.clone(), kspan);
                        self.ws();
                        if self.peek()? != b':' {
                            return None;
                        }
                        self.i += 1;
                        self.ws();
                        self.value(child, depth + 1)?;
                        self.ws();
                        match self.peek()? {
                            b',' => self.i += 1,
                            b'}' => {
                                self.i += 1;
                                break;
                            }
                            _ => return None,
                        }
                    }
                }
            }
            b'[' => {
                self.i += 1;
                self.ws();
                if self.peek()? == b']' {
                    self.i += 1;
                } else {
                    let mut n = 0usize;
                    loop {
                        self.ws();
                        self.value(format!("{ptr}/{n}"), depth + 1)?;
                        n += 1;
                        self.ws();
                        match self.peek()? {
                            b',' => self.i += 1,
                            b']' => {
                                self.i += 1;
                                break;
                            }
                            _ => return None,
                        }
                    }
                }
            }
            b'"' => {
                self.string()?;
            }
            _ => {
                while let Some(c) = self.peek() {
                    if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    self.i += 1;
                }
                if self.i == start {
                    return None;
                }
            }
        }
        self.out.values.insert(ptr, start..self.i);
        Some(())
    }

    /// Moves past one value without recording anything.
    fn skip(&mut self) -> Option<()> {
        let mut depth = 0usize;
        loop {
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    loop {
                        match self.peek()? {
                            b'\\' => self.i += 2,
                            b'"' => {
                                self.i += 1;
                                break;
                            }
                            _ => self.i += 1,
                        }
                    }
                }
                b'{' | b'[' => {
                    depth += 1;
                    self.i += 1;
                }
                b'}' | b']' => {
                    if depth == 0 {
                        return Some(());
                    }
                    depth -= 1;
                    self.i += 1;
                }
                b',' if depth == 0 => return Some(()),
                _ => self.i += 1,
            }
            if depth == 0 && matches!(self.b.get(self.i.wrapping_sub(1)), Some(b'"' | b'}' | b']'))
            {
                return Some(());
            }
        }
    }

    /// Scans a string literal and returns its decoded value.
    fn string(&mut self) -> Option<String> {
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.i;
        self.i += 1;
        let mut escaped = false;
        loop {
            match self.peek()? {
                b'\\' => {
                    escaped = true;
                    self.i += 2;
                }
                b'"' => {
                    self.i += 1;
                    break;
                }
                _ => self.i += 1,
            }
        }
        let raw = self.text.get(start..self.i)?;
        if escaped {
            serde_json::from_str(raw).ok()
        } else {
            Some(raw[1..raw.len() - 1].to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_only_what_is_wanted() {
        let text = r#"{"nodes": [{"id": 1, "pos": [1, 2], "t": "a,]}"}, {"id": 2, "x": {"y": [3]}}], "links": [[1, 2]], "z": 7}"#;
        let all = JsonSpans::index(text);
        let some = JsonSpans::index_only(text, ["/nodes/1/id", "/z"]);
        for p in ["/nodes/1/id", "/nodes/1", "/nodes", "", "/z"] {
            assert_eq!(some.value(p), all.value(p), "{p}");
        }
        assert_eq!(some.value("/nodes/0/id"), None);
        assert_eq!(some.value("/links/0"), None);
        assert_eq!(
            some.nearest("/nodes/1/id/x"),
            all.value("/nodes/1/id").unwrap_or(0..0)
        );
    }

    #[test]
    fn indexes_values_and_keys() {
        let text = r#"{"3": {"class_type": "KSampler", "inputs": {"seed": 5, "model": ["4", 0]}},
 "a/b": [1, {"x": "y\"z"}]}"#;
        let s = JsonSpans::index(text);
        assert_eq!(
            &text[s.value("/3/class_type").unwrap_or(0..0)],
            "\"KSampler\""
        );
        assert_eq!(&text[s.key("/3/inputs/seed").unwrap_or(0..0)], "\"seed\"");
        assert_eq!(&text[s.value("/3/inputs/model/1").unwrap_or(0..0)], "0");
        assert_eq!(&text[s.value("/a~1b/1/x").unwrap_or(0..0)], "\"y\\\"z\"");
        assert_eq!(
            &text[s.nearest("/3/inputs/nope")],
            r#"{"seed": 5, "model": ["4", 0]}"#
        );
    }

    #[test]
    fn reports_duplicate_keys() {
        let text = r#"{"1": {}, "2": {}, "1": {"x": 1}}"#;
        let s = JsonSpans::index(text);
        assert_eq!(s.duplicates.len(), 1);
        assert_eq!(s.duplicates[0].0, "/1");
        assert_eq!(s.duplicates[0].1, 1..4);
        assert_eq!(&text[s.duplicates[0].2.clone()], "\"1\"");
        assert_eq!(s.duplicates[0].2.start, 19);
    }

    #[test]
    fn never_panics_on_garbage() {
        for t in [
            "", "{", "{\"a\"", "[1,", "\"\\", "{\"a\":}", "]]]", "{\"\\u12",
        ] {
            let _ = JsonSpans::index(t);
        }
        let deep = "[".repeat(10_000);
        let _ = JsonSpans::index(&deep);
    }
}
