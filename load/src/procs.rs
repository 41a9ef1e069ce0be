//! `--procs N`: one process cannot hold more sockets than its open-file limit
//! (20,000 here, hard), so the generator re-executes itself N times against
//! the same stack, each child with a share of every step's sessions, and
//! merges the children's JSON reports into one.
//!
//! Merging: counts add up; tick delivery is received ÷ expected over all;
//! p50 is the count-weighted mean of the children's p50s and p99 the largest
//! of their p99s (an upper bound: the children measure alike populations of
//! one run, so their p99s differ little); max is the max. The stack's
//! processes are watched by child 0 only; each child reports itself as
//! `bandsync-load-<i>`. Frames delivered add up, and so do frames per
//! second: CPU per frame is each process's share of a core ÷ all of them.
//! The children run their steps independently and start together, so their
//! windows overlap but are not aligned to the millisecond.

use crate::config::Config;
use crate::report::{Report, Step, Verdict};
use crate::stats::Summary;
use anyhow::Context;
use std::path::Path;
use std::process::Stdio;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// Every step's session count split over `procs` children (child i gets the
/// remainder's first shares), as each child's `--ramp`/`--sessions` list.
pub fn shares(steps: &[usize], procs: usize) -> Vec<Vec<usize>> {
    (0..procs)
        .map(|i| {
            steps
                .iter()
                .map(|&s| s / procs + usize::from(i < s % procs))
                .collect()
        })
        .collect()
}

/// The command line of child `i`: the parent's settings, its share of the
/// sessions, the running stack's gateways, and where to write its report.
pub fn child_args(
    config: &Config,
    gateways: &[String],
    pids: &[(String, u32)],
    share: &[usize],
    i: usize,
    json: &Path,
) -> Vec<String> {
    let c = config;
    let i_ = &c.impair;
    let mut a = vec![
        format!("--members={}", c.members),
        format!("--gateway={}", gateways.join(",")),
        format!("--tick-ms={}", c.tick_ms),
        format!("--duration-secs={}", c.duration_secs),
        format!("--warmup-secs={}", c.warmup_secs),
        format!("--command-ms={}", c.command_ms),
        format!("--setlist-kb={}", c.setlist_kb),
        format!("--sample-ms={}", c.sample_ms),
        format!("--ping-ms={}", c.ping_ms),
        format!("--settle-pings={}", c.settle_pings),
        format!(
            "--connect-concurrency={}",
            (c.connect_concurrency / c.procs).max(1)
        ),
        format!("--source-addrs={}", c.source_addrs),
        format!("--nofile={}", c.nofile),
        format!("--slo-command-p99-ms={}", c.slo_command_p99_ms),
        format!("--slo-tick-ratio={}", c.slo_tick_ratio),
        format!("--up-delay-ms={}", i_.up_delay_ms),
        format!("--up-jitter-ms={}", i_.up_jitter_ms),
        format!("--down-delay-ms={}", i_.down_delay_ms),
        format!("--down-jitter-ms={}", i_.down_jitter_ms),
        format!("--stall-every-ms={}", i_.stall_every_ms),
        format!("--stall-ms={}", i_.stall_ms),
        format!("--bandwidth-kbps={}", i_.bandwidth_kbps),
        format!("--placement={}", c.placement.as_str()),
        format!("--json={}", json.display()),
        "--procs=1".into(),
    ];
    if c.ramp.is_empty() {
        a.push(format!("--sessions={}", share[0]));
    } else {
        let list: Vec<String> = share.iter().map(usize::to_string).collect();
        a.push(format!("--ramp={}", list.join(",")));
    }
    if i == 0 {
        a.extend(pids.iter().map(|(n, p)| format!("--pid={n}={p}")));
    }
    a
}

