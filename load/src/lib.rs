//! bandsync-load: the benchmark that proves scale and sync accuracy.
//!
//! It holds S sessions × M members over the gateways of a stack (its own
//! child processes, or a running one), every member a real client (HTTP
//! create/join, WebSocket, clock sync, timeline estimate) from the client SDK.
//! Leaders start playback and change tempo at a set rate. Each step measures
//! connections and connect rate, tick latency and delivery, command → all
//! followers latency, sync error and click skew, errors, frames delivered,
//! and CPU and memory of every process from /proc (and its CPU per frame
//! delivered). Ramp mode adds sessions step by step until the service level
//! breaks. Optionally a user-space proxy impairs the path.
//!
//! Everything runs on one machine, so the true server clock is the local
//! clock: that is what makes the sync error measurable at all.

pub mod abuse;
pub mod chaos;
pub mod config;
pub mod member;
pub mod procs;
pub mod procstat;
pub mod proxy;
pub mod report;
pub mod stack;
pub mod stats;
pub mod topology;

use anyhow::Context;
use bandsync_client::Api;
pub use config::Config;
use member::{Member, Run, Session};
use procstat::Watched;
use report::{Report, Setup, Step, Verdict};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Longest wait for one HTTP create or join.
const API_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the tickers to own their shards.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Open files needed besides the sockets (stack, logs, NATS).
const FD_MARGIN: u64 = 1_000;

/// Runs the configured steps and returns the report.
pub async fn run(config: Config, stop: CancellationToken) -> anyhow::Result<Report> {
    config.validate()?;
    let peak = config.steps().last().copied().unwrap_or(0) * config.members;
    let nofile = raise_nofile(config.nofile)?;
    // The limit is per process: a load process holds its share of the client
    // ends (and, with impairment, both proxy ends), a started gateway its share
    // of the server ends; in one process with its own stack, all of them.
    let per_conn = if config.impair.is_active() { 3 } else { 1 };
    let own = config.gateway_urls.is_empty();
    let needed = if config.procs == 1 && own && config.gateways >= 1 {
        peak as u64 * (per_conn + 1)
    } else {
        let load = peak as u64 * per_conn / config.procs as u64;
        let gateway = peak as u64 / config.gateways.max(1) as u64;
        if own { load.max(gateway) } else { load }
    };
    if nofile < needed + FD_MARGIN {
        tracing::warn!(
            nofile,
            needed,
            "the open-file limit is below what the run needs; connections will fail"
        );
    }
    if peak > 25_000 && config.source_addrs == 0 {
        tracing::warn!(
            peak,
            "more than ~28k sockets from one address to one gateway exhaust the ephemeral ports: use --source-addrs"
        );
    }
    let mut stack = None;
    let (gateways, mut pids) = if config.gateway_urls.is_empty() {
        let bin_dir = config
            .bin_dir
            .clone()
            .unwrap_or_else(stack::default_bin_dir);
        let secret = config
            .token_secret
            .clone()
            .unwrap_or_else(|| format!("load-{}", bandsync_nats::service::random_id(24)));
        let s = stack::Stack::start(stack::StackSpec {
            nats_server: &config.nats_server,
            bin_dir: &bin_dir,
            gateway_bin: config.gateway_bin.as_deref(),
            nats_nodes: config.nats_nodes,
            gateways: config.gateways,
            tickers: config.tickers,
            tick_ms: config.tick_ms,
            max_members: config.members,
            token_secret: secret,
            run_dir: config.run_dir.as_deref(),
            nginx_port: None,
            store: None,
            address_limits: false,
        })
        .await?;
        let listed: Vec<String> = s.pids().iter().map(|(n, p)| format!("{n}={p}")).collect();
        eprintln!(
            "stack started in {}: {} (nats monitoring {})",
            s.dir.display(),
            listed.join(" "),
            s.nats_monitor
        );
        let g = s.gateways.clone();
        let p = s.pids();
        stack = Some(s);
        (g, p)
    } else {
        (config.gateway_urls.clone(), config.pids.clone())
    };
    let result = if config.procs > 1 {
        let dir = match (&stack, &config.run_dir) {
            (Some(s), _) => s.dir.clone(),
            (None, Some(d)) => d.clone(),
            (None, None) => std::env::temp_dir(),
        };
        procs::run_children(&config, &gateways, &pids, &dir, stop.clone()).await
    } else {
        pids.push(("bandsync-load".into(), std::process::id()));
        drive(
            &config,
            &gateways,
            &pids,
            nofile,
            stack.as_mut(),
            stop.clone(),
        )
        .await
    };
    stop.cancel();
    if let Some(s) = stack {
        s.stop().await;
    }
    result
}

