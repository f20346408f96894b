//! Every file of the recorded contract is replayed by some test, or says here why it cannot
//! be. A new recording fails this test until it is placed.

use crate::support::shared_dir;

/// Recorded file → the test module replaying it, or why none does.
const PLACED: &[(&str, &str)] = &[
    ("README.md", "documentation of the recordings"),
    (
        "NEWER.md",
        "notes on the 2026 protocol (not recordings): `Protocol::Y2026`, tested in `newer`",
    ),
    ("api_system_stats.json", "contract_http"),
    ("embeddings.json", "contract_http"),
    ("errors", "contract_errors (every file in it)"),
    ("extensions.json", "contract_http"),
    (
        "features.json",
        "contract_http, contract_runs (the feature_flags frame)",
    ),
    ("free_and_cache.json", "contract_queue"),
    (
        "history_NOT_an_error_invalid_regex_is_swallowed.json",
        "contract_runs",
    ),
    ("history_binary_no_feature_flags.json", "contract_runs"),
    ("history_binary_with_feature_flags.json", "contract_runs"),
    ("history_empty_at_startup.json", "contract_http"),
    (
        "history_execution_error_loadimage_not_an_image.json",
        "contract_runs",
    ),
    (
        "history_execution_error_save_outside_output.json",
        "contract_runs",
    ),
    ("history_identical_resubmit.json", "contract_runs"),
    ("history_interrupted.json", "contract_queue"),
    ("history_max_items_2.json", "contract_runs"),
    ("history_success.json", "contract_runs"),
    ("models.json", "contract_http"),
    ("models_checkpoints.json", "contract_http"),
    (
        "object_info.json",
        "contract_http (served back equal), and every simulator's catalogue",
    ),
    ("object_info_EmptyImage.json", "contract_http"),
    ("object_info_LoadImage.json", "contract_http"),
    ("prompt.json", "contract_http"),
    ("prompt_request_success.json", "contract_runs"),
    ("prompt_response_success.json", "contract_runs"),
    ("queue_busy.json", "contract_queue"),
    ("queue_empty_at_startup.json", "contract_http"),
    ("queue_idle.json", "contract_http"),
    ("queue_ops.json", "contract_queue"),
    ("system_stats.json", "contract_http"),
    (
        "timing_512px.json",
        "not replayed: latency statistics of the real server, for benchmarks",
    ),
    (
        "timing_64px.json",
        "not replayed: latency statistics of the real server, for benchmarks",
    ),
    ("upload_and_loadimage.json", "contract_http"),
    (
        "view_info.json",
        "contract_runs (the file), contract_http (the variants; preview=webp is not simulated)",
    ),
    (
        "view_output.png",
        "contract_runs (pixel-equal to the simulated output)",
    ),
    (
        "ws_NOT_an_error_invalid_regex_is_swallowed.jsonl",
        "contract_runs",
    ),
    ("ws_binary_no_feature_flags.jsonl", "contract_runs"),
    ("ws_binary_with_feature_flags.jsonl", "contract_runs"),
    (
        "ws_execution_error_loadimage_not_an_image.jsonl",
        "contract_runs",
    ),
    (
        "ws_execution_error_save_outside_output.jsonl",
        "contract_runs",
    ),
    ("ws_free.jsonl", "contract_queue"),
    ("ws_identical_resubmit.jsonl", "contract_runs"),
    ("ws_observer_other_client.jsonl", "contract_queue"),
    (
        "ws_queue_interrupt.jsonl",
        "contract_queue (status sequence, and each prompt's frames)",
    ),
    ("ws_reconnect_part1.jsonl", "contract_queue"),
    ("ws_reconnect_part2.jsonl", "contract_queue"),
    ("ws_reconnect_summary.json", "contract_queue"),
    ("ws_success.jsonl", "contract_runs"),
];

#[test]
fn every_recorded_file_is_placed() {
    let dir = shared_dir().join("comfyui");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let unplaced: Vec<&String> = names
        .iter()
        .filter(|n| !PLACED.iter().any(|(p, _)| p == n))
        .collect();
    assert!(
        unplaced.is_empty(),
        "recorded files no test replays or explains: {unplaced:?}"
    );
    let gone: Vec<&str> = PLACED
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !names.iter().any(|n| n == p))
        .collect();
    assert!(
        gone.is_empty(),
        "placed files that are no longer recorded: {gone:?}"
    );
}
