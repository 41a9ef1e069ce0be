//! Acceptance 2: `kill -9` the store in the middle of 100,000 events, restart it
//! (as two workers sharing the durable consumer): every event is stored exactly once.

use crate::support::*;
use bandsync_testkit::{NatsServer, Role, eventually, metric};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

const TOTAL_SESSIONS: usize = 100;
const PER_SESSION: usize = 1_000;

fn spawn_store(nats: &NatsServer, db_url: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_bandsync-store"))
        .args(nats.bus_flags(Role::Store))
        .args(["--database-url", db_url, "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawning bandsync-store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_and_duplicates_nothing() {
    let nats = NatsServer::start().await;
    let db = TestDb::fresh();
    let bus = bus(&nats).await;
    let events = bulk_events("k", TOTAL_SESSIONS, PER_SESSION);
    let total = events.len() as i64;
    let js = bus.js.clone();
    let publisher = tokio::spawn(async move { publish_all(&js, events).await });

    let mut first = spawn_store(&nats, &db.url());
    eventually(
        Duration::from_secs(60),
        "a good part of the events stored",
        || async {
            let n = db_count_or_zero(&db).await;
            n >= total / 5
        },
    )
    .await;
    first.kill().await.expect("SIGKILL the store"); // std's kill is SIGKILL: no shutdown code runs
    let at_kill = db_count_or_zero(&db).await;
    assert!(
        at_kill < total,
        "killed before the end ({at_kill} of {total})"
    );

    publisher.await.expect("publisher");
    let mut workers = [spawn_store(&nats, &db.url()), spawn_store(&nats, &db.url())];
    eventually(Duration::from_secs(120), "all events stored", || async {
        db_count_or_zero(&db).await == total
    })
    .await;
    // Nothing more trickles in (a duplicate would be refused by the key anyway).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(db.count("SELECT count(*) FROM events").await, total);
    assert_eq!(
        db.count("SELECT count(DISTINCT stream_seq) FROM events")
            .await,
        total
    );
    assert_eq!(
        db.count("SELECT count(DISTINCT (session_id, seq)) FROM events")
            .await,
        total
    );
    assert_eq!(db.count("SELECT min(stream_seq) FROM events").await, 1);
    assert_eq!(db.count("SELECT max(stream_seq) FROM events").await, total);
    assert_eq!(
        db.count("SELECT count(*) FROM sessions").await,
        TOTAL_SESSIONS as i64
    );
    assert_eq!(
        db.count("SELECT count(*) FROM sessions WHERE last_seq = 1000")
            .await,
        TOTAL_SESSIONS as i64
    );
    for w in &mut workers {
        w.kill().await.expect("stop worker");
    }
}

async fn db_count_or_zero(db: &TestDb) -> i64 {
    // The store creates the database; until then there is nothing to count.
    match tokio_postgres::connect(&db.url(), tokio_postgres::NoTls).await {
        Ok((client, conn)) => {
            tokio::spawn(conn);
            client
                .query_one("SELECT count(*) FROM events", &[])
                .await
                .map(|r| r.get(0))
                .unwrap_or(0)
        }
        Err(_) => 0,
    }
}

/// Graceful shutdown commits and acks the batch in flight: the next worker gets
/// no redelivery of anything already stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_acks_everything_it_committed() {
    let nats = NatsServer::start().await;
    let db = TestDb::fresh();
    let bus = bus(&nats).await;
    let events = bulk_events("g", 20, 1_000);
    let total = events.len() as i64;
    publish_all(&bus.js, events).await;

    let (first, token) = start_store(&nats, &db.url()).await;
    eventually(Duration::from_secs(60), "a first part stored", || async {
        db_count_or_zero(&db).await >= total / 4
    })
    .await;
    token.cancel();
    first.wait().await;
    let stored = db.count("SELECT count(*) FROM events").await;
    assert!(stored < total, "stopped mid-stream ({stored} of {total})");

    let (second, token) = start_store(&nats, &db.url()).await;
    eventually(Duration::from_secs(60), "the rest stored", || async {
        db.count("SELECT count(*) FROM events").await == total
    })
    .await;
    let metrics = second.metrics().render();
    let read = |series: &str| metric(&metrics, series).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        read("bandsync_store_duplicates_total{stream=\"events\"}"),
        0.0,
        "nothing the first store committed came back"
    );
    assert_eq!(
        read("bandsync_store_rows_inserted_total{stream=\"events\"}"),
        (total - stored) as f64
    );
    token.cancel();
    second.wait().await;
}
