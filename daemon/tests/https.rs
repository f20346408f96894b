//! comfyd and its client against ComfyUI behind https: the simulator behind a TLS proxy with a
//! fresh self-signed certificate. Refused (quickly, saying why) until `SSL_CERT_FILE` names
//! the certificate; then jobs run over https and wss, and `--header` reaches every request and
//! the websocket handshake without ever showing in the log.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use comfy_sim::Timing;
use comfyd::client::{Client, ClientError, Hub, RunOptions};
use common::{drop_job, examples, names, start_sim};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What each client connection sent, decrypted.
type Sent = Arc<Mutex<Vec<Arc<Mutex<Vec<u8>>>>>>;

/// A TLS-terminating proxy on loopback in front of `upstream` (`127.0.0.1:PORT`), with a
/// self-signed certificate for `127.0.0.1`. Keeps what each client sent, decrypted.
struct TlsProxy {
    url: String,
    /// The certificate, as a PEM file for `SSL_CERT_FILE`.
    ca: PathBuf,
    sent: Sent,
    _dir: tempfile::TempDir,
}

async fn tls_proxy(upstream: String) -> TlsProxy {
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
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let sent: Sent = Arc::default();
    let streams = sent.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, upstream, streams) =
                (acceptor.clone(), upstream.clone(), streams.clone());
            tokio::spawn(async move {
                // A client refusing the certificate ends the handshake here.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(up) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let log = Arc::new(Mutex::new(Vec::new()));
                if let Ok(mut s) = streams.lock() {
                    s.push(log.clone());
                }
                let (mut client_r, mut client_w) = tokio::io::split(tls);
                let (mut up_r, mut up_w) = up.into_split();
                let to_upstream = async {
                    let mut buf = vec![0u8; 16 << 10];
                    loop {
                        let n = match client_r.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if let Ok(mut l) = log.lock() {
                            l.extend_from_slice(&buf[..n]);
                        }
                        if up_w.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = up_w.shutdown().await;
                };
                let to_client = async {
                    let _ = tokio::io::copy(&mut up_r, &mut client_w).await;
                    let _ = client_w.shutdown().await;
                };
                tokio::join!(to_upstream, to_client);
            });
        }
    });
    TlsProxy {
        url: format!("https://{addr}"),
        ca,
        sent,
        _dir: dir,
    }
}

