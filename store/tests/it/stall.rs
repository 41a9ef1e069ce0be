//! A store that is connected but commits nothing says so: `/readyz` answers
//! 503 naming the stalled stream, and the metrics show the real backlog and
//! how long ingest has made no progress. The stall is a real one: an
//! analyst's transaction holding a lock on `events`, so NATS and PostgreSQL
//! both answer while no batch can commit.

use crate::support::*;
use bandsync_nats::now_us;
use bandsync_testkit::{NatsServer, eventually, http_get};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_ingest_shows_in_readyz_and_the_metrics() {
    let nats = NatsServer::start().await;
    let db = TestDb::fresh();
    let bus = bus(&nats).await;
    let (store, token) = start_store_with(&nats, &db.url(), |c| c.stall_after_secs = 1).await;
    let ready = format!("http://{}/readyz", store.addr());
    let read = |series: &'static str| store_metric(&store, series);
    eventually(Duration::from_secs(10), "the store ready", || async {
        http_get(&ready).await.is_ok_and(|r| r.status == 200)
    })
    .await;

    let mut locker = db.client().await;
    let lock = locker.transaction().await.expect("begin");
    lock.batch_execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock events");
    let band = rehearsal("st1", now_us());
    let events = band.events();
    let n = events.len() as f64;
    publish_all(&bus.js, events).await;

    eventually(
        Duration::from_secs(15),
        "readyz reports the stall",
        || async {
            http_get(&ready).await.is_ok_and(|r| {
                r.status == 503
                    && r.body.contains("nats: up")
                    && r.body.contains("postgres: up")
                    && r.body.contains("ingest commands: ok")
                    && r.body.contains(&format!(
                        "ingest events: stalled: {n} messages pending, no batch committed for"
                    ))
            })
        },
    )
    .await;
    assert_eq!(
        read("bandsync_store_pending_messages{stream=\"events\"}").await,
        n,
        "delivered but not acked is still pending"
    );
    assert!(read("bandsync_store_ingest_stalled_seconds{stream=\"events\"}").await >= 1.0);
    assert_eq!(
        read("bandsync_store_ingest_ready{stream=\"events\"}").await,
        0.0
    );
    assert_eq!(
        read("bandsync_store_ingest_ready{stream=\"commands\"}").await,
        1.0
    );
    assert_eq!(
        read("bandsync_store_ingest_stalled_seconds{stream=\"commands\"}").await,
        0.0
    );

    lock.rollback().await.expect("release the lock");
    eventually(Duration::from_secs(20), "the events stored", || async {
        db.count("SELECT count(*) FROM events").await == n as i64
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "ready again, nothing pending",
        || async {
            http_get(&ready).await.is_ok_and(|r| r.status == 200)
                && read("bandsync_store_pending_messages{stream=\"events\"}").await == 0.0
                && read("bandsync_store_ingest_stalled_seconds{stream=\"events\"}").await == 0.0
        },
    )
    .await;
    token.cancel();
    store.wait().await;
}
