//! The terminal's overall progress bar of `comfyd run`, and the log writer that keeps log lines
//! clear of it.
//!
//! The bar is drawn on stderr, where the log goes too. Every log line is written through
//! [`Terminal`] (a `tracing_subscriber` writer): while a bar is drawn, the bar is cleared, the
//! line written whole at column 0, and the bar drawn again below it, so the two never share a
//! line. Without a bar (stderr is not a terminal, JSON logs, `--no-progress`) lines go straight
//! to stderr. The bar's figures are [`crate::progress`]'s.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::progress::{self, Counts};

/// The bar's layout: elapsed time, the bar, jobs ended of all known, the rate, the time left,
/// and what runs or failed.
/// The bar takes the width the rest leaves (a line longer than the terminal would wrap).
const TEMPLATE: &str =
    "[{elapsed_precise}] {wide_bar} {pos}/{len} jobs, {rate}, ETA {left} ({msg})";

/// Where log lines and the progress bar go. Cheap to clone: clones share one bar.
#[derive(Clone, Default)]
pub struct Terminal {
    /// Whether a bar is to be drawn once there are counts.
    enabled: bool,
    bar: Arc<Mutex<Option<ProgressBar>>>,
}

impl std::fmt::Debug for Terminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminal")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl Terminal {
    /// A terminal that draws a bar (`with_bar`), or only passes log lines to stderr.
    pub fn new(with_bar: bool) -> Terminal {
        Terminal {
            enabled: with_bar,
            bar: Arc::default(),
        }
    }

    /// Whether a bar will be drawn.
    pub fn has_bar(&self) -> bool {
        self.enabled
    }

    /// Shows the latest counts; the bar is drawn from the first job known.
    pub fn show(&self, counts: &Counts) {
        if !self.enabled {
            return;
        }
        let Ok(mut slot) = self.bar.lock() else {
            return;
        };
        if let Some(bar) = slot.as_ref() {
            bar.set_length(counts.total());
            bar.set_position(counts.ended());
            bar.set_message(counts.message());
        } else if counts.total() > 0 {
            *slot = start(counts);
        }
    }

    /// Follows the owner loop's counts until it drops its sender.
    pub async fn follow(self, mut counts: tokio::sync::watch::Receiver<Counts>) {
        loop {
            let c = *counts.borrow_and_update();
            self.show(&c);
            if counts.changed().await.is_err() {
                return;
            }
        }
    }

    /// Leaves the bar as last drawn and stops drawing it: later log lines go below it.
    pub fn finish(&self) {
        let taken = self.bar.lock().ok().and_then(|mut b| b.take());
        if let Some(bar) = taken {
            bar.abandon();
            // The bar's line ends where the bar does: end it, so the next line starts at
            // column 0.
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(b"\n");
            let _ = err.flush();
        }
    }

    fn current(&self) -> Option<ProgressBar> {
        self.bar.lock().ok().and_then(|b| b.clone())
    }
}

/// A bar on stderr showing `counts`, redrawn twice a second.
fn start(counts: &Counts) -> Option<ProgressBar> {
    let style = ProgressStyle::with_template(TEMPLATE)
        .ok()?
        .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&progress::rate(s.per_sec()));
        })
        .with_key("left", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let remaining = s.len().unwrap_or(0).saturating_sub(s.pos());
            let _ = w.write_str(&progress::time_left(remaining, s.per_sec()));
        })
        .progress_chars("=> ");
    let bar = ProgressBar::with_draw_target(Some(counts.total()), ProgressDrawTarget::stderr())
        .with_style(style)
        .with_position(counts.ended())
        .with_message(counts.message());
    // Elapsed time and the estimate move between jobs too.
    bar.enable_steady_tick(Duration::from_millis(500));
    Some(bar)
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Terminal {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine {
            bar: self.current(),
            buf: Vec::new(),
        }
    }
}

/// One log event, written whole when dropped (the formatter writes an event and drops its
/// writer): with a bar drawn, between clearing the bar and drawing it again.
pub struct LogLine {
    bar: Option<ProgressBar>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for LogLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogLine")
            .field("len", &self.buf.len())
            .finish()
    }
}

impl Write for LogLine {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let write = || {
            let mut err = std::io::stderr().lock();
            // Nowhere left to report a log line that cannot be written.
            let _ = err.write_all(&self.buf);
            let _ = err.flush();
        };
        match &self.bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }
}
