//! The client suite against a real ComfyUI. Run by `scripts/real-comfyui`, which installs and
//! starts one and sets `COMFYUI_URL`; or point `COMFYUI_URL` at any running ComfyUI and run
//! `cargo test -p comfyd --test real -- --ignored --test-threads=1`.

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
