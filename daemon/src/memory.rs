//! The memory policy: when to ask ComfyUI to free its memory, and whether it came back.
//!
//! Pure functions of what the daemon knows. Whether a model is resident cannot be read from
//! VRAM figures alone (newer ComfyUI streams weights, "dynamic VRAM"), so a switch is judged
//! from the model set the daemon last sent, and pressure from the figures: free before a job
//! only when both say so. Freeing when the same models follow would only force a reload.

use std::time::Duration;

use crate::gpu::Sample;

/// `[memory]` as the runner uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Off: never free before a job (an out-of-memory error still frees and retries once).
    pub enabled: bool,
    /// Free before a model switch when less than this is free.
    pub free_below: Threshold,
    /// How long to wait for memory to come back after `/free` (it applies once ComfyUI's
    /// current prompt ends).
    pub confirm_within: Duration,
}

/// A free-VRAM threshold: bytes, or a share of the device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    Bytes(u64),
    Percent(f64),
}

impl Threshold {
    pub fn bytes(&self, total: u64) -> u64 {
        match *self {
            Threshold::Bytes(b) => b,
            Threshold::Percent(p) => (total as f64 * p.clamp(0.0, 100.0) / 100.0) as u64,
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            enabled: true,
            free_below: Threshold::Percent(DEFAULT_FREE_BELOW_PERCENT),
            confirm_within: Duration::from_secs(DEFAULT_CONFIRM_S),
        }
    }
}

pub const DEFAULT_FREE_BELOW_PERCENT: f64 = 25.0;
pub const DEFAULT_CONFIRM_S: u64 = 10;

/// What the runner should do before submitting a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Before {
    Run,
    /// `POST /free` (unload models, free memory) first; `reason` goes into the manifest.
    Free {
        reason: String,
    },
}

/// Decides before a job. `last` is the model set of the job the daemon last sent to this
/// ComfyUI (none after a start or a restart: nothing is known to be loaded, and whatever
/// holds memory is not ours to keep); `sample` the device now, when any figures exist; `need`
/// what the next model set took on the GPU when it last loaded ([`footprint`]), when known.
/// There is pressure when less is free than the threshold, or than the next models need.
/// On a switch the runner decides once the job before has ended ([`is_switch`]), so the
/// figures show what it loaded.
pub fn before_job(
    p: &Policy,
    last: Option<u64>,
    next: u64,
    sample: Option<&Sample>,
    need: Option<u64>,
) -> Before {
    // `next` 0: the job loads no models, so it switches nothing.
    if !p.enabled || next == 0 || last == Some(next) {
        return Before::Run;
    }
    let Some(s) = sample else {
        // No figures, no pressure to see: a blind free would cost a reload every switch.
        return Before::Run;
    };
    let threshold = p.free_below.bytes(s.total);
    let need = need.unwrap_or(0);
    let free = s.free;
    if free >= threshold && free >= need {
        return Before::Run;
    }
    let what = if last.is_some() {
        "the model set changes"
    } else {
        "the models loaded are unknown"
    };
    let under = if s.free < need {
        format!("the {} its models took when they last loaded", size(need))
    } else {
        format!("the {} threshold", size(threshold))
    };
    Before::Free {
        reason: format!("{what} and {} free is under {under}", size(free)),
    }
}

/// Whether the next job switches models: then, with the policy on, it is decided (and sent)
/// only once the job before has ended, so the figures are not those of a load in progress.
/// Same models pipeline as ever; a switch costs a model load anyway.
pub fn is_switch(p: &Policy, last: Option<u64>, next: u64) -> bool {
    p.enabled && next != 0 && last.is_some_and(|l| l != next)
}

/// What a job's models took on the GPU, from the figures around it: the highest use seen
/// while it ran (or after it, without samples) less the use before it. Only a job whose models
/// loaded tells (one whose models were resident shows its working memory alone), so callers
/// keep the largest seen per model set.
pub fn footprint(used_before: u64, used_during: u64) -> Option<u64> {
    used_during
        .checked_sub(used_before)
        .filter(|&d| d >= MIN_GAIN)
}

/// Where memory stands after a `/free`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    /// Free memory is back over the threshold.
    Back,
    /// Not yet: sample again.
    Wait,
    /// Memory came back and settled, but not over the threshold: the models left, and what is
    /// left is held by the CUDA context, the allocator's pool or another process. Run the job.
    Partial,
    /// Nothing came back once ComfyUI was idle and the figures settled (or the bound passed):
    /// something inside ComfyUI holds it (a leak). A supervised ComfyUI is restarted for it.
    NotBack,
}

/// Free memory that changes by less than this counts as settled.
pub const SETTLED_DELTA: u64 = 16 << 20;
/// How long the figures must stay settled, with ComfyUI idle, to be final.
pub const SETTLE: Duration = Duration::from_secs(1);
/// Less than this coming back is "nothing came back".
pub const MIN_GAIN: u64 = 64 << 20;

