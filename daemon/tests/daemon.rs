//! The daemon against the simulator: whole job files in, outputs and manifests out.

mod common;

use std::path::{Path, PathBuf};

use common::{examples, names};
use std::time::Duration;

use comfy_sim::Timing;
use comfyd::daemon::{self, Settings, Summary};
use comfyd::manifest::Manifest;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A job directory, an output directory and a simulator.
struct Rig {
    tmp: tempfile::TempDir,
    sim: comfy_sim::Sim,
}

impl Rig {
    async fn new(timing: Timing) -> Rig {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let sim = common::start_sim(&tmp.path().join("sim"), timing).await;
        std::fs::create_dir_all(tmp.path().join("jobs/inbox")).unwrap_or_else(|e| panic!("{e}"));
        Rig { tmp, sim }
    }

    fn jobs(&self) -> PathBuf {
        self.tmp.path().join("jobs")
    }

    fn outputs(&self) -> PathBuf {
        self.tmp.path().join("outputs")
    }

    fn settings(&self) -> Settings {
        let mut s = Settings::new(self.jobs(), examples(), self.sim.url());
        s.outputs = self.outputs();
        s.settle = Duration::ZERO;
        s.until_idle = true;
        s.lease_ttl = Duration::from_secs(3);
        s.unreachable_patience = Duration::from_secs(30);
        s
    }

