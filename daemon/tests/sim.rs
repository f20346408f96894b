//! The client suite against the simulator in both its protocols (ComfyUI 0.3.64 as recorded,
//! and the 2026 releases in `y2026`), plus what only the simulator can do: inject faults, and
//! show the 2026 behaviours (UUID-only prompt ids, the jobs cancel, null history statuses,
//! videos under `images`, subgraph display nodes).

mod common;
mod suite;

use std::time::Duration;

use comfy_sim::{Config, Fault, Protocol, Timing};
use comfyd::client::{Cancelled, Client, ClientError, Outcome, RunOptions, Timeouts};
use common::shared;
use suite::Target;

pub struct SimTarget {
    pub target: Target,
    pub sim: comfy_sim::Sim,
    _dir: tempfile::TempDir,
}

pub async fn sim_target() -> SimTarget {
    sim_target_in(Protocol::Recorded).await
}

pub async fn sim_target_2026() -> SimTarget {
    sim_target_in(Protocol::Y2026).await
}

pub async fn sim_target_in(protocol: Protocol) -> SimTarget {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let text =
        std::fs::read_to_string(shared().join("comfyui/object_info.json")).unwrap_or_default();
    let catalogue = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    let mut config = Config::new(catalogue, dir.path());
    config
        .models
        .insert("checkpoints".into(), vec!["tiny-sd15.safetensors".into()]);
    config.timing = Timing {
        class_ms: [("ImageBlur".to_owned(), 300)].into(),
        ..Timing::default()
    };
    config.protocol = protocol;
    let sim = comfy_sim::start(config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let client = Client::new(&sim.url()).unwrap_or_else(|e| panic!("{e}"));
    SimTarget {
        target: Target {
            client,
            checkpoint: Some("tiny-sd15.safetensors".into()),
            slow_blurs: 6,
            slow_size: 64,
            jobs_cancel: Some(protocol == Protocol::Y2026),
        },
        sim,
        _dir: dir,
    }
}

cases!(sim_target);

/// The same suite against the simulator's 2026 mode.
mod y2026 {
    use super::{sim_target_2026, suite};

    crate::cases!(sim_target_2026);
}

/// Runs a 16×16 no-model graph to its end.
async fn run_small(t: &SimTarget, prefix: &str) -> comfyd::client::RunReport {
    let g = suite::no_model_graph(16, 16, suite::fresh_color(), prefix);
    t.target
        .client
        .run_prompt(&g, &opts(), &mut |_| {})
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn opts() -> RunOptions {
    RunOptions {
        timeout: Some(Duration::from_secs(60)),
        ..RunOptions::default()
    }
}

#[tokio::test]
async fn a_dropped_websocket_is_reconnected_and_the_run_completes() {
    let t = sim_target().await;
    t.sim.set_timing(Timing {
        node_ms: 100,
        ..Timing::default()
    });
    t.sim.inject(Fault::DropWebsockets { after_frames: 4 });
    let report = run_small(&t, "drop").await;
    assert_eq!(report.outcome, Outcome::Success);
    assert!(report.reconnects >= 1, "{report:?}");
    assert_eq!(
        report.files.len(),
        1,
        "outputs are reconciled from /history"
    );
}

#[tokio::test]
async fn outputs_that_reach_history_late_are_still_reported() {
    let t = sim_target().await;
    t.sim.set_timing(Timing {
        history_delay_ms: 600,
        ..Timing::default()
    });
    let report = run_small(&t, "late").await;
    assert_eq!(report.files.len(), 1);
    assert!(
        report
            .history
            .as_ref()
            .is_some_and(|h| !h.outputs.is_empty()),
        "{:?}",
        report.history
    );
}

#[tokio::test]
async fn slow_history_and_gc_stalls_are_waited_out() {
    let t = sim_target().await;
    t.sim.inject(Fault::SlowHistory(Duration::from_millis(800)));
    t.sim.inject(Fault::Stall(Duration::from_millis(400)));
    let report = run_small(&t, "stall").await;
    assert_eq!(report.outcome, Outcome::Success);
    assert_eq!(report.files.len(), 1);
}

#[tokio::test]
async fn out_of_memory_is_recognised() {
    let t = sim_target().await;
    t.sim.inject(Fault::OutOfMemory);
    let report = run_small(&t, "oom").await;
    match report.outcome {
        Outcome::Failed(e) => assert!(e.is_out_of_memory(), "{e:?}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn injected_rejection_and_execution_error() {
    let t = sim_target().await;
    t.sim.inject(Fault::RejectNextPrompt);
    let g = suite::no_model_graph(16, 16, suite::fresh_color(), "reject");
    match t.target.client.run_prompt(&g, &opts(), &mut |_| {}).await {
        Err(ClientError::Rejected(r)) => assert!(!r.node_errors.is_empty(), "{r:?}"),
        other => panic!("{other:?}"),
    }
    t.sim.inject(Fault::ExecutionError {
        node: Some("2".into()),
        message: "boom".into(),
    });
    let report = t
        .target
        .client
        .run_prompt(&g, &opts(), &mut |_| {})
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(report.outcome, Outcome::Failed(ref e) if e.node_id == "2" && e.exception_message.contains("boom")),
        "{report:?}"
    );
}

#[tokio::test]
async fn a_run_past_its_timeout_is_interrupted() {
    let t = sim_target().await;
    let g = suite::slow_graph(&t.target, suite::fresh_color());
    let o = RunOptions {
        timeout: Some(Duration::from_millis(700)),
        ..RunOptions::default()
    };
    match t.target.client.run_prompt(&g, &o, &mut |_| {}).await {
        Err(ClientError::RunTimeout { prompt_id, .. }) => {
            for _ in 0..100 {
                if !t
                    .target
                    .client
                    .queue()
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
                    .contains(&prompt_id)
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("the timed-out prompt is still queued or running");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_server_restart_mid_run_is_a_transient_lost_prompt() {
    let t = sim_target().await;
    let client = t.target.client.clone();
    let g = suite::slow_graph(&t.target, suite::fresh_color());
    let run = tokio::spawn(async move { client.run_prompt(&g, &opts(), &mut |_| {}).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    t.sim.go_down().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    t.sim.come_back().await;
    match run.await.unwrap_or_else(|e| panic!("{e}")) {
        Err(e @ ClientError::Lost { .. }) => assert!(e.is_transient()),
        other => panic!("expected the prompt to be lost, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_server_is_a_transient_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(9);
    let timeouts = Timeouts {
        connect: Duration::from_millis(500),
        ..Timeouts::default()
    };
    let client = Client::with_timeouts(&format!("http://127.0.0.1:{port}"), timeouts)
        .unwrap_or_else(|e| panic!("{e}"));
    match client.system_stats().await {
        Err(e @ ClientError::Unreachable { .. }) => assert!(e.is_transient()),
        other => panic!("{other:?}"),
    }
    match client
        .run_prompt(&serde_json::json!({}), &RunOptions::default(), &mut |_| {})
        .await
    {
        Err(e) => assert!(e.is_transient(), "{e}"),
        Ok(r) => panic!("{r:?}"),
    }
    assert!(
        Client::new("127.0.0.1:8188").is_err(),
        "a URL without a scheme is refused"
    );
}

// ---- the 2026 protocol ----

async fn target_2026() -> SimTarget {
    sim_target_2026().await
}

#[tokio::test]
async fn a_2026_server_refuses_prompt_ids_that_are_not_uuids() {
    let t = target_2026().await;
    let g = suite::no_model_graph(8, 8, suite::fresh_color(), "ids");
    match t.target.client.submit(&g, "ids", Some("job-7"), None).await {
        Err(ClientError::Rejected(r)) => {
            assert_eq!(r.error.kind, "invalid_prompt_id", "{r:?}");
            assert!(r.node_errors.is_empty());
        }
        other => panic!("expected invalid_prompt_id, got {other:?}"),
    }
    // The recorded server takes it.
    let old = sim_target().await;
    let s = old
        .target
        .client
        .submit(&g, "ids", Some("job-7"), None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.prompt_id, "job-7");
}

#[tokio::test]
async fn the_cancel_route_is_probed_once_per_server_start() {
    let t = target_2026().await;
    let client = &t.target.client;
    assert_eq!(t.sim.job_cancel_calls(), 0);
    let (a, b) = (suite::uuid_like(), suite::uuid_like());
    let way = client.cancel(&a).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(way, Cancelled::JobsApi { cancelled: false });
    assert_eq!(t.sim.job_cancel_calls(), 2, "one probe, one cancel");
    // Remembered, and shared by clones (the same server).
    client
        .clone()
        .cancel(&b)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.sim.job_cancel_calls(), 3);
    // The server goes away: once a request finds it unreachable, it is probed again.
    t.sim.go_down().await;
    match client.system_stats().await {
        Err(ClientError::Unreachable { .. }) => {}
        other => panic!("expected the server to be down: {other:?}"),
    }
    t.sim.come_back().await;
    client.cancel(&a).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        t.sim.job_cancel_calls(),
        5,
        "probed again after the restart"
    );

    // A 0.3.x server: probed once (a 404), then interrupt and queue delete.
    let old = sim_target().await;
    let way = old
        .target
        .client
        .cancel(&a)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(way, Cancelled::QueueAndInterrupt);
    assert!(
        !old.target
            .client
            .has_jobs_cancel()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    );
}

#[tokio::test]
async fn a_timed_out_run_is_cancelled_through_the_jobs_api() {
    let t = target_2026().await;
    let g = suite::slow_graph(&t.target, suite::fresh_color());
    let o = RunOptions {
        timeout: Some(Duration::from_millis(700)),
        ..RunOptions::default()
    };
    match t.target.client.run_prompt(&g, &o, &mut |_| {}).await {
        Err(ClientError::RunTimeout { prompt_id, .. }) => {
            assert!(t.sim.job_cancel_calls() >= 2, "probe and cancel");
            for _ in 0..100 {
                let job = t
                    .target
                    .client
                    .job(&prompt_id)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                if job.as_ref().is_some_and(|j| j["status"] == "cancelled") {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("the timed-out prompt was not cancelled");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_null_history_status_is_tolerated() {
    let t = target_2026().await;
    // Followed over the socket: the events say how it ended.
    t.sim.inject(Fault::NullHistoryStatus);
    let report = run_small(&t, "null").await;
    assert_eq!(report.outcome, Outcome::Success, "{report:?}");
    assert_eq!(report.files.len(), 1);
    assert!(
        report.history.as_ref().is_some_and(|h| h.status.is_none()),
        "{:?}",
        report.history
    );
    // Adopted without events: the jobs API says how it ended.
    let client = &t.target.client;
    for (fault, expect_success) in [(None, true), (Some("boom"), false)] {
        if let Some(message) = fault {
            t.sim.inject(Fault::ExecutionError {
                node: Some("2".into()),
                message: message.into(),
            });
        }
        t.sim.inject(Fault::NullHistoryStatus);
        let g = suite::no_model_graph(16, 16, suite::fresh_color(), "null_adopted");
        let s = client
            .submit(&g, "elsewhere", Some(&suite::uuid_like()), None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let report = client
            .await_prompt(
                &s.prompt_id,
                Duration::from_millis(20),
                Some(Duration::from_secs(30)),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if expect_success {
            assert_eq!(report.outcome, Outcome::Success, "{report:?}");
            assert_eq!(report.files.len(), 1);
        } else {
            match &report.outcome {
                Outcome::Failed(e) => {
                    assert_eq!(e.node_id, "2");
                    assert!(e.exception_message.contains("boom"), "{e:?}");
                }
                other => panic!("expected a failure, got {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn videos_listed_under_images_are_fetched_as_animated_files() {
    let t = target_2026().await;
    let g = serde_json::json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 4, "color": 7}},
        "2": {"class_type": "SaveWEBM", "inputs": {"images": ["1", 0], "filename_prefix": "suite_clip", "codec": "vp9", "fps": 24.0, "crf": 32.0}}
    });
    let report = t
        .target
        .client
        .run_prompt(&g, &opts(), &mut |_| {})
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.files.len(), 1, "{report:?}");
    let f = &report.files[0];
    assert!(
        f.animated && f.kind == "images" && f.file.filename.ends_with(".webm"),
        "{f:?}"
    );
    assert!(
        report.data.is_empty(),
        "`animated` is not data: {:?}",
        report.data
    );
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let n = t
        .target
        .client
        .download(&f.file, &dir.path().join("clip.webm"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(n > 0);
}

#[tokio::test]
async fn subgraph_outputs_are_named_by_the_node_of_the_users_graph() {
    let g = serde_json::json!({
        "12:1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 3}},
        "12:2": {"class_type": "ImageInvert", "inputs": {"image": ["12:1", 0]}},
        "12:3": {"class_type": "SaveImage", "inputs": {"images": ["12:2", 0], "filename_prefix": "suite_sub"}},
        "12:4": {"class_type": "PreviewAny", "inputs": {"source": "hello"}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["12:1", 0], "filename_prefix": "suite_top"}}
    });
    for (protocol, sub) in [(Protocol::Y2026, "12"), (Protocol::Recorded, "12:3")] {
        let t = sim_target_in(protocol).await;
        // Followed over the socket, and read back from the history alone.
        let report = t
            .target
            .client
            .run_prompt(&g, &opts(), &mut |_| {})
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut nodes: Vec<&str> = report.files.iter().map(|f| f.node.as_str()).collect();
        nodes.sort_unstable();
        let mut expected = [sub, "5"];
        expected.sort_unstable();
        assert_eq!(nodes, expected, "{protocol:?}: {:?}", report.files);
        let data_node = if protocol == Protocol::Y2026 {
            "12"
        } else {
            "12:4"
        };
        assert_eq!(
            report.data[0].0, data_node,
            "{protocol:?}: {:?}",
            report.data
        );
        let adopted = t
            .target
            .client
            .await_prompt(&report.prompt_id, Duration::from_millis(20), None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(adopted.files, report.files, "{protocol:?}");
    }
}

/// The daemon end to end against a 2026 server: a workflow whose graph holds a flattened
/// subgraph (`12:…` ids) with a SaveImage and a PreviewImage, and a slow job cancelled by
/// its `.cancel` file. The manifest names the subgraph's node of the user's graph and lists
/// only the saved image (the temp preview is not downloaded); the cancel goes through the
/// jobs API.
#[tokio::test]
async fn the_daemon_against_a_2026_server() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let repo = tmp.path().join("repo");
    common::copy_dir(&common::examples(), &repo);
    let put = |path: std::path::PathBuf, text: &str| {
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    put(
        repo.join("workflows/sub.api.json"),
        r#"{
  "12:1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 16, "batch_size": 1, "color": 255}},
  "12:2": {"class_type": "PreviewImage", "inputs": {"images": ["12:1", 0]}},
  "12:3": {"class_type": "SaveImage", "inputs": {"images": ["12:1", 0], "filename_prefix": "sub"}}
}"#,
    );
    put(
        repo.join("workflows/sub.toml"),
        "[workflow]\nname = \"sub\"\nversion = \"1.0.0\"\ntitle = \"A subgraph's save and preview\"\nclass = \"image\"\ngraph = \"sub.api.json\"\n\n[inputs.color]\nto = \"12:1.color\"\ntitle = \"Colour\"\n\n[outputs.image]\nfrom = \"12:3\"\n",
    );
    let text =
        std::fs::read_to_string(shared().join("comfyui/object_info.json")).unwrap_or_default();
    let mut config = Config::new(
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}")),
        tmp.path().join("sim"),
    );
    config.protocol = Protocol::Y2026;
    config.timing = Timing {
        class_ms: [("ImageInvert".to_owned(), 3000)].into(),
        ..Timing::default()
    };
    let sim = comfy_sim::start(config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let jobs = tmp.path().join("jobs");
    std::fs::create_dir_all(jobs.join("inbox")).unwrap_or_else(|e| panic!("{e}"));
    put(
        jobs.join("inbox/sub.toml"),
        "workflow = \"sub\"\nid = \"sub\"\n[inputs]\ncolor = 65280\n",
    );
    put(
        jobs.join("inbox/long.toml"),
        "workflow = \"solid-color\"\nid = \"long\"\npriority = -1\n",
    );
    let mut settings = comfyd::daemon::Settings::new(&jobs, &repo, sim.url());
    settings.outputs = tmp.path().join("outputs");
    settings.settle = Duration::ZERO;
    settings.until_idle = true;
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let daemon = tokio::spawn(comfyd::daemon::run(settings.clone(), rx));
    // Cancel the slow job once it runs (its ImageInvert takes 3 s).
    for _ in 0..200 {
        if sim
            .timeline()
            .iter()
            .any(|e| matches!(&e.event, comfy_sim::TimelineEvent::NodeStarted { class_type, .. } if class_type == "ImageInvert"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    put(jobs.join("inbox/long.cancel"), "");
    let s = tokio::time::timeout(Duration::from_secs(60), daemon)
        .await
        .unwrap_or_else(|_| panic!("the daemon did not go idle"))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((s.jobs_done, s.jobs_failed), (1, 1), "{s:?}");
    assert!(
        sim.job_cancel_calls() >= 2,
        "probe and cancel through the jobs API"
    );

    let dir = settings.outputs.join("sub");
    let m: comfyd::manifest::Manifest = serde_json::from_str(
        &std::fs::read_to_string(dir.join("manifest.json")).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.outputs.len(), 1, "only the saved image: {:?}", m.outputs);
    let out = &m.outputs[0];
    assert_eq!((out.node.as_str(), out.kind.as_str()), ("12", "images"));
    assert_eq!((out.width, out.height), (Some(32), Some(16)));
    assert!(dir.join(&out.path).is_file(), "{}", out.path);
    let files: Vec<String> = std::fs::read_dir(&dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !files.iter().any(|f| f.contains("temp")),
        "no preview is downloaded: {files:?}"
    );
    assert!(
        uuid::Uuid::parse_str(&m.prompt_id).is_ok_and(|u| u.to_string() == m.prompt_id),
        "{}",
        m.prompt_id
    );
}
