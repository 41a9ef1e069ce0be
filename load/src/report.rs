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
    /// Server → client messages the members read in the window (every kind).
    pub frames_delivered: u64,
    pub frames_per_sec: f64,
    /// CPU per delivered frame, of each watched process and of the stack.
    pub cpu_per_frame: CpuPerFrame,
    /// Growth of the gateways' RSS from before any client connected to after
    /// this step connected (before its playback), per connection held.
    pub gateway_kib_per_connection: Option<f64>,
    pub load_kib_per_connection: Option<f64>,
    pub service_level: Verdict,
}

/// µs of CPU per frame delivered to the members over a window: a process's
/// CPU seconds in the window ÷ the frames delivered in it, taken as its share
/// of a core ÷ frames per second (the same over one window, and what still
/// holds when `--procs` adds up children whose windows overlap). `None`
/// (printed "-") where the process was not measured over the whole window or
/// no frame was delivered: never a 0 or an infinity.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuPerFrame {
    /// Every watched process, measured or not.
    pub processes: Vec<ProcessCpuPerFrame>,
    /// The stack as one: every watched process but the load generator's
    /// (nats-server, tickers, gateways); `None` if any of them is missing.
    pub stack_us: Option<f64>,
    /// The load generator's process(es), apart.
    pub load_generator_us: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessCpuPerFrame {
    pub name: String,
    pub us: Option<f64>,
}

/// A load-generator process's name: `bandsync-load`, or `bandsync-load-<i>`
/// under `--procs`.
pub fn is_load_generator(name: &str) -> bool {
    name == "bandsync-load" || name.starts_with("bandsync-load-")
}