/// Raises the soft (and, with the privilege, the hard) open-file limit; returns the soft limit.
pub fn raise_nofile(want: u64) -> anyhow::Result<u64> {
    use rlimit::Resource;
    let (soft, hard) = rlimit::getrlimit(Resource::NOFILE).context("reading RLIMIT_NOFILE")?;
    if soft >= want {
        return Ok(soft);
    }
    if want > hard && rlimit::setrlimit(Resource::NOFILE, want, want).is_ok() {
        return Ok(want);
    }
    rlimit::increase_nofile_limit(want).context("raising RLIMIT_NOFILE")
}

async fn drive(
    config: &Config,
    gateways: &[String],
    pids: &[(String, u32)],
    nofile: u64,
    mut stack: Option<&mut stack::Stack>,
    stop: CancellationToken,
) -> anyhow::Result<Report> {
    let mut ws_bases = gateways.to_vec();
    if config.impair.is_active() {
        ws_bases.clear();
        for g in gateways {
            let target: SocketAddr = g
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .parse()
                .with_context(|| format!("the proxy needs an ip:port gateway address, not {g}"))?;
            let p = proxy::Proxy::start(target, config.impair, stop.clone()).await?;
            ws_bases.push(format!("http://{}", p.addr));
        }
    }
    wait_for_owner(&gateways[0], &stop).await?;
    let run = Arc::new(Run {
        recorder: Default::default(),
        connected: Default::default(),
        connect_failed: Default::default(),
        connect_latency: Default::default(),
        ws_bases,
        ping_every: Duration::from_millis(config.ping_ms),
        settle_pings: config.settle_pings,
        sample_every: Duration::from_millis(config.sample_ms),
        command_every: (config.command_ms > 0).then(|| Duration::from_millis(config.command_ms)),
        setlist: member::setlist(config.setlist_kb),
        connect_gate: Semaphore::new(config.connect_concurrency),
        stop: stop.clone(),
    });
    let http_gate = Arc::new(Semaphore::new(config.connect_concurrency));
    let mut watched: Vec<Watched> = pids.iter().map(|(n, p)| Watched::new(n, *p)).collect();
    let baseline: Vec<u64> = pids
        .iter()
        .map(|(_, p)| procstat::read(*p).map_or(0, |r| r.rss_kib))
        .collect();
    let mut members = JoinSet::new();
    let mut steps = Vec::new();
    let mut last_held = None;
    let mut sessions = 0;
    for target in config.steps() {
        let (play_tx, play_rx) = watch::channel(false);
        let started = Instant::now();
        let before = run.connected.load(Ordering::Relaxed);
        let failed_before = run.connect_failed.load(Ordering::Relaxed);
        *run.connect_latency
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Default::default();
        for s in sessions..target {
            members.spawn(setup_session(
                config.clone(),
                gateways.to_vec(),
                s,
                run.clone(),
                http_gate.clone(),
                play_rx.clone(),
            ));
        }
        let want = (target - sessions) * config.members;
        sessions = target;
        // Every new member connected or failed (or a generous deadline).
        let deadline = Instant::now() + Duration::from_secs(60 + want as u64 / 50);
        loop {
            let done = run.connected.load(Ordering::Relaxed).saturating_sub(before)
                + run
                    .connect_failed
                    .load(Ordering::Relaxed)
                    .saturating_sub(failed_before);
            if done >= want || Instant::now() > deadline || stop.is_cancelled() {
                break;
            }
            // Members finished: reap their handles so the set does not grow.
            while members.try_join_next().is_some() {}
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let connect_secs = started.elapsed().as_secs_f64();
        let new_conns = run.connected.load(Ordering::Relaxed).saturating_sub(before);
        let connect_latency = run
            .connect_latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .summary();
        let idle: Vec<u64> = pids
            .iter()
            .map(|(_, p)| procstat::read(*p).map_or(0, |r| r.rss_kib))
            .collect();
        let _ = play_tx.send(true);
        sleep_or_stop(Duration::from_secs(config.warmup_secs), &stop).await;
        run.recorder.take();
        watched.iter_mut().for_each(Watched::begin);
        let window_start = Instant::now();
        let measure_end = window_start + Duration::from_secs(config.duration_secs);
        while Instant::now() < measure_end && !stop.is_cancelled() {
            sleep_or_stop(
                Duration::from_secs(1).min(measure_end.saturating_duration_since(Instant::now())),
                &stop,
            )
            .await;
            watched.iter_mut().for_each(Watched::sample);
        }
        let window = run.recorder.take();
        let window_secs = window_start.elapsed().as_secs_f64();
        let processes: Vec<_> = watched.iter_mut().filter_map(Watched::end).collect();
        let held_now = run.connected.load(Ordering::Relaxed);
        let per_conn = |pred: &dyn Fn(&str) -> bool| {
            let grown: i64 = pids
                .iter()
                .zip(baseline.iter().zip(&idle))
                .filter(|((n, _), _)| pred(n))
                .map(|(_, (b, i))| *i as i64 - *b as i64)
                .sum();
            (held_now > 0 && pids.iter().any(|(n, _)| pred(n)))
                .then(|| grown as f64 / held_now as f64)
        };
        let ticks_expected =
            (held_now as f64 * window_secs * 1000.0 / config.tick_ms as f64).round() as u64;
        let frames_per_sec = window.frames_delivered as f64 / window_secs.max(1e-3);
        let watched_names: Vec<String> = pids.iter().map(|(n, _)| n.clone()).collect();
        let cpu_per_frame = report::CpuPerFrame::of(&watched_names, &processes, frames_per_sec);
        let tick_delivery = report::tick_delivery(window.ticks_received, ticks_expected);
        let mut step = Step {
            sessions: target,
            connections_target: target * config.members,
            connections_held: held_now,
            connect_failed: run.connect_failed.load(Ordering::Relaxed),
            connect_secs,
            connect_rate_per_sec: new_conns as f64 / connect_secs.max(1e-3),
            connect_latency,
            tick_latency: window.tick_latency.summary(),
            ticks_received: window.ticks_received,
            ticks_expected,
            tick_delivery,
            ticks_missed: window.ticks_missed,
            ticks_duplicate: window.ticks_duplicate,
            commands_sent: window.commands_sent,
            command_to_all_followers: window.command_all.summary(),
            command_to_each_follower: window.command_each.summary(),
            command_to_owner: window.command_to_owner.summary(),
            command_owner_to_all_followers: window.command_owner_to_all.summary(),
            sync_error: window.sync_error.summary(),
            click_skew: window.skew.summary(),
            errors: window.errors,
            leader_reclaims: window.leader_reclaims,
            processes,
            frames_delivered: window.frames_delivered,
            frames_per_sec,
            cpu_per_frame,
            gateway_kib_per_connection: per_conn(&|n| n.contains("gateway")),
            load_kib_per_connection: per_conn(&|n| n == "bandsync-load"),
            service_level: Verdict {
                held: true,
                broken_by: Vec::new(),
            },
        };
        if let Some(s) = stack.as_deref_mut() {
            for dead in s.dead() {
                step.errors.insert(format!("process exited: {dead}"), 1);
            }
        }
        step.service_level = verdict(config, &step);
        let held = step.service_level.held;
        eprint!("{}", step_line(&step));
        steps.push(step);
        if held {
            last_held = Some(target);
        } else if !config.ramp.is_empty() {
            break;
        }
        if stop.is_cancelled() {
            break;
        }
    }
    stop.cancel();
    // Members close their sockets; give them a moment, then drop the rest.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while members.join_next().await.is_some() {}
    })
    .await;
    members.abort_all();
    Ok(Report {
        machine: report::Machine::describe(nofile),
        setup: Setup {
            members: config.members,
            gateways: gateways.len(),
            tickers: config.gateway_urls.is_empty().then_some(config.tickers),
            own_stack: config.gateway_urls.is_empty(),
            tick_ms: config.tick_ms,
            command_ms: config.command_ms,
            setlist_kb: config.setlist_kb,
            sample_ms: config.sample_ms,
            ping_ms: config.ping_ms,
            settle_pings: config.settle_pings,
            procs: 1,
            duration_secs: config.duration_secs,
            warmup_secs: config.warmup_secs,
            source_addrs: config.source_addrs,
            impairment: config.impair.is_active().then_some(config.impair),
            placement: config.placement,
            gateway_bin: config.gateway_bin.as_ref().map(|p| p.display().to_string()),
        },
        steps,
        last_step_held: (!config.ramp.is_empty()).then_some(last_held).flatten(),
    })
}

