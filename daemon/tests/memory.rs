//! The memory policy against the simulator's GPU memory model: a 10 GiB device on which two
//! 6 GiB checkpoints do not fit side by side and ComfyUI does not evict on its own (it unloads
//! everything only after an out-of-memory error, as the real one does). Counted where it
//! happens: the simulator's own out-of-memory errors and `/free` calls.

mod common;

use std::time::Duration;

use comfyd::daemon::{self, Settings, Summary};
use comfyd::manifest::Manifest;
use comfyd::memory::{Policy, Threshold};

const GIB: u64 = 1 << 30;
const A: &str = "v1-5-pruned-emaonly-fp16.safetensors";
const B: &str = "tiny-sd15.safetensors";

struct Rig {
    tmp: tempfile::TempDir,
    sim: comfy_sim::Sim,
}

impl Rig {
    async fn new(model_gib: u64) -> Rig {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let text = std::fs::read_to_string(common::shared().join("comfyui/object_info.json"))
            .unwrap_or_default();
        let mut config = comfy_sim::Config::new(
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}")),
            tmp.path().join("sim"),
        );
        config
            .models
            .insert("checkpoints".into(), vec![A.into(), B.into()]);
        config.memory = Some(comfy_sim::Memory {
            vram_bytes: 10 * GIB,
            model_bytes: [(A.into(), model_gib * GIB), (B.into(), model_gib * GIB)].into(),
            default_model_bytes: GIB,
            leak_bytes_per_prompt: 0,
            working_bytes: GIB / 2,
        });
        config.timing.node_ms = 5;
        config.timing.model_load_ms = 50;
        let sim = comfy_sim::start(config)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        Rig { tmp, sim }
    }

    fn settings(&self, memory: Policy) -> Settings {
        let jobs = self.tmp.path().join("jobs");
        // The examples, with the second checkpoint declared.
        let repo = self.tmp.path().join("repo");
        if !repo.exists() {
            common::copy_dir(&common::examples(), &repo);
            let config = std::fs::read_to_string(repo.join("comfyc.toml")).unwrap_or_default();
            std::fs::write(
                repo.join("comfyc.toml"),
                format!("{config}\n[[models]]\nname = \"{B}\"\nfolder = \"checkpoints\"\n"),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        }
        let mut s = Settings::new(&jobs, repo, self.sim.url());
        s.outputs = self.tmp.path().join("outputs");
        s.settle = Duration::ZERO;
        s.until_idle = true;
        s.memory = memory;
        // Arrival order: model affinity would group the checkpoints and switch once.
        s.policy.mode = comfyd::scheduler::Mode::Fifo;
        s
    }

    /// `n` text-to-image jobs alternating the two checkpoints, in one JSONL.
    fn drop_alternating(&self, n: usize) {
        let lines: String = (0..n)
            .map(|i| {
                let ckpt = if i % 2 == 0 { A } else { B };
                format!(
                    "{{\"id\": \"j{i}\", \"workflow\": \"txt2img\", \"inputs\": {{\"prompt\": \"a mug\", \"checkpoint\": \"{ckpt}\", \"seed\": {i}}}}}\n"
                )
            })
            .collect();
        common::drop_job(&self.tmp.path().join("jobs"), "switches.jsonl", &lines);
    }

    async fn run(&self, settings: Settings) -> Summary {
        let (_tx, rx) = tokio::sync::watch::channel(false);
        tokio::time::timeout(Duration::from_secs(120), daemon::run(settings, rx))
            .await
            .unwrap_or_else(|_| panic!("the daemon did not go idle"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn manifest(&self, id: &str) -> Manifest {
        let p = self
            .tmp
            .path()
            .join("outputs")
            .join(id)
            .join("manifest.json");
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn kinds(&self, id: &str) -> Vec<String> {
        self.manifest(id)
            .interventions
            .iter()
            .map(|i| i.kind.clone())
            .collect()
    }
}

fn policy(free_below: Threshold) -> Policy {
    Policy {
        free_below,
        ..Policy::default()
    }
}

#[tokio::test]
async fn a_switch_under_pressure_frees_first_and_nothing_runs_out_of_memory() {
    let rig = Rig::new(6).await;
    rig.drop_alternating(6);
    let s = rig
        .run(rig.settings(policy(Threshold::Bytes(7 * GIB))))
        .await;
    assert_eq!((s.jobs_done, s.jobs_failed), (6, 0), "{s:?}");
    assert_eq!(rig.sim.out_of_memory_count(), 0);
    // Every switch freed (the first job found the GPU empty); each free asked both flags.
    let frees = rig.sim.free_calls();
    assert_eq!(frees.len(), 5, "{frees:?}");
    assert!(frees.iter().all(|f| f.unload_models && f.free_memory));
    assert!(rig.kinds("j0").is_empty());
    for i in 1..6 {
        let m = rig.manifest(&format!("j{i}"));
        let free = &m.interventions[..];
        assert_eq!(free.len(), 1, "j{i}: {free:?}");
        assert_eq!(free[0].kind, "free");
        assert_eq!(free[0].ok, Some(true), "memory came back: {:?}", free[0]);
        assert!(
            free[0].reason.contains("model set changes"),
            "{}",
            free[0].reason
        );
        // Before: the other checkpoint resident; after: the whole device free.
        assert!(free[0].vram_free_before_bytes < Some(7 * GIB), "{free:?}");
        assert_eq!(free[0].vram_free_after_bytes, Some(10 * GIB));
        assert_eq!(m.gpu.source, "system_stats");
        assert_eq!(m.gpu.vram_total_bytes, Some(10 * GIB));
        assert!(
            m.gpu
                .name
                .as_deref()
                .is_some_and(|n| n.contains("Simulated")),
            "{:?}",
            m.gpu
        );
    }
}

#[tokio::test]
async fn without_the_policy_every_switch_runs_out_of_memory_once_and_is_retried() {
    let rig = Rig::new(6).await;
    rig.drop_alternating(6);
    let off = Policy {
        enabled: false,
        ..Policy::default()
    };
    let s = rig.run(rig.settings(off)).await;
    assert_eq!((s.jobs_done, s.jobs_failed), (6, 0), "{s:?}");
    assert_eq!(rig.sim.out_of_memory_count(), 5);
    assert_eq!(rig.sim.free_calls().len(), 5, "one free per OOM retry");
    assert!(rig.kinds("j0").is_empty());
    for i in 1..6 {
        assert_eq!(rig.kinds(&format!("j{i}")), ["oom-retry"], "j{i}");
    }
}

#[tokio::test]
async fn what_a_model_set_took_when_it_loaded_is_remembered_so_it_runs_out_of_memory_once() {
    // The default threshold (25%: 2.5 GiB) never sees pressure with 3.5 GiB free; the daemon
    // learns from the figures what each checkpoint took, after which every switch frees first.
    let rig = Rig::new(6).await;
    rig.drop_alternating(6);
    let s = rig.run(rig.settings(Policy::default())).await;
    assert_eq!((s.jobs_done, s.jobs_failed), (6, 0), "{s:?}");
    assert_eq!(
        rig.sim.out_of_memory_count(),
        1,
        "only the first switch to the checkpoint not seen yet"
    );
    let all: Vec<(String, String)> = (0..6)
        .flat_map(|i| {
            rig.manifest(&format!("j{i}"))
                .interventions
                .into_iter()
                .map(move |v| (format!("j{i}"), format!("{}: {}", v.kind, v.reason)))
        })
        .collect();
    let count = |p: &str| all.iter().filter(|(_, k)| k.starts_with(p)).count();
    assert_eq!(count("oom-retry"), 1, "{all:#?}");
    // Once both footprints are known, a switch onto a resident checkpoint frees first.
    assert!(
        all.iter()
            .filter(|(_, k)| k.starts_with("free") && k.contains("its models took"))
            .count()
            >= 2,
        "{all:#?}"
    );
}

#[tokio::test]
async fn a_job_that_runs_out_of_memory_again_after_the_free_fails_with_the_figures() {
    // A 12 GiB checkpoint on a 10 GiB device: no free makes it fit.
    let rig = Rig::new(12).await;
    common::drop_job(
        &rig.tmp.path().join("jobs"),
        "huge.toml",
        &format!(
            "id = \"huge\"\nworkflow = \"txt2img\"\n[inputs]\nprompt = \"a mug\"\ncheckpoint = \"{A}\"\n"
        ),
    );
    let s = rig.run(rig.settings(Policy::default())).await;
    assert_eq!((s.jobs_done, s.jobs_failed), (0, 1), "{s:?}");
    assert_eq!(
        rig.sim.out_of_memory_count(),
        2,
        "tried, freed, tried once more"
    );
    assert_eq!(rig.sim.free_calls().len(), 1);
    let report = std::fs::read_to_string(rig.tmp.path().join("jobs/failed/huge.toml.error.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    let r: serde_json::Value = serde_json::from_str(&report).unwrap_or_else(|e| panic!("{e}"));
    let f = &r["failures"][0];
    assert_eq!(f["kind"], "out-of-memory", "{r:#}");
    let msg = f["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("again after ComfyUI's memory was freed")
            && msg.contains("10.0 GiB of 10.0 GiB VRAM was free before the last try"),
        "{msg}"
    );
}
