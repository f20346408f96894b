//! Extra request headers, as `--header 'Name: value'` or a table in a settings file.
//!
//! Sent on every HTTP request and on the websocket handshake (an auth token for a proxy in
//! front of ComfyUI). Values are marked sensitive, and no error message repeats one: they carry
//! tokens.

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// A bad header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    #[error("expected `Name: value` (a header name, a colon, then its value)")]
    NoColon,
    #[error("`{0}` is not a valid header name (letters, digits and `-`, no spaces)")]
    BadName(String),
    #[error("the value of `{0}` is empty")]
    EmptyValue(String),
    /// The value itself is never shown.
    #[error(
        "the value of `{0}` has a character a header cannot carry (a control character or a line break)"
    )]
    BadValue(String),
    #[error("`{0}` is set by the client itself and cannot be given")]
    Reserved(String),
}

/// Headers the HTTP client or the websocket handshake set themselves: giving them would break
/// the request.
const RESERVED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
];

/// Extra headers, in the order given; a later one with the same name replaces the earlier.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(HeaderMap);

impl Headers {
    /// One `Name: value`, as `--header` takes it.
    pub fn parse_line(line: &str) -> Result<(HeaderName, HeaderValue), HeaderError> {
        let (name, value) = line.split_once(':').ok_or(HeaderError::NoColon)?;
        Self::pair(name, value)
    }

    /// A name and its value, as a settings file gives them.
    pub fn pair(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), HeaderError> {
        let name_text = name.trim();
        let name = HeaderName::from_bytes(name_text.as_bytes())
            .map_err(|_| HeaderError::BadName(name_text.to_owned()))?;
        if RESERVED.contains(&name.as_str()) || name.as_str().starts_with("sec-websocket-") {
            return Err(HeaderError::Reserved(name_text.to_owned()));
        }
        let value = value.trim();
        if value.is_empty() {
            return Err(HeaderError::EmptyValue(name_text.to_owned()));
        }
        let mut value = HeaderValue::from_str(value)
            .map_err(|_| HeaderError::BadValue(name_text.to_owned()))?;
        value.set_sensitive(true);
        Ok((name, value))
    }

    /// Adds one, replacing an earlier one of the same name.
    pub fn insert(&mut self, name: HeaderName, value: HeaderValue) {
        self.0.insert(name, value);
    }

    /// `--header` lines; the error says which one is bad, by its position and name only.
    pub fn from_lines<'a>(
        lines: impl IntoIterator<Item = &'a str>,
    ) -> Result<Headers, HeaderError> {
        let mut h = Headers::default();
        for line in lines {
            let (name, value) = Self::parse_line(line)?;
            h.insert(name, value);
        }
        Ok(h)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The names, for logs (never the values).
    pub fn names(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }

    pub fn map(&self) -> &HeaderMap {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_line_is_split_at_the_first_colon_and_trimmed() {
        let (n, v) =
            Headers::parse_line("Authorization:  Bearer a:b ").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n.as_str(), "authorization");
        assert_eq!(v.to_str().unwrap_or_default(), "Bearer a:b");
        assert!(v.is_sensitive());
        // Debug output, as a log might show it, hides the value.
        let h = Headers::from_lines(["X-Token: secret-value"]).unwrap_or_default();
        assert!(!format!("{h:?}").contains("secret-value"));
    }

    #[test]
    fn bad_headers_are_refused_without_repeating_the_value() {
        assert_eq!(
            Headers::parse_line("Bearer secret-token"),
            Err(HeaderError::NoColon)
        );
        assert_eq!(
            Headers::parse_line("My Header: x"),
            Err(HeaderError::BadName("My Header".into()))
        );
        assert_eq!(
            Headers::parse_line("X-Token:  "),
            Err(HeaderError::EmptyValue("X-Token".into()))
        );
        let bad = Headers::parse_line("X-Token: secret\u{7}token");
        assert_eq!(bad, Err(HeaderError::BadValue("X-Token".into())));
        for (line, name) in [
            ("Host: a", "Host"),
            ("Sec-WebSocket-Key: k", "Sec-WebSocket-Key"),
        ] {
            assert_eq!(
                Headers::parse_line(line),
                Err(HeaderError::Reserved(name.into()))
            );
        }
        for e in [
            HeaderError::NoColon,
            HeaderError::BadValue("X-Token".into()),
        ] {
            assert!(!e.to_string().contains("secret"));
        }
    }

    #[test]
    fn a_later_header_replaces_an_earlier_one_of_the_same_name() {
        let h = Headers::from_lines(["X-A: 1", "x-a: 2", "X-B: 3"]).unwrap_or_default();
        assert_eq!(h.names(), ["x-a", "x-b"]);
        assert_eq!(h.map()["x-a"], "2");
    }
}
