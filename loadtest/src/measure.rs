//! Measurements: latency histograms, process CPU time and memory read from
//! `/proc` by PID, and the report printed at the end of a run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Clock ticks per second of `/proc/PID/stat` times (`USER_HZ`, fixed at
/// 100 by the Linux ABI on every architecture we run on).
const USER_HZ: f64 = 100.0;

/// User + system CPU seconds of a process, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces: fields after it start
    // after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// Resident set size in KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Samples a process's RSS every 50 ms and keeps the peak.
#[derive(Debug)]
pub struct RssSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssSampler {
    /// Starts sampling `pid` on the current runtime.
    pub fn start(pid: u32) -> RssSampler {
        let peak = Arc::new(AtomicU64::new(rss_kib(pid).unwrap_or(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            while !s.load(Ordering::Relaxed) {
                tick.tick().await;
                if let Some(r) = rss_kib(pid) {
                    p.fetch_max(r, Ordering::Relaxed);
                }
            }
        });
        RssSampler { peak, stop }
    }

    /// The peak so far (including a sample taken now).
    pub fn peak(&self, pid: u32) -> u64 {
        if let Some(r) = rss_kib(pid) {
            self.peak.fetch_max(r, Ordering::Relaxed);
        }
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A latency histogram in microseconds (1 µs to 10 min, 3 significant digits).
#[derive(Clone, Debug)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        // Bounds are constants that hdrhistogram accepts.
        Latency(Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| unreachable!()))
    }
}

impl Latency {
    /// Records one duration.
    pub fn record(&mut self, d: Duration) {
        self.record_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// Records one duration in microseconds (clamped to the bounds).
    pub fn record_micros(&mut self, us: u64) {
        self.0.saturating_record(us.max(1));
    }

    /// Adds another histogram's samples.
    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// Percentiles in milliseconds.
    pub fn summary(&self) -> Summary {
        let ms = |v: u64| v as f64 / 1000.0;
        Summary {
            count: self.0.len(),
            mean_ms: self.0.mean() / 1000.0,
            p50_ms: ms(self.0.value_at_quantile(0.50)),
            p90_ms: ms(self.0.value_at_quantile(0.90)),
            p99_ms: ms(self.0.value_at_quantile(0.99)),
            max_ms: ms(self.0.max()),
        }
    }
}

/// Latency percentiles of one measured step.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

/// The outcome of a scenario: what a person reads as a table and a script
/// reads as one JSON line.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Label of the server under test (`--label`).
    pub server: String,
    /// The parameters of the run.
    pub params: BTreeMap<String, serde_json::Value>,
    /// Measured figures (counts, rates, per-login costs).
    pub figures: BTreeMap<String, f64>,
    /// Latencies per step.
    pub latency: BTreeMap<String, Summary>,
    /// Wall time of the measured phase.
    pub elapsed_s: f64,
    /// Server CPU seconds (user + system) during the measured phase.
    pub server_cpu_s: Option<f64>,
    /// Server RSS before the measured phase.
    pub server_rss_start_kib: Option<u64>,
    /// Server RSS at the end of the measured phase.
    pub server_rss_end_kib: Option<u64>,
    /// Largest server RSS seen during the measured phase (sampled every 50 ms).
    pub server_peak_rss_kib: Option<u64>,
    /// The load generator's own CPU seconds during the measured phase.
    pub generator_cpu_s: Option<f64>,
    /// The load generator's own peak RSS.
    pub generator_peak_rss_kib: Option<u64>,
    /// Errors seen (first few kept in `error_samples`).
    pub errors: u64,
    /// A few error messages, for diagnosis.
    pub error_samples: Vec<String>,
}

impl Report {
    /// Records an error.
    pub fn error(&mut self, msg: impl Into<String>) {
        self.errors += 1;
        if self.error_samples.len() < 5 {
            self.error_samples.push(msg.into());
        }
    }

    /// Sets a figure.
    pub fn figure(&mut self, name: &str, value: f64) {
        self.figures.insert(name.to_owned(), value);
    }

    /// Sets a parameter.
    pub fn param(&mut self, name: &str, value: impl Into<serde_json::Value>) {
        self.params.insert(name.to_owned(), value.into());
    }

