//! Opening the bus waits for it: a service started before nats-server (or while
//! JetStream elects its leaders) comes up once the bus does, instead of exiting.

use bandsync_nats::Subjects;
use bandsync_nats::bus::{Bus, BusArgs};
use bandsync_testkit::{NatsCluster, NatsServer};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn settings(url: &str) -> bandsync_nats::bus::BusSettings {
    BusArgs::new(url).settings("open-test".into())
}

#[tokio::test]
async fn a_service_started_before_jetstream_has_a_quorum_opens_the_bus_when_it_has() {
    // One node of three up: connecting works, declaring a stream cannot (no
    // meta leader), which is what a service started with its cluster meets.
    let mut cluster = NatsCluster::start(3).await;
    cluster.nodes[1].kill();
    cluster.nodes[2].kill();
    let url = cluster.nodes[0].url();
    let shutdown = CancellationToken::new();
    let opening = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let subjects = Subjects::new("opentest").expect("valid prefix");
            let mut settings = settings(&url);
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
    let url = server.url();
    server.kill();
    let shutdown = CancellationToken::new();
    let subjects = Subjects::new("opentest").expect("valid prefix");
    let settings = settings(&url);
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
    let subjects = Subjects::new("opentest").expect("valid prefix");
    let result = tokio::time::timeout(
        Duration::from_secs(2),
        Bus::open_patiently(&settings("nats://bad host:x"), subjects, &shutdown),
    )
    .await
    .expect("no waiting for a URL that cannot work");
    assert!(result.is_err());
}