/// Runs `config.procs` children against `gateways` and merges their reports.
pub async fn run_children(
    config: &Config,
    gateways: &[String],
    pids: &[(String, u32)],
    dir: &Path,
    stop: CancellationToken,
) -> anyhow::Result<Report> {
    let exe = std::env::current_exe().context("finding this program to re-execute")?;
    let steps = config.steps();
    anyhow::ensure!(
        steps.iter().all(|&s| s >= config.procs),
        "--procs {} is more than the sessions of a step",
        config.procs
    );
    let mut children = Vec::new();
    for (i, share) in shares(&steps, config.procs).iter().enumerate() {
        let json = dir.join(format!("load-{i}.json"));
        let _ = std::fs::remove_file(&json);
        let log = dir.join(format!("load-{i}.log"));
        let args = child_args(config, gateways, pids, share, i, &json);
        let child = Command::new(&exe)
            .args(&args)
            // The gateways are started here, not by the children (which
            // would refuse --gateway-bin next to --gateway).
            .env_remove("BANDSYNC_GATEWAY_BIN")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(dir.join(format!("load-{i}.err")))?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting load process {i}"))?;
        children.push((i, child, json));
    }
    eprintln!(
        "{} load processes started; their output is in {}",
        children.len(),
        dir.display()
    );
    let mut reports = Vec::new();
    for (i, mut child, json) in children {
        let status = tokio::select! {
            s = child.wait() => s?,
            _ = stop.cancelled() => {
                let _ = child.start_kill();
                child.wait().await?
            }
        };
        let text = std::fs::read_to_string(&json).with_context(|| {
            format!(
                "load process {i} ({status}) wrote no report; see {}",
                dir.join(format!("load-{i}.err")).display()
            )
        })?;
        let mut r: Report =
            serde_json::from_str(&text).with_context(|| format!("reading {}", json.display()))?;
        for s in &mut r.steps {
            for p in &mut s.processes {
                if p.name == "bandsync-load" {
                    p.name = format!("bandsync-load-{i}");
                }
            }
        }
        reports.push(r);
    }
    let mut watched: Vec<String> = pids.iter().map(|(n, _)| n.clone()).collect();
    watched.extend((0..config.procs).map(|i| format!("bandsync-load-{i}")));
    Ok(merge(config, &watched, reports))
}

fn merge_summary(all: &[Option<Summary>]) -> Option<Summary> {
    let some: Vec<Summary> = all.iter().flatten().copied().collect();
    let count: u64 = some.iter().map(|s| s.count).sum();
    (count > 0).then(|| Summary {
        count,
        p50_ms: some.iter().map(|s| s.p50_ms * s.count as f64).sum::<f64>() / count as f64,
        p99_ms: some.iter().map(|s| s.p99_ms).fold(f64::MIN, f64::max),
        max_ms: some.iter().map(|s| s.max_ms).fold(f64::MIN, f64::max),
    })
}

