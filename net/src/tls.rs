//! The TLS client configuration: which servers are trusted.
//!
//! Roots are the system's (through `rustls-platform-verifier`, as reqwest's own default does)
//! plus every certificate in the PEM file named by `SSL_CERT_FILE`, for a ComfyUI behind a
//! proxy whose certificate a private CA signed. On Linux the platform verifier reads
//! `SSL_CERT_FILE` *instead of* the system's store; the system's certificate folders are then
//! added explicitly, so the private CA is an addition there too.
//!
//! A machine without any system certificates (a bare container) still gets a configuration:
//! plain-http servers work, and an https one fails with "unknown issuer", whose message says to
//! set `SSL_CERT_FILE`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::ClientConfig;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The environment variable naming a PEM file of extra trusted certificates.
pub const CERT_FILE_VAR: &str = "SSL_CERT_FILE";

/// Why no TLS configuration could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The CA file cannot be read or holds no usable certificate.
    #[error("{var}=`{path}`: {reason}")]
    CaFile {
        var: &'static str,
        path: String,
        reason: String,
    },
    /// rustls refused the set-up (should not happen with its default provider).
    #[error("cannot set up TLS: {0}")]
    Setup(String),
}

/// The configuration for this process: the system's roots and `SSL_CERT_FILE`'s. Built once
/// (reading the system's store takes milliseconds, and the environment does not change).
pub fn client_config() -> Result<Arc<ClientConfig>, TlsError> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, TlsError>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let ca_file = std::env::var_os(CERT_FILE_VAR)
                .filter(|p| !p.is_empty())
                .map(PathBuf::from);
            config_with(ca_file.as_deref()).map(Arc::new)
        })
        .clone()
}

/// A configuration trusting the system's roots and the certificates in `ca_file`.
pub fn config_with(ca_file: Option<&Path>) -> Result<ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let extra = extra_roots(ca_file)?;
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    let config = match rustls_platform_verifier::Verifier::new_with_extra_roots(
        extra.clone(),
        provider.clone(),
    ) {
        Ok(verifier) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth(),
        // No system roots (a bare container): only the extra ones, possibly none, so that
        // plain http still works and https names the missing trust.
        Err(_) => builder
            .with_root_certificates(store(&extra))
            .with_no_client_auth(),
    };
    Ok(config)
}

/// What is given to the platform verifier besides what it finds itself: `ca_file`'s
/// certificates, and with them the system's (which the verifier would skip for that file).
fn extra_roots(ca_file: Option<&Path>) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let Some(path) = ca_file else {
        return Ok(Vec::new());
    };
    let mut extra = read_ca_file(path)?;
    extra.extend(system_roots());
    Ok(extra)
}

/// Every certificate in a PEM file; an unreadable file, one without certificates or one with a
/// certificate that does not parse is an error naming the file.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::CaFile {
        var: CERT_FILE_VAR,
        path: path.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(err(
            "no certificate in it (expected `-----BEGIN CERTIFICATE-----` blocks)".into(),
        ));
    }
    let mut check = RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        check
            .add(cert.clone())
            .map_err(|e| err(format!("certificate {} is not usable: {e}", i + 1)))?;
    }
    Ok(certs)
}

/// The system's CA certificates, read from its certificate folders without looking at the
/// environment (the platform verifier reads `SSL_CERT_FILE` in their place on Linux).
#[cfg(all(unix, not(target_vendor = "apple"), not(target_os = "android")))]
fn system_roots() -> Vec<CertificateDer<'static>> {
    const FOLDERS: &[&str] = &[
        "/etc/ssl/certs",
        "/etc/pki/tls/certs",
        "/etc/pki/ca-trust/extracted/pem",
    ];
    let mut out = Vec::new();
    let mut check = RootCertStore::empty();
    for folder in FOLDERS.iter().map(Path::new).filter(|p| p.is_dir()) {
        let found = rustls_native_certs::load_certs_from_paths(None, Some(folder));
        // Keep only what parses: one odd file in a system folder must not stop the rest.
        out.extend(
            found
                .certs
                .into_iter()
                .filter(|c| check.add(c.clone()).is_ok()),
        );
    }
    out
}

