//! Per-stage timings (and the optimizer's peak memory) for `-v`.

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

    /// Runs `f`; when verbose, prints the peak resident memory while it ran against the
    /// resident memory before it (Linux: the peak is reset through `/proc/self/clear_refs`,
    /// so a larger earlier peak, such as loading the weights, does not hide it).
    pub(crate) fn memory<T>(&self, stage: &str, f: impl FnOnce() -> T) -> T {
        if !self.verbose {
            return f();
        }
        let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        let before = resident_kb("VmRSS:");
        let out = f();
        match (reset, before, resident_kb("VmHWM:")) {
            (true, Some(before), Some(peak)) => eprintln!(
                "{:>10.1} MB  peak resident during {stage} ({:.1} MB above the {:.1} MB before)",
                peak as f64 / 1024.0,
                peak.saturating_sub(before) as f64 / 1024.0,
                before as f64 / 1024.0
            ),
            _ => eprintln!("(peak memory during {stage}: not measurable on this system)"),
        }
        out
    }

    /// Prints one stage's time.
    pub(crate) fn report(&self, stage: &str, took: Duration) {
        if self.verbose {
            eprintln!("{:>10.3} ms  {stage}", took.as_secs_f64() * 1e3);
        }
    }
}

/// A `kB` line of `/proc/self/status` (`VmRSS:`, `VmHWM:`).
fn resident_kb(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