/// One report from the children's: steps that every child reached.
/// `watched`: the stack's processes child 0 watched and the children.
pub fn merge(config: &Config, watched: &[String], mut reports: Vec<Report>) -> Report {
    let n_steps = reports.iter().map(|r| r.steps.len()).min().unwrap_or(0);
    let mut steps = Vec::new();
    for k in 0..n_steps {
        let parts: Vec<&Step> = reports.iter().map(|r| &r.steps[k]).collect();
        let sum = |f: &dyn Fn(&Step) -> u64| parts.iter().map(|s| f(s)).sum::<u64>();
        let summ = |f: &dyn Fn(&Step) -> Option<Summary>| {
            merge_summary(&parts.iter().map(|s| f(s)).collect::<Vec<_>>())
        };
        let held = sum(&|s| s.connections_held as u64) as usize;
        let connect_secs = parts.iter().map(|s| s.connect_secs).fold(0.0, f64::max);
        let new_conns: f64 = parts
            .iter()
            .map(|s| s.connect_rate_per_sec * s.connect_secs)
            .sum();
        let ticks_received = sum(&|s| s.ticks_received);
        let ticks_expected = sum(&|s| s.ticks_expected);
        let mut errors = std::collections::BTreeMap::new();
        for s in &parts {
            for (k, v) in &s.errors {
                *errors.entry(k.clone()).or_insert(0) += v;
            }
        }
        // The children's windows overlap: their frame rates add up, and the
        // stack's CPU (child 0's window) is set against all of them.
        let frames_per_sec: f64 = parts.iter().map(|s| s.frames_per_sec).sum();
        let processes: Vec<_> = parts.iter().flat_map(|s| s.processes.clone()).collect();
        let first = parts[0];
        let load_kib: Vec<(f64, f64)> = parts
            .iter()
            .filter_map(|s| Some((s.load_kib_per_connection?, s.connections_held as f64)))
            .collect();
        let mut step = Step {
            sessions: parts.iter().map(|s| s.sessions).sum(),
            connections_target: parts.iter().map(|s| s.connections_target).sum(),
            connections_held: held,
            connect_failed: parts.iter().map(|s| s.connect_failed).sum(),
            connect_secs,
            connect_rate_per_sec: new_conns / connect_secs.max(1e-3),
            connect_latency: summ(&|s| s.connect_latency),
            tick_latency: summ(&|s| s.tick_latency),
            ticks_received,
            ticks_expected,
            tick_delivery: crate::report::tick_delivery(ticks_received, ticks_expected),
            ticks_missed: sum(&|s| s.ticks_missed),
            ticks_duplicate: sum(&|s| s.ticks_duplicate),
            commands_sent: sum(&|s| s.commands_sent),
            command_to_all_followers: summ(&|s| s.command_to_all_followers),
            command_to_each_follower: summ(&|s| s.command_to_each_follower),
            command_to_owner: summ(&|s| s.command_to_owner),
            command_owner_to_all_followers: summ(&|s| s.command_owner_to_all_followers),
            sync_error: summ(&|s| s.sync_error),
            click_skew: summ(&|s| s.click_skew),
            errors,
            leader_reclaims: sum(&|s| s.leader_reclaims),
            cpu_per_frame: crate::report::CpuPerFrame::of(watched, &processes, frames_per_sec),
            processes,
            frames_delivered: sum(&|s| s.frames_delivered),
            frames_per_sec,
            // Child 0 watched the gateways but divided by its own connections only.
            gateway_kib_per_connection: first
                .gateway_kib_per_connection
                .map(|k| k * first.connections_held as f64 / held.max(1) as f64),
            load_kib_per_connection: (!load_kib.is_empty()).then(|| {
                load_kib.iter().map(|(k, n)| k * n).sum::<f64>()
                    / load_kib.iter().map(|(_, n)| n).sum::<f64>().max(1.0)
            }),
            service_level: Verdict {
                held: true,
                broken_by: Vec::new(),
            },
        };
        step.service_level = crate::verdict(config, &step);
        steps.push(step);
    }
    let last_step_held = (!config.ramp.is_empty())
        .then(|| {
            steps
                .iter()
                .take_while(|s| s.service_level.held)
                .last()
                .map(|s| s.sessions)
        })
        .flatten();
    let mut report = reports.swap_remove(0);
    report.setup.gateways = reports
        .first()
        .map_or(report.setup.gateways, |r| r.setup.gateways);
    report.setup.own_stack = config.gateway_urls.is_empty();
    report.setup.tickers = report.setup.own_stack.then_some(config.tickers);
    report.setup.procs = config.procs;
    report.setup.gateway_bin = config.gateway_bin.as_ref().map(|p| p.display().to_string());
    report.steps = steps;
    report.last_step_held = last_step_held;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_per_step() {
        let s = shares(&[10, 15_000], 4);
        assert_eq!(s.len(), 4);
        assert_eq!(s.iter().map(|v| v[0]).sum::<usize>(), 10);
        assert_eq!(s.iter().map(|v| v[1]).sum::<usize>(), 15_000);
        assert_eq!(s[0], vec![3, 3_750]);
        assert_eq!(s[3], vec![2, 3_750]);
    }

    #[test]
    fn summaries_merge_conservatively() {
        let a = Summary {
            count: 100,
            p50_ms: 1.0,
            p99_ms: 5.0,
            max_ms: 9.0,
        };
        let b = Summary {
            count: 300,
            p50_ms: 3.0,
            p99_ms: 4.0,
            max_ms: 12.0,
        };
        let m = merge_summary(&[Some(a), None, Some(b)]).expect("merged");
        assert_eq!(m.count, 400);
        assert_eq!(m.p50_ms, 2.5);
        assert_eq!(m.p99_ms, 5.0);
        assert_eq!(m.max_ms, 12.0);
        assert_eq!(merge_summary(&[None, None]), None);
    }
}
