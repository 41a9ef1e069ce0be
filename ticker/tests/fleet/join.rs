//! Acceptance 3: a fourth ticker joins; shards are handed over without a pause.

use crate::common::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_ticker_gets_its_share_without_pausing_any_session() {
    let _turn = exclusive().await;
    let mut fleet = Fleet::start(3).await;
    let bands = bands(&fleet, 60).await;
    let recorder = Recorder::start(bands);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let joined_at = Instant::now();
    let newcomer = fleet.add_ticker().await;
    let (took, owned) = fleet
        .wait_balanced(&[0, 1, 2, newcomer], Duration::from_secs(5))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let end = Instant::now();
    let logs = recorder.finish().await;

    let counts: Vec<usize> = owned.iter().map(|o| o.len()).collect();
    let gaps = longest_gaps(&logs, joined_at, end);
    let (longest, session) = worst(&gaps);
    let handovers = fleet.tickers[newcomer]
        .metric("bandsync_ticker_handovers_total")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "fourth ticker: fair shares {counts:?} after {took:?} ({handovers} hand-overs); \
         longest tick gap {longest:?} ({session:?}), at most {} periods missed",
        most_missed_periods(&logs, joined_at)
    );
    assert!(counts[3] >= 15, "the newcomer owns its share: {counts:?}");
    assert!(
        longest < 2 * PERIOD,
        "session {session:?} paused {longest:?}, more than one tick period beyond the normal"
    );
    let doubled = doubled_periods(&logs);
    assert!(
        doubled.is_empty(),
        "ticks from two owners for one period: {doubled:?}"
    );
    assert!(worst_position_error_ms(&logs) < 1.0);
}
