//! A ticker started while NATS is away binds its port at once and says there
//! that it is not ready, and why, until the bus is back (then it is ready).

use bandsync_testkit::{NatsServer, Role, eventually, http_get};
use std::process::Stdio;
use std::time::Duration;

#[tokio::test]
async fn a_ticker_waiting_for_the_bus_says_so_on_its_port() {
    let mut nats = NatsServer::start().await;
    let flags = nats.bus_flags(Role::Ticker);
    nats.kill();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let _ticker = tokio::process::Command::new(env!("CARGO_BIN_EXE_bandsync-ticker"))
        .args(flags)
        .args([
            format!("--listen=127.0.0.1:{port}"),
            "--ticker-id=t-waiting".into(),
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawning bandsync-ticker");
    let base = format!("http://127.0.0.1:{port}");
    eventually(Duration::from_secs(10), "the port answers", || async {
        http_get(&format!("{base}/healthz"))
            .await
            .is_ok_and(|r| r.status == 200)
    })
    .await;
    let ready = http_get(&format!("{base}/readyz"))
        .await
        .expect("/readyz answers while waiting");
    assert_eq!(ready.status, 503, "not ready without the bus");
    assert!(ready.body.contains("waiting for the bus"), "{}", ready.body);

    nats.restart().await;
    eventually(
        Duration::from_secs(30),
        "ready once the bus is back",
        || async {
            http_get(&format!("{base}/readyz"))
                .await
                .is_ok_and(|r| r.status == 200)
        },
    )
    .await;
}
