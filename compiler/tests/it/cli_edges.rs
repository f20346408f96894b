//! The real binary at its edges: closed pipes, input files and `--set` values, JSON output.

use std::process::{Command, Stdio};

use serde_json::Value;

use crate::cli::{comfyc, examples_copy, text};
use crate::repo_root;

#[test]
fn a_closed_stdout_ends_quietly() {
    let ex = repo_root().join("examples");
    let cases: [&[&str]; 5] = [
        &["render", "solid-color", "--set", "color=1"],
        &["check"],
        &["check", "--format", "json"],
        &["schema", "txt2img"],
        &["--help"],
    ];
    for args in cases {
        // The reader is gone before comfyc writes a byte, as with `| head -0` or `| true`.
        let (reader, writer) = std::io::pipe().unwrap_or_else(|e| panic!("{e}"));
        drop(reader);
        let o = Command::new(env!("CARGO_BIN_EXE_comfyc"))
            .args(args)
            .current_dir(&ex)
            .env("NO_COLOR", "1")
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap_or_else(|e| panic!("running comfyc: {e}"));
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn set_and_input_files_take_what_toml_takes() {
    let ex = repo_root().join("examples");
    let render = |args: &[&str]| {
        let mut all = vec!["render", "solid-color", "--graph-only"];
        all.extend_from_slice(args);
        comfyc(&ex, &all)
    };
    let o = render(&["--set", "color=0xff0000"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert_eq!(v["1"]["inputs"]["color"], 0xff0000);

    let o = render(&["--set", "color=nan"]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(err.contains("`nan`") && !err.contains("null"), "{err}");

    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = |name: &str, bytes: &[u8]| {
        let p = tmp.path().join(name);
        std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("{e}"));
        p.to_string_lossy().into_owned()
    };
    let toml_nan = file("nan.toml", b"color = nan\n");
    let o = render(&["--inputs", &toml_nan]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(
        err.contains("`color` is `nan`") && !err.contains("null is not"),
        "{err}"
    );

    let bom = file("bom.json", b"\xef\xbb\xbf{\"color\": 7}");
    let o = render(&["--inputs", &bom]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert_eq!(v["1"]["inputs"]["color"], 7);

    let date = file("date.toml", b"color = 1979-05-27\n");
    let o = render(&["--inputs", &date]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("\"1979-05-27\" is not of type \"integer\"")
            && !err.contains("__toml_private"),
        "{err}"
    );

    let jsonl = file(
        "jobs.jsonl",
        b"{\"inputs\": {\"color\": 1}}\n\n{\"inputs\": {\"color\": 3}}\n{\"color\": x}\n",
    );
    let o = render(&["--inputs", &jsonl]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(err.contains("line 4, column 11"), "{err}");
    let jsonl = file(
        "jobs.jsonl",
        b"{\"inputs\": {\"color\": 1}}\n\n{\"inputs\": {\"color\": 3}}\n",
    );
    let o = render(&["--inputs", &jsonl]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("--line N"), "{}", text(&o.stderr));
    let o = render(&["--inputs", &jsonl, "--line", "3"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert_eq!(v["1"]["inputs"]["color"], 3);
}

#[test]
fn check_json_names_the_failing_definitions() {
    let tmp = examples_copy();
    let wf = tmp.path().join("workflows");
    let g = std::fs::read_to_string(wf.join("solid-color.api.json")).unwrap_or_default();
    std::fs::write(
        wf.join("solid-color.api.json"),
        g.replace("\"ImageInvert\"", "\"ImageInvrt\""),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let o = comfyc(tmp.path(), &["check", "--format", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o.stdout)));
    assert_eq!(v["workflows"].as_array().map(Vec::len), Some(4));
    assert_eq!(
        v["failed"],
        serde_json::json!([{"definition": "workflows/solid-color.toml", "errors": 1}])
    );
}

#[test]
fn every_command_formats_json_alike() {
    // Pretty, two-space indent, one trailing newline: whatever the command.
    let tmp = examples_copy();
    let out = tmp.path().join("out");
    let runs = [
        comfyc(tmp.path(), &["check", "--format", "json"]),
        comfyc(
            tmp.path(),
            &[
                "build",
                "--format",
                "json",
                "--out",
                out.to_str().unwrap_or_default(),
            ],
        ),
        comfyc(tmp.path(), &["schema", "txt2img", "--format", "json"]),
        comfyc(
            tmp.path(),
            &[
                "render",
                "txt2img",
                "--format",
                "json",
                "--set",
                "steps=999",
            ],
        ),
        comfyc(
            tmp.path(),
            &[
                "render",
                "solid-color",
                "--format",
                "json",
                "--set",
                "color=1",
            ],
        ),
    ];
    for o in runs {
        let s = text(&o.stdout);
        let v: Value = serde_json::from_str(&s).unwrap_or_else(|e| panic!("{e}: {s}"));
        let mut pretty = serde_json::to_string_pretty(&v).unwrap_or_default();
        pretty.push('\n');
        assert_eq!(s, pretty);
    }
}

#[test]
fn nodes_diff_names_changes_and_the_workflows_broken() {
    let tmp = examples_copy();
    let old = tmp.path().join("nodes/object_info.json");
    let mut cat: Value = serde_json::from_str(&std::fs::read_to_string(&old).unwrap_or_default())
        .unwrap_or_default();
    // An upgrade that drops a sampler option txt2img offers, lowers EmptyImage's maximum
    // width under what solid-color allows, and adds a class.
    if let Some(opts) = cat
        .pointer_mut("/KSampler/input/required/sampler_name/0")
        .and_then(Value::as_array_mut)
    {
        opts.retain(|o| o != "dpmpp_2m");
    }
    cat["EmptyImage"]["input"]["required"]["width"][1]["max"] = 1024.into();
    cat["BrandNewNode"] = cat["ImageInvert"].clone();
    let new = tmp.path().join("new.json");
    std::fs::write(&new, serde_json::to_string(&cat).unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    let args = [
        "nodes",
        "diff",
        "nodes/object_info.json",
        new.to_str().unwrap_or_default(),
    ];
    let o = comfyc(tmp.path(), &args);
    let s = text(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{s}{}", text(&o.stderr));
    for want in [
        "496 → 497 node classes: 1 added, 0 removed, 2 changed",
        "+ BrandNewNode",
        "~ EmptyImage\n    input `width`: maximum 16384 → 1024",
        "~ KSampler\n    input `sampler_name`: 1 option removed: \"dpmpp_2m\"",
        "broken: workflows/solid-color.toml\nerror[range-widened]",
        "broken: workflows/txt2img.toml\nerror[option-not-accepted]",
        "2 workflows of 5 broken by",
    ] {
        assert!(s.contains(want), "missing {want:?} in:\n{s}");
    }
    let mut json_args = args.to_vec();
    json_args.extend(["--format", "json"]);
    let o = comfyc(tmp.path(), &json_args);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["added"], serde_json::json!(["BrandNewNode"]));
    assert_eq!(v["broken"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        v["broken"][1]["diagnostics"][0]["code"],
        "option-not-accepted"
    );
    // The same snapshot twice: nothing changed, nothing broken, exit 0.
    let o = comfyc(
        tmp.path(),
        &[
            "nodes",
            "diff",
            "nodes/object_info.json",
            "nodes/object_info.json",
        ],
    );
    assert_eq!(o.status.code(), Some(0));
    assert!(
        text(&o.stdout).contains("0 workflows of 5 broken"),
        "{}",
        text(&o.stdout)
    );
}

#[test]
fn completions_and_man_pages() {
    let root = repo_root();
    for (shell, marker) in [
        ("bash", "complete -F _comfyc"),
        ("zsh", "#compdef comfyc"),
        ("fish", "complete -c comfyc"),
    ] {
        let o = comfyc(&root, &["completions", shell]);
        assert_eq!(o.status.code(), Some(0));
        let s = text(&o.stdout);
        assert!(s.contains(marker) && s.contains("render"), "{shell}:\n{s}");
    }
    let o = comfyc(&root, &["man"]);
    assert!(text(&o.stdout).starts_with(".ie") && text(&o.stdout).contains(".TH comfyc 1"));
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let o = comfyc(
        &root,
        &["man", "--out", tmp.path().to_str().unwrap_or_default()],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    for page in [
        "comfyc.1",
        "comfyc-check.1",
        "comfyc-render.1",
        "comfyc-nodes-diff.1",
    ] {
        let t = std::fs::read_to_string(tmp.path().join(page)).unwrap_or_default();
        assert!(t.contains(".SH NAME"), "{page}: {t}");
    }
}

#[test]
fn render_picks_the_highest_version_by_number() {
    // `1.10` is above `1.2a`: the library's one version order, as the daemon will use.
    let tmp = examples_copy();
    let wf = tmp.path().join("workflows");
    let t = std::fs::read_to_string(wf.join("solid-color.toml")).unwrap_or_default();
    for v in ["1.2a", "1.10", "1.9"] {
        std::fs::write(
            wf.join(format!("solid-color-{v}.toml")),
            t.replace("version = \"1.0.0\"", &format!("version = \"{v}\"")),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let o = comfyc(tmp.path(), &["schema", "solid-color"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        v.to_string().contains("solid-color@1.10"),
        "{}",
        serde_json::to_string_pretty(&v).unwrap_or_default()
    );
}
