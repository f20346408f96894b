//! What an error chain says went wrong.
//!
//! HTTP and websocket libraries wrap the cause in layers ("error sending request", "client
//! error (Connect)"); a user needs the innermost one ("Connection refused", "invalid peer
//! certificate"). A TLS failure is found wherever it sits in the chain, and said in words with
//! what to do about it.

use std::error::Error;

use rustls::CertificateError;

use crate::tls::CERT_FILE_VAR;

/// The rustls error somewhere in `err`'s chain, if any: a TLS failure (a certificate not
/// trusted or not valid for the name, a server not speaking TLS), which retrying will not
/// fix.
pub fn tls_error<'a>(err: &'a (dyn Error + 'static)) -> Option<&'a rustls::Error> {
    chain(err).find_map(|e| e.downcast_ref::<rustls::Error>())
}

/// Why `err` happened, in a few words: a TLS failure explained, else the innermost cause
/// (the outer layers repeat the URL or say only that a request failed).
pub fn describe(err: &(dyn Error + 'static)) -> String {
    if let Some(tls) = tls_error(err) {
        return explain_tls(tls);
    }
    chain(err)
        .map(|e| e.to_string())
        .filter(|m| !m.trim().is_empty())
        .last()
        .unwrap_or_else(|| "unknown error".into())
}

/// A TLS failure in words, with what to do about it.
pub fn explain_tls(err: &rustls::Error) -> String {
    let trust = format!(
        "if a private CA signed it, set {CERT_FILE_VAR} to a PEM file with that CA's certificate"
    );
    match err {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => format!(
                "the server's certificate is signed by an authority this machine does not trust \
                 (unknown issuer); {trust}"
            ),
            CertificateError::NotValidForName => {
                "the server's certificate is not valid for this host name (name mismatch); \
                 use the name the certificate was issued for"
                    .into()
            }
            CertificateError::NotValidForNameContext {
                expected,
                presented,
            } => format!(
                "the server's certificate is not valid for `{}` (name mismatch): it names {}",
                expected.to_str(),
                if presented.is_empty() {
                    "no host".to_owned()
                } else {
                    presented.join(", ")
                }
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("the server's certificate has expired ({err})")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                format!(
                    "the server's certificate is not valid yet; is this machine's clock right? ({err})"
                )
            }
            _ => format!("the server's certificate was refused: {err}"),
        },
        rustls::Error::InvalidMessage(_) => format!(
            "the TLS handshake failed: {err}; does the server speak https on that port (try http://)?"
        ),
        _ => format!("the TLS handshake failed: {err}"),
    }
}

/// `err` and its causes, outermost first. An `io::Error` wrapping another error does not
/// give it as its source (it shows its message instead), so it is looked into: TLS streams
/// report a handshake failure as an `io::Error` wrapping the rustls error, sometimes twice.
fn chain<'a>(err: &'a (dyn Error + 'static)) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(err), |&e| cause(e))
}

fn cause<'a>(e: &'a (dyn Error + 'static)) -> Option<&'a (dyn Error + 'static)> {
    match e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        Some(inner) => Some(inner),
        None => e.source(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("error sending request for url (https://comfy.example/object_info)")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("client error (Connect)")]
    struct Middle(#[source] std::io::Error);

    fn wrapped(inner: std::io::Error) -> Outer {
        Outer(Middle(inner))
    }

    #[test]
    fn the_innermost_cause_is_given() {
        let e = wrapped(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        ));
        assert_eq!(describe(&e), "Connection refused (os error 111)");
        assert!(tls_error(&e).is_none());
    }

    #[test]
    fn a_tls_failure_inside_an_io_error_is_found_and_explained() {
        // As hyper-rustls reports it: an I/O error in an I/O error.
        let tls = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let e = wrapped(std::io::Error::other(io));
        assert!(matches!(
            tls_error(&e),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            ))
        ));
        let text = describe(&e);
        assert!(text.contains("unknown issuer"), "{text}");
        assert!(text.contains("SSL_CERT_FILE"), "{text}");
    }

    #[test]
    fn a_name_mismatch_names_both_names() {
        let name = rustls::pki_types::ServerName::try_from("comfy.example")
            .unwrap_or_else(|e| panic!("{e}"));
        let tls = rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            expected: name.to_owned(),
            presented: vec!["DnsName(\"localhost\")".into()],
        });
        let text = explain_tls(&tls);
        assert!(text.contains("`comfy.example`"), "{text}");
        assert!(text.contains("localhost"), "{text}");
        assert!(text.contains("name mismatch"), "{text}");
    }
}
