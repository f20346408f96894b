//! The `comfyd` binary as a newcomer uses it.

mod common;

use std::process::Command;

use common::names;

fn comfyd(args: &[&str], cwd: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_comfyd"))
        .args(args)
        .current_dir(cwd)
        .env("COMFYD_LOG", "warn")
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn demo_runs_the_example_jobs_on_the_simulator_when_no_comfyui_answers() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(9);
    let dir = tmp.path().join("demo");
    let o = comfyd(
        &[
            "demo",
            "--dir",
            &dir.to_string_lossy(),
            "--comfy-url",
            &format!("http://127.0.0.1:{port}"),
        ],
        &root,
    );
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("No ComfyUI answers") && err.contains("simulator"),
        "it says so plainly: {err}"
    );
    assert!(
        !err.contains('\u{1b}'),
        "no colour codes when stderr is not a terminal"
    );
    assert_eq!(
        names(&dir.join("jobs/done")),
        ["batch.jsonl", "hello.toml", "loras.toml", "mugs.toml"]
    );
    let out = text(&o.stdout);
    assert!(
        out.contains("4 done, 0 failed") && out.contains("0 waiting, 0 running"),
        "{out}"
    );
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("outputs/hello/manifest.json")).unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        manifest["comfyui"]["simulated"], true,
        "a simulated run says so in its manifests"
    );
    let o = comfyd(
        &["status", "--jobs", &dir.join("jobs").to_string_lossy()],
        &root,
    );
    assert!(text(&o.stdout).contains("9 done"), "{}", text(&o.stdout));
    let o = comfyd(
        &[
            "status",
            "--jobs",
            &dir.join("jobs").to_string_lossy(),
            "--format",
            "json",
        ],
        &root,
    );
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o.stdout)));
    assert_eq!(
        (
            &v["files_done"],
            &v["jobs_waiting"],
            &v["daemons"][0]["state"]
        ),
        (&4.into(), &0.into(), &"stopped".into()),
        "{v:#}"
    );
}

#[test]
fn usage_errors_and_help() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let o = comfyd(&["status", "--jobs", "nowhere"], tmp.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("not a job directory"));
    let o = comfyd(&["run", "--help"], tmp.path());
    let h = text(&o.stdout);
    for s in [
        "--jobs",
        "--workflows",
        "--comfy-url",
        "--sim",
        "--grace",
        "--lease-ttl",
    ] {
        assert!(h.contains(s), "{s}: {h}");
    }
    let o = comfyd(&["--help"], tmp.path());
    assert!(text(&o.stdout).contains("inbox/"));
    let o = comfyd(
        &[
            "run",
            "--jobs",
            "j",
            "--workflows",
            "w",
            "--comfy-url",
            "localhost:1",
        ],
        tmp.path(),
    );
    assert_eq!(
        o.status.code(),
        Some(2),
        "a URL without a scheme is refused: {}",
        text(&o.stderr)
    );
}

#[test]
fn settings_come_from_comfyd_toml_and_bad_files_are_named() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    common::drop_job(
        &tmp.path().join("jobs"),
        "hello.toml",
        "workflow = \"solid-color\"\n",
    );
    std::fs::write(
        tmp.path().join("comfyd.toml"),
        format!(
            "jobs = \"jobs\"\nworkflows = \"{}\"\noutputs = \"out\"\n",
            root.join("examples").display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // Found in the current directory.
    let o = comfyd(&["run", "--sim", "--until-idle"], tmp.path());
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(tmp.path().join("out/hello/manifest.json").is_file());
    std::fs::write(
        tmp.path().join("bad.toml"),
        "jobs = \"j\"\nworkflow = \"w\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let o = comfyd(&["run", "--config", "bad.toml"], tmp.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("bad.toml:2"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn status_finds_the_job_directory_in_comfyd_toml() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // No --jobs and no comfyd.toml: a usage error that says what to give.
    let out = comfyd(&["status"], tmp.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--jobs DIR"),
        "{}",
        text(&out.stderr)
    );
    std::fs::create_dir_all(tmp.path().join("spool/inbox")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(tmp.path().join("spool/inbox/a.toml"), "workflow = \"x\"\n")
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(tmp.path().join("comfyd.toml"), "jobs = \"spool\"\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let out = comfyd(&["status", "--format", "json"], tmp.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["inbox_files"], 1, "{v:#}");
    // A config naming no job directory says so.
    std::fs::write(tmp.path().join("other.toml"), "gpu = 1\n").unwrap_or_else(|e| panic!("{e}"));
    let out = comfyd(&["status", "--config", "other.toml"], tmp.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("other.toml names no job directory"),
        "{}",
        text(&out.stderr)
    );
}

/// The subcommands `comfyd --help` lists (from its `Commands:` section), `help` left out.
fn subcommands(root: &std::path::Path) -> Vec<String> {
    let help = text(&comfyd(&["--help"], root).stdout);
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect()
}

#[test]
fn completions_for_each_shell_and_man_pages_for_every_subcommand() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let subs = subcommands(&root);
    for s in ["run", "status", "completions", "man"] {
        assert!(subs.iter().any(|c| c == s), "{s} in {subs:?}");
    }
    for (shell, marker) in [
        ("bash", "complete -F _comfyd"),
        ("zsh", "#compdef comfyd"),
        ("fish", "complete -c comfyd"),
        ("elvish", "edit:completion:arg-completer[comfyd]"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let o = comfyd(&["completions", shell], &root);
        assert_eq!(o.status.code(), Some(0), "{shell}: {}", text(&o.stderr));
        let s = text(&o.stdout);
        assert!(s.contains(marker), "{shell}:\n{s}");
        for sub in &subs {
            assert!(s.contains(sub.as_str()), "{shell} completes `{sub}`:\n{s}");
        }
        assert!(s.contains("until-idle"), "{shell} completes run's flags");
    }
    let o = comfyd(&["completions", "tcsh"], &root);
    assert_eq!(
        o.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
    assert!(text(&o.stderr).contains("tcsh"), "{}", text(&o.stderr));

    let page = text(&comfyd(&["man"], &root).stdout);
    assert!(page.contains(".TH comfyd 1"), "{page}");
    for sub in &subs {
        assert!(
            page.contains(&format!("comfyd\\-{}(1)", sub.replace('-', "\\-"))),
            "the page names `{sub}`:\n{page}"
        );
    }
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = tmp.path().join("man1");
    let o = comfyd(&["man", "--out", &out.to_string_lossy()], &root);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let mut expected = vec!["comfyd.1".to_owned()];
    expected.extend(subs.iter().map(|s| format!("comfyd-{s}.1")));
    expected.sort();
    assert_eq!(names(&out), expected);
    let run = std::fs::read_to_string(out.join("comfyd-run.1")).unwrap_or_default();
    assert!(
        run.contains(".SH NAME") && run.contains("until\\-idle") && run.contains("no\\-progress"),
        "{run}"
    );
}
