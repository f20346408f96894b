//! Partner (paid) nodes: refused unless comfyd.toml allows the workflow; when allowed, the
//! account key reaches ComfyUI with the prompt and nowhere else (manifest, graph.json, logs,
//! status, error reports). The real `comfyd` binary against the simulator.

mod common;

use std::process::Command;

const KEY: &str = "comfyui-7f3c9e-secret-account-key";

fn repo(dir: &std::path::Path) -> std::path::PathBuf {
    let repo = dir.join("repo");
    common::copy_dir(&common::examples(), &repo);
    std::fs::write(
        repo.join("workflows/dalle.toml"),
        "[workflow]\nname = \"dalle\"\nclass = \"image\"\ngraph = \"dalle.api.json\"\n\n[inputs.prompt]\nto = \"1.prompt\"\n\n[outputs.image]\nfrom = \"2\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        repo.join("workflows/dalle.api.json"),
        r#"{"1": {"class_type": "OpenAIDalle2", "inputs": {"prompt": "a mug", "seed": 0, "size": "256x256", "n": 1}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "dalle"}}}"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    repo
}

fn run(dir: &std::path::Path, url: &str, config: &str) -> (i32, String) {
    std::fs::write(dir.join("comfyd.toml"), config).unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_comfyd"))
        .args([
            "run",
            "--until-idle",
            "--settle-ms",
            "0",
            "--comfy-url",
            url,
        ])
        .current_dir(dir)
        .env("COMFYD_LOG", "debug")
        .env("COMFY_ORG_API_KEY", KEY)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every file under `dir`, as text.
fn all_text(dir: &std::path::Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.push_str(&all_text(&p));
        } else if let Ok(t) = std::fs::read(&p) {
            out.push_str(&String::from_utf8_lossy(&t));
        }
    }
    out
}

// The simulator runs in this process: blocking on the daemon must not stop it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partner_nodes_run_only_when_allowed_and_the_key_goes_to_comfyui_alone() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let sim = common::start_sim(&tmp.path().join("sim"), comfy_sim::Timing::default()).await;
    let repo = repo(tmp.path());
    let base = format!(
        "jobs = \"jobs\"\nworkflows = \"{}\"\noutputs = \"outputs\"\n",
        repo.display()
    );
    common::drop_job(
        &tmp.path().join("jobs"),
        "paid.toml",
        "id = \"paid\"\nworkflow = \"dalle\"\n[inputs]\nprompt = \"a mug\"\n",
    );
    common::drop_job(
        &tmp.path().join("jobs"),
        "free.toml",
        "id = \"free\"\nworkflow = \"solid-color\"\n",
    );
    // Not allowed: refused by name, before anything reaches ComfyUI; the other job runs.
    let (code, log) = run(tmp.path(), &sim.url(), &base);
    assert_eq!(code, 1, "{log}");
    let report = std::fs::read_to_string(tmp.path().join("jobs/failed/paid.toml.error.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        report.contains("spend-refused")
            && report.contains("1 (OpenAIDalle2)")
            && report.contains("[spend] allow = [\\\"dalle\\\"]"),
        "{report}"
    );
    assert!(tmp.path().join("outputs/free/manifest.json").is_file());
    assert!(
        !sim.submitted_prefixes()
            .iter()
            .any(|(_, prefixes)| prefixes.iter().any(|p| p.contains("paid")))
    );

    // Allowed: it runs, and ComfyUI got the key with this prompt (and only this one).
    common::drop_job(
        &tmp.path().join("jobs"),
        "paid2.toml",
        "id = \"paid2\"\nworkflow = \"dalle\"\n[inputs]\nprompt = \"a mug\"\n",
    );
    common::drop_job(
        &tmp.path().join("jobs"),
        "free2.toml",
        "id = \"free2\"\nworkflow = \"solid-color\"\n",
    );
    let (code, log) = run(
        tmp.path(),
        &sim.url(),
        &format!("{base}[spend]\nallow = [\"dalle\"]\n"),
    );
    assert_eq!(code, 0, "{log}");
    let manifest = std::fs::read_to_string(tmp.path().join("outputs/paid2/manifest.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    let m: serde_json::Value = serde_json::from_str(&manifest).unwrap_or_else(|e| panic!("{e}"));
    let free2 = std::fs::read_to_string(tmp.path().join("outputs/free2/manifest.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    let f: serde_json::Value = serde_json::from_str(&free2).unwrap_or_else(|e| panic!("{e}"));
    let got = sim.sensitive_received();
    let keys_of = |id: &serde_json::Value| -> Vec<(String, String)> {
        got.iter()
            .find(|(p, _)| Some(p.as_str()) == id.as_str())
            .map(|(_, k)| k.clone())
            .unwrap_or_else(|| panic!("no prompt {id} at ComfyUI: {got:?}"))
    };
    assert_eq!(
        keys_of(&m["prompt_id"]),
        [("api_key_comfy_org".to_owned(), KEY.to_owned())],
        "ComfyUI got the key with the partner prompt"
    );
    assert!(
        keys_of(&f["prompt_id"]).is_empty(),
        "a prompt without partner nodes carries no key"
    );
    // Nowhere on our side.
    assert!(!log.contains(KEY), "the key is in the log");
    for dir in ["outputs", "jobs"] {
        assert!(
            !all_text(&tmp.path().join(dir)).contains(KEY),
            "the key is under {dir}/"
        );
    }
}
