//! What a person watching a run is shown, decided as plain functions: the figures of the
//! terminal's overall progress bar (from the owner loop's job counts) and when a long job's
//! progress is logged. The owner loop feeds both; drawing the bar is [`crate::terminal`]'s.

use std::time::{Duration, Instant};

use crate::report::Progress;

/// How often a job that runs long logs its progress, unless `COMFYD_PROGRESS_LOG_MS` says
/// otherwise (the tests' knob).
pub const LOG_EVERY: Duration = Duration::from_secs(5);

/// This daemon's jobs as the owner loop last counted them. The owner publishes a new value
/// whenever one changes; the bar is a function of the latest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub done: u64,
    pub failed: u64,
    /// Found finished already (a manifest from before a restart).
    pub skipped: u64,
    /// Claimed by this daemon and not ended: submitted, executing or writing outputs.
    pub running: u64,
    /// Waiting for a slot here (a job another daemon claims stops being counted).
    pub queued: u64,
}

impl Counts {
    /// Jobs ended here: the bar's position.
    pub fn ended(&self) -> u64 {
        self.done + self.failed + self.skipped
    }

    /// Jobs ended, running and waiting: the bar's length. It grows as files are taken in, so
    /// the bar never claims to be done while the inbox still feeds it.
    pub fn total(&self) -> u64 {
        self.ended() + self.running + self.queued
    }

    /// The words after the figures: what runs, and what went wrong.
    pub fn message(&self) -> String {
        let mut parts = vec![format!("{} running", self.running)];
        if self.failed > 0 {
            parts.push(format!("{} failed", self.failed));
        }
        if self.skipped > 0 {
            parts.push(format!("{} already done", self.skipped));
        }
        parts.join(", ")
    }
}

/// A job rate people read at a glance: per second when there are several a second, else per
/// minute, else per hour.
pub fn rate(per_sec: f64) -> String {
    if !per_sec.is_finite() || per_sec <= 0.0 {
        return "- jobs/s".into();
    }
    if per_sec >= 1.0 {
        format!("{per_sec:.1} jobs/s")
    } else if per_sec * 60.0 >= 1.0 {
        format!("{:.1} jobs/min", per_sec * 60.0)
    } else {
        format!("{:.1} jobs/h", per_sec * 3600.0)
    }
}

/// The time left for `remaining` jobs at `per_sec`: `?` until a rate is known, then compact
/// (`45s`, `3m 05s`, `2h 10m`).
pub fn time_left(remaining: u64, per_sec: f64) -> String {
    if remaining == 0 {
        return "0s".into();
    }
    if !per_sec.is_finite() || per_sec <= 0.0 {
        return "?".into();
    }
    let secs = (remaining as f64 / per_sec).ceil().min(f64::from(u32::MAX)) as u64;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {:02}s", secs / 60, secs % 60),
        _ => format!("{}h {:02}m", secs / 3600, secs % 3600 / 60),
    }
}

/// Whether `every` has passed since `last`: the throttle of the progress log.
pub fn due(last: Instant, now: Instant, every: Duration) -> bool {
    now.saturating_duration_since(last) >= every
}

/// Decides when the executing job's progress is logged: every `every` while one job keeps
/// executing, never for a job that ends sooner. Fed the executing job each owner turn.
#[derive(Debug, Clone)]
pub struct ProgressLog {
    every: Duration,
    /// The job executing, when it was first seen, and when its progress was last logged.
    current: Option<(String, Instant, Instant)>,
}

impl ProgressLog {
    pub fn new(every: Duration) -> ProgressLog {
        ProgressLog {
            every,
            current: None,
        }
    }

    /// Given what executes at `now`, how long it has run when its progress is due to be
    /// logged; `None` otherwise.
    pub fn observe(&mut self, now: Instant, executing: Option<&Progress>) -> Option<Duration> {
        let Some(p) = executing else {
            self.current = None;
            return None;
        };
        match &mut self.current {
            Some((job, since, last)) if *job == p.job => {
                if due(*last, now, self.every) {
                    *last = now;
                    Some(now.saturating_duration_since(*since))
                } else {
                    None
                }
            }
            _ => {
                self.current = Some((p.job.clone(), now, now));
                None
            }
        }
    }
}