    /// The table for people.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(out, "scenario {} against {}", self.scenario, self.server);
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(out, "  {}", params.join(" "));
        let _ = writeln!(out, "  {:<34} {:>14}", "figure", "value");
        let mut figs: Vec<(String, String)> = self
            .figures
            .iter()
            .map(|(k, v)| (k.clone(), format!("{v:.3}")))
            .collect();
        figs.push(("elapsed_s".into(), format!("{:.3}", self.elapsed_s)));
        let opt_f = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.3}"));
        let opt_u = |v: Option<u64>| v.map_or("n/a".to_owned(), |v| v.to_string());
        figs.push(("server_cpu_s".into(), opt_f(self.server_cpu_s)));
        figs.push((
            "server_rss_start_kib".into(),
            opt_u(self.server_rss_start_kib),
        ));
        figs.push(("server_rss_end_kib".into(), opt_u(self.server_rss_end_kib)));
        figs.push((
            "server_peak_rss_kib".into(),
            opt_u(self.server_peak_rss_kib),
        ));
        figs.push(("generator_cpu_s".into(), opt_f(self.generator_cpu_s)));
        figs.push((
            "generator_peak_rss_kib".into(),
            opt_u(self.generator_peak_rss_kib),
        ));
        figs.push(("errors".into(), self.errors.to_string()));
        for (k, v) in figs {
            let _ = writeln!(out, "  {k:<34} {v:>14}");
        }
        if !self.latency.is_empty() {
            let _ = writeln!(
                out,
                "  {:<14} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
                "latency (ms)", "count", "mean", "p50", "p90", "p99", "max"
            );
            for (k, s) in &self.latency {
                let _ = writeln!(
                    out,
                    "  {k:<14} {:>8} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                    s.count, s.mean_ms, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms
                );
            }
        }
        for e in &self.error_samples {
            let _ = writeln!(out, "  error: {e}");
        }
        out
    }

    /// The JSON line for scripts.
    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// Measures a phase: server CPU and memory by PID and the generator's own.
#[derive(Debug)]
pub struct Phase {
    server: Option<(u32, f64, RssSampler)>,
    own: (u32, f64, RssSampler),
    start: std::time::Instant,
    rss_start: Option<u64>,
}

impl Phase {
    /// Starts measuring (server PID optional).
    pub fn start(server_pid: Option<u32>) -> Phase {
        let own_pid = std::process::id();
        let server = server_pid.and_then(|p| Some((p, cpu_seconds(p)?, RssSampler::start(p))));
        Phase {
            rss_start: server_pid.and_then(rss_kib),
            server,
            own: (
                own_pid,
                cpu_seconds(own_pid).unwrap_or(0.0),
                RssSampler::start(own_pid),
            ),
            start: std::time::Instant::now(),
        }
    }

    /// Ends the phase and writes its figures into the report.
    pub fn finish(self, report: &mut Report) {
        report.elapsed_s = self.start.elapsed().as_secs_f64();
        if let Some((pid, cpu0, sampler)) = &self.server {
            report.server_cpu_s = cpu_seconds(*pid).map(|c| c - cpu0);
            report.server_peak_rss_kib = Some(sampler.peak(*pid));
            report.server_rss_end_kib = rss_kib(*pid);
            report.server_rss_start_kib = self.rss_start;
        }
        let (pid, cpu0, sampler) = &self.own;
        report.generator_cpu_s = cpu_seconds(*pid).map(|c| c - cpu0);
        report.generator_peak_rss_kib = Some(sampler.peak(*pid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_readers_see_this_process() {
        let me = std::process::id();
        assert!(cpu_seconds(me).is_some());
        assert!(rss_kib(me).unwrap() > 100);
        assert!(cpu_seconds(u32::MAX).is_none());
    }

    #[test]
    fn percentiles() {
        let mut l = Latency::default();
        for us in 1..=1000 {
            l.record_micros(us * 10);
        }
        let s = l.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50_ms - 5.0).abs() < 0.01, "{s:?}");
        assert!((s.p99_ms - 9.9).abs() < 0.01, "{s:?}");
        assert!((s.max_ms - 10.0).abs() < 0.01, "{s:?}");
    }
}
