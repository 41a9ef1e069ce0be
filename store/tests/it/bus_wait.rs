//! A store started before its bus serves `/readyz` as not ready, saying why,
//! and starts ingesting once the bus comes, instead of exiting.

use crate::support::*;
use bandsync_store::{Config, Store};
use bandsync_testkit::{NatsServer, Role, eventually, http_get};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long the bus is away: longer than one attempt to reach it.
const BUS_AWAY: Duration = Duration::from_secs(7);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_started_before_the_bus_waits_for_it_not_ready() {
    let db = TestDb::fresh();
    let mut nats = NatsServer::start().await;
    nats.kill();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut config = Config::new(
        &nats.url(),
        &db.url(),
        format!("127.0.0.1:{port}").parse().expect("addr"),
    );
    config.bus = nats.bus_args(Role::Store);
    let token = CancellationToken::new();
    let starting = tokio::spawn(Store::start(config, token.clone()));

    let readyz = format!("http://127.0.0.1:{port}/readyz");
    // The listener is up before the bus is: the first answer is the waiting one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let waiting = loop {
        if let Ok(r) = http_get(&readyz).await {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "readyz never answered while the bus was away"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        waiting.status, 503,
        "not ready without the bus: {}",
        waiting.body
    );
    assert!(
        waiting.body.contains("nats: waiting for the bus"),
        "{}",
        waiting.body
    );
    // The bus stays away past one connection attempt's wait (5 s): only a
    // store that keeps waiting is still there when it comes back.
    tokio::time::sleep(BUS_AWAY).await;
    assert!(!starting.is_finished(), "still waiting, not exited");
    let still = http_get(&readyz).await.expect("readyz answers");
    assert_eq!(still.status, 503, "{}", still.body);

    nats.restart().await;
    // The store binds to the streams a ticker creates (its user may not).
    nats.bus_args(Role::Ticker)
        .open("ticker".into())
        .await
        .expect("a ticker declares the streams");
    let store = tokio::time::timeout(Duration::from_secs(30), starting)
        .await
        .expect("started within 30 s of the bus's return")
        .expect("task")
        .expect("store starts");
    eventually(
        Duration::from_secs(20),
        "readyz 200 once the bus is there",
        || async { http_get(&readyz).await.is_ok_and(|r| r.status == 200) },
    )
    .await;
    token.cancel();
    store.wait().await;
}