fn step_line(s: &Step) -> String {
    let p99 = |x: &Option<stats::Summary>| x.map_or(f64::NAN, |s| s.p99_ms);
    format!(
        "step {} sessions: {}/{} connections, ticks {:.1}%, tick p99 {:.2} ms, cmd→all p99 {:.2} ms, sync p99 {:.3} ms, {}\n",
        s.sessions,
        s.connections_held,
        s.connections_target,
        s.tick_delivery * 100.0,
        p99(&s.tick_latency),
        p99(&s.command_to_all_followers),
        p99(&s.sync_error),
        if s.service_level.held {
            "held"
        } else {
            "BROKEN"
        }
    )
}

/// The service level of ramp mode: every connection held, p99 command → all
/// followers within the bound, ticks delivered at the rate, no errors.
pub(crate) fn verdict(config: &Config, s: &Step) -> Verdict {
    let mut broken_by = Vec::new();
    if s.connections_held < s.connections_target {
        broken_by.push(format!(
            "{} of {} connections held",
            s.connections_held, s.connections_target
        ));
    }
    if let Some(c) = s.command_to_all_followers
        && c.p99_ms > config.slo_command_p99_ms
    {
        broken_by.push(format!("command p99 {:.1} ms", c.p99_ms));
    }
    if config.command_ms > 0 && s.commands_sent > 0 && s.command_to_all_followers.is_none() {
        broken_by.push("no command reached all followers".into());
    }
    if s.tick_delivery < config.slo_tick_ratio {
        broken_by.push(format!("ticks {:.1}% of the rate", s.tick_delivery * 100.0));
    }
    let errors: u64 = s.errors.values().sum();
    if errors > 0 {
        broken_by.push(format!("{errors} errors"));
    }
    Verdict {
        held: broken_by.is_empty(),
        broken_by,
    }
}

