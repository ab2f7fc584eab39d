//! Phase timings of the container hot paths (create, start, exit, remove), logged at
//! debug level under the `berth::timing` target so that `berth daemon --debug` shows
//! where a `run` spends its time.

use std::time::Instant;

/// Measures consecutive phases of one operation.
pub(crate) struct Phases {
    op: &'static str,
    start: Instant,
    last: Instant,
    laps: Vec<(&'static str, u128)>,
}

impl Phases {
    /// Starts timing operation `op`.
    pub(crate) fn new(op: &'static str) -> Self {
        let now = Instant::now();
        Phases {
            op,
            start: now,
            last: now,
            laps: Vec::new(),
        }
    }

    /// Ends the current phase, naming it `what`.
    pub(crate) fn lap(&mut self, what: &'static str) {
        let now = Instant::now();
        self.laps
            .push((what, now.duration_since(self.last).as_micros()));
        self.last = now;
    }
}

impl Drop for Phases {
    fn drop(&mut self) {
        if tracing::enabled!(target: "berth::timing", tracing::Level::DEBUG) {
            let laps: Vec<String> = self
                .laps
                .iter()
                .map(|(w, us)| format!("{w}={}.{:03}ms", us / 1000, us % 1000))
                .collect();
            let total = self.start.elapsed().as_micros();
            tracing::debug!(
                target: "berth::timing",
                "{} total={}.{:03}ms {}",
                self.op,
                total / 1000,
                total % 1000,
                laps.join(" ")
            );
        }
    }
}
