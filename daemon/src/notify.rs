//! Telling systemd how the daemon is (`Type=notify`): `READY=1` once it takes jobs, a `STATUS=`
//! line when the counts change, `WATCHDOG=1` from the owner loop while systemd asks for it,
//! `STOPPING=1` when it stops.
//!
//! Everything is a no-op unless `NOTIFY_SOCKET` is set (systemd sets it for `Type=notify`
//! units), so a daemon started by hand pays nothing. The watchdog is pinged from the owner
//! loop at half of `WATCHDOG_USEC`: a loop that hangs stops pinging and systemd restarts it.

use std::time::{Duration, Instant};

/// The daemon's side of `sd_notify(3)`.
#[derive(Debug)]
pub struct Notifier {
    enabled: bool,
    /// How often to ping: half of `WATCHDOG_USEC`, when systemd asked for a watchdog.
    ping_every: Option<Duration>,
    last_ping: Instant,
    last_status: String,
    stopping: bool,
    /// A failed send is logged once, not per status change.
    warned: bool,
}

impl Notifier {
    /// From the environment systemd gives a service.
    pub fn from_env() -> Notifier {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty());
        Notifier {
            enabled,
            ping_every: enabled.then(watchdog_interval).flatten().map(ping_interval),
            last_ping: Instant::now(),
            last_status: String::new(),
            stopping: false,
            warned: false,
        }
    }

    /// Startup is over: the store exists and the watches are in place.
    pub fn ready(&mut self) {
        self.send("READY=1");
        self.last_ping = Instant::now();
    }

    /// Sends `STATUS=` when the line differs from the last one sent.
    pub fn status(&mut self, line: &str) {
        if !self.enabled || line == self.last_status {
            return;
        }
        self.last_status = line.to_owned();
        self.send(&format!("STATUS={line}"));
    }

    /// Pings the watchdog when half its interval has passed since the last ping.
    pub fn watchdog(&mut self) {
        if let Some(every) = self.ping_every
            && self.last_ping.elapsed() >= every
        {
            self.last_ping = Instant::now();
            self.send("WATCHDOG=1");
        }
    }

    /// How long until the next ping is due (none without a watchdog): the owner loop sleeps no
    /// longer than this.
    pub fn next_ping(&self) -> Option<Duration> {
        self.ping_every
            .map(|every| every.saturating_sub(self.last_ping.elapsed()))
    }

    /// The daemon is stopping (sent once).
    pub fn stopping(&mut self) {
        if !self.stopping {
            self.stopping = true;
            self.send("STOPPING=1");
        }
    }

    #[cfg(unix)]
    fn send(&mut self, message: &str) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Custom(message)])
            && !self.warned
        {
            self.warned = true;
            tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
        }
    }

    #[cfg(not(unix))]
    fn send(&mut self, _message: &str) {}
}

#[cfg(unix)]
fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

#[cfg(not(unix))]
fn watchdog_interval() -> Option<Duration> {
    None
}

/// Pings go out at half the watchdog's interval, as `sd_watchdog_enabled(3)` advises, and never
/// more often than every 10 ms.
pub fn ping_interval(watchdog: Duration) -> Duration {
    (watchdog / 2).max(Duration::from_millis(10))
}

/// The `STATUS=` line: "3 running, 120 waiting, 48 done, 1 failed", and the state when it is
/// not plain running.
pub fn status_line(
    state: &str,
    running: usize,
    waiting: usize,
    done: usize,
    failed: usize,
) -> String {
    let counts = format!("{running} running, {waiting} waiting, {done} done, {failed} failed");
    match state {
        "running" => counts,
        other => format!("{other}: {counts}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_counts_and_names_an_unusual_state() {
        assert_eq!(
            status_line("running", 3, 120, 48, 1),
            "3 running, 120 waiting, 48 done, 1 failed"
        );
        assert_eq!(
            status_line("no-space", 0, 5, 0, 0),
            "no-space: 0 running, 5 waiting, 0 done, 0 failed"
        );
    }

    #[test]
    fn pings_go_out_at_half_the_watchdog_interval() {
        assert_eq!(
            ping_interval(Duration::from_secs(30)),
            Duration::from_secs(15)
        );
        assert_eq!(
            ping_interval(Duration::from_micros(1)),
            Duration::from_millis(10)
        );
    }
}
