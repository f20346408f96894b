//! The client suite against the simulator, plus the faults only the simulator can inject.

mod common;
mod suite;

use std::time::Duration;

use comfy_sim::{Config, Fault, Timing};
use comfyd::client::{Client, ClientError, Outcome, RunOptions, Timeouts};
use common::shared;
use suite::Target;

pub struct SimTarget {
    pub target: Target,
    pub sim: comfy_sim::Sim,
    _dir: tempfile::TempDir,
}

pub async fn sim_target() -> SimTarget {
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
        },
        sim,
        _dir: dir,
    }
}

cases!(sim_target);

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
