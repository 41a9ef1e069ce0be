//! Opening the bus waits for it: a service started before nats-server (or while
//! JetStream elects its leaders) comes up once the bus does, instead of exiting.

use bandsync_nats::Subjects;
use bandsync_nats::bus::{Bus, BusArgs};
use bandsync_testkit::{NatsCluster, NatsServer, Role};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn settings(args: BusArgs) -> bandsync_nats::bus::BusSettings {
    args.settings("open-test".into()).expect("settings")
}

#[tokio::test]
async fn a_service_started_before_jetstream_has_a_quorum_opens_the_bus_when_it_has() {
    // One node of three up: connecting works, declaring a stream cannot (no
    // meta leader), which is what a service started with its cluster meets.
    let mut cluster = NatsCluster::start(3).await;
    cluster.nodes[1].kill();
    cluster.nodes[2].kill();
    let args = cluster
        .logins()
        .bus_args(&cluster.nodes[0].url(), Role::Ticker);
    let shutdown = CancellationToken::new();
    let opening = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let subjects = Subjects::new("bandsync").expect("valid prefix");
            let mut settings = settings(args);
            settings.replicas = 3;
            Bus::open_patiently(&settings, subjects, &shutdown).await
        }
    });
    // Long enough for an attempt to fail against the node without quorum (a
    // JetStream request times out after 5 s), so the success below is a retry.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(
        !opening.is_finished(),
        "still waiting while JetStream has no quorum"
    );
    cluster.nodes[1].restart().await;
    cluster.nodes[2].restart().await;
    let bus = tokio::time::timeout(Duration::from_secs(30), opening)
        .await
        .expect("opens within 30 s of the quorum's return")
        .expect("task")
        .expect("no permanent error")
        .expect("not cancelled");
    let mut stream = bus
        .js
        .get_stream(bus.subjects.cmd_stream())
        .await
        .expect("the command stream is declared");
    let info = stream.info().await.expect("stream info");
    assert_eq!(info.config.num_replicas, 3);
}

#[tokio::test]
async fn shutdown_ends_the_wait() {
    let mut server = NatsServer::start().await;
    let args = server.bus_args(Role::Ticker);
    server.kill();
    let shutdown = CancellationToken::new();
    let subjects = Subjects::new("bandsync").expect("valid prefix");
    let settings = settings(args);
    let opening = Bus::open_patiently(&settings, subjects, &shutdown);
    // The shutdown comes while the wait is under way (the server is gone);
    // the wait must end on it, not go on retrying.
    let cancel = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        shutdown.cancel();
    };
    let (result, ()) = tokio::time::timeout(Duration::from_secs(5), async {
        tokio::join!(opening, cancel)
    })
    .await
    .expect("the wait ends within 5 s of the shutdown");
    assert!(matches!(result, Ok(None)), "cancelled, not an error");
}

#[tokio::test]
async fn a_bad_url_fails_at_once() {
    let shutdown = CancellationToken::new();
    let subjects = Subjects::new("bandsync").expect("valid prefix");
    let result = tokio::time::timeout(
        Duration::from_secs(2),
        Bus::open_patiently(
            &settings(BusArgs::new("nats://bad host:x")),
            subjects,
            &shutdown,
        ),
    )
    .await
    .expect("no waiting for a URL that cannot work");
    assert!(result.is_err());
}

#[tokio::test]
async fn a_gateway_started_first_binds_once_a_ticker_has_declared() {
    // Only tickers may create streams and buckets: a gateway (or the store)
    // started before any ticker waits for them instead of failing.
    let server = NatsServer::start().await;
    let shutdown = CancellationToken::new();
    let binding = tokio::spawn({
        let args = server.bus_args(Role::Gateway);
        let shutdown = shutdown.clone();
        async move { args.bind_patiently("gateway".into(), &shutdown).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!binding.is_finished(), "nothing to bind to yet");
    server
        .bus_args(Role::Ticker)
        .open("ticker".into())
        .await
        .unwrap_or_else(|e| panic!("the ticker declares: {e}; server log:\n{}", server.log()));
    let bus = tokio::time::timeout(Duration::from_secs(15), binding)
        .await
        .expect("binds within 15 s of the declaration")
        .expect("task")
        .expect("no permanent error")
        .expect("not cancelled");
    assert!(
        bus.sessions
            .get("0.none")
            .await
            .expect("reads state")
            .is_none()
    );
}

#[tokio::test]
async fn a_gateway_cannot_declare() {
    let server = NatsServer::start().await;
    let declared = tokio::time::timeout(
        Duration::from_secs(15),
        server.bus_args(Role::Gateway).open("gateway".into()),
    )
    .await;
    assert!(
        !matches!(declared, Ok(Ok(_))),
        "the gateway's user created the streams"
    );
    let admin = async_nats::jetstream::new(server.connect(Role::Admin).await);
    assert!(
        admin.get_stream("BANDSYNC_CMD").await.is_err(),
        "no stream was created"
    );
}
