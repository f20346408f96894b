//! Bearer tokens for `comfyd serve`: read from a file, compared in constant time, each with the
//! scopes it grants.
//!
//! The file has one token per line: `TOKEN` (every scope) or `TOKEN read,submit,cancel`.
//! Blank lines and lines starting with `#` are skipped. Scopes: `read` (workflows, runs, their
//! outputs and events), `submit` (start runs), `cancel` (cancel runs).

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Read,
    Submit,
    Cancel,
}

impl Scope {
    fn parse(s: &str) -> Option<Scope> {
        match s {
            "read" => Some(Scope::Read),
            "submit" => Some(Scope::Submit),
            "cancel" => Some(Scope::Cancel),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Submit => "submit",
            Scope::Cancel => "cancel",
        }
    }
}

/// One token: the sha256 of its text (so every comparison is over 32 bytes, whatever the
/// lengths) and its scopes.
#[derive(Clone)]
struct Token {
    digest: [u8; 32],
    scopes: Vec<Scope>,
}

/// The tokens of a file. Never printed: `Debug` shows only how many there are.
#[derive(Clone, Default)]
pub struct Tokens(Vec<Token>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.0.len())
    }
}

/// What a request's `Authorization` header amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No token, a malformed header, or a token nobody configured: 401.
    Unauthenticated,
    /// A known token without the scope: 403.
    Forbidden,
}

fn digest(text: &[u8]) -> [u8; 32] {
    Sha256::digest(text).into()
}

impl Tokens {
    /// Parses a token file's text; errors name the line (never the token).
    pub fn parse(text: &str, file: &Path) -> Result<Tokens, String> {
        let mut out = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (token, scopes) = match line.split_once(char::is_whitespace) {
                Some((t, s)) => (t, Some(s.trim())),
                None => (line, None),
            };
            if token.len() < 16 {
                return Err(format!(
                    "{}:{}: a token must be at least 16 characters",
                    file.display(),
                    n + 1
                ));
            }
            let scopes = match scopes {
                None => vec![Scope::Read, Scope::Submit, Scope::Cancel],
                Some(list) => {
                    let mut v = Vec::new();
                    for s in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        if s == "none" {
                            continue;
                        }
                        v.push(Scope::parse(s).ok_or_else(|| {
                            format!(
                                "{}:{}: unknown scope `{s}` (use read, submit, cancel, or none)",
                                file.display(),
                                n + 1
                            )
                        })?);
                    }
                    v
                }
            };
            out.push(Token {
                digest: digest(token.as_bytes()),
                scopes,
            });
        }
        if out.is_empty() {
            return Err(format!("{}: no token in the file", file.display()));
        }
        Ok(Tokens(out))
    }

    pub fn load(file: &Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        Tokens::parse(&text, file)
    }

    /// Judges an `Authorization` header value against `scope`. Every configured token is
    /// compared, each in constant time, so the time taken says nothing about which matched.
    pub fn check(&self, header: Option<&str>, scope: Scope) -> Verdict {
        let Some(given) = header
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
        else {
            return Verdict::Unauthenticated;
        };
        let given = digest(given.as_bytes());
        let mut found: Option<&Token> = None;
        for t in &self.0 {
            if bool::from(t.digest.ct_eq(&given)) {
                found = Some(t);
            }
        }
        match found {
            None => Verdict::Unauthenticated,
            Some(t) if t.scopes.contains(&scope) => Verdict::Allowed,
            Some(_) => Verdict::Forbidden,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::parse(
            "# ops\nall-of-it-0123456789\nreader-0123456789ab read\nnothing-0123456789ab none\n\n",
            Path::new("t"),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn tokens_grant_their_scopes_and_nothing_else() {
        let t = tokens();
        let b = |s: &str| format!("Bearer {s}");
        assert_eq!(
            t.check(Some(&b("all-of-it-0123456789")), Scope::Cancel),
            Verdict::Allowed
        );
        assert_eq!(
            t.check(Some(&b("reader-0123456789ab")), Scope::Read),
            Verdict::Allowed
        );
        assert_eq!(
            t.check(Some(&b("reader-0123456789ab")), Scope::Submit),
            Verdict::Forbidden
        );
        assert_eq!(
            t.check(Some(&b("nothing-0123456789ab")), Scope::Read),
            Verdict::Forbidden
        );
        assert_eq!(
            t.check(Some(&b("reader-0123456789a")), Scope::Read),
            Verdict::Unauthenticated,
            "a prefix is not the token"
        );
        assert_eq!(t.check(None, Scope::Read), Verdict::Unauthenticated);
        assert_eq!(
            t.check(Some("Basic abc"), Scope::Read),
            Verdict::Unauthenticated
        );
        assert_eq!(
            t.check(Some("Bearer "), Scope::Read),
            Verdict::Unauthenticated
        );
    }

    #[test]
    fn bad_files_name_the_line_and_never_the_token() {
        for (text, want) in [
            ("short\n", ":1: a token must be at least 16"),
            ("\nlong-enough-token-1 write\n", ":2: unknown scope `write`"),
            ("# only a comment\n", "no token"),
        ] {
            let e = Tokens::parse(text, Path::new("tokens.txt"))
                .err()
                .unwrap_or_default();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains("long-enough"), "{e}");
        }
        assert_eq!(format!("{:?}", tokens()), "Tokens(3 configured)");
    }
}