impl CpuPerFrame {
    /// From the names of the processes watched, the usage of those measured
    /// over the window, and the frames delivered per second in it.
    pub fn of(watched: &[String], measured: &[Usage], frames_per_sec: f64) -> Self {
        let frames = (frames_per_sec.is_finite() && frames_per_sec > 0.0).then_some(frames_per_sec);
        let percent = |name: &str| {
            measured
                .iter()
                .find(|u| u.name == name)
                .map(|u| u.cpu_percent)
        };
        // 1% of a core is 10⁴ µs of CPU per second.
        let per_frame = |percent: Option<f64>| Some(percent? * 1e4 / frames?);
        // A group's figure needs every one of its processes (a missing one
        // would make the sum look cheaper than it was) and at least one.
        let group = |load: bool| {
            let names: Vec<&String> = watched
                .iter()
                .filter(|n| is_load_generator(n) == load)
                .collect();
            if names.is_empty() {
                return None;
            }
            per_frame(names.iter().map(|n| percent(n)).sum::<Option<f64>>())
        };
        Self {
            processes: watched
                .iter()
                .map(|name| ProcessCpuPerFrame {
                    name: name.clone(),
                    us: per_frame(percent(name)),
                })
                .collect(),
            stack_us: group(false),
            load_generator_us: group(true),
        }
    }
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
        row("frames delivered /s", &|s| {
            format!("{:.0} ({})", s.frames_per_sec, s.frames_delivered)
        });
        let us = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
        let per_frame: Vec<String> = self
            .steps
            .first()
            .map(|s| {
                s.cpu_per_frame
                    .processes
                    .iter()
                    .map(|p| p.name.clone())
                    .collect()
            })
            .unwrap_or_default();
        for name in &per_frame {
            row(&format!("{name} µs CPU per frame"), &|s| {
                us(s.cpu_per_frame
                    .processes
                    .iter()
                    .find(|p| &p.name == name)
                    .and_then(|p| p.us))
            });
        }
        row("stack µs CPU per frame", &|s| us(s.cpu_per_frame.stack_us));
        row("load-gen µs CPU per frame", &|s| {
            us(s.cpu_per_frame.load_generator_us)
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(name: &str, cpu_percent: f64) -> Usage {
        Usage {
            name: name.into(),
            pid: 1,
            cpu_percent,
            rss_mib: 1.0,
            peak_rss_mib: 1.0,
        }
    }

    #[test]
    fn cpu_per_frame_per_process_and_for_the_stack() {
        let watched: Vec<String> = [
            "nats",
            "ticker-0",
            "gateway-0",
            "gateway-1",
            "bandsync-load",
        ]
        .map(String::from)
        .into();
        let measured = [
            usage("nats", 20.0),
            usage("ticker-0", 5.0),
            usage("gateway-0", 30.0),
            usage("gateway-1", 25.0),
            usage("bandsync-load", 60.0),
        ];
        // 40,000 frames/s: 30% of a core is 0.3 s per s, 7.5 µs per frame.
        let c = CpuPerFrame::of(&watched, &measured, 40_000.0);
        let us: Vec<Option<f64>> = c.processes.iter().map(|p| p.us).collect();
        assert_eq!(
            us,
            [Some(5.0), Some(1.25), Some(7.5), Some(6.25), Some(15.0)]
        );
        assert_eq!(c.stack_us, Some(20.0), "80% of a core over 40,000 frames/s");
        assert_eq!(c.load_generator_us, Some(15.0));
    }

    #[test]
    fn cpu_per_frame_is_absent_not_zero_or_infinite() {
        let watched: Vec<String> = ["nats", "gateway-0", "bandsync-load-0", "bandsync-load-1"]
            .map(String::from)
            .into();
        let all = [
            usage("nats", 10.0),
            usage("gateway-0", 10.0),
            usage("bandsync-load-0", 10.0),
            usage("bandsync-load-1", 30.0),
        ];
        // No frame delivered: nothing per frame (not infinity), nor at NaN.
        for fps in [0.0, f64::NAN] {
            let c = CpuPerFrame::of(&watched, &all, fps);
            assert!(c.processes.iter().all(|p| p.us.is_none()), "{c:?}");
            assert_eq!((c.stack_us, c.load_generator_us), (None, None));
        }
        // The gateway was not measured (gone at an end of the window): its
        // figure and the stack's are absent, not 0 or a cheaper stack.
        let c = CpuPerFrame::of(
            &watched,
            &[all[0].clone(), all[2].clone(), all[3].clone()],
            1e4,
        );
        assert_eq!(c.processes[1].us, None);
        assert_eq!(c.processes[0].us, Some(10.0));
        assert_eq!(c.stack_us, None);
        // The load processes under --procs add up.
        assert_eq!(c.load_generator_us, Some(40.0));
        // A running stack watched without --pid: no stack figure at all.
        let c = CpuPerFrame::of(&watched[2..], &all, 1e4);
        assert_eq!(c.stack_us, None);
        assert_eq!(c.load_generator_us, Some(40.0));
        // A measured process at 0% costs 0 per frame: a real 0.
        let c = CpuPerFrame::of(&watched[..1], &[usage("nats", 0.0)], 1e4);
        assert_eq!(c.stack_us, Some(0.0));
    }

    #[test]
    fn the_table_prints_absent_figures_as_a_dash() {
        let watched: Vec<String> = ["nats", "gateway-0", "bandsync-load"]
            .map(String::from)
            .into();
        let measured = [usage("nats", 10.0), usage("bandsync-load", 20.0)];
        let step = |fps: f64| Step {
            sessions: 1,
            connections_target: 6,
            connections_held: 6,
            connect_failed: 0,
            connect_secs: 1.0,
            connect_rate_per_sec: 6.0,
            connect_latency: None,
            tick_latency: None,
            ticks_received: 0,
            ticks_expected: 0,
            tick_delivery: 0.0,
            ticks_missed: 0,
            ticks_duplicate: 0,
            commands_sent: 0,
            command_to_all_followers: None,
            command_to_each_follower: None,
            command_to_owner: None,
            command_owner_to_all_followers: None,
            sync_error: None,
            click_skew: None,
            errors: BTreeMap::new(),
            leader_reclaims: 0,
            processes: measured.to_vec(),
            frames_delivered: (fps * 5.0) as u64,
            frames_per_sec: fps,
            cpu_per_frame: CpuPerFrame::of(&watched, &measured, fps),
            gateway_kib_per_connection: None,
            load_kib_per_connection: None,
            service_level: Verdict {
                held: true,
                broken_by: Vec::new(),
            },
        };
        let table = Report {
            machine: Machine::describe(1),
            setup: setup(),
            steps: vec![step(1e4), step(0.0)],
            last_step_held: None,
        }
        .table();
        let row = |name: &str| -> Vec<String> {
            let line = table
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no row {name:?} in\n{table}"));
            line.split('|')
                .skip(1)
                .map(|c| c.trim().to_owned())
                .collect()
        };
        assert_eq!(row("frames delivered /s"), ["10000 (50000)", "0 (0)"]);
        assert_eq!(row("nats µs CPU per frame"), ["10.0", "-"]);
        assert_eq!(row("gateway-0 µs CPU per frame"), ["-", "-"]);
        assert_eq!(row("stack µs CPU per frame"), ["-", "-"]);
        assert_eq!(row("load-gen µs CPU per frame"), ["20.0", "-"]);
    }

    fn setup() -> Setup {
        Setup {
            members: 6,
            gateways: 2,
            tickers: Some(1),
            own_stack: true,
            tick_ms: 100,
            command_ms: 2000,
            setlist_kb: 0,
            sample_ms: 500,
            ping_ms: 1000,
            settle_pings: 0,
            procs: 1,
            duration_secs: 5,
            warmup_secs: 3,
            source_addrs: 0,
            impairment: None,
            placement: Placement::Band,
            gateway_bin: None,
        }
    }
}
