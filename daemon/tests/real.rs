//! The client suite against a real ComfyUI. Run by `scripts/real-comfyui`, which installs and
//! starts one and sets `COMFYUI_URL`; or point `COMFYUI_URL` at any running ComfyUI and run
//! `cargo test -p comfyd --test real -- --ignored --test-threads=1`.

mod common;
mod suite;

use comfyd::client::Client;
use suite::Target;

pub struct RealTarget {
    pub target: Target,
}

pub async fn real_target() -> RealTarget {
    let url = std::env::var("COMFYUI_URL")
        .unwrap_or_else(|_| panic!("COMFYUI_URL is not set: run these through scripts/real-comfyui, or set it to a running ComfyUI"));
    let client = Client::new(&url).unwrap_or_else(|e| panic!("{e}"));
    RealTarget {
        target: Target {
            client,
            checkpoint: std::env::var("COMFYUI_TINY_CHECKPOINT").ok(),
            // On CPU, each blur of a 1024² image takes about a second.
            slow_blurs: 8,
            slow_size: 1024,
        },
    }
}

cases!(real_target, #[ignore = "needs a real ComfyUI: scripts/real-comfyui runs these"]);

/// The daemon end to end against the real ComfyUI: a single job, a JSONL batch and a sweep of
/// the no-model workflow, and SD 1.5 text-to-image with the tiny checkpoint; every manifest's
/// hashes match the files it lists.
#[tokio::test]
#[ignore = "needs a real ComfyUI: scripts/real-comfyui runs these"]
async fn daemon_runs_single_and_batch_jobs_against_real_comfyui() {
    use sha2::Digest;
    let url = std::env::var("COMFYUI_URL").unwrap_or_else(|_| panic!("COMFYUI_URL is not set"));
    let checkpoint = std::env::var("COMFYUI_TINY_CHECKPOINT")
        .unwrap_or_else(|_| panic!("COMFYUI_TINY_CHECKPOINT is not set"));
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // The examples, with the tiny checkpoint declared.
    let repo = tmp.path().join("repo");
    common::copy_dir(
        &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples"),
        &repo,
    );
    let config = std::fs::read_to_string(repo.join("comfyc.toml")).unwrap_or_default();
    std::fs::write(
        repo.join("comfyc.toml"),
        format!("{config}\n[[models]]\nname = \"{checkpoint}\"\nfolder = \"checkpoints\"\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let jobs = tmp.path().join("jobs");
    std::fs::create_dir_all(jobs.join("inbox")).unwrap_or_else(|e| panic!("{e}"));
    let put = |name: &str, text: String| {
        std::fs::write(jobs.join("inbox").join(name), text).unwrap_or_else(|e| panic!("{e}"))
    };
    put(
        "one.toml",
        "workflow = \"solid-color\"\n[inputs]\ncolor = 16744448\n".into(),
    );
    put("batch.jsonl", (0..20).map(|i| format!("{{\"workflow\": \"solid-color\", \"inputs\": {{\"color\": {}, \"width\": 32, \"height\": 32}}}}\n", i * 4000)).collect());
    put(
        "sd15.toml",
        format!(
            "workflow = \"txt2img\"\n[inputs]\nprompt = \"a white ceramic mug\"\ncheckpoint = \"{checkpoint}\"\nwidth = 64\nheight = 64\nsteps = 4\n[sweep]\nseed = [1, 2]\n"
        ),
    );
    let mut settings = comfyd::daemon::Settings::new(&jobs, &repo, url);
    settings.outputs = tmp.path().join("outputs");
    settings.settle = std::time::Duration::ZERO;
    settings.until_idle = true;
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let s = comfyd::daemon::run(settings.clone(), rx)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (s.jobs_done, s.jobs_failed, s.files_done),
        (23, 0, 3),
        "{s:?}"
    );
    let mut checked = 0;
    for entry in std::fs::read_dir(&settings.outputs)
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
    {
        let text = std::fs::read_to_string(entry.path().join("manifest.json"))
            .unwrap_or_else(|e| panic!("{e}"));
        let m: comfyd::manifest::Manifest =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            m.comfyui.version.starts_with("0.3"),
            "{}",
            m.comfyui.version
        );
        for o in &m.outputs {
            let bytes = std::fs::read(entry.path().join(&o.path)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                hex::encode(sha2::Sha256::digest(&bytes)),
                o.sha256,
                "{}",
                o.path
            );
            assert_eq!(bytes.len() as u64, o.size);
            assert_eq!(o.media_type, "image/png");
            assert!(o.width.is_some());
        }
        if m.workflow.name == "txt2img" {
            assert_eq!(
                (m.outputs[0].width, m.outputs[0].height),
                (Some(64), Some(64))
            );
            assert!(
                m.timings.nodes.iter().any(|n| n.node == "3"),
                "the sampler ran: {:?}",
                m.timings.nodes
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 23);
}
