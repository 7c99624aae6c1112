//! How busy the CPUs are right now, for `max_workers = "auto"`.
//!
//! With PSI (`/proc/pressure/cpu`) the cumulative stall time is sampled and the difference
//! between two samples gives the share of the last moment in which some runnable task waited
//! for a CPU: an immediate signal, unlike the 10-second averages. Without PSI the instantaneous
//! number of runnable tasks from `/proc/loadavg` stands in.

use std::time::{Duration, Instant};

/// Samples closer together than this say nothing; the previous answer stands.
const MIN_SAMPLE: Duration = Duration::from_millis(20);

#[derive(Debug)]
pub struct CpuPressure {
    cpus: usize,
    last: Option<(Instant, u64)>,
    answer: f64,
}

impl CpuPressure {
    pub fn new() -> Self {
        Self {
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            last: None,
            answer: 0.0,
        }
    }

    pub fn cpus(&self) -> usize {
        self.cpus
    }

    /// Share (0.0 to 1.0) of the recent past in which runnable tasks waited for a CPU.
    pub fn sample(&mut self) -> f64 {
        let now = Instant::now();
        if let Some(stalled) = psi_total_us() {
            match self.last {
                Some((at, before)) if now.duration_since(at) >= MIN_SAMPLE => {
                    let elapsed = now.duration_since(at).as_micros() as f64;
                    self.answer = (stalled.saturating_sub(before) as f64 / elapsed).clamp(0.0, 1.0);
                    self.last = Some((now, stalled));
                }
                Some(_) => {}
                None => self.last = Some((now, stalled)),
            }
            return self.answer;
        }
        // Without PSI: runnable tasks beyond one per CPU, as a share of the CPUs.
        let running = runnable_tasks().unwrap_or(0);
        (running.saturating_sub(self.cpus) as f64 / self.cpus as f64).clamp(0.0, 1.0)
    }
}

impl Default for CpuPressure {
    fn default() -> Self {
        Self::new()
    }
}

/// `some ... total=N` of /proc/pressure/cpu: microseconds in which some task waited for a CPU.
fn psi_total_us() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/pressure/cpu").ok()?;
    let some = text.lines().find(|l| l.starts_with("some "))?;
    some.split_whitespace()
        .find_map(|f| f.strip_prefix("total="))?
        .parse()
        .ok()
}

/// The `R` of `R/T` in /proc/loadavg: tasks runnable right now.
fn runnable_tasks() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace()
        .nth(3)?
        .split('/')
        .next()?
        .parse()
        .ok()
}
