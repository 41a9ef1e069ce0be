//! A small, fast run of the load generator against a real stack started in
//! this process (nats-server, one ticker, two gateways). It checks that the
//! tool works — connections made, figures computed, sync error finite — and
//! never how fast anything is: that is `scripts/bench`'s job.

use bandsync_load::Config;
use bandsync_testkit::{InProcessStack, StackOptions};
use clap::Parser;
use tokio_util::sync::CancellationToken;

async fn stack() -> InProcessStack {
    InProcessStack::start(StackOptions {
        shards: 16,
        gateway_ids: &["smoke-0", "smoke-1"],
        token_secret: "load-smoke-secret-0123456789",
        ticker_flags: &["--tick-ms=100"],
        ..StackOptions::default()
    })
    .await
}

fn config(stack: &InProcessStack, extra: &[&str]) -> Config {
    let mut args = vec![
        "bandsync-load".to_string(),
        format!("--gateway={}", stack.bases.join(",")),
        "--members=3".into(),
        "--duration-secs=2".into(),
        "--warmup-secs=1".into(),
        "--command-ms=400".into(),
        "--sample-ms=100".into(),
        "--ping-ms=200".into(),
        "--tick-ms=100".into(),
        "--nofile=4096".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Config::parse_from(args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_run_connects_everyone_and_computes_every_figure() {
    let stack = stack().await;
    let report = bandsync_load::run(
        config(&stack, &["--sessions=3", "--source-addrs=2"]),
        CancellationToken::new(),
    )
    .await
    .expect("the run completes");
    assert_eq!(report.steps.len(), 1);
    let step = &report.steps[0];
    assert_eq!((step.connections_target, step.connections_held), (9, 9));
    assert!(step.connect_rate_per_sec > 0.0);
    assert!(step.ticks_received > 0, "ticks arrive: {step:?}");
    let tick = step.tick_latency.expect("tick latency measured");
    assert!(tick.p50_ms.is_finite() && tick.max_ms >= tick.p50_ms);
    assert!(step.commands_sent > 0);
    assert!(
        step.command_to_all_followers.is_some(),
        "commands reached the followers: {step:?}"
    );
    let sync = step.sync_error.expect("sync error sampled");
    assert!(sync.count > 0 && sync.p99_ms.is_finite() && sync.max_ms.is_finite());
    assert!(step.click_skew.is_some(), "skew computed");
    assert!(
        step.processes.iter().any(|p| p.name == "bandsync-load"),
        "own process measured"
    );
    // Every message counts: ticks, and the pongs and events besides.
    assert!(
        step.frames_delivered > step.ticks_received,
        "frames {} against ticks {}",
        step.frames_delivered,
        step.ticks_received
    );
    assert!(
        step.cpu_per_frame
            .load_generator_us
            .is_some_and(|us| us.is_finite() && us >= 0.0),
        "{:?}",
        step.cpu_per_frame
    );
    // A running stack watched without --pid: no stack figure, not a 0.
    assert_eq!(step.cpu_per_frame.stack_us, None);
    let table = report.table();
    assert!(table.contains("sync error"), "{table}");
    assert!(table.contains("load-gen µs CPU per frame"), "{table}");
    let json = serde_json::to_value(&report).expect("report serialises");
    assert_eq!(json["steps"][0]["connections_held"], 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ramp_through_an_impairing_proxy() {
    let stack = stack().await;
    let report = bandsync_load::run(
        config(
            &stack,
            &[
                "--ramp=1,2",
                "--up-delay-ms=5",
                "--up-jitter-ms=2",
                "--down-delay-ms=2",
                "--down-jitter-ms=1",
                // Ramp verdicts are not the point here; a loaded CI box must not end the ramp early.
                "--slo-command-p99-ms=100000",
                "--slo-tick-ratio=0",
            ],
        ),
        CancellationToken::new(),
    )
    .await
    .expect("the run completes");
    assert!(report.setup.impairment.is_some());
    let held: Vec<_> = report.steps.iter().map(|s| s.connections_held).collect();
    assert_eq!(held.first(), Some(&3), "{held:?}");
    let first = &report.steps[0];
    assert!(first.sync_error.is_some_and(|s| s.max_ms.is_finite()));
    // The proxy's delay is on every tick's path.
    assert!(
        first.tick_latency.is_some_and(|t| t.p50_ms >= 1.0),
        "{first:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_processes_share_the_sessions_and_merge_their_reports() {
    let stack = stack().await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let json = dir.path().join("report.json");
    // The real binary: the parent re-executes itself, which a test binary cannot.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_bandsync-load"))
        .args([
            format!("--gateway={}", stack.bases.join(",")),
            "--procs=2".into(),
            "--placement=band".into(),
            "--sessions=3".into(),
            "--members=3".into(),
            "--duration-secs=2".into(),
            "--warmup-secs=1".into(),
            "--command-ms=400".into(),
            "--sample-ms=100".into(),
            "--tick-ms=100".into(),
            "--source-addrs=2".into(),
            "--nofile=4096".into(),
            format!("--run-dir={}", dir.path().display()),
            format!("--json={}", json.display()),
        ])
        .kill_on_drop(true)
        .output()
        .await
        .expect("bandsync-load runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("report written")).expect("json");
    assert_eq!(report["setup"]["procs"], 2);
    assert_eq!(report["setup"]["placement"], "band");
    let step = &report["steps"][0];
    assert_eq!(step["sessions"], 3, "2 + 1 sessions");
    assert_eq!(step["connections_held"], 9);
    assert!(step["ticks_received"].as_u64() > Some(0));
    assert!(step["frames_delivered"].as_u64() > step["ticks_received"].as_u64());
    assert!(
        step["cpu_per_frame"]["load_generator_us"]
            .as_f64()
            .is_some_and(f64::is_finite),
        "both children measured: {step}"
    );
    assert!(
        step["sync_error"]["p99_ms"]
            .as_f64()
            .is_some_and(f64::is_finite)
    );
    let names: Vec<&str> = step["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        names.contains(&"bandsync-load-0") && names.contains(&"bandsync-load-1"),
        "{names:?}"
    );
}