/// Elsewhere the platform verifier asks the OS, and `SSL_CERT_FILE` is only an addition.
#[cfg(not(all(unix, not(target_vendor = "apple"), not(target_os = "android"))))]
fn system_roots() -> Vec<CertificateDer<'static>> {
    Vec::new()
}

fn store(certs: &[CertificateDer<'static>]) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(certs.iter().cloned());
    roots
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use rustls::pki_types::{PrivateKeyDer, ServerName};
    use rustls::{ClientConnection, ServerConfig, ServerConnection};

    use super::*;

    /// A self-signed certificate for `localhost`: its PEM and a server configuration using it.
    fn server() -> (String, Arc<ServerConfig>) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .unwrap_or_else(|e| panic!("{e}"));
        let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der())
            .unwrap_or_else(|e| panic!("{e}"));
        let config = ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .and_then(|b| {
            b.with_no_client_auth()
                .with_single_cert(vec![ck.cert.der().clone()], key)
        })
        .unwrap_or_else(|e| panic!("{e}"));
        (ck.cert.pem(), Arc::new(config))
    }

    /// A handshake in memory, as `host`: the client's error if it refused the server.
    fn handshake(
        client: ClientConfig,
        server: Arc<ServerConfig>,
        host: &str,
    ) -> Result<(), rustls::Error> {
        let name = ServerName::try_from(host.to_owned()).unwrap_or_else(|e| panic!("{e}"));
        let mut c = ClientConnection::new(Arc::new(client), name)?;
        let mut s = ServerConnection::new(server)?;
        for _ in 0..20 {
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap_or_else(|e| panic!("{e}"));
            s.read_tls(&mut buf.as_slice())
                .unwrap_or_else(|e| panic!("{e}"));
            // The server's own complaints (the client's alert) are not what is tested.
            let _ = s.process_new_packets();
            let mut buf = Vec::new();
            s.write_tls(&mut buf).unwrap_or_else(|e| panic!("{e}"));
            c.read_tls(&mut buf.as_slice())
                .unwrap_or_else(|e| panic!("{e}"));
            c.process_new_packets()?;
            if !c.is_handshaking() {
                return Ok(());
            }
        }
        panic!("the handshake did not finish")
    }

    fn pem_file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}"));
        f.write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        f
    }

    #[test]
    fn a_self_signed_server_is_refused_until_its_certificate_is_named() {
        let (pem, server) = server();
        let plain = config_with(None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            handshake(plain, server.clone(), "localhost"),
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            ))
        );
        let file = pem_file(&pem);
        let trusting = config_with(Some(file.path())).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            handshake(trusting.clone(), server.clone(), "localhost"),
            Ok(())
        );
        // Trusted, but not for another name.
        let other = handshake(trusting, server, "comfy.example");
        assert!(
            matches!(
                other,
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForNameContext { .. }
                        | rustls::CertificateError::NotValidForName
                ))
            ),
            "{other:?}"
        );
    }

    #[test]
    fn the_ca_file_adds_to_the_system_roots() {
        let (pem, _) = server();
        // Two certificates in one file, as a bundle.
        let (pem2, _) = server();
        let file = pem_file(&format!("{pem}\n{pem2}"));
        let ours = read_ca_file(file.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ours.len(), 2);
        assert!(extra_roots(None).unwrap_or_default().is_empty());
        let extra = extra_roots(Some(file.path())).unwrap_or_else(|e| panic!("{e}"));
        assert!(ours.iter().all(|c| extra.contains(c)));
        if cfg!(target_os = "linux") && Path::new("/etc/ssl/certs").is_dir() {
            assert!(extra.len() > 10, "{} roots", extra.len());
        }
    }

    #[test]
    fn a_bad_ca_file_is_an_error_naming_it() {
        let missing = Path::new("/nonexistent/ca.pem");
        let e = config_with(Some(missing)).err().map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(
                |e| e.starts_with("SSL_CERT_FILE=`/nonexistent/ca.pem`: cannot read it")
            ),
            "{e:?}"
        );
        let empty = pem_file("just some text\n");
        let e = read_ca_file(empty.path()).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("no certificate in it")));
        let broken = pem_file("-----BEGIN CERTIFICATE-----\nAAAA\n");
        let e = read_ca_file(broken.path()).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("not a PEM certificate file")));
    }
}