/// `value/max` of a progress figure, whole numbers without a fraction (`12/20`).
pub fn fraction(value: f64, max: f64) -> String {
    fn num(x: f64) -> String {
        if x.fract() == 0.0 && x.abs() < 1e15 {
            format!("{}", x as i64)
        } else {
            format!("{x:.2}")
        }
    }
    format!("{}/{}", num(value), num(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn executing(job: &str) -> Progress {
        Progress {
            job: job.into(),
            nodes_total: 7,
            ..Progress::default()
        }
    }

    #[test]
    fn the_bar_counts_every_job_ended_here_and_grows_with_intake() {
        let mut c = Counts {
            queued: 10,
            ..Counts::default()
        };
        assert_eq!((c.ended(), c.total()), (0, 10));
        c.queued = 8;
        c.running = 2;
        assert_eq!(
            (c.ended(), c.total()),
            (0, 10),
            "claiming moves, adds nothing"
        );
        c.running = 1;
        c.done = 1;
        assert_eq!((c.ended(), c.total()), (1, 10));
        c.queued += 40; // a 40-line file was taken in
        assert_eq!((c.ended(), c.total()), (1, 50));
        c.running = 0;
        c.failed = 1;
        c.skipped = 3;
        c.queued -= 3;
        assert_eq!((c.ended(), c.total()), (5, 50));
        assert_eq!(c.message(), "0 running, 1 failed, 3 already done");
        assert_eq!(Counts::default().message(), "0 running");
    }

    #[test]
    fn rates_are_read_in_the_unit_that_shows_them() {
        assert_eq!(rate(12.34), "12.3 jobs/s");
        assert_eq!(rate(0.5), "30.0 jobs/min");
        assert_eq!(rate(1.0 / 600.0), "6.0 jobs/h");
        assert_eq!(rate(0.0), "- jobs/s");
        assert_eq!(rate(f64::NAN), "- jobs/s");
    }

    #[test]
    fn the_time_left_is_unknown_until_a_rate_is() {
        assert_eq!(time_left(10, 0.0), "?");
        assert_eq!(time_left(10, f64::NAN), "?");
        assert_eq!(time_left(0, 0.0), "0s");
        assert_eq!(time_left(10, 2.0), "5s");
        assert_eq!(time_left(10, 3.0), "4s", "rounded up");
        assert_eq!(time_left(185, 1.0), "3m 05s");
        assert_eq!(time_left(7800, 1.0), "2h 10m");
    }

    #[test]
    fn a_long_job_is_logged_every_interval_and_a_short_one_never() {
        let every = Duration::from_secs(5);
        let mut log = ProgressLog::new(every);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let a = executing("a");
        assert_eq!(log.observe(at(0), Some(&a)), None, "just started");
        assert_eq!(log.observe(at(4_999), Some(&a)), None);
        assert_eq!(
            log.observe(at(5_000), Some(&a)),
            Some(Duration::from_secs(5))
        );
        assert_eq!(log.observe(at(5_250), Some(&a)), None, "not twice a turn");
        assert_eq!(log.observe(at(9_999), Some(&a)), None);
        assert_eq!(
            log.observe(at(10_100), Some(&a)),
            Some(Duration::from_millis(10_100))
        );
        // The next job starts its own clock, even when it follows without a gap.
        let b = executing("b");
        assert_eq!(log.observe(at(12_000), Some(&b)), None);
        assert_eq!(log.observe(at(16_000), Some(&b)), None, "b ran 4 s only");
        assert_eq!(log.observe(at(16_500), None), None, "b ended");
        assert_eq!(
            log.observe(at(30_000), Some(&b)),
            None,
            "seen again after a gap: a fresh start, not 18 s overdue"
        );
        assert_eq!(
            log.observe(at(35_000), Some(&b)),
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn the_throttle_waits_the_whole_interval() {
        let t = Instant::now();
        let every = Duration::from_millis(200);
        assert!(!due(t, t, every));
        assert!(!due(t, t + Duration::from_millis(199), every));
        assert!(due(t, t + every, every));
        assert!(
            !due(t + every, t, every),
            "a clock read out of order is not due"
        );
    }

    #[test]
    fn fractions_show_whole_steps_plainly() {
        assert_eq!(fraction(12.0, 20.0), "12/20");
        assert_eq!(fraction(0.5, 1.0), "0.50/1");
    }
}
