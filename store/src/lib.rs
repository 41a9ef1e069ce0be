//! BandSync store: a durable consumer of the command and event streams that
//! writes every message into PostgreSQL exactly once, and an HTTP API for analysts.
//!
//! Reads `<P>_CMD` and `<P>_EVT` through one durable pull consumer each (workers
//! sharing the durable name split the work); writes the `commands`, `events`,
//! `dead_letters`, `sessions` and `members` tables; serves `/sessions...`,
//! `/healthz`, `/readyz`, `/metrics`. Invariants: **a message is acked only after
//! its transaction commits**, **the log is keyed by (stream, stream_seq)**, so
//! redelivery never duplicates a row, and **every message becomes a row or a
//! dead letter** (never retried forever). `/readyz` is 503 while a stream's
//! ingest worker is down or stalled, not only when NATS or PostgreSQL is away.
//! Nothing here publishes to NATS.

pub mod api;
pub mod config;
pub mod db;
pub mod decode;
pub mod health;
pub mod ingest;
pub mod metrics;
pub mod summary;
pub mod supervise;

pub use config::Config;

use anyhow::Context;
use bandsync_nats::bus::{Bus, BusSettings, Provision};
use deadpool_postgres::Pool;
use decode::StreamKind;
use health::IngestHealth;
use metrics::Metrics;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// How long shutdown waits for the batch in flight to commit.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How often histogram samples are folded into their buckets when nobody scrapes.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// A started store: its HTTP address and its tasks.
pub struct Store {
    addr: SocketAddr,
    tasks: TaskTracker,
    metrics: Arc<Metrics>,
    health: Arc<IngestHealth>,
    pool: Pool,
}

impl Store {
    /// Validates the config, prepares the database, connects to NATS, and starts
    /// ingesting and serving. Returns once everything runs.
    pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Self> {
        config.validate()?;
        let subjects = config.bus.validate()?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;

        let pool = prepare_database(&config, &shutdown).await?;
        let metrics = Arc::new(Metrics::default());
        let health = Arc::new(IngestHealth::new(config.stall_after()));
        let nats = Arc::new(OnceLock::new());
        let tasks = TaskTracker::new();

        // Serve first, so /readyz says what the store waits for while it waits.
        let app = api::router(
            api::AppState {
                pool: pool.clone(),
                metrics: metrics.clone(),
                health: health.clone(),
                nats: nats.clone(),
            },
            api::auth::Analysts::new(&config.analyst_tokens),
        );
        let stop = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
            {
                warn!(error = %e, "http server stopped");
            }
        });

        // The store binds to the streams a ticker declares (its NATS user may not create them).
        let settings = BusSettings {
            provision: Provision::Bind,
            ..config
                .bus
                .settings(format!("store-{}", std::process::id()))
                .context("reading the NATS credentials")?
        };
        let Some(bus) = Bus::open_patiently(&settings, subjects.clone(), &shutdown)
            .await
            .context("opening the bus")?
        else {
            tasks.close();
            tasks.wait().await;
            anyhow::bail!("shut down while waiting for the bus");
        };
        let _ = nats.set(bus.client.clone());

        for (kind, stream) in [
            (StreamKind::Commands, subjects.cmd_stream()),
            (StreamKind::Events, subjects.evt_stream()),
        ] {
            let ingest = ingest::Ingest {
                kind,
                stream,
                durable: config.durable.clone(),
                js: bus.js.clone(),
                pool: pool.clone(),
                subjects: subjects.clone(),
                metrics: metrics.clone(),
                health: health.clone(),
                batch_max: config.batch_max,
                batch_wait: config.batch_wait(),
                writers: config.writers,
            };
            // Fail start-up on a consumer that cannot be made (wrong stream config, permissions).
            ingest.consumer().await?;
            let (health, metrics, token) = (health.clone(), metrics.clone(), shutdown.clone());
            tasks.spawn(async move {
                let work = ingest.clone();
                supervise::supervise(
                    kind,
                    &health,
                    &metrics,
                    token.clone(),
                    move || work.clone().run(token.clone()),
                    || ingest.backlog(),
                )
                .await;
            });
        }
        let (upkeep, token) = (metrics.clone(), shutdown.clone());
        tasks.spawn(async move {
            let mut every = tokio::time::interval(METRICS_UPKEEP);
            while token.run_until_cancelled(every.tick()).await.is_some() {
                upkeep.upkeep();
            }
        });
        tasks.close();
        info!(%addr, "store started");
        Ok(Self {
            addr,
            tasks,
            metrics,
            health,
            pool,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Each stream's ingest as `/readyz` sees it.
    pub fn health(&self) -> &Arc<IngestHealth> {
        &self.health
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Waits for every task to finish (after the shutdown token is cancelled).
    pub async fn wait(self) {
        self.tasks.wait().await;
    }
}

/// Creates the database if missing and migrates it, retrying while PostgreSQL
/// is unreachable (it may start after the store).
async fn prepare_database(config: &Config, shutdown: &CancellationToken) -> anyhow::Result<Pool> {
    let mut backoff = Duration::from_millis(200);
    loop {
        let attempt = async {
            if db::ensure_database(&config.database_url).await? {
                info!("database created");
            }
            let pool = db::pool(&config.database_url, config.pool_size)?;
            let applied = db::migrate::migrate(&pool).await?;
            if !applied.is_empty() {
                info!(?applied, "migrations applied");
            }
            Ok::<_, db::DbError>(pool)
        };
        match attempt.await {
            Ok(pool) => return Ok(pool),
            Err(e @ (db::DbError::SchemaTooNew { .. } | db::DbError::Url(_))) => {
                return Err(e.into());
            }
            Err(e) => {
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "preparing the database")
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => anyhow::bail!("shut down before the database was ready"),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Runs the store until `shutdown`, then lets the batch in flight commit.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let store = Store::start(config, shutdown.clone()).await?;
    shutdown.cancelled().await;
    if tokio::time::timeout(SHUTDOWN_GRACE, store.wait())
        .await
        .is_err()
    {
        warn!("tasks still running after the shutdown grace period");
    }
    Ok(())
}