/// Judges a sample after a `/free`: back means over the threshold and over what the next
/// job's models took when they last loaded (`need`). `before` was taken when the free was asked for; `busy`
/// says whether ComfyUI still runs an earlier prompt (the free applies only after it);
/// `idle_for` is how long it has been idle since, `stable_for` how long the free figure has
/// stayed within [`SETTLED_DELTA`].
pub fn confirm(
    p: &Policy,
    before: &Sample,
    now: &Sample,
    busy: bool,
    idle_for: Duration,
    stable_for: Duration,
    need: Option<u64>,
) -> Confirm {
    if now.free >= p.free_below.bytes(now.total).max(need.unwrap_or(0)) {
        return Confirm::Back;
    }
    if busy || (stable_for.min(idle_for) < SETTLE && idle_for < p.confirm_within) {
        return Confirm::Wait;
    }
    if now.free.saturating_sub(before.free) >= MIN_GAIN {
        Confirm::Partial
    } else {
        Confirm::NotBack
    }
}

/// `1.5 GiB`, `300 MiB`.
pub fn size(bytes: u64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    const MIB: f64 = (1u64 << 20) as f64;
    let b = bytes as f64;
    if b >= GIB {
        format!("{:.1} GiB", b / GIB)
    } else {
        format!("{:.0} MiB", b / MIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn s(used_gib: f64, total_gib: u64) -> Sample {
        let used = (used_gib * GIB as f64) as u64;
        Sample {
            used,
            free: total_gib * GIB - used,
            total: total_gib * GIB,
            utilization: None,
        }
    }

    /// Samples as NVML gave them on an 80 GiB card through a day of SDXL and Flux jobs: the
    /// idle driver, SDXL resident, Flux resident, both (the second run that runs out).
    const IDLE: f64 = 0.6;
    const SDXL: f64 = 9.8;
    const FLUX: f64 = 41.2;
    const BOTH: f64 = 66.3;

    #[test]
    fn the_same_model_set_never_frees_whatever_the_figures() {
        let p = Policy::default();
        assert_eq!(
            before_job(&p, Some(7), 7, Some(&s(BOTH, 80)), None),
            Before::Run
        );
        assert_eq!(
            before_job(&p, Some(7), 7, Some(&s(79.9, 80)), None),
            Before::Run
        );
        // A job that loads no models switches nothing.
        assert_eq!(
            before_job(&p, Some(7), 0, Some(&s(79.9, 80)), None),
            Before::Run
        );
    }

    #[test]
    fn a_switch_frees_only_under_pressure() {
        let p = Policy::default();
        assert_eq!(
            before_job(&p, Some(1), 2, Some(&s(SDXL, 80)), None),
            Before::Run
        );
        assert_eq!(
            before_job(&p, Some(1), 2, Some(&s(FLUX, 80)), None),
            Before::Run
        );
        let Before::Free { reason } = before_job(&p, Some(1), 2, Some(&s(BOTH, 80)), None) else {
            panic!("66 GiB used of 80 is pressure");
        };
        assert!(
            reason.contains("model set changes") && reason.contains("13.7 GiB free"),
            "{reason}"
        );
        assert!(reason.contains("20.0 GiB threshold"), "{reason}");
    }

    #[test]
    fn after_a_start_nothing_is_known_loaded_so_pressure_alone_frees() {
        let p = Policy::default();
        assert_eq!(
            before_job(&p, None, 2, Some(&s(IDLE, 80)), None),
            Before::Run
        );
        let Before::Free { reason } = before_job(&p, None, 2, Some(&s(BOTH, 80)), None) else {
            panic!("pressure after a start frees");
        };
        assert!(reason.contains("unknown"), "{reason}");
    }

    #[test]
    fn no_figures_or_a_disabled_policy_never_free() {
        let mut p = Policy::default();
        assert_eq!(before_job(&p, Some(1), 2, None, None), Before::Run);
        p.enabled = false;
        assert_eq!(
            before_job(&p, Some(1), 2, Some(&s(79.0, 80)), None),
            Before::Run
        );
    }

    #[test]
    fn what_the_next_models_took_last_time_is_pressure_too() {
        let p = Policy::default();
        // SDXL resident (70 GiB free of 80) and Flux took 40 GiB when it last loaded: it fits.
        assert_eq!(
            before_job(&p, Some(1), 2, Some(&s(SDXL, 80)), Some(40 * GIB)),
            Before::Run
        );
        // Flux resident (38.8 GiB free), SDXL-plus-refiner next took 45 GiB: free first.
        let Before::Free { reason } =
            before_job(&p, Some(2), 3, Some(&s(FLUX, 80)), Some(45 * GIB))
        else {
            panic!("38.8 GiB free cannot take 45 GiB");
        };
        assert!(reason.contains("45.0 GiB its models took"), "{reason}");
        assert!(is_switch(&p, Some(2), 1));
        assert!(
            !is_switch(&p, Some(2), 2) && !is_switch(&p, None, 2) && !is_switch(&p, Some(2), 0)
        );
        let off = Policy {
            enabled: false,
            ..Policy::default()
        };
        assert!(!is_switch(&off, Some(2), 1));
        assert_eq!(footprint(GIB, 41 * GIB), Some(40 * GIB));
        assert_eq!(
            footprint(10 * GIB, 10 * GIB + (1 << 20)),
            None,
            "working memory only"
        );
        assert_eq!(footprint(10 * GIB, 9 * GIB), None);
    }

    #[test]
    fn a_byte_threshold_is_absolute() {
        let p = Policy {
            free_below: Threshold::Bytes(30 * GIB),
            ..Policy::default()
        };
        assert!(matches!(
            before_job(&p, Some(1), 2, Some(&s(FLUX + 10.0, 80)), None),
            Before::Free { .. }
        ));
        assert_eq!(
            before_job(&p, Some(1), 2, Some(&s(FLUX, 80)), None),
            Before::Run
        );
        assert_eq!(Threshold::Percent(150.0).bytes(100), 100);
        assert_eq!(Threshold::Percent(-3.0).bytes(100), 0);
    }

    const Z: Duration = Duration::ZERO;
    const LONG: Duration = Duration::from_secs(600);

    #[test]
    fn memory_back_over_the_threshold_is_confirmed_at_once() {
        let p = Policy::default();
        let before = s(BOTH, 80);
        assert_eq!(
            confirm(&p, &before, &s(IDLE, 80), false, Z, Z, None),
            Confirm::Back
        );
        // Even while an earlier prompt still runs: the figures already say enough is free.
        assert_eq!(
            confirm(&p, &before, &s(SDXL, 80), true, Z, Z, None),
            Confirm::Back
        );
    }

    #[test]
    fn while_comfyui_still_runs_the_earlier_prompt_the_free_has_not_applied_yet() {
        let p = Policy::default();
        let before = s(BOTH, 80);
        assert_eq!(
            confirm(&p, &before, &before, true, LONG, LONG, None),
            Confirm::Wait
        );
    }

    #[test]
    fn figures_still_moving_are_waited_for_until_they_settle_or_the_bound_passes() {
        let p = Policy::default();
        let before = s(BOTH, 80);
        let now = s(BOTH - 2.0, 80);
        let half = Duration::from_millis(500);
        let two = Duration::from_secs(2);
        assert_eq!(
            confirm(&p, &before, &now, false, two, half, None),
            Confirm::Wait
        );
        assert_eq!(
            confirm(&p, &before, &now, false, half, LONG, None),
            Confirm::Wait
        );
        assert_eq!(
            confirm(&p, &before, &now, false, SETTLE, SETTLE, None),
            Confirm::Partial
        );
        // Still moving, but the bound passed.
        assert_eq!(
            confirm(&p, &before, &now, false, LONG, half, None),
            Confirm::Partial
        );
    }

    #[test]
    fn some_back_but_under_the_threshold_is_partial_and_nothing_back_is_not_back() {
        // What an H200 showed (gpu-lane): 141,975 MiB free before, 142,327 after, the
        // threshold 142,565: the models left, the CUDA context and pool kept the rest.
        let mib = |m: u64| m << 20;
        let total = mib(143_771);
        let at = |free| Sample {
            used: total - free,
            free,
            total,
            utilization: None,
        };
        let p = Policy {
            free_below: Threshold::Bytes(mib(142_565)),
            ..Policy::default()
        };
        let before = at(mib(141_975));
        assert_eq!(
            confirm(&p, &before, &at(mib(142_327)), false, SETTLE, SETTLE, None),
            Confirm::Partial
        );
        // A leak: 70 GiB held, the free gave back nothing.
        let p = Policy::default();
        assert_eq!(
            confirm(&p, &s(70.0, 80), &s(69.99, 80), false, SETTLE, SETTLE, None),
            Confirm::NotBack
        );
    }

    #[test]
    fn back_means_enough_for_the_next_job_too() {
        let p = Policy::default();
        // 30 GiB free is over the 20 GiB threshold, but the next models took 40 GiB.
        let (before, now) = (s(BOTH, 80), s(50.0, 80));
        assert_eq!(confirm(&p, &before, &now, false, Z, Z, None), Confirm::Back);
        assert_eq!(
            confirm(&p, &before, &now, false, SETTLE, SETTLE, Some(40 * GIB)),
            Confirm::Partial
        );
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(size(3 * GIB / 2), "1.5 GiB");
        assert_eq!(size(300 << 20), "300 MiB");
    }
}
