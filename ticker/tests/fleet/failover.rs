//! Acceptance 1: kill -9 one of three tickers under 200 playing sessions.

use crate::common::*;
use bandsync_testkit::metric;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_one_of_three_tickers_every_session_ticks_again_within_2_s() {
    let _turn = exclusive().await;
    let mut fleet = Fleet::start(3).await;
    let bands = bands(&fleet, 200).await;
    let victim = 1;
    let orphans = fleet.sessions_of(victim, &bands).await;
    assert!(!orphans.is_empty(), "the victim owns some of the sessions");
    let recorder = Recorder::start(bands);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let killed_at = Instant::now();
    fleet.tickers[victim].signal("KILL");
    fleet.tickers[victim].wait_exit(WAIT).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let end = Instant::now();
    let logs = recorder.finish().await;

    let gaps = longest_gaps(&logs, killed_at, end);
    let (longest, session) = worst(&gaps);
    let orphan_gaps: Vec<Duration> = orphans
        .iter()
        .filter_map(|s| gaps.get(s))
        .copied()
        .collect();
    println!(
        "kill -9 with 200 sessions ({} on the victim): longest tick gap {longest:?} ({session:?}); \
         orphans' gaps min {:?} max {:?}",
        orphans.len(),
        orphan_gaps.iter().min(),
        orphan_gaps.iter().max()
    );
    assert_eq!(gaps.len(), 200, "every session was heard from");
    assert!(
        longest < Duration::from_secs(2),
        "session {session:?} went {longest:?} without ticks"
    );
    let doubled = doubled_periods(&logs);
    assert!(
        doubled.is_empty(),
        "ticks from two owners for one period: {doubled:?}"
    );
    let error = worst_position_error_ms(&logs);
    println!("worst tick position error: {error:.6} ms");
    assert!(
        error < 1.0,
        "a tick was {error} ms off the session timeline"
    );
    for log in logs.iter().filter(|l| orphans.contains(&l.session)) {
        let before = log
            .ticks
            .iter()
            .filter(|t| t.at < killed_at)
            .map(|t| t.epoch)
            .max();
        // Past the longest gap allowed: a tick published just before the kill
        // may still arrive just after it.
        let after = log
            .ticks
            .iter()
            .filter(|t| t.at > killed_at + Duration::from_secs(2))
            .map(|t| t.epoch)
            .min();
        assert!(
            before.is_some() && after > before,
            "{}: after the kill its ticks come from a newer owner ({before:?} then {after:?})",
            log.session
        );
    }
    let (_, owned) = fleet.wait_balanced(&[0, 2], WAIT).await;
    // What an operator sees: /readyz and /metrics agree and count the takeover.
    let mut failovers = 0.0;
    for (i, shards) in [0, 2].into_iter().zip(&owned) {
        let metrics = fleet.tickers[i]
            .metrics()
            .await
            .unwrap_or_else(|e| panic!("ticker {i} answers /metrics: {e}"));
        let value = |series: &str| metric(&metrics, series).unwrap_or_else(|e| panic!("{e}"));
        failovers += value("bandsync_ticker_failovers_total");
        assert_eq!(value("bandsync_ticker_shards_owned"), shards.len() as f64);
        assert!(value("bandsync_ticker_lease_renewals_total") > 0.0);
        assert!(
            metrics.contains("bandsync_ticker_lease_renew_seconds{quantile=\"0.99\"}"),
            "renewal latency is exported"
        );
        assert!(value("bandsync_ticker_ticks_per_second") > 0.0);
        assert!(value("bandsync_ticker_commands_applied_total") > 0.0);
    }
    assert!(failovers >= 1.0, "/metrics counts the failovers");
}
