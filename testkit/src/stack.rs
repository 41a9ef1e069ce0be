//! A BandSync stack inside the test's own process: a real nats-server, one
//! ticker and a few gateways started through their libraries
//! (`bandsync_ticker::start`, `bandsync_gateway::start`), all stopped when the
//! [`InProcessStack`] drops. For tests that drive the whole path (client →
//! gateway → ticker → gateway) without building the binaries; the load tool's
//! `stack.rs` starts the same topology as child processes instead.
//!
//! Why here, behind the `stack` feature: testkit is the one home of what tests
//! share, and load's and store's tests both need this launcher (store's
//! dev-dependencies already include load, but load's library is the load
//! tool's, not a test fixture). Every crate's tests use testkit, though,
//! gateway's and ticker's included, and load's binaries link it. So the
//! launcher's dependencies on `bandsync-gateway` and `bandsync-ticker` are
//! optional and only load and store turn the feature on, in their
//! dev-dependencies: `cargo tree -p bandsync-load -e normal` has no gateway or
//! ticker in it, and `cargo test -p bandsync-gateway` builds testkit as before.
//! Under `cargo test --workspace` Cargo unifies features, so gateway's and
//! ticker's tests then link a testkit with the launcher in it; that builds
//! (a dev-dependency may depend on the crate under test, and their integration
//! tests link the same gateway and ticker libraries), but their unit tests
//! must never call it: the gateway it starts would be a second copy of the
//! crate, not the `cfg(test)` one. Gateway's and ticker's own tests keep their
//! richer harnesses (`gateway/tests/system/common.rs`,
//! `ticker/tests/fleet/common.rs`).

use crate::{NO_ADDRESS_LIMITS, NatsServer, Role, eventually};
use bandsync_gateway::Gateway;
use bandsync_ticker::Ticker;
use clap::Parser;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long the ticker may take to own every shard before `start` gives up.
const READY_WITHIN: Duration = Duration::from_secs(15);

/// What to start.
#[derive(Debug, Clone, Copy)]
pub struct StackOptions<'a> {
    /// `--shards` for the ticker and every gateway; `start` returns once the
    /// ticker owns them all, so commands find an owner at once.
    pub shards: u16,
    /// One gateway per id (`--gateway-id`), in this order.
    pub gateway_ids: &'a [&'a str],
    /// `--token-secret` of every gateway.
    pub token_secret: &'a str,
    /// Further ticker flags (`--tick-ms=100`), after the bus flags and
    /// `--listen`, `--shards`.
    pub ticker_flags: &'a [&'a str],
    /// Further flags for every gateway, after the bus flags, both listeners on
    /// free loopback ports, the secret, the id, `--shards` and
    /// [`NO_ADDRESS_LIMITS`] (tests stand in for many devices from one address).
    pub gateway_flags: &'a [&'a str],
}

impl Default for StackOptions<'_> {
    fn default() -> Self {
        StackOptions {
            shards: 4,
            gateway_ids: &["gw-0"],
            token_secret: "testkit-stack-secret-0123456789",
            ticker_flags: &[],
            gateway_flags: &[],
        }
    }
}

/// A running in-process stack; dropping it stops the ticker and the gateways
/// (their shared token is cancelled) and then kills the nats-server.
pub struct InProcessStack {
    /// Each gateway's base URL (`http://127.0.0.1:port`), in `gateway_ids` order.
    pub bases: Vec<String>,
    /// The gateways themselves (public and operations addresses, ids).
    pub gateways: Vec<Gateway>,
    pub ticker: Ticker,
    /// Declared last, so it outlives the services it serves.
    pub nats: NatsServer,
    stop: CancellationToken,
}

impl InProcessStack {
    /// Starts nats-server, the ticker, then the gateways, and waits until the
    /// ticker owns every shard. Logs at `warn` (`RUST_LOG` overrides).
    ///
    /// # Panics
    /// When a service does not start or the shards are not owned within 15 s:
    /// this is a test fixture, and the panic names what did not come up.
    pub async fn start(options: StackOptions<'_>) -> InProcessStack {
        bandsync_nats::service::init_tracing_at("warn");
        let nats = NatsServer::start().await;
        let stop = CancellationToken::new();
        let shards = format!("--shards={}", options.shards);
        let ticker = bandsync_ticker::Config::parse_from(
            ["bandsync-ticker".to_string()]
                .into_iter()
                .chain(nats.bus_flags(Role::Ticker))
                .chain(["--listen=127.0.0.1:0".into(), shards.clone()])
                .chain(options.ticker_flags.iter().map(|f| f.to_string())),
        );
        let ticker = bandsync_ticker::start(ticker, stop.clone())
            .await
            .expect("ticker starts");
        let mut gateways = Vec::new();
        for id in options.gateway_ids {
            let config = bandsync_gateway::Config::parse_from(
                ["bandsync-gateway".to_string()]
                    .into_iter()
                    .chain(nats.bus_flags(Role::Gateway))
                    .chain([
                        "--listen=127.0.0.1:0".into(),
                        "--ops-listen=127.0.0.1:0".into(),
                        format!("--token-secret={}", options.token_secret),
                        format!("--gateway-id={id}"),
                        shards.clone(),
                    ])
                    .chain(NO_ADDRESS_LIMITS.map(String::from))
                    .chain(options.gateway_flags.iter().map(|f| f.to_string())),
            );
            let gateway = bandsync_gateway::start(config, stop.clone())
                .await
                .unwrap_or_else(|e| panic!("gateway {id} starts: {e:#}"));
            gateways.push(gateway);
        }
        let all = usize::from(options.shards);
        eventually(READY_WITHIN, "the ticker to own every shard", || async {
            ticker.shards_owned() >= all
        })
        .await;
        InProcessStack {
            bases: gateways
                .iter()
                .map(|g| format!("http://{}", g.addr))
                .collect(),
            gateways,
            ticker,
            nats,
            stop,
        }
    }

    /// A token cancelled when the stack stops, for helpers that should stop
    /// with it (a proxy in front of a gateway).
    pub fn stopping(&self) -> CancellationToken {
        self.stop.child_token()
    }
}

impl Drop for InProcessStack {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
