//! The operations endpoints (`/healthz`, `/readyz`, `/metrics`) are on a
//! listener of their own, not on the public port that browsers (and
//! strangers) reach.

use crate::common::*;
use bandsync_testkit::http_get;
use clap::Parser;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_endpoints_answer_on_their_own_port_only() {
    let stack = Stack::start(Knobs {
        gateways: 1,
        ..Knobs::default()
    })
    .await;
    let (public, ops) = (stack.base(0), stack.ops_base(0));
    assert_ne!(public, ops);
    for path in ["/metrics", "/readyz", "/healthz"] {
        let answer = http_get(&format!("{public}{path}")).await.expect("answers");
        assert_eq!(answer.status, 404, "the public port serves {path}");
    }
    let ready = http_get(&format!("{ops}/readyz")).await.expect("readyz");
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert!(ready.body.contains("nats: Connected"), "{}", ready.body);
    let health = http_get(&format!("{ops}/healthz")).await.expect("healthz");
    assert_eq!(health.status, 200);
    let metrics = http_get(&format!("{ops}/metrics")).await.expect("metrics");
    assert_eq!(metrics.status, 200);
    bandsync_testkit::metric(&metrics.body, "bandsync_gateway_connections")
        .expect("the gateway's metrics");
    // The public port still serves the page.
    assert_eq!(http_get(&public).await.expect("the page").status, 200);
}

/// While the bus is away the operations port says so, and the public port
/// refuses connections (a proxy in front tries another gateway).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_waiting_for_the_bus_the_operations_port_says_so() {
    bandsync_nats::service::init_tracing_at("warn");
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
    };
    let (public, ops, nowhere) = (free(), free(), free());
    let config = bandsync_gateway::Config::parse_from([
        "bandsync-gateway".to_string(),
        format!("--nats-url=nats://{nowhere}"),
        format!("--listen={public}"),
        format!("--ops-listen={ops}"),
        format!("--token-secret={SECRET}"),
    ]);
    let shutdown = CancellationToken::new();
    let starting = tokio::spawn(bandsync_gateway::start(config, shutdown.clone()));
    let ready = format!("http://{ops}/readyz");
    let deadline = tokio::time::Instant::now() + WAIT;
    let waiting = loop {
        if let Ok(answer) = http_get(&ready).await {
            break answer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the operations port never answered while waiting for the bus"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(waiting.status, 503);
    assert!(
        waiting.body.contains("waiting for the bus"),
        "{}",
        waiting.body
    );
    let health = http_get(&format!("http://{ops}/healthz"))
        .await
        .expect("healthz");
    assert_eq!(health.status, 200, "alive while waiting");
    let refused = tokio::net::TcpStream::connect(public).await;
    assert!(
        refused.is_err(),
        "the public port accepts connections before the bus is open"
    );
    shutdown.cancel();
    let stopped = tokio::time::timeout(WAIT, starting)
        .await
        .expect("start-up ends when shut down")
        .expect("no panic");
    assert!(stopped.is_err(), "no gateway without a bus");
}
