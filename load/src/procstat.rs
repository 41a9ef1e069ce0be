//! CPU time and resident memory of processes, read from /proc (Linux).

use serde::Serialize;
use std::time::Instant;

/// Clock ticks per second of /proc/<pid>/stat times; 100 on every Linux
/// architecture this runs on (USER_HZ), and sysconf would need unsafe code.
const CLK_TCK: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    pub rss_kib: u64,
}

impl Reading {
    /// CPU time used so far.
    pub fn cpu(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.cpu_ticks as f64 / CLK_TCK)
    }
}

/// Reads /proc/<pid>/stat and /proc/<pid>/status; `None` if the process is gone.
pub fn read(pid: u32) -> Option<Reading> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(Reading {
        cpu_ticks: parse_cpu_ticks(&stat)?,
        rss_kib: parse_rss_kib(&status)?,
    })
}

/// utime (field 14) + stime (field 15); the command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its closing ')'.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

pub fn parse_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A named process being watched over a measured window.
#[derive(Debug, Clone)]
pub struct Watched {
    pub name: String,
    pub pid: u32,
    start: Option<(Instant, Reading)>,
    peak_rss_kib: u64,
}

/// CPU and memory of one process over a window.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Usage {
    pub name: String,
    pub pid: u32,
    /// Share of one core over the window (200 = both cores of a 2-core machine).
    pub cpu_percent: f64,
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
}

impl Watched {
    pub fn new(name: impl Into<String>, pid: u32) -> Self {
        Self {
            name: name.into(),
            pid,
            start: None,
            peak_rss_kib: 0,
        }
    }

    /// Opens the window.
    pub fn begin(&mut self) {
        self.start = read(self.pid).map(|r| (Instant::now(), r));
        self.peak_rss_kib = self.start.map_or(0, |(_, r)| r.rss_kib);
    }

    /// Notes the current RSS (call every second or so).
    pub fn sample(&mut self) {
        if let Some(r) = read(self.pid) {
            self.peak_rss_kib = self.peak_rss_kib.max(r.rss_kib);
        }
    }

    /// Closes the window; `None` if the process was gone at either end.
    pub fn end(&mut self) -> Option<Usage> {
        let (t0, r0) = self.start?;
        let r1 = read(self.pid)?;
        let secs = t0.elapsed().as_secs_f64().max(1e-3);
        self.peak_rss_kib = self.peak_rss_kib.max(r1.rss_kib);
        Some(Usage {
            name: self.name.clone(),
            pid: self.pid,
            cpu_percent: r1.cpu_ticks.saturating_sub(r0.cpu_ticks) as f64 / CLK_TCK / secs * 100.0,
            rss_mib: r1.rss_kib as f64 / 1024.0,
            peak_rss_mib: self.peak_rss_kib as f64 / 1024.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_names() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194304 100 0 0 0 250 75 0 0 20 0 3 0 100 1000 200";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(
            parse_rss_kib("Name:\tx\nVmRSS:\t   51234 kB\nThreads: 2\n"),
            Some(51234)
        );
        assert_eq!(parse_rss_kib("Name: x\n"), None);
    }

    #[test]
    fn reads_this_process() {
        let r = read(std::process::id()).expect("own process readable");
        assert!(r.rss_kib > 0);
        let mut w = Watched::new("self", std::process::id());
        w.begin();
        let u = w.end().expect("usage");
        assert!(u.cpu_percent >= 0.0 && u.rss_mib > 0.0);
    }
}
