//! The chaos suite's short form (the full one is `bandsync-chaos`, by hand): on
//! a three-node JetStream cluster (R3) with two tickers and two gateways as real
//! processes, playing bands whose leaders keep changing the tempo go through
//! the loss of the NATS node leading the leases bucket, then of a gateway.

use bandsync_load::chaos::band::BandSpec;
use bandsync_load::chaos::{self, Asset, Fault, Timing};
use bandsync_load::stack::{Stack, StackSpec};
use std::path::PathBuf;
use std::time::Duration;

/// The service binaries of this build (`cargo test --workspace` builds them
/// for the other crates' tests): the directory above this test's own.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>")
        .to_path_buf();
    assert!(
        dir.join("bandsync-ticker").is_file() && dir.join("bandsync-gateway").is_file(),
        "no service binaries in {}: build them first (cargo build --workspace --bins)",
        dir.display()
    );
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_node_and_a_gateway_die_and_the_bands_play_on() {
    bandsync_nats::service::init_tracing_at("warn");
    let nats_server = bandsync_testkit::nats_server_bin();
    let bin_dir = bin_dir();
    let mut stack = Stack::start(StackSpec {
        nats_server: &nats_server,
        bin_dir: &bin_dir,
        gateway_bin: None,
        nats_nodes: 3,
        gateways: 2,
        tickers: 2,
        tick_ms: 100,
        max_members: 4,
        token_secret: "chaos-test-secret-0123456789".into(),
        run_dir: None,
        nginx_port: None,
        store: None,
        address_limits: false,
    })
    .await
    .expect("the cluster starts");
    let gateways = stack.gateways.clone();
    let bands = BandSpec {
        sessions: 4,
        members: 3,
        command_every: Duration::from_millis(500),
    };
    // Commands sent during the election are applied late (up to about 8 s in the
    // full suite, once JetStream has a leader again), so the bands keep recording long
    // enough after the window to tell a late command from a lost one.
    let timing = Timing {
        window: Duration::from_secs(10),
        settle: Duration::from_secs(10),
    };

    let node = Fault::KillNatsLeading(Asset::Leases);
    let report = chaos::inject(&mut stack, &gateways, &bands, node, &timing)
        .await
        .expect("the fault runs");
    println!("{:#?}", report);
    assert!(report.sessions == 4, "every band recorded: {report:?}");
    assert!(
        report.tick_gap_max_ms <= 2000.0,
        "no band's ticks stop for more than 2 s: {report:?}"
    );
    assert_eq!(
        (
            report.commands_lost,
            report.commands_doubled,
            report.commands_refused
        ),
        (0, 0, 0),
        "every command takes effect once: {report:?}"
    );
    assert!(report.commands > 0, "commands flowed: {report:?}");
    // As soon as JetStream has a leader again (5-7 s), with room: a shard's
    // command consumer that is slow to come back (it took 15-17 s) shows here.
    assert!(
        report.command_delay_max_ms <= 12_000.0,
        "commands take effect once the bus has a leader again: {report:?}"
    );

    let report = chaos::inject(&mut stack, &gateways, &bands, Fault::KillGateway, &timing)
        .await
        .expect("the fault runs");
    println!("{:#?}", report);
    assert!(
        report.members_dropped > 0,
        "the gateway's members lost it: {report:?}"
    );
    assert!(
        report.reconnect_max_ms <= 2000.0,
        "its members are back within 2 s: {report:?}"
    );
    assert_eq!(
        (
            report.commands_lost,
            report.commands_doubled,
            report.leadership_changes
        ),
        (0, 0, 0),
        "{report:?}"
    );
    stack.stop().await;
}
