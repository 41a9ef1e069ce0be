//! Acceptance 4: a ticker frozen past its lease (SIGSTOP) and resumed (SIGCONT).

use crate::common::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_ticker_publishes_nothing_stale_and_rejoins_as_a_standby() {
    let _turn = exclusive().await;
    let fleet = Fleet::start(3).await;
    let bands = bands(&fleet, 60).await;
    let frozen = 1;
    let before = fleet.tickers[frozen].readyz().await.expect("readyz").shards;
    assert!(!before.is_empty());
    let recorder = Recorder::start(bands);
    tokio::time::sleep(Duration::from_millis(500)).await;

    fleet.tickers[frozen].signal("STOP");
    let frozen_at = Instant::now();
    // Well past the lease: the others take over meanwhile.
    fleet.wait_balanced(&[0, 2], WAIT).await;
    tokio::time::sleep(Duration::from_millis(TTL_MS)).await;
    let frozen_for = frozen_at.elapsed();
    fleet.tickers[frozen].signal("CONT");
    let resumed_at = Instant::now();

    // Right after it resumes it holds none of its old terms.
    let mut standby = None;
    while resumed_at.elapsed() < Duration::from_secs(5) {
        if let Ok(r) = fleet.tickers[frozen].readyz().await {
            standby = Some(r.shards);
            break;
        }
    }
    let standby = standby.expect("the resumed ticker answers /readyz");
    for (shard, epoch) in &standby {
        assert!(
            before.get(shard).is_none_or(|old| epoch > old),
            "shard {shard} still held in its old term {epoch}"
        );
    }
    let (rejoined, owned) = fleet.wait_balanced(&[0, 1, 2], WAIT).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let logs = recorder.finish().await;

    let lost = fleet.tickers[frozen]
        .metric("bandsync_ticker_leases_lost_total")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "frozen {frozen_for:?}; after SIGCONT it held {} shards, rejoined with {} after {rejoined:?} \
         ({lost} leases lost)",
        standby.len(),
        owned[1].len()
    );
    let stale: Vec<&String> = logs.iter().flat_map(|l| l.stale.iter()).collect();
    assert!(
        stale.is_empty(),
        "stale-epoch messages reached clients: {stale:?}"
    );
    let doubled = doubled_periods(&logs);
    assert!(
        doubled.is_empty(),
        "ticks from two owners for one period: {doubled:?}"
    );
    assert!(worst_position_error_ms(&logs) < 1.0);
    assert!(
        lost >= before.len() as f64,
        "it knows it lost its old leases"
    );
    for (shard, epoch) in &owned[1] {
        assert!(
            before.get(shard).is_none_or(|old| epoch > old),
            "shard {shard} owned again only in a new term"
        );
    }
    let gaps = longest_gaps(&logs, resumed_at, Instant::now());
    let (longest, session) = worst(&gaps);
    println!("after SIGCONT: longest tick gap {longest:?} ({session:?})");
    assert!(
        longest < 2 * PERIOD,
        "the hand-back paused {session:?} for {longest:?}"
    );
}
