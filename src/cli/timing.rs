//! Per-stage timings for `-v`.

use std::time::{Duration, Instant};

/// Times stages and prints each to stderr when verbose.
pub(crate) struct Timer {
    verbose: bool,
}

impl Timer {
    pub(crate) fn new(verbose: bool) -> Timer {
        Timer { verbose }
    }

    /// Runs `f`, printing how long it took under `stage`.
    pub(crate) fn time<T>(&self, stage: &str, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        self.report(stage, start.elapsed());
        out
    }

    /// Prints one stage's time.
    pub(crate) fn report(&self, stage: &str, took: Duration) {
        if self.verbose {
            eprintln!("{:>10.3} ms  {stage}", took.as_secs_f64() * 1e3);
        }
    }
}
