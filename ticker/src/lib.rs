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

pub mod config;
mod fleet;
mod lease;
mod owned;
mod ticks;
mod worker;

use anyhow::Context;
use async_nats::jetstream::kv;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use bandsync_nats::Rules;
use bandsync_nats::bus::Bus;
use bandsync_nats::bus::{GATEWAY_HEARTBEAT, GATEWAY_TTL};
use bandsync_nats::service::random_id;
use bandsync_nats::{Micros, now_us};
pub use config::Config;
use futures::StreamExt;
use metrics_exporter_prometheus::PrometheusHandle;
use owned::Registry;
use std::collections::HashMap;
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

fn prometheus() -> &'static PrometheusHandle {
    let handle = bandsync_nats::service::prometheus();
    static DESCRIBED: std::sync::Once = std::sync::Once::new();
    DESCRIBED.call_once(describe_metrics);
    handle
}

/// The ticker's metrics with their help text, exported at 0 from the start so a
/// dashboard can tell "none yet" from "not exported".
fn describe_metrics() {
    let counters = [
        (
            "bandsync_ticker_lease_renewals_total",
            "Lease renewals that succeeded.",
        ),
        (
            "bandsync_ticker_lease_renewal_failures_total",
            "Lease renewals that failed (each loses its shard).",
        ),
        ("bandsync_ticker_leases_acquired_total", "Shard leases won."),
        (
            "bandsync_ticker_failovers_total",
            "Shards taken over after their owner's lease expired.",
        ),
        (
            "bandsync_ticker_handovers_total",
            "Shards taken over after their owner released them.",
        ),
        (
            "bandsync_ticker_leases_released_total",
            "Shards handed over (rebalance or shutdown).",
        ),
        (
            "bandsync_ticker_leases_lost_total",
            "Shards lost: a failed renewal or a newer lease seen.",
        ),
        (
            "bandsync_ticker_campaigns_lost_total",
            "Campaigns another ticker won.",
        ),
        ("bandsync_ticker_ticks_total", "Ticks published."),
        (
            "bandsync_ticker_tick_publish_failures_total",
            "Ticks the NATS client refused.",
        ),
        (
            "bandsync_ticker_commands_applied_total",
            "Commands applied to session state.",
        ),
        (
            "bandsync_ticker_commands_replayed_total",
            "Replayed commands skipped as already applied.",
        ),
        (
            "bandsync_ticker_commands_rejected_total",
            "Commands rejected with an error to the member.",
        ),
        (
            "bandsync_ticker_cas_conflicts_total",
            "Session state writes that lost a compare-and-set.",
        ),
    ];
    for (name, help) in counters {
        metrics::describe_counter!(name, help);
        metrics::counter!(name).increment(0);
    }
    let gauges = [
        ("bandsync_ticker_shards_owned", "Shards this ticker owns."),
        (
            "bandsync_ticker_shards_target",
            "This ticker's fair share of the shards.",
        ),
        (
            "bandsync_ticker_live_tickers",
            "Tickers this one counts as alive.",
        ),
        (
            "bandsync_ticker_playing_sessions",
            "Playing sessions on the owned shards.",
        ),
        (
            "bandsync_ticker_ticks_per_second",
            "Ticks published over the last second.",
        ),
    ];
    for (name, help) in gauges {
        metrics::describe_gauge!(name, help);
        metrics::gauge!(name).set(0.0);
    }
    // All in seconds.
    let histograms = [
        (
            "bandsync_ticker_lease_renew_seconds",
            "Round trip of one lease renewal.",
        ),
        (
            "bandsync_ticker_command_seconds",
            "Time to apply one command (state write and event publish).",
        ),
        (
            "bandsync_ticker_tick_round_late_seconds",
            "How late a tick round started after its slot's instant (a ticker short of CPU shows here first).",
        ),
        (
            "bandsync_ticker_command_stage_seconds",
            "Parts of a command's way: `queued` (from the gateway's send to this ticker's handling), split into `to_stream` (until the command stream stored it) and `delivered` (from there to this ticker's handling); `state_write` (the compare-and-set); `event_publish` (until the stream acked the event).",
        ),
    ];
    for (name, help) in histograms {
        metrics::describe_histogram!(name, metrics::Unit::Seconds, help);
    }
}

pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Ticker> {
    config.validate()?;
    let ticker_id = config
        .ticker_id
        .clone()
        .unwrap_or_else(|| format!("ticker-{}", random_id(6)));
    let bus = config
        .bus
        .open(format!("bandsync-{ticker_id}"))
        .await
        .context("opening the NATS bus")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    prometheus();
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
        .route("/readyz", get(readyz))
        .route("/metrics", get(|| async { prometheus().render() }))
        .with_state((ctx.clone(), registry.clone(), leases_known.clone()));
    let http_stop = shutdown.clone();
    tokio::spawn(async move {
        let serve = axum::serve(listener, health)
            .with_graceful_shutdown(async move { http_stop.cancelled().await });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "health server failed");
        }
    });
    tokio::spawn(watch_gateways(bus.clone(), live_tx, shutdown.clone()));
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

/// 200 once NATS is connected and the current leases have been read; the body
/// lists the shards owned (`shards: 3@1042 17@1043`, shard@epoch) and counts
/// those still registered but no longer proven (`shards_fenced`).
async fn readyz(
    State((ctx, registry, leases_known)): State<(Arc<Ctx>, Registry, CancellationToken)>,
) -> (StatusCode, String) {
    let state = ctx.bus.client.connection_state();
    let connected = state == async_nats::connection::State::Connected;
    let known = leases_known.is_cancelled();
    let code = if connected && known {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    // Only shards whose lease is proven: a ticker resuming from a freeze lists
    // none of its old terms, even before its failed renewals have removed them.
    let snapshot = registry.snapshot();
    let mut owned: Vec<(u16, u64)> = snapshot
        .iter()
        .filter(|o| o.is_valid())
        .map(|o| (o.shard, o.epoch))
        .collect();
    let fenced = snapshot.len() - owned.len();
    owned.sort_unstable();
    let list: Vec<String> = owned.iter().map(|(s, e)| format!("{s}@{e}")).collect();
    (
        code,
        format!(
            "nats: {state:?}\nleases_known: {known}\nticker: {}\nshards_owned: {}\nshards_fenced: {fenced}\nshards: {}\n",
            ctx.ticker_id,
            owned.len(),
            list.join(" ")
        ),
    )
}

/// Follows gateway heartbeats on the gateways bucket (current values first,
/// then every put), so owners can tell which members' gateways are gone.
async fn watch_gateways(
    bus: Bus,
    view: watch::Sender<Option<Gateways>>,
    shutdown: CancellationToken,
) {
    let mut gateways = Gateways {
        since: now_us(),
        last_seen: HashMap::new(),
    };
    loop {
        let mut entries = match bus.gateways.watch_with_history(">").await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch gateways; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(GATEWAY_HEARTBEAT) => continue,
                }
            }
        };
        loop {
            let entry = tokio::select! {
                _ = shutdown.cancelled() => return,
                entry = entries.next() => entry,
            };
            match entry {
                Some(Ok(entry)) => {
                    if entry.operation == kv::Operation::Put {
                        let seen =
                            i64::try_from(entry.created.unix_timestamp_nanos() / 1000).unwrap_or(0);
                        gateways.last_seen.insert(entry.key, seen);
                    } else {
                        gateways.last_seen.remove(&entry.key);
                    }
                    view.send_replace(Some(gateways.clone()));
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "gateway watch error; restarting it");
                    break;
                }
                None => break,
            }
        }
    }
}

/// When each gateway last announced itself.
#[derive(Debug, Clone)]
pub struct Gateways {
    since: Micros,
    last_seen: HashMap<String, Micros>,
}

impl Gateways {
    /// A gateway is gone once its heartbeat is older than the bucket's TTL
    /// (or was never seen although we have been watching that long).
    pub fn is_gone(&self, gateway: &str, now: Micros) -> bool {
        let ttl = Micros::try_from(GATEWAY_TTL.as_micros()).unwrap_or(6_000_000);
        match self.last_seen.get(gateway) {
            Some(&seen) => now - seen > ttl,
            None => now - self.since > ttl,
        }
    }
}
