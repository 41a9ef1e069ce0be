//! The results: a JSON document and a plain-text table with one column per step.

use crate::config::{Impairment, Placement};
use crate::procstat::Usage;
use crate::stats::Summary;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub machine: Machine,
    pub setup: Setup,
    pub steps: Vec<Step>,
    /// Ramp mode: the largest session count that held the service level.
    pub last_step_held: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub mem_gib: f64,
    pub kernel: String,
    pub nofile_limit: u64,
}

impl Machine {
    pub fn describe(nofile_limit: u64) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            mem_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            nofile_limit,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Setup {
    pub members: usize,
    pub gateways: usize,
    pub tickers: Option<usize>,
    pub own_stack: bool,
    pub tick_ms: u64,
    pub command_ms: u64,
    /// KB of charts in each session's setlist (`--setlist-kb`).
    #[serde(default)]
    pub setlist_kb: usize,
    pub sample_ms: u64,
    pub ping_ms: u64,
    pub settle_pings: u64,
    /// Load-generator processes (`--procs`).
    #[serde(default = "one")]
    pub procs: usize,
    pub duration_secs: u64,
    pub warmup_secs: u64,
    pub source_addrs: u8,
    pub impairment: Option<Impairment>,
    /// Which gateway each member used (`--placement`).
    #[serde(default)]
    pub placement: Placement,
    /// The gateway executable, when not the bin directory's (`--gateway-bin`).
    #[serde(default)]
    pub gateway_bin: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    pub sessions: usize,
    pub connections_target: usize,
    pub connections_held: usize,
    pub connect_failed: usize,
    pub connect_secs: f64,
    /// New connections of this step per second (HTTP create/join, upgrade, welcome, 4 clock pings).
    pub connect_rate_per_sec: f64,
    pub connect_latency: Option<Summary>,
    pub tick_latency: Option<Summary>,
    pub ticks_received: u64,
    pub ticks_expected: u64,
    /// `tick_delivery(ticks_received, ticks_expected)`.
    pub tick_delivery: f64,
    pub ticks_missed: u64,
    pub ticks_duplicate: u64,
    pub commands_sent: u64,
    pub command_to_all_followers: Option<Summary>,
    pub command_to_each_follower: Option<Summary>,
    /// Leader's send → the owning ticker applied it (from the change's
    /// scheduled instant − the lead time): gateway, JetStream, consumer.
    #[serde(default)]
    pub command_to_owner: Option<Summary>,
    /// Owner applied → the slowest follower received the event: KV
    /// compare-and-set, event publish, gateway fan-out, client.
    #[serde(default)]
    pub command_owner_to_all_followers: Option<Summary>,
    pub sync_error: Option<Summary>,
    pub click_skew: Option<Summary>,
    pub errors: BTreeMap<String, u64>,
    /// Leadership requests sent by leaders displaced after the grace period
    /// (they connected late or were away); not errors, but worth knowing.
    pub leader_reclaims: u64,
    pub processes: Vec<Usage>,
    /// Growth of the gateways' RSS from before any client connected to after
    /// this step connected (before its playback), per connection held.
    pub gateway_kib_per_connection: Option<f64>,
    pub load_kib_per_connection: Option<f64>,
    pub service_level: Verdict,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verdict {
    pub held: bool,
    pub broken_by: Vec<String>,
}

fn one() -> usize {
    1
}

impl Report {
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, Vec<String>)> = Vec::new();
        let mut row = |name: &str, f: &dyn Fn(&Step) -> String| {
            rows.push((name.to_owned(), self.steps.iter().map(f).collect()));
        };
        let pct = |s: &Option<Summary>| {
            s.map_or_else(
                || "-".to_owned(),
                |s| format!("{:.2}/{:.2}/{:.2}", s.p50_ms, s.p99_ms, s.max_ms),
            )
        };
        row("sessions", &|s| s.sessions.to_string());
        row("connections held/target", &|s| {
            format!("{}/{}", s.connections_held, s.connections_target)
        });
        row("connect rate /s", &|s| {
            format!("{:.0}", s.connect_rate_per_sec)
        });
        row("connect p50/p99/max ms", &|s| pct(&s.connect_latency));
        row("tick latency p50/p99/max ms", &|s| pct(&s.tick_latency));
        row("ticks delivered", &|s| {
            format!(
                "{:.2}% ({}/{})",
                s.tick_delivery * 100.0,
                s.ticks_received,
                s.ticks_expected
            )
        });
        row("ticks missed/duplicate", &|s| {
            format!("{}/{}", s.ticks_missed, s.ticks_duplicate)
        });
        row("commands sent", &|s| s.commands_sent.to_string());
        row("cmd→all followers p50/p99/max ms", &|s| {
            pct(&s.command_to_all_followers)
        });
        row("  leader→owner p50/p99/max ms", &|s| {
            pct(&s.command_to_owner)
        });
        row("  owner→all p50/p99/max ms", &|s| {
            pct(&s.command_owner_to_all_followers)
        });
        row("sync error p50/p99/max ms", &|s| pct(&s.sync_error));
        row("click skew p50/p99/max ms", &|s| pct(&s.click_skew));
        row("errors", &|s| {
            if s.errors.is_empty() {
                "0".into()
            } else {
                s.errors
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        });
        row("leader reclaims", &|s| s.leader_reclaims.to_string());
        let names: Vec<String> = self
            .steps
            .first()
            .map(|s| s.processes.iter().map(|p| p.name.clone()).collect())
            .unwrap_or_default();
        for name in &names {
            row(&format!("{name} CPU% / RSS MiB"), &|s| {
                s.processes
                    .iter()
                    .find(|p| &p.name == name)
                    .map_or("-".into(), |p| {
                        format!("{:.0}% / {:.0}", p.cpu_percent, p.peak_rss_mib)
                    })
            });
        }
        row("gateway KiB per connection", &|s| {
            s.gateway_kib_per_connection
                .map_or("-".into(), |v| format!("{v:.1}"))
        });
        row("load-gen KiB per connection", &|s| {
            s.load_kib_per_connection
                .map_or("-".into(), |v| format!("{v:.1}"))
        });
        row("service level", &|s| {
            if s.service_level.held {
                "held".into()
            } else {
                format!("BROKEN: {}", s.service_level.broken_by.join("; "))
            }
        });
        let w0 = rows
            .iter()
            .map(|(n, _)| n.chars().count())
            .max()
            .unwrap_or(0);
        let widths: Vec<usize> = (0..self.steps.len())
            .map(|i| {
                rows.iter()
                    .map(|(_, v)| v[i].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for (name, values) in &rows {
            let _ = write!(out, "{name:<w0$}");
            for (v, w) in values.iter().zip(&widths) {
                let _ = write!(out, " | {v:>w$}");
            }
            out.push('\n');
        }
        if let Some(held) = self.last_step_held {
            let _ = writeln!(
                out,
                "ramp: last step that held the service level: {held} sessions"
            );
        }
        out
    }
}

/// Ticks received ÷ expected (0 when none were expected): a step's, or the
/// children's together under `--procs`.
pub fn tick_delivery(received: u64, expected: u64) -> f64 {
    if expected == 0 {
        0.0
    } else {
        received as f64 / expected as f64
    }
}