    /// Writes a job file the way users should: elsewhere, then renamed into the inbox.
    fn drop_job(&self, name: &str, text: &str) {
        let tmp = self.tmp.path().join(format!(".{name}"));
        std::fs::write(&tmp, text).unwrap_or_else(|e| panic!("{e}"));
        std::fs::rename(&tmp, self.jobs().join("inbox").join(name))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    async fn run(&self, settings: Settings) -> Summary {
        let (_tx, rx) = tokio::sync::watch::channel(false);
        tokio::time::timeout(Duration::from_secs(120), daemon::run(settings, rx))
            .await
            .unwrap_or_else(|_| panic!("the daemon did not go idle"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn manifest(&self, id: &str) -> Manifest {
        let p = self.outputs().join(id).join("manifest.json");
        serde_json::from_str(
            &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn in_folder(&self, folder: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.jobs().join(folder))
            .map(|r| {
                r.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn error_report(&self, name: &str) -> Value {
        let p = self
            .jobs()
            .join("failed")
            .join(format!("{name}.error.json"));
        let report: Value = serde_json::from_str(
            &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        )
        .unwrap_or_default();
        // Every report is what its committed schema says.
        let schema: Value = serde_json::from_str(
            &std::fs::read_to_string(
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../schemas/error-report.schema.json"),
            )
            .unwrap_or_default(),
        )
        .unwrap_or_default();
        let validator = jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{e}"));
        assert!(validator.is_valid(&report), "{report:#}");
        report
    }
}

type Running = tokio::task::JoinHandle<Result<Summary, daemon::DaemonError>>;

/// Starts a daemon in the background; sending `true` stops it.
fn spawn(settings: Settings) -> (tokio::sync::watch::Sender<bool>, Running) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    (
        tx,
        tokio::spawn(async move { daemon::run(settings, rx).await }),
    )
}

/// Waits (at most a minute) for a daemon started with [`spawn`] to stop.
async fn finish(daemon: Running) -> Summary {
    tokio::time::timeout(Duration::from_secs(60), daemon)
        .await
        .unwrap_or_else(|_| panic!("the daemon did not stop"))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Every output listed in a manifest exists with the recorded size and hash.
fn check_outputs(dir: &Path, m: &Manifest) {
    assert!(!m.outputs.is_empty(), "{m:?}");
    for o in &m.outputs {
        let bytes = std::fs::read(dir.join(&o.path)).unwrap_or_else(|e| panic!("{}: {e}", o.path));
        assert_eq!(bytes.len() as u64, o.size);
        assert_eq!(hex::encode(Sha256::digest(&bytes)), o.sha256, "{}", o.path);
    }
    let graph: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("graph.json")).unwrap_or_default())
            .unwrap_or_default();
    assert!(
        graph.as_object().is_some_and(|g| !g.is_empty()),
        "graph.json holds what was submitted"
    );
}

#[tokio::test]
async fn a_single_job_ends_in_done_with_a_manifest() {
    let rig = Rig::new(Timing::default()).await;
    rig.drop_job(
        "blue.toml",
        "workflow = \"solid-color\"\n[inputs]\ncolor = 255\nwidth = 32\n",
    );
    let s = rig.run(rig.settings()).await;
    assert_eq!(
        (s.files_done, s.jobs_done, s.files_failed),
        (1, 1, 0),
        "{s:?}"
    );
    assert_eq!(rig.in_folder("done"), ["blue.toml"]);
    assert!(rig.in_folder("queue").is_empty() && rig.in_folder("inbox").is_empty());
    let m = rig.manifest("blue");
    check_outputs(&rig.outputs().join("blue"), &m);
    assert_eq!(m.workflow.name, "solid-color");
    assert!(m.workflow.hash.starts_with("sha256:"));
    assert_eq!(m.inputs["color"], 255);
    assert_eq!(m.inputs["height"], 48, "defaults are recorded as resolved");
    assert_eq!(m.outputs[0].media_type, "image/png");
    assert_eq!(
        (m.outputs[0].width, m.outputs[0].height),
        (Some(32), Some(48))
    );
    assert_eq!(m.job.file, "blue.toml");
    assert!(
        m.timings.finished_ms >= m.timings.submitted_ms
            && m.timings.submitted_ms >= m.timings.claimed_ms
    );
    assert_eq!(m.comfyui.version, "0.3.64");
    let graph: Value = serde_json::from_str(
        &std::fs::read_to_string(rig.outputs().join("blue/graph.json")).unwrap_or_default(),
    )
    .unwrap_or_default();
    assert_eq!(
        graph["5"]["inputs"]["filename_prefix"], "comfyd/blue/solid",
        "each job writes under its own prefix"
    );
}

#[tokio::test]
async fn seeds_are_picked_and_recorded_and_text_cannot_change_the_graph() {
    let rig = Rig::new(Timing::default()).await;
    rig.drop_job(
        "mug.toml",
        "workflow = \"txt2img\"\n[inputs]\nprompt = 'a mug \"}, \"99\": {\"class_type\": \"X\"'\n",
    );
    rig.run(rig.settings()).await;
    let m = rig.manifest("mug");
    assert_eq!(m.picked_seeds, ["seed"]);
    let seed = m.inputs["seed"].as_u64().unwrap_or_else(|| panic!("{m:?}"));
    let graph: Value = serde_json::from_str(
        &std::fs::read_to_string(rig.outputs().join("mug/graph.json")).unwrap_or_default(),
    )
    .unwrap_or_default();
    assert_eq!(graph["3"]["inputs"]["seed"], seed);
    assert_eq!(
        graph["6"]["inputs"]["text"],
        "a mug \"}, \"99\": {\"class_type\": \"X\""
    );
    assert_eq!(graph.as_object().map(|g| g.len()), Some(7));
}

#[tokio::test]
async fn a_jsonl_batch_of_200_and_a_sweep() {
    let rig = Rig::new(Timing::default()).await;
    let lines: String = (0..200).map(|i| format!("{{\"workflow\": \"solid-color\", \"inputs\": {{\"color\": {i}, \"width\": 8, \"height\": 8}}}}\n")).collect();
    rig.drop_job("batch.jsonl", &lines);
    rig.drop_job("sweep.toml", "workflow = \"txt2img@1.0.0\"\n[inputs]\nprompt = \"x\"\nseed = 1\n[sweep]\nsteps = [10, 20]\ncfg = [4.0, 7.5]\n");
    let s = rig.run(rig.settings()).await;
    assert_eq!(
        (s.jobs_done, s.jobs_failed, s.files_done),
        (204, 0, 2),
        "{s:?}"
    );
    for i in [1, 100, 200] {
        let m = rig.manifest(&format!("batch-{i:05}"));
        assert_eq!(m.job.line, Some(i));
        check_outputs(&rig.outputs().join(format!("batch-{i:05}")), &m);
    }
    let m = rig.manifest("sweep-0004");
    assert_eq!(
        (&m.inputs["steps"], &m.inputs["cfg"]),
        (&Value::from(20), &Value::from(7.5))
    );
    assert_eq!(m.job.sweep_index, Some(3));
}

#[tokio::test]
async fn bad_jobs_fail_with_reasons_and_the_rest_of_a_batch_runs() {
    let rig = Rig::new(Timing::default()).await;
    rig.drop_job(
        "mixed.jsonl",
        concat!(
            "{\"workflow\": \"solid-color\", \"id\": \"ok\"}\n",
            "{\"workflow\": \"solid-color\", \"id\": \"wide\", \"inputs\": {\"width\": 99999}}\n",
            "{\"workflow\": \"txt2img\", \"id\": \"noprompt\"}\n",
            "{\"workflow\": \"solid-colour\", \"id\": \"typo\"}\n",
            "{broken\n",
        ),
    );
    let s = rig.run(rig.settings()).await;
    assert_eq!(
        (s.jobs_done, s.jobs_failed, s.files_failed),
        (1, 3, 1),
        "{s:?}"
    );
    assert!(rig.manifest("ok").outputs.len() == 1);
    let r = rig.error_report("mixed.jsonl");
    let failures = r["failures"].as_array().cloned().unwrap_or_default();
    let by = |id: &str| {
        failures
            .iter()
            .find(|f| f["job"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id}: {r:#}"))
    };
    assert_eq!(by("wide")["kind"], "invalid-inputs");
    assert!(
        by("wide")["message"]
            .as_str()
            .is_some_and(|m| m.contains("width")),
        "{r:#}"
    );
    assert!(
        by("noprompt")["message"]
            .as_str()
            .is_some_and(|m| m.contains("prompt")),
        "{r:#}"
    );
    assert_eq!(by("typo")["kind"], "unknown-workflow");
    assert!(
        failures
            .iter()
            .any(|f| f["line"] == 5 && f["kind"] == "job-file"),
        "{r:#}"
    );
    assert_eq!(r["done"], 1);
}

#[tokio::test]
async fn a_job_waits_while_comfyui_is_down_and_runs_when_it_returns() {
    let rig = Rig::new(Timing::default()).await;
    rig.sim.go_down().await;
    rig.drop_job("patient.toml", "workflow = \"solid-color\"\n");
    let settings = rig.settings();
    let (_tx, daemon) = spawn(settings);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let queued = rig.in_folder("queue");
    assert_eq!(queued.len(), 1, "taken in: {queued:?}");
    let folder = rig.jobs().join("queue").join(&queued[0]);
    assert_eq!(
        names(&folder),
        ["L0.1", "patient.toml"],
        "claimed with its lease, waiting"
    );
    // The status file is rewritten when the owner next looks (coalesced): give it a few.
    let read_status = || -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(rig.jobs().join("status/gpu-0.json")).unwrap_or_default(),
        )
        .unwrap_or_default()
    };
    let mut status = read_status();
    for _ in 0..50 {
        if status["state"] == "waiting-for-comfyui" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = read_status();
    }
    assert_eq!(status["state"], "waiting-for-comfyui", "{status:#}");
    rig.sim.come_back().await;
    let s = finish(daemon).await;
    assert_eq!((s.jobs_done, s.jobs_failed), (1, 0));
    assert_eq!(rig.in_folder("done"), ["patient.toml"]);
}

#[tokio::test]
async fn a_job_past_its_timeout_is_interrupted_and_fails() {
    let rig = Rig::new(Timing {
        class_ms: [("ImageInvert".to_owned(), 3000)].into(),
        ..Timing::default()
    })
    .await;
    rig.drop_job("slow.toml", "workflow = \"solid-color\"\ntimeout = 1\n");
    let s = rig.run(rig.settings()).await;
    assert_eq!(s.jobs_failed, 1);
    assert_eq!(
        rig.error_report("slow.toml")["failures"][0]["kind"],
        "timeout"
    );
}

#[tokio::test]
async fn a_cancel_file_cancels_a_running_job() {
    let rig = Rig::new(Timing {
        class_ms: [("ImageInvert".to_owned(), 2000)].into(),
        ..Timing::default()
    })
    .await;
    rig.drop_job("long.toml", "workflow = \"solid-color\"\nid = \"long\"\n");
    let settings = rig.settings();
    let (_tx, daemon) = spawn(settings);
    tokio::time::sleep(Duration::from_millis(700)).await;
    std::fs::write(rig.jobs().join("inbox/long.cancel"), "").unwrap_or_else(|e| panic!("{e}"));
    let s = finish(daemon).await;
    assert_eq!(s.jobs_failed, 1, "{s:?}");
    assert_eq!(
        rig.error_report("long.toml")["failures"][0]["kind"],
        "cancelled"
    );
    assert!(
        !rig.jobs().join("inbox/long.cancel").exists(),
        "the cancel file is consumed"
    );
}

#[tokio::test]
async fn two_daemons_on_one_directory_run_each_job_once() {
    // ~100 ms a job (5 nodes), so one daemon cannot finish all 30 before the other starts.
    let rig = Rig::new(Timing {
        node_ms: 20,
        ..Timing::default()
    })
    .await;
    for i in 0..30 {
        rig.drop_job(
            &format!("j{i:02}.toml"),
            &format!("workflow = \"solid-color\"\n[inputs]\ncolor = {i}\nwidth = 8\nheight = 8\n"),
        );
    }
    let mut a = rig.settings();
    a.gpu = 0;
    let mut b = rig.settings();
    b.gpu = 1;
    let (sa, sb) = tokio::join!(rig.run(a), rig.run(b));
    assert_eq!(sa.jobs_done + sb.jobs_done, 30, "{sa:?} {sb:?}");
    assert!(
        sa.jobs_done > 0 && sb.jobs_done > 0,
        "both daemons worked: {sa:?} {sb:?}"
    );
    assert_eq!(rig.in_folder("done").len(), 30);
    // Each job ran once: one output file per job on the server.
    let server_out = rig.tmp.path().join("sim/output/comfyd");
    for i in 0..30 {
        let n = std::fs::read_dir(server_out.join(format!("j{i:02}")))
            .map(|r| r.count())
            .unwrap_or(0);
        assert_eq!(n, 1, "job j{i:02} ran {n} times");
    }
}

#[tokio::test]
async fn two_daemons_share_the_jobs_of_one_jsonl() {
    // One file, taken in by one daemon: the other still gets its share of the jobs.
    let rig = Rig::new(Timing {
        node_ms: 20,
        ..Timing::default()
    })
    .await;
    let lines: String = (0..30)
        .map(|i| format!("{{\"workflow\": \"solid-color\", \"id\": \"s{i:02}\", \"inputs\": {{\"color\": {i}}}}}\n"))
        .collect();
    rig.drop_job("shared.jsonl", &lines);
    let mut a = rig.settings();
    a.gpu = 0;
    let mut b = rig.settings();
    b.gpu = 1;
    let (sa, sb) = tokio::join!(rig.run(a), rig.run(b));
    assert_eq!(sa.jobs_done + sb.jobs_done, 30, "{sa:?} {sb:?}");
    assert!(
        sa.jobs_done >= 5 && sb.jobs_done >= 5,
        "both daemons ran jobs of the file: {sa:?} {sb:?}"
    );
    assert_eq!(
        sa.files_done + sb.files_done,
        1,
        "one of them finished the file"
    );
    assert_eq!(rig.in_folder("done"), ["shared.jsonl"]);
    let subs = rig.sim.submitted_prefixes();
    assert_eq!(subs.len(), 30, "each job submitted once");
}

#[tokio::test]
async fn an_inbox_larger_than_a_scan_written_in_place_is_taken_in_whole() {
    // Files written straight into the inbox (no rename) must settle; more of them than one
    // scan tracks, and than the index holds at once.
    let rig = Rig::new(Timing::default()).await;
    let inbox = rig.jobs().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap_or_else(|e| panic!("{e}"));
    for i in 0..130 {
        std::fs::write(
            inbox.join(format!("x{i:03}.toml")),
            "workflow = \"no-such-workflow\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let mut settings = rig.settings();
    settings.settle = Duration::from_millis(100);
    settings.scan_limit = 40;
    settings.open_files = 25;
    let s = rig.run(settings).await;
    assert_eq!((s.files_failed, s.jobs_failed), (130, 130), "{s:?}");
    assert_eq!(
        rig.in_folder("failed").len(),
        260,
        "each file with its report"
    );
    assert!(rig.in_folder("queue").is_empty() && rig.in_folder("inbox").is_empty());
    let r = rig.error_report("x007.toml");
    assert_eq!(r["failures"][0]["kind"], "unknown-workflow", "{r:#}");
}

#[tokio::test]
async fn a_stale_lease_is_taken_over_and_finished_jobs_are_not_run_again() {
    use comfyd::store::{Claim, DirStore, JobResult, JobStore, Lease, Slot};
    let rig = Rig::new(Timing::default()).await;
    rig.drop_job("half.jsonl", "{\"workflow\": \"solid-color\", \"id\": \"first\"}\n{\"workflow\": \"solid-color\", \"id\": \"second\"}\n");
    rig.run(rig.settings()).await;
    let first = rig.manifest("first");
    // Put the file back as a daemon that died an hour ago left it: the first job ended, the
    // second claimed (its lease never renewed since), its outputs gone.
    let store = DirStore::new(rig.jobs());
    std::fs::rename(
        store.done().join("half.jsonl"),
        store.inbox().join("half.jsonl"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let key = store
        .intake(&store.inbox().join("half.jsonl"))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("not taken in"));
    let result = JobResult {
        job: "first".into(),
        index: 0,
        ok: true,
        failure: None,
        by: "dead/gpu-9".into(),
    };
    store
        .complete(&key, &result)
        .unwrap_or_else(|e| panic!("{e}"));
    let dead = Lease {
        owner: "dead/gpu-9".into(),
        host: "elsewhere".into(),
        pid: 1,
        generation: 0,
        renewed_ms: comfyd::runner::now_ms() - 3_600_000,
        released: false,
        prompt: None,
    };
    assert!(matches!(
        store.claim(&key, Slot::Job(1), &dead),
        Ok(Claim::Claimed(_))
    ));
    std::fs::remove_dir_all(rig.outputs().join("second")).unwrap_or_else(|e| panic!("{e}"));
    let before = rig.sim.submitted_prefixes().len();
    let s = rig.run(rig.settings()).await;
    assert_eq!(s.jobs_done, 1, "{s:?}");
    assert_eq!(
        rig.manifest("first"),
        first,
        "the finished job was not run again"
    );
    let runs: Vec<_> = rig.sim.submitted_prefixes()[before..].to_vec();
    assert_eq!(runs.len(), 1, "only the second job ran again: {runs:?}");
    assert!(runs[0].1.iter().all(|p| p.starts_with("comfyd/second/")));
    assert!(rig.outputs().join("second/manifest.json").is_file());
    assert_eq!(rig.in_folder("done"), ["half.jsonl"]);
    assert!(rig.in_folder("queue").is_empty());
}

#[test]
fn the_committed_manifest_schema_is_fresh() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas/manifest.schema.json");
    let text = comfyd::manifest::schema();
    if std::env::var_os("COMFYC_BLESS").is_some() {
        std::fs::write(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    }
    let schema: Value = serde_json::from_str(&text).unwrap_or_default();
    assert!(jsonschema::meta::validate(&schema).is_ok());
    assert_eq!(
        std::fs::read_to_string(&path).unwrap_or_default(),
        text,
        "stale: regenerate with COMFYC_BLESS=1 cargo test -p comfyd --test daemon"
    );
}

#[tokio::test]
async fn a_missing_model_fails_the_job_up_front_naming_the_file() {
    let rig = Rig::new(Timing::default()).await;
    let mut settings = rig.settings();
    settings.workflows = {
        let dir = rig.tmp.path().join("repo");
        common::copy_dir(&examples(), &dir);
        let t = std::fs::read_to_string(dir.join("comfyc.toml")).unwrap_or_default();
        let extra = "[[models]]\nname = \"not-installed.safetensors\"\nfolder = \"checkpoints\"\n\n[[models]]\nname = \"gone.safetensors\"\nfolder = \"loras\"\n";
        std::fs::write(dir.join("comfyc.toml"), format!("{t}\n{extra}"))
            .unwrap_or_else(|e| panic!("{e}"));
        dir
    };
    // A bound model input, and a model chosen inside a template's array.
    rig.drop_job("absent.toml", "workflow = \"txt2img\"\n[inputs]\nprompt = \"x\"\ncheckpoint = \"not-installed.safetensors\"\n");
    rig.drop_job("lora.toml", "workflow = \"lora\"\n[inputs]\nseed = 1\nloras = [{ name = \"film-grain.safetensors\" }, { name = \"gone.safetensors\" }]\n");
    rig.drop_job("fine.toml", "workflow = \"lora\"\n[inputs]\nseed = 1\nloras = [{ name = \"film-grain.safetensors\" }]\n");
    let s = rig.run(settings).await;
    assert_eq!((s.jobs_done, s.jobs_failed), (1, 2), "{s:?}");
    for (file, name) in [
        ("absent.toml", "not-installed.safetensors"),
        ("lora.toml", "gone.safetensors"),
    ] {
        let r = rig.error_report(file);
        assert_eq!(r["failures"][0]["kind"], "missing-model", "{r:#}");
        assert!(
            r["failures"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains(name)),
            "{r:#}"
        );
    }
}

#[test]
fn the_committed_report_and_status_schemas_are_fresh() {
    for (file, text) in [
        ("error-report.schema.json", comfyd::report::report_schema()),
        ("status.schema.json", comfyd::report::status_schema()),
    ] {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../schemas")
            .join(file);
        if std::env::var_os("COMFYC_BLESS").is_some() {
            std::fs::write(&path, &text).unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(
            std::fs::read_to_string(&path).unwrap_or_default(),
            text,
            "{file} is stale: regenerate with COMFYC_BLESS=1 cargo test -p comfyd --test daemon"
        );
    }
}

#[test]
fn the_committed_config_schema_is_fresh() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas/comfyd.schema.json");
    let text = comfyd::config::schema();
    if std::env::var_os("COMFYC_BLESS").is_some() {
        std::fs::write(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(
        std::fs::read_to_string(&path).unwrap_or_default(),
        text,
        "stale: regenerate with COMFYC_BLESS=1 cargo test -p comfyd --test daemon"
    );
}

#[tokio::test]
async fn the_status_file_shows_the_running_job_and_its_progress() {
    let rig = Rig::new(Timing {
        class_ms: [("ImageInvert".to_owned(), 1500)].into(),
        ..Timing::default()
    })
    .await;
    rig.drop_job("watched.toml", "workflow = \"solid-color\"\n");
    let settings = rig.settings();
    let (_tx, daemon) = spawn(settings);
    let path = rig.jobs().join("status/gpu-0.json");
    let mut seen = Value::Null;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_default())
            .unwrap_or_default();
        if v["progress"]["node"] == "4" {
            seen = v;
            break;
        }
    }
    assert_eq!(seen["running"][0]["job"], "watched", "{seen:#}");
    assert_eq!(seen["running"][0]["phase"], "queued", "{seen:#}");
    assert_eq!(seen["progress"]["class_type"], "ImageInvert", "{seen:#}");
    assert_eq!(seen["progress"]["nodes_total"], 5);
    let s = finish(daemon).await;
    assert_eq!(s.jobs_done, 1);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_default())
        .unwrap_or_default();
    assert_eq!(
        (v["state"].as_str(), &v["running"], &v["progress"]),
        (Some("stopped"), &serde_json::json!([]), &Value::Null)
    );
    // The status file is what its committed schema says.
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/status.schema.json"),
        )
        .unwrap_or_default(),
    )
    .unwrap_or_default();
    let validator = jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{e}"));
    assert!(validator.is_valid(&v), "{v:#}");
}

#[tokio::test]
async fn the_next_prompt_is_queued_while_one_runs() {
    let rig = Rig::new(Timing {
        class_ms: [("ImageInvert".to_owned(), 300)].into(),
        ..Timing::default()
    })
    .await;
    let lines: String = (0..4)
        .map(|i| format!("{{\"workflow\": \"solid-color\", \"inputs\": {{\"color\": {i}}}}}\n"))
        .collect();
    rig.drop_job("fed.jsonl", &lines);
    let s = rig.run(rig.settings()).await;
    assert_eq!(s.jobs_done, 4);
    use comfy_sim::TimelineEvent as E;
    let tl = rig.sim.timeline();
    let queued: Vec<_> = tl
        .iter()
        .filter(|e| matches!(e.event, E::Queued))
        .map(|e| (e.prompt_id.clone(), e.at))
        .collect();
    let finished: Vec<_> = tl
        .iter()
        .filter(|e| matches!(e.event, E::Finished { .. }))
        .map(|e| (e.prompt_id.clone(), e.at))
        .collect();
    assert_eq!((queued.len(), finished.len()), (4, 4), "{tl:?}");
    for k in 0..3 {
        let next_queued = queued[k + 1].1;
        let done = finished
            .iter()
            .find(|(p, _)| *p == queued[k].0)
            .map(|(_, t)| *t)
            .unwrap_or_default();
        assert!(
            next_queued < done,
            "prompt {} was queued only after prompt {k} finished: ComfyUI idled",
            k + 1
        );
    }
}

#[tokio::test]
async fn cancelling_a_queued_job_leaves_the_running_one_alone() {
    let rig = Rig::new(Timing {
        class_ms: [("ImageInvert".to_owned(), 1500)].into(),
        ..Timing::default()
    })
    .await;
    rig.drop_job("two.jsonl", "{\"workflow\": \"solid-color\", \"id\": \"first\"}\n{\"workflow\": \"solid-color\", \"id\": \"second\", \"inputs\": {\"color\": 1}}\n");
    let settings = rig.settings();
    let (_tx, daemon) = spawn(settings);
    tokio::time::sleep(Duration::from_millis(600)).await;
    std::fs::write(rig.jobs().join("inbox/second.cancel"), "").unwrap_or_else(|e| panic!("{e}"));
    let s = finish(daemon).await;
    assert_eq!((s.jobs_done, s.jobs_failed), (1, 1), "{s:?}");
    assert!(rig.outputs().join("first/manifest.json").is_file());
    let r = rig.error_report("two.jsonl");
    assert_eq!(r["failures"][0]["job"], "second");
    assert_eq!(r["failures"][0]["kind"], "cancelled", "{r:#}");
}

#[tokio::test]
async fn shutdown_releases_a_running_and_a_queued_job_for_the_next_daemon() {
    let rig = Rig::new(Timing {
        class_ms: [("ImageInvert".to_owned(), 4000)].into(),
        ..Timing::default()
    })
    .await;
    rig.drop_job("pair.jsonl", "{\"workflow\": \"solid-color\", \"id\": \"a\"}\n{\"workflow\": \"solid-color\", \"id\": \"b\", \"inputs\": {\"color\": 1}}\n");
    let mut settings = rig.settings();
    settings.grace = Duration::from_millis(500);
    let client = comfyd::client::Client::new(&rig.sim.url()).unwrap_or_else(|e| panic!("{e}"));
    let (tx, daemon) = spawn(settings);
    for _ in 0..100 {
        if client
            .queue()
            .await
            .map(|q| q.running.len() + q.pending.len())
            .unwrap_or(0)
            == 2
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = tx.send(true);
    let s = finish(daemon).await;
    assert_eq!(
        (s.jobs_released, s.jobs_done, s.jobs_failed),
        (2, 0, 0),
        "{s:?}"
    );
    // The file stays in the queue with both jobs let go, for any daemon to run.
    assert_eq!(rig.in_folder("queue").len(), 1);
    let q = client.queue().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        q.running.is_empty() && q.pending.is_empty(),
        "nothing of ours left in ComfyUI's queue: {q:?}"
    );
    // The next daemon takes them at once and finishes the file.
    rig.sim.set_timing(Timing::default());
    let s = rig.run(rig.settings()).await;
    assert_eq!((s.jobs_done, s.files_done), (2, 1), "{s:?}");
    assert_eq!(rig.in_folder("done"), ["pair.jsonl"]);
}

#[tokio::test]
async fn comfyui_going_down_mid_job_and_returning_loses_nothing() {
    let rig = Rig::new(Timing {
        class_ms: [("ImageInvert".to_owned(), 1500)].into(),
        ..Timing::default()
    })
    .await;
    rig.drop_job("through.toml", "workflow = \"solid-color\"\n");
    let settings = rig.settings();
    let (_tx, daemon) = spawn(settings);
    let client = comfyd::client::Client::new(&rig.sim.url()).unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..100 {
        if client
            .queue()
            .await
            .map(|q| !q.running.is_empty())
            .unwrap_or(false)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A restart mid-job: the prompt is lost with the server's queue.
    rig.sim.go_down().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    rig.sim.come_back().await;
    let s = finish(daemon).await;
    assert_eq!((s.jobs_done, s.jobs_failed), (1, 0), "{s:?}");
    let m = rig.manifest("through");
    check_outputs(&rig.outputs().join("through"), &m);
    assert!(
        m.timings.started_ms >= m.timings.submitted_ms
            && m.timings.finished_ms >= m.timings.started_ms
    );
}

#[tokio::test]
async fn workflows_are_recompiled_on_change_and_a_broken_one_keeps_its_last_good_version() {
    let rig = Rig::new(Timing::default()).await;
    let repo = rig.tmp.path().join("repo");
    common::copy_dir(&examples(), &repo);
    let def = repo.join("workflows/solid-color.toml");
    let original = std::fs::read_to_string(&def).unwrap_or_default();
    let mut settings = rig.settings();
    settings.workflows = repo.clone();
    settings.until_idle = false;
    let (tx, daemon) = spawn(settings);
    let wait_for = |id: &'static str| {
        let p = rig.outputs().join(id).join("manifest.json");
        async move {
            for _ in 0..200 {
                if p.is_file() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("{id} never finished");
        }
    };
    rig.drop_job(
        "before.toml",
        "workflow = \"solid-color\"\nid = \"before\"\n",
    );
    wait_for("before").await;
    // A new default height: the next job gets it.
    std::fs::write(&def, original.replace("default = 48", "default = 24"))
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(800)).await;
    rig.drop_job(
        "changed.toml",
        "workflow = \"solid-color\"\nid = \"changed\"\n",
    );
    wait_for("changed").await;
    // Broken: the last good version (height 24) stays in use.
    std::fs::write(&def, "[workflow\nbroken").unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(800)).await;
    rig.drop_job(
        "broken.toml",
        "workflow = \"solid-color\"\nid = \"broken\"\n",
    );
    wait_for("broken").await;
    let _ = tx.send(true);
    let _ = daemon.await;
    assert_eq!(rig.manifest("before").inputs["height"], 48);
    assert_eq!(rig.manifest("changed").inputs["height"], 24);
    assert_eq!(rig.manifest("broken").inputs["height"], 24);
    assert_ne!(
        rig.manifest("before").workflow.hash,
        rig.manifest("changed").workflow.hash
    );
}

#[tokio::test]
async fn jobs_that_share_a_checkpoint_run_together() {
    let rig = Rig::new(Timing::default()).await;
    let repo = rig.tmp.path().join("repo");
    common::copy_dir(&examples(), &repo);
    let config = std::fs::read_to_string(repo.join("comfyc.toml")).unwrap_or_default();
    std::fs::write(
        repo.join("comfyc.toml"),
        format!(
            "{config}\n[[models]]\nname = \"tiny-sd15.safetensors\"\nfolder = \"checkpoints\"\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = (
        "v1-5-pruned-emaonly-fp16.safetensors",
        "tiny-sd15.safetensors",
    );
    let lines: String = [a, b, a, b]
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{{\"workflow\": \"txt2img\", \"inputs\": {{\"prompt\": \"x\", \"seed\": {i}, \"checkpoint\": \"{c}\"}}}}\n"))
        .collect();
    rig.drop_job("alternating.jsonl", &lines);
    let mut settings = rig.settings();
    settings.workflows = repo;
    let s = rig.run(settings).await;
    assert_eq!(s.jobs_done, 4, "{s:?}");
    let loads: Vec<String> = rig
        .sim
        .timeline()
        .into_iter()
        .filter_map(|e| match e.event {
            comfy_sim::TimelineEvent::ModelLoad { name } => Some(name),
            _ => None,
        })
        .collect();
    assert_eq!(
        loads.len(),
        2,
        "each checkpoint is loaded once, not once per switch: {loads:?}"
    );
}

#[tokio::test]
async fn file_inputs_are_uploaded_once_by_content_and_recorded_with_their_hash() {
    let rig = Rig::new(Timing::default()).await;
    let inputs = rig.tmp.path().join("in");
    std::fs::create_dir_all(inputs.join("sub")).unwrap_or_else(|e| panic!("{e}"));
    // A real PNG, under two names; and a different one.
    let png = |shade: u8| {
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, 2, 2);
            enc.set_color(png::ColorType::Rgb);
            let mut w = enc.write_header().unwrap_or_else(|e| panic!("{e}"));
            w.write_image_data(&[shade; 12])
                .unwrap_or_else(|e| panic!("{e}"));
        }
        out
    };
    let (same, other) = (png(10), png(200));
    for (name, bytes) in [("a.png", &same), ("sub/b.png", &same), ("c.png", &other)] {
        std::fs::write(inputs.join(name), bytes).unwrap_or_else(|e| panic!("{e}"));
    }
    rig.drop_job(
        "inv.jsonl",
        "{\"id\": \"i1\", \"workflow\": \"invert-image\", \"inputs\": {\"image\": \"a.png\"}}\n\
         {\"id\": \"i2\", \"workflow\": \"invert-image\", \"inputs\": {\"image\": \"sub/b.png\"}}\n\
         {\"id\": \"i3\", \"workflow\": \"invert-image\", \"inputs\": {\"image\": \"c.png\"}}\n",
    );
    let mut settings = rig.settings();
    settings.inputs = Some(inputs);
    let s = rig.run(settings).await;
    assert_eq!((s.jobs_done, s.jobs_failed), (3, 0), "{s:?}");
    let file = |id: &str| {
        let m = rig.manifest(id);
        assert_eq!(m.input_files.len(), 1, "{id}: {:?}", m.input_files);
        m.input_files[0].clone()
    };
    let (a, b, c) = (file("i1"), file("i2"), file("i3"));
    assert_eq!((a.input.as_str(), a.source.as_str()), ("image", "a.png"));
    assert_eq!(b.source, "sub/b.png");
    assert_eq!(a.sha256, hex::encode(Sha256::digest(&same)));
    assert_eq!(a.size, same.len() as u64);
    assert_eq!(a.uploaded_as, format!("comfyd-{}.png", &a.sha256[..16]));
    assert_eq!(a.uploaded_as, b.uploaded_as, "the same bytes, one name");
    assert_ne!(a.uploaded_as, c.uploaded_as);
    // ComfyUI's input/ holds one file per content (and the example a checkout ships).
    let mut uploaded: Vec<String> = names(&rig.tmp.path().join("sim/input"))
        .into_iter()
        .filter(|n| n.starts_with("comfyd-"))
        .collect();
    uploaded.sort();
    let mut want = vec![a.uploaded_as.clone(), c.uploaded_as.clone()];
    want.sort();
    assert_eq!(uploaded, want);
}
