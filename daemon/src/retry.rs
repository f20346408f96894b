//! Whether a job's problem is worth another try, and when: a pure function of what happened
//! and what was tried, so every rule has a unit test and the runner only does the I/O.

use std::time::Duration;

/// What went wrong in a phase of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// ComfyUI did not answer (down, restarting, timing out, a dropped socket) while the job
    /// uploaded, submitted, waited or downloaded.
    Unreachable,
    /// ComfyUI forgot the prompt (it restarted): the job must be submitted again.
    Lost,
    /// ComfyUI ran out of memory executing the prompt.
    OutOfMemory,
    /// The disk the daemon writes to is full.
    NoSpace,
    /// Anything else: a rejection, an execution error, a bad input.
    Final,
}

/// What has been tried so far for one job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tried {
    /// Retries after an unreachable ComfyUI or a full disk, in a row.
    pub waits: u32,
    /// Time spent waiting for ComfyUI or disk space.
    pub waited: Duration,
    /// Out-of-memory retries.
    pub oom: u32,
    /// Restarts of a supervised ComfyUI while the job's prompt executed.
    pub restarts: u32,
}

/// The answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Try again after this long; free ComfyUI's memory first when `free` is set.
    Retry { after: Duration, free: bool },
    /// Give up: the job fails.
    Fail,
}

/// Out-of-memory retries before the job fails.
pub const OOM_RETRIES: u32 = 1;

/// Restarts of ComfyUI under one executing job before the job fails instead of running again:
/// the poison-job guard. One restart is bad luck (a leak, a kill), two may be; a third while
/// the same job executes says the job is what brings ComfyUI down.
pub const RESTART_LIMIT: u32 = 3;

/// Decides the next step. A job under which a supervised ComfyUI restarted [`RESTART_LIMIT`]
/// times fails rather than bringing it down again. `patience` bounds how long a job waits for an unreachable ComfyUI
/// (a day by default: an unreachable ComfyUI is not the job's fault); a full disk is waited out
/// without bound, since nothing is lost by waiting.
pub fn decide(problem: Problem, tried: Tried, patience: Duration) -> Decision {
    match problem {
        Problem::Unreachable | Problem::Lost if tried.restarts >= RESTART_LIMIT => Decision::Fail,
        Problem::Unreachable if tried.waited < patience => Decision::Retry {
            after: backoff(tried.waits),
            free: false,
        },
        Problem::Lost => Decision::Retry {
            after: backoff(tried.waits),
            free: false,
        },
        Problem::NoSpace => Decision::Retry {
            after: backoff(tried.waits).max(Duration::from_secs(1)),
            free: false,
        },
        Problem::OutOfMemory if tried.oom < OOM_RETRIES => Decision::Retry {
            after: Duration::ZERO,
            free: true,
        },
        _ => Decision::Fail,
    }
}

/// 250 ms doubling to 10 s.
pub fn backoff(waits: u32) -> Duration {
    Duration::from_millis((250u64 << waits.min(6)).min(10_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn an_unreachable_comfyui_is_waited_for_until_patience_runs_out() {
        let t = Tried::default();
        assert_eq!(
            decide(Problem::Unreachable, t, DAY),
            Decision::Retry {
                after: Duration::from_millis(250),
                free: false
            }
        );
        let later = Tried {
            waits: 30,
            waited: DAY,
            ..Tried::default()
        };
        assert_eq!(decide(Problem::Unreachable, later, DAY), Decision::Fail);
        // The backoff is capped.
        assert_eq!(backoff(30), Duration::from_secs(10));
    }

    #[test]
    fn out_of_memory_frees_and_retries_once() {
        let t = Tried::default();
        assert_eq!(
            decide(Problem::OutOfMemory, t, DAY),
            Decision::Retry {
                after: Duration::ZERO,
                free: true
            }
        );
        let again = Tried { oom: 1, ..t };
        assert_eq!(decide(Problem::OutOfMemory, again, DAY), Decision::Fail);
    }

    #[test]
    fn lost_prompts_and_full_disks_always_retry_and_final_problems_never_do() {
        let long = Tried {
            waits: 100,
            waited: DAY * 2,
            oom: 5,
            restarts: RESTART_LIMIT - 1,
        };
        assert!(matches!(
            decide(Problem::Lost, long, DAY),
            Decision::Retry { .. }
        ));
        assert!(matches!(
            decide(Problem::NoSpace, long, DAY),
            Decision::Retry { after, .. } if after >= Duration::from_secs(1)
        ));
        assert_eq!(
            decide(Problem::Final, Tried::default(), DAY),
            Decision::Fail
        );
    }

    #[test]
    fn a_job_under_which_comfyui_restarted_too_often_fails_instead_of_running_again() {
        let t = Tried {
            restarts: RESTART_LIMIT - 1,
            ..Tried::default()
        };
        assert!(matches!(
            decide(Problem::Lost, t, DAY),
            Decision::Retry { free: false, .. }
        ));
        let poison = Tried {
            restarts: RESTART_LIMIT,
            ..Tried::default()
        };
        assert_eq!(decide(Problem::Lost, poison, DAY), Decision::Fail);
        // Waiting for the restarted ComfyUI to answer does not outlast the guard either.
        assert_eq!(decide(Problem::Unreachable, poison, DAY), Decision::Fail);
        // Restarts say nothing about memory or disk.
        assert!(matches!(
            decide(Problem::OutOfMemory, poison, DAY),
            Decision::Retry { free: true, .. }
        ));
        assert!(matches!(
            decide(Problem::NoSpace, poison, DAY),
            Decision::Retry { .. }
        ));
    }
}
