//! Acceptance 2: SIGTERM one ticker; its shards move within a tick period or so.

use crate::common::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_shards_over_with_a_gap_under_300_ms() {
    let _turn = exclusive().await;
    let mut fleet = Fleet::start(3).await;
    let bands = bands(&fleet, 60).await;
    let leaving = 1;
    let moved = fleet.sessions_of(leaving, &bands).await;
    assert!(!moved.is_empty());
    let recorder = Recorder::start(bands);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let signalled_at = Instant::now();
    fleet.tickers[leaving].signal("TERM");
    let status = fleet.tickers[leaving].wait_exit(WAIT).await;
    let exited_after = signalled_at.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let end = Instant::now();
    let logs = recorder.finish().await;

    assert!(status.success(), "a clean exit on SIGTERM: {status}");
    let gaps = longest_gaps(&logs, signalled_at, end);
    let (longest, session) = worst(&gaps);
    println!(
        "SIGTERM with 60 sessions ({} moved): longest tick gap {longest:?} ({session:?}), \
         at most {} periods missed, exit after {exited_after:?}",
        moved.len(),
        most_missed_periods(&logs, signalled_at)
    );
    assert_eq!(gaps.len(), 60);
    assert!(
        longest < Duration::from_millis(300),
        "session {session:?} went {longest:?} without ticks"
    );
    let doubled = doubled_periods(&logs);
    assert!(
        doubled.is_empty(),
        "ticks from two owners for one period: {doubled:?}"
    );
    assert!(worst_position_error_ms(&logs) < 1.0);
    fleet.wait_balanced(&[0, 2], WAIT).await;
}