impl TlsProxy {
    /// The head of every HTTP request clients sent through the proxy (request line and
    /// headers, lowercased), websocket handshakes included.
    fn request_heads(&self) -> Vec<String> {
        let streams: Vec<Vec<u8>> = self
            .sent
            .lock()
            .map(|s| {
                s.iter()
                    .map(|l| l.lock().map(|l| l.clone()).unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default();
        let mut heads = Vec::new();
        for bytes in streams {
            let text = String::from_utf8_lossy(&bytes).to_ascii_lowercase();
            let mut current: Option<String> = None;
            for line in text.split("\r\n") {
                let starts = ["get /", "post /"].iter().any(|m| line.starts_with(m))
                    && line.ends_with(" http/1.1");
                match &mut current {
                    None if starts => current = Some(format!("{line}\n")),
                    None => {}
                    Some(_) if line.is_empty() => heads.extend(current.take()),
                    Some(head) => {
                        head.push_str(line);
                        head.push('\n');
                    }
                }
            }
        }
        heads
    }
}

/// `127.0.0.1:PORT` of the simulator.
fn addr_of(sim: &comfy_sim::Sim) -> String {
    sim.url().trim_start_matches("http://").to_owned()
}

/// Runs `comfyd run --until-idle` against `url`; kills it and fails after `limit` (it must
/// end by itself: a job that waits for a refused server would wait a day).
fn run_comfyd(
    root: &Path,
    url: &str,
    ca: Option<&Path>,
    extra: &[&str],
    limit: Duration,
) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_comfyd"));
    cmd.args(["run", "--jobs"])
        .arg(root.join("jobs"))
        .arg("--workflows")
        .arg(examples())
        .arg("--outputs")
        .arg(root.join("outputs"))
        .args(["--comfy-url", url, "--settle-ms", "0", "--until-idle"])
        .args(extra)
        .current_dir(root)
        // Every library's trace: header values must not show even there.
        .env("COMFYD_LOG", "trace")
        .env("NO_COLOR", "1")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(ca) = ca {
        cmd.env("SSL_CERT_FILE", ca);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting comfyd: {e}"));
    // Drained while it runs: a trace log outgrows a pipe's buffer.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap_or_else(|e| panic!("{e}")) {
            break s;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let err = stderr.join().unwrap_or_default();
            let err = String::from_utf8_lossy(&err);
            panic!(
                "comfyd still ran after {limit:?}; the end of its log:\n{}",
                &err[err.len().saturating_sub(4000)..]
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

const SECRET: &str = "s3cret-t0ken-0451";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_over_https_and_wss_once_ssl_cert_file_names_the_certificate() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let sim = start_sim(&tmp.path().join("sim"), Timing::default()).await;
    let proxy = tls_proxy(addr_of(&sim)).await;
    drop_job(
        &tmp.path().join("jobs"),
        "hello.toml",
        "workflow = \"solid-color\"\n[inputs]\ncolor = 0x3366ff\nwidth = 16\nheight = 8\n",
    );
    let header = format!("X-Token: {SECRET}");
    let root = tmp.path().to_owned();
    let (url, ca) = (proxy.url.clone(), proxy.ca.clone());
    let out = tokio::task::spawn_blocking(move || {
        run_comfyd(
            &root,
            &url,
            Some(&ca),
            &["--header", &header, "--header", "X-Team: render"],
            Duration::from_secs(120),
        )
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{log}");
    assert_eq!(
        names(&tmp.path().join("jobs/done")),
        ["hello.toml"],
        "{log}"
    );
    assert!(tmp.path().join("outputs/hello/manifest.json").is_file());
    assert!(
        !log.contains(SECRET),
        "a header value is in the log:\n{log}"
    );

    let heads = proxy.request_heads();
    let seen = |start: &str| heads.iter().any(|h| h.starts_with(start));
    // The event socket went through TLS (wss), as did submitting and downloading.
    assert!(seen("get /ws?clientid="), "{heads:#?}");
    assert!(seen("post /prompt "), "{heads:#?}");
    assert!(seen("get /view?"), "{heads:#?}");
    let token = format!("\nx-token: {SECRET}\n");
    for head in &heads {
        assert!(head.contains(&token), "without the header:\n{head}");
        assert!(
            head.contains("\nx-team: render\n"),
            "without the header:\n{head}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_certificate_stops_comfyd_at_once_saying_why() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let sim = start_sim(&tmp.path().join("sim"), Timing::default()).await;
    let proxy = tls_proxy(addr_of(&sim)).await;
    drop_job(
        &tmp.path().join("jobs"),
        "hello.toml",
        "workflow = \"solid-color\"\n[inputs]\ncolor = 1\nwidth = 8\nheight = 8\n",
    );
    let root = tmp.path().to_owned();
    let url = proxy.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        run_comfyd(&root, &url, None, &[], Duration::from_secs(60))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("unknown issuer"), "{err}");
    assert!(err.contains("SSL_CERT_FILE"), "{err}");
    // Nothing was taken, nothing failed: the job waits for a daemon that can reach ComfyUI.
    assert!(names(&tmp.path().join("jobs/failed")).is_empty());
    assert!(proxy.request_heads().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reports_a_refused_certificate_as_final_on_http_the_socket_and_the_hub() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let sim = start_sim(&tmp.path().join("sim"), Timing::default()).await;
    let proxy = tls_proxy(addr_of(&sim)).await;
    // This process does not trust the proxy's fresh certificate, whatever SSL_CERT_FILE says.
    let client = Client::new(&proxy.url).unwrap_or_else(|e| panic!("{e}"));
    let e = client.system_stats().await.err();
    assert!(
        matches!(&e, Some(ClientError::Tls { reason, .. }) if reason.contains("unknown issuer")),
        "{e:?}"
    );
    assert!(e.is_some_and(|e| !e.is_transient()));
    let e = client.connect("tls-test").await.err();
    assert!(matches!(e, Some(ClientError::Tls { .. })), "{e:?}");
    // A prompt routed through the shared socket fails with the cause instead of waiting.
    let hub = Hub::start(client.clone());
    let opts = RunOptions {
        hub: Some(hub),
        ..RunOptions::default()
    };
    let r = client
        .run_prompt(&serde_json::json!({}), &opts, &mut |_| {})
        .await;
    assert!(matches!(r, Err(ClientError::Tls { .. })), "{r:?}");
}

#[test]
fn bad_header_syntax_is_a_usage_error_naming_the_flag_not_the_value() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for (arg, says) in [
        ("Bearer s3cret", "--header: expected `Name: value`"),
        (
            "Bad Name: s3cret",
            "--header: `Bad Name` is not a valid header name",
        ),
    ] {
        let out = run_comfyd(
            tmp.path(),
            "http://127.0.0.1:9",
            None,
            &["--header", arg],
            Duration::from_secs(30),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{arg}: {err}");
        assert!(err.contains(says), "{arg}: {err}");
        assert!(!err.contains("s3cret"), "{arg}: {err}");
    }
}
