//! A lease renewal that lands after its ticker stopped waiting for the answer
//! (a timeout under load) leaves the ticker's own name at a newer revision. The
//! ticker goes on from that revision and keeps the shard in the same term; it
//! used to count its next renewal's "wrong last sequence" as a lost lease and
//! fail the shard over for nothing.

use crate::common::*;
use bandsync_nats::Subjects;
use bandsync_testkit::Role;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_that_landed_late_keeps_the_shard_in_its_term() {
    let _turn = exclusive().await;
    let fleet = Fleet::start(1).await;
    let ticker = &fleet.tickers[0];
    let before = ticker.readyz().await.expect("readyz").shards;
    let (&shard, &epoch) = before.iter().next().expect("the ticker owns shards");
    // As a ticker: what the late renewal wrote, a ticker may write.
    let bus = fleet
        .nats
        .bus_args(Role::Ticker)
        .open("late-renewal-test".into())
        .await
        .expect("bus");
    // What the late renewal wrote: the ticker's own name, one revision on.
    bus.leases
        .put(Subjects::shard_key(shard), ticker.id.clone().into())
        .await
        .expect("writing the lease");
    // Three renewal rounds (one per TTL/3) go by.
    tokio::time::sleep(Duration::from_millis(TTL_MS)).await;
    let after = ticker.readyz().await.expect("readyz").shards;
    assert_eq!(
        after.get(&shard),
        Some(&epoch),
        "shard {shard} still held in term {epoch}: {after:?}"
    );
    let lost = ticker
        .metric("bandsync_ticker_leases_lost_total")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lost, 0.0, "no lease counted as lost");
    assert_eq!(after, before, "every shard kept in its term");
}
