//! The real `comfyc` binary, run as a user would.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::{catalogue_text, repo_root, shared};

pub(crate) fn comfyc(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_comfyc"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| panic!("running comfyc: {e}"))
}

pub(crate) fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("{e}"));
    for e in std::fs::read_dir(from)
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
    {
        let dest = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

pub(crate) fn examples_copy() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    copy_dir(&repo_root().join("examples"), tmp.path());
    tmp
}

#[test]
fn check_examples_is_clean_and_finds_the_repo_upward() {
    let ex = repo_root().join("examples");
    let o = comfyc(&ex.join("workflows"), &["check"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    assert_eq!(
        text(&o.stdout),
        "checked 5 workflows: 0 errors, 0 warnings\n"
    );
    let o = comfyc(&repo_root(), &["check", "examples", "--format", "json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert_eq!(v["errors"], 0);
    assert_eq!(v["workflows"].as_array().map(Vec::len), Some(5));
}

#[test]
fn check_reports_every_problem_with_exit_1() {
    let tmp = examples_copy();
    let wf = tmp.path().join("workflows");
    let t = std::fs::read_to_string(wf.join("txt2img.toml")).unwrap_or_default();
    std::fs::write(
        wf.join("txt2img.toml"),
        t.replace("max = 60", "max = 100000")
            .replace("to = \"6.text\"", "to = \"6.txt\""),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let g = std::fs::read_to_string(wf.join("solid-color.api.json")).unwrap_or_default();
    std::fs::write(
        wf.join("solid-color.api.json"),
        g.replace("\"ImageInvert\"", "\"ImageInvrt\""),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let o = comfyc(tmp.path(), &["check"]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("error[range-widened]") && out.contains("workflows/txt2img.toml:"),
        "{out}"
    );
    assert!(
        out.contains("error[bad-binding]") && out.contains("did you mean `6.text`?"),
        "{out}"
    );
    assert!(
        out.contains("error[unknown-class]") && out.contains("did you mean `ImageInvert`?"),
        "{out}"
    );
    assert!(
        out.ends_with("checked 5 workflows: 3 errors, 0 warnings\n"),
        "{out}"
    );
    // JSON for tools: the same problems with lines and columns.
    let o = comfyc(tmp.path(), &["check", "--format", "json"]);
    let v: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o.stdout)));
    assert_eq!(v["errors"], 3);
    let d = v["diagnostics"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["code"] == "unknown-class")
        .cloned()
        .unwrap_or_default();
    assert_eq!(d["comfy_error_type"], "invalid_prompt");
    assert_eq!(d["labels"][0]["file"], "workflows/solid-color.api.json");
    assert!(d["labels"][0]["line"].as_u64().is_some_and(|l| l > 1));
    // Nothing is built from a broken repository.
    let out = tmp.path().join("out");
    let o = comfyc(
        tmp.path(),
        &["build", "--out", out.to_str().unwrap_or_default()],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(!out.exists());
}

#[test]
fn warnings_fail_only_with_deny_warnings() {
    let tmp = examples_copy();
    let wf = tmp.path().join("workflows");
    let t = std::fs::read_to_string(wf.join("txt2img.toml")).unwrap_or_default();
    std::fs::write(
        wf.join("txt2img.toml"),
        t.replace(
            "type = \"seed\"\nto = \"3.seed\"",
            "type = \"seed\"\nto = []",
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let o = comfyc(tmp.path(), &["check"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    assert!(text(&o.stdout).contains("warning[hardcoded-seed]"));
    let o = comfyc(tmp.path(), &["check", "--deny-warnings"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn usage_and_io_errors_exit_2() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let o = comfyc(tmp.path(), &["check"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("no `comfyc.toml`"),
        "{}",
        text(&o.stderr)
    );
    let o = comfyc(tmp.path(), &["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    let o = comfyc(&repo_root().join("examples"), &["render", "txt2imgg"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("did you mean `txt2img`?"),
        "{}",
        text(&o.stderr)
    );
    let o = comfyc(
        &repo_root().join("examples"),
        &["render", "txt2img", "--set", "noequals"],
    );
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn build_writes_identical_files_twice() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for out in [&a, &b] {
        let o = comfyc(
            &repo_root().join("examples"),
            &["build", "--out", out.to_str().unwrap_or_default()],
        );
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    }
    let mut files: Vec<_> = std::fs::read_dir(&a)
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .map(|e| e.file_name())
        .collect();
    files.sort();
    assert_eq!(files.len(), 16, "{files:?}");
    assert!(
        files.iter().any(|f| f == "txt2img.uischema.json"),
        "the uiSchema sits beside the schema: {files:?}"
    );
    for f in &files {
        assert_eq!(
            std::fs::read(a.join(f)).ok(),
            std::fs::read(b.join(f)).ok(),
            "{f:?} differs"
        );
    }
    let index: Value =
        serde_json::from_slice(&std::fs::read(a.join("index.json")).unwrap_or_default())
            .unwrap_or_default();
    assert_eq!(index["workflows"].as_array().map(Vec::len), Some(5));
    // A second build into the same place changes nothing.
    let o = comfyc(
        &repo_root().join("examples"),
        &["build", "--out", a.to_str().unwrap_or_default()],
    );
    assert!(
        text(&o.stderr).contains("0 files changed"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn render_and_schema() {
    let ex = repo_root().join("examples");
    let o = comfyc(
        &ex,
        &[
            "render",
            "txt2img",
            "--set",
            "prompt=a red fox",
            "--set",
            "steps=30",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert_eq!(v["prompt"]["6"]["inputs"]["text"], "a red fox");
    assert_eq!(v["prompt"]["3"]["inputs"]["steps"], 30);
    assert!(
        text(&o.stderr).contains("seed `seed`: picked"),
        "{}",
        text(&o.stderr)
    );
    // A job file as input, with the TOML job layout.
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let job = tmp.path().join("job.toml");
    std::fs::write(
        &job,
        "workflow = \"solid-color\"\n[inputs]\ncolor = 255\nwidth = 32\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let o = comfyc(
        &ex,
        &[
            "render",
            "solid-color",
            "--inputs",
            job.to_str().unwrap_or_default(),
            "--graph-only",
        ],
    );
    let v: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o.stderr)));
    assert_eq!(v["1"]["inputs"]["color"], 255);
    assert_eq!(v["2"]["inputs"]["width"], 32);
    // Bad values: exit 1, each problem named.
    let o = comfyc(
        &ex,
        &[
            "render",
            "txt2img",
            "--set",
            "prompt=x",
            "--set",
            "steps=999",
            "--set",
            "sampler=eulr",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("input `steps`") && err.contains("input `sampler`"),
        "{err}"
    );
    let o = comfyc(&ex, &["schema", "img2img"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert_eq!(v["properties"]["image"]["x-upload"], "image");
    let o = comfyc(&ex, &["schema", "img2img", "--ui"]);
    let ui: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert_eq!(ui["image"]["ui:widget"], "file", "{ui}");
    assert_eq!(ui["ui:order"][0], "image");
}

#[test]
fn help_teaches() {
    let o = comfyc(&repo_root(), &["--help"]);
    let h = text(&o.stdout);
    for s in [
        "check",
        "build",
        "render",
        "nodes",
        "Exit status",
        "comfyc.toml",
    ] {
        assert!(h.contains(s), "{s} missing from --help:\n{h}");
    }
    for sub in [
        &["check", "--help"][..],
        &["render", "--help"],
        &["nodes", "pull", "--help"],
        &["build", "--help"],
    ] {
        let o = comfyc(&repo_root(), sub);
        assert_eq!(o.status.code(), Some(0));
        assert!(text(&o.stdout).len() > 200, "{sub:?}");
    }
}

/// A one-shot HTTP server on loopback answering every request with `status` and `body`.
fn serve(status: &'static str, body: String, requests: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(body.as_bytes());
        }
    });
    format!("http://{addr}")
}

#[test]
fn nodes_pull_writes_the_sorted_snapshot() {
    let raw =
        std::fs::read_to_string(shared().join("comfyui/object_info.json")).unwrap_or_default();
    let url = serve("200 OK", raw, 2);
    let tmp = examples_copy();
    std::fs::remove_file(tmp.path().join("nodes/object_info.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    let o = comfyc(tmp.path(), &["nodes", "pull", "--url", &url]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("pulled 496 node classes"),
        "{}",
        text(&o.stderr)
    );
    let written =
        std::fs::read_to_string(tmp.path().join("nodes/object_info.json")).unwrap_or_default();
    assert_eq!(written, catalogue_text());
    // Again over the same snapshot: nothing changed, and it says so.
    let o = comfyc(tmp.path(), &["nodes", "pull", "--url", &url]);
    assert!(
        text(&o.stderr).contains("(0 added, 0 removed, 0 changed)"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn nodes_pull_failures_are_clear() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = tmp.path().join("o.json");
    let out = out.to_str().unwrap_or_default();
    // Nothing listens on a port that was just freed.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(9);
    let o = comfyc(
        tmp.path(),
        &[
            "nodes",
            "pull",
            "--url",
            &format!("http://127.0.0.1:{port}"),
            "--out",
            out,
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("could not connect"),
        "{}",
        text(&o.stderr)
    );
    let url = serve(
        "500 Internal Server Error",
        "Server got itself in trouble".into(),
        1,
    );
    let o = comfyc(tmp.path(), &["nodes", "pull", "--url", &url, "--out", out]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("500"), "{}", text(&o.stderr));
    let url = serve("200 OK", "<html>not comfy</html>".into(), 1);
    let o = comfyc(tmp.path(), &["nodes", "pull", "--url", &url, "--out", out]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("did not answer with JSON"),
        "{}",
        text(&o.stderr)
    );
    assert!(!Path::new(out).exists());
}

#[test]
fn convert_prints_the_front_ends_graph_and_import_writes_a_definition_that_checks() {
    let tmp = examples_copy();
    let wf = tmp.path().join("workflows");
    let corpus = shared().join("corpus/era-0.3.64");
    std::fs::copy(
        corpus.join("workflows/default.json"),
        wf.join("default.json"),
    )
    .unwrap_or_else(|e| panic!("{e}"));

    // convert: the graph on stdout equals the front end's own output.
    let o = comfyc(&wf, &["convert", "default.json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let got: serde_json::Map<String, Value> =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}"));
    let truth: serde_json::Map<String, Value> = serde_json::from_str(
        &std::fs::read_to_string(corpus.join("truth/default.json")).unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(crate::ui::differences(&got, &truth), Vec::<String>::new());
    assert_eq!(text(&o.stderr), "converted 7 nodes: 0 errors, 0 warnings\n");

    // A node type the catalogue lacks is an error naming it; the rest still converts.
    let g = std::fs::read_to_string(wf.join("default.json")).unwrap_or_default();
    std::fs::write(
        wf.join("custom.json"),
        g.replace(
            "\"type\": \"VAEDecode\"",
            "\"type\": \"VAEDecodeTiledPlus\"",
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let o = comfyc(&wf, &["convert", "custom.json", "--format", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["errors"], 1);
    assert_eq!(v["diagnostics"][0]["code"], "unknown-class");
    assert!(
        v["diagnostics"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("`VAEDecodeTiledPlus`")),
        "{v}"
    );
    assert_eq!(v["graph"]["3"]["class_type"], "KSampler");
    std::fs::remove_file(wf.join("custom.json")).unwrap_or_else(|e| panic!("{e}"));

    // import: writes sd15.toml beside the graph; the repository still checks clean of errors.
    let o = comfyc(&wf, &["import", "default.json", "--name", "sd15"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let report = text(&o.stdout);
    assert!(report.contains("input `seed` ← 3.seed"), "{report}");
    assert!(
        report.contains("model `v1-5-pruned-emaonly-fp16.safetensors`"),
        "{report}"
    );
    let def = std::fs::read_to_string(wf.join("sd15.toml")).unwrap_or_default();
    assert!(def.contains("graph = \"default.json\""), "{def}");
    let o = comfyc(&wf, &["import", "default.json", "--name", "sd15"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "an existing definition is not replaced"
    );
    let o = comfyc(tmp.path(), &["check"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    assert!(
        text(&o.stdout).ends_with("checked 6 workflows: 0 errors, 0 warnings\n"),
        "{}",
        text(&o.stdout)
    );
    let o = comfyc(
        tmp.path(),
        &["render", "sd15", "--graph-only", "--set", "seed=7"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let g: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(g["3"]["inputs"]["seed"], 7);
    assert_eq!(g["6"]["inputs"]["text"], truth["6"]["inputs"]["text"]);
}

/// Seeds stop at 2^53 - 1, the largest whole number a browser keeps exact: that one renders
/// from `--set` and from job files, one more is refused naming the input and saying why.
#[test]
fn seeds_render_up_to_2_53_minus_1_and_are_refused_above() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ex = repo_root().join("examples");
    let largest = "9007199254740991";
    // (TOML integers stop at 2^63 - 1; larger ones are a TOML error before any check.)
    for seed in [largest, "9007199254740992", "9223372036854775807"] {
        let toml = tmp.path().join(format!("job-{seed}.toml"));
        std::fs::write(
            &toml,
            format!("workflow = \"txt2img\"\n[inputs]\nprompt = \"a cat\"\nseed = {seed}\n"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let json = tmp.path().join(format!("job-{seed}.json"));
        std::fs::write(
            &json,
            format!(
                r#"{{"workflow": "txt2img", "inputs": {{"prompt": "a cat", "seed": {seed}}}}}"#
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let set = format!("seed={seed}");
        let ways: [Vec<&str>; 3] = [
            vec!["--set", "prompt=a cat", "--set", &set],
            vec!["--inputs", toml.to_str().unwrap_or_default()],
            vec!["--inputs", json.to_str().unwrap_or_default()],
        ];
        for way in ways {
            let mut args = vec!["render", "txt2img", "--graph-only"];
            args.extend(way.iter().copied());
            let o = comfyc(&ex, &args);
            if seed == largest {
                assert_eq!(o.status.code(), Some(0), "{way:?}: {}", text(&o.stderr));
                let g: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(
                    g["3"]["inputs"]["seed"], 9_007_199_254_740_991_u64,
                    "{way:?}"
                );
            } else {
                assert_eq!(o.status.code(), Some(1), "{seed} {way:?}");
                let err = text(&o.stderr);
                assert!(
                    err.contains("input `seed`")
                        && err.contains("greater than the maximum of 9007199254740991")
                        && err.contains("largest whole number a browser keeps exact"),
                    "{seed} {way:?}: {err}"
                );
            }
        }
    }
}
