//! BandSync ticker: owns session timing. Sessions hash into shards; each shard
//! has one owner at a time, chosen by a lease in JetStream KV. The owner
//! consumes the shard's commands, applies them to session state with
//! compare-and-set writes, publishes the resulting events (JetStream) and,
//! while a session plays, ticks (core NATS) at wall-clock-aligned instants.
//!
//! Invariants: **nothing is published for a shard whose lease is not proven**
//! (fencing by `OwnedShard::is_valid`, epochs on every message); **each command
//! applies at most once** (its stream sequence is stored with the state it
//! produced); **a tick period is published at most once per session** (each shard
//! remembers the last sequence, and a hand-over passes it on); **positions are
//! computed from the timeline, never counted**.
//!
//! `/readyz` lists the shards owned with their epochs; `/metrics` exports shards
//! owned, lease renewals and their latency, failovers, ticks per second and
//! commands applied (see `docs/ARCHITECTURE.md`).
//!
//! Map: `lease` wins, renews and hands over shards as the pure `fleet` decides;
//! `owned` holds the shards owned and their fencing; `worker` runs one owned
//! shard (`load`, `apply`, `housekeeping`, `cursor`); `ticks` is the heartbeat;
//! `gateways` follows gateway heartbeats; `readiness` and `metrics` are the
//! operations endpoints. This file only wires them together.

pub mod config;
mod fleet;
mod gateways;
mod lease;
mod metrics;
mod owned;
mod readiness;
mod ticks;
mod worker;

use anyhow::Context;
use axum::Router;
use axum::routing::get;
use bandsync_nats::Rules;
use bandsync_nats::bus::Bus;
use bandsync_nats::service::random_id;
pub use config::Config;
use gateways::Gateways;
use owned::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What every part of a ticker shares.
pub struct Ctx {
    pub bus: Bus,
    pub config: Config,
    pub rules: Rules,
    pub ticker_id: String,
    /// Gateway heartbeats (`None` until the watch starts): members on dead gateways are gone.
    pub live_gateways: watch::Receiver<Option<Gateways>>,
    pub ticks: ticks::Ticks,
}

/// A running ticker.
pub struct Ticker {
    pub addr: SocketAddr,
    pub id: String,
    registry: Registry,
    task: JoinHandle<()>,
}

impl Ticker {
    /// Shards owned right now.
    pub fn shards_owned(&self) -> usize {
        self.registry.len()
    }

    /// Waits until the ticker has released its leases and stopped.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("ticker task panicked")
    }
}

pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Ticker> {
    config.validate()?;
    let ticker_id = config
        .ticker_id
        .clone()
        .unwrap_or_else(|| format!("ticker-{}", random_id(6)));
    // Bound first: while it waits for the bus (the cluster may be starting or
    // electing) instead of exiting, its port says so (`/readyz` 503).
    let std_listener = std::net::TcpListener::bind(config.listen)
        .with_context(|| format!("binding {}", config.listen))?;
    std_listener.set_nonblocking(true)?;
    let waiting = bandsync_nats::service::answer_while_waiting(&std_listener)?;
    let bus = config
        .bus
        .open_patiently(format!("bandsync-{ticker_id}"), &shutdown)
        .await
        .context("opening the NATS bus");
    waiting.stop().await;
    let Some(bus) = bus? else {
        anyhow::bail!("shut down while waiting for the bus");
    };
    let listener = tokio::net::TcpListener::from_std(std_listener)?;
    let addr = listener.local_addr()?;
    metrics::prometheus();
    let (live_tx, live_rx) = watch::channel(None);
    let config_tick_period = config.tick_period();
    let ctx = Arc::new(Ctx {
        bus: bus.clone(),
        rules: config.rules(),
        config,
        ticker_id: ticker_id.clone(),
        live_gateways: live_rx,
        ticks: ticks::Ticks {
            client: bus.client.clone(),
            subjects: bus.subjects.clone(),
            period: config_tick_period,
        },
    });
    let leases_known = CancellationToken::new();
    let registry = Registry::default();
    let health = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readiness::readyz))
        .route("/metrics", get(|| async { metrics::prometheus().render() }))
        .with_state((ctx.clone(), registry.clone(), leases_known.clone()));
    let http_stop = shutdown.clone();
    tokio::spawn(async move {
        let serve = axum::serve(listener, health)
            .with_graceful_shutdown(async move { http_stop.cancelled().await });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "health server failed");
        }
    });
    tokio::spawn(gateways::watch(bus.clone(), live_tx, shutdown.clone()));
    let ticks = tokio::spawn({
        let (ctx, registry, shutdown) = (ctx.clone(), registry.clone(), shutdown.clone());
        async move { ctx.ticks.run(registry, shutdown).await }
    });
    let leases = lease::Leases::new(ctx.clone(), registry.clone());
    tracing::info!(%addr, ticker = %ticker_id, "ticker started");
    let task = tokio::spawn(async move {
        leases.run(shutdown, leases_known).await;
        // Bounded: with NATS gone a publish can wait for a reconnection.
        let _ = tokio::time::timeout(Duration::from_secs(1), ticks).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), bus.client.flush()).await;
        tracing::info!("ticker stopped");
    });
    Ok(Ticker {
        addr,
        id: ticker_id,
        registry,
        task,
    })
}
