//! `comfyc nodes pull` against an https server with a self-signed certificate: refused, with
//! the reason, until `SSL_CERT_FILE` names the certificate; extra headers reach the server and
//! never show in the output.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use crate::cli::text;
use crate::{catalogue_text, shared};

/// An https server on loopback with a fresh self-signed certificate for `127.0.0.1`, answering
/// every request with `body`. Keeps each request's head.
struct TlsServer {
    url: String,
    /// The certificate, as a PEM file for `SSL_CERT_FILE`.
    ca: PathBuf,
    heads: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

fn serve_tls(body: String) -> TlsServer {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ck.cert.pem()).unwrap_or_else(|e| panic!("{e}"));
    let key = rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der())
        .unwrap_or_else(|e| panic!("{e}"));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .and_then(|b| {
        b.with_no_client_auth()
            .with_single_cert(vec![ck.cert.der().clone()], key)
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                continue;
            };
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            // A client that refuses the certificate ends the handshake: nothing to answer.
            let Some(head) = read_head(&mut tls) else {
                continue;
            };
            if let Ok(mut h) = seen.lock() {
                h.push(head);
            }
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(reply.as_bytes());
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    TlsServer {
        url: format!("https://{addr}"),
        ca,
        heads,
        _dir: dir,
    }
}

fn read_head(stream: &mut impl Read) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

fn pull(dir: &Path, ca: Option<&Path>, args: &[&str]) -> Output {
    pull_with(dir, ca, &[], args)
}

fn pull_with(dir: &Path, ca: Option<&Path>, env: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_comfyc"));
    cmd.args(["nodes", "pull"])
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
    if let Some(ca) = ca {
        cmd.env("SSL_CERT_FILE", ca);
    }
    cmd.envs(env.iter().copied());
    cmd.output()
        .unwrap_or_else(|e| panic!("running comfyc: {e}"))
}

#[test]
fn nodes_pull_over_https_trusts_the_certificate_only_when_ssl_cert_file_names_it() {
    let raw =
        std::fs::read_to_string(shared().join("comfyui/object_info.json")).unwrap_or_default();
    let server = serve_tls(raw);
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = tmp.path().join("o.json");
    let out_arg = out.to_str().unwrap_or_default();

    // Not trusted: refused, saying why, and nothing written.
    let o = pull(tmp.path(), None, &["--url", &server.url, "--out", out_arg]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("certificate"), "{err}");
    assert!(err.contains("unknown issuer"), "{err}");
    assert!(err.contains("SSL_CERT_FILE"), "{err}");
    assert!(!out.exists());

    // Trusted through SSL_CERT_FILE, with an auth header.
    let secret = "Bearer s3cret-t0ken-4711";
    let header = format!("Authorization: {secret}");
    let o = pull(
        tmp.path(),
        Some(&server.ca),
        &[
            "--url",
            &server.url,
            "--out",
            out_arg,
            "--header",
            &header,
            "--header",
            "X-Extra: 1",
        ],
    );
    let (stdout, stderr) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("pulled 496 node classes"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap_or_default(),
        catalogue_text()
    );
    assert!(!stdout.contains("s3cret") && !stderr.contains("s3cret"));
    let heads = server.heads.lock().map(|h| h.clone()).unwrap_or_default();
    let last = heads.last().cloned().unwrap_or_default();
    assert!(last.starts_with("GET /object_info HTTP/1.1\r\n"), "{last}");
    let lower = last.to_ascii_lowercase();
    assert!(
        lower.contains(&format!(
            "\r\nauthorization: {}\r\n",
            secret.to_ascii_lowercase()
        )),
        "{last}"
    );
    assert!(lower.contains("\r\nx-extra: 1\r\n"), "{last}");
}

#[test]
fn a_certificate_for_another_name_is_refused_as_a_name_mismatch() {
    let server = serve_tls("{}".into());
    // The certificate names 127.0.0.1; `localhost` is the same server under another name.
    let url = server.url.replace("127.0.0.1", "localhost");
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let o = pull(tmp.path(), Some(&server.ca), &["--url", &url, "--out", "-"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("not valid for `localhost`"), "{err}");
    assert!(err.contains("name mismatch"), "{err}");
}

#[test]
fn bad_header_syntax_is_a_usage_error_naming_the_flag_not_the_value() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for (arg, says) in [
        ("Bearer s3cret", "expected `Name: value`"),
        ("Bad Name: s3cret", "`Bad Name` is not a valid header name"),
        ("Host: s3cret", "`Host` is set by the client itself"),
    ] {
        let o = pull(
            tmp.path(),
            None,
            &["--url", "http://127.0.0.1:9", "--out", "-", "--header", arg],
        );
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{arg}: {err}");
        assert!(err.contains("--header"), "{arg}: {err}");
        assert!(err.contains(says), "{arg}: {err}");
        assert!(!err.contains("s3cret"), "{arg}: {err}");
    }
}

#[test]
fn a_bad_ssl_cert_file_is_named() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let missing = tmp.path().join("missing.pem");
    let o = pull(
        tmp.path(),
        Some(&missing),
        &["--url", "https://127.0.0.1:9", "--out", "-"],
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("SSL_CERT_FILE"), "{err}");
    assert!(err.contains("missing.pem"), "{err}");
}

#[test]
fn a_machine_without_trusted_certificates_still_reaches_plain_http() {
    // An empty certificate folder in place of the system's, as in a bare container: the
    // platform verifier finds no authority at all.
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let empty = tmp.path().join("certs");
    std::fs::create_dir(&empty).unwrap_or_else(|e| panic!("{e}"));
    let env = [("SSL_CERT_DIR", empty.as_path())];
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(9);
    let url = format!("http://127.0.0.1:{port}");
    let o = pull_with(tmp.path(), None, &env, &["--url", &url, "--out", "-"]);
    let err = text(&o.stderr);
    assert!(
        err.contains("could not connect: Connection refused"),
        "{err}"
    );
    // https fails at the certificate, saying what to do.
    let server = serve_tls("{}".into());
    let o = pull_with(
        tmp.path(),
        None,
        &env,
        &["--url", &server.url, "--out", "-"],
    );
    let err = text(&o.stderr);
    assert!(
        err.contains("unknown issuer") && err.contains("SSL_CERT_FILE"),
        "{err}"
    );
    // ... until SSL_CERT_FILE names its certificate.
    let o = pull_with(
        tmp.path(),
        Some(&server.ca),
        &env,
        &["--url", &server.url, "--out", "-"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
}