async fn sleep_or_stop(d: Duration, stop: &CancellationToken) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

/// Until a session can be created (the tickers own their shards).
async fn wait_for_owner(gateway: &str, stop: &CancellationToken) -> anyhow::Result<()> {
    let api = Api::new(gateway);
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match tokio::time::timeout(API_TIMEOUT, api.create("probe")).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) if Instant::now() > deadline => {
                anyhow::bail!("the stack never accepted a session: {e}")
            }
            Err(_) => anyhow::bail!("creating a session timed out"),
            _ => {}
        }
        anyhow::ensure!(!stop.is_cancelled(), "stopped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Creates session `s`, joins its followers, and runs all its members.
async fn setup_session(
    config: Config,
    gateways: Vec<String>,
    s: usize,
    run: Arc<Run>,
    http_gate: Arc<Semaphore>,
    play: watch::Receiver<bool>,
) {
    let g = gateways.len();
    let api = |m: usize| {
        let api = Api::new(gateways[config.placement.gateway(s, m, g)].clone());
        match config.source_ip(s * config.members + m) {
            Some(ip) => api.with_local_ip(ip),
            None => api,
        }
    };
    let fail = |n: usize, what: String| {
        run.recorder.with(|w| w.error(&what));
        run.connect_failed.fetch_add(n, Ordering::Relaxed);
    };
    let lead = {
        let Ok(_permit) = http_gate.acquire().await else {
            return;
        };
        match tokio::time::timeout(API_TIMEOUT, api(0).create(&format!("Lead {s}"))).await {
            Ok(Ok(j)) => j,
            Ok(Err(e)) => return fail(config.members, format!("create: {}", api_kind(&e))),
            Err(_) => return fail(config.members, "create: timeout".into()),
        }
    };
    let code = lead.code.as_str().to_owned();
    let session = Arc::new(Session::new(config.members));
    let mut tasks = JoinSet::new();
    let member = |m: usize, joined| Member {
        joined,
        leader: m == 0,
        gateway: config.placement.gateway(s, m, g),
        local_ip: config.source_ip(s * config.members + m),
    };
    // The leader connects first: a leader still away after the grace period
    // is displaced (and would have to reclaim leadership).
    tasks.spawn(member::run(
        run.clone(),
        session.clone(),
        member(0, lead),
        play.clone(),
    ));
    for m in 1..config.members {
        let Ok(_permit) = http_gate.acquire().await else {
            return;
        };
        match tokio::time::timeout(API_TIMEOUT, api(m).join(&code, &format!("M{m}"))).await {
            Ok(Ok(j)) => {
                tasks.spawn(member::run(
                    run.clone(),
                    session.clone(),
                    member(m, j),
                    play.clone(),
                ));
            }
            Ok(Err(e)) => fail(1, format!("join: {}", api_kind(&e))),
            Err(_) => fail(1, "join: timeout".into()),
        }
    }
    while tasks.join_next().await.is_some() {}
}

fn api_kind(e: &bandsync_client::ApiError) -> String {
    match e {
        bandsync_client::ApiError::Transport(_) => "transport".into(),
        bandsync_client::ApiError::Refused { code, .. } => code.clone(),
    }
}
