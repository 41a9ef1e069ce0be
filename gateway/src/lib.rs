//! BandSync gateway: thin and stateless apart from its sockets. It admits
//! members with signed tokens, answers clock-sync pings from its own clock,
//! validates and rate-limits client messages, publishes commands to the
//! session's shard on the bus, and forwards the owner's events and ticks to
//! its local members (subscribing per session, only while it has members).
//! On shutdown it tells every socket to reconnect elsewhere and waits for its
//! tasks (sockets, fan-outs, heartbeat) within `SHUTDOWN_GRACE`.
//!
//! Invariants: **a client only ever blocks itself** (bounded per-client queues,
//! ticks coalesce, slow clients are dropped); **bytes from the bus are forwarded
//! as they are** (serialised once, by the owner).

pub mod api;
mod commands;
pub mod config;
mod conn;
pub mod guesses;
pub mod hub;
mod mailbox;
pub mod origin;
pub mod ratelimit;
pub mod token;
mod upgrade;
mod web;
mod windows;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use bandsync_nats::GatewayId;
use bandsync_nats::bus::{Bus, GATEWAY_HEARTBEAT};
use bandsync_nats::service::random_id;
pub use config::Config;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Shared by every request and connection.
pub struct AppState {
    pub config: Config,
    pub gateway_id: GatewayId,
    pub bus: Bus,
    pub hub: hub::Hub,
    pub tokens: token::TokenKey,
    pub shutdown: CancellationToken,
    /// Every task of this gateway (sockets, per-session fan-outs, heartbeat):
    /// shutdown waits for them, within `SHUTDOWN_GRACE`.
    pub tasks: TaskTracker,
    /// `bandsync_gateway_socket_write_seconds`, looked up once: it is recorded per frame.
    pub socket_write: metrics::Histogram,
    /// Which pages may open `/ws`.
    pub origins: origin::Origins,
    /// Wrong join codes per client address.
    pub failed_joins: guesses::FailedJoins,
}

/// A running gateway.
pub struct Gateway {
    pub addr: SocketAddr,
    pub id: GatewayId,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Gateway {
    /// Waits until the gateway has shut down: its sockets closed (each told to
    /// reconnect) and its tasks ended, or `SHUTDOWN_GRACE` passed.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("gateway task panicked")?
    }
}

/// How long shutdown waits for the gateway's tasks: each socket is told to
/// reconnect and closed (waiting up to a second for its client's close), then
/// says `bye` to the session's owner.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Connects to NATS, binds the listener and serves until `shutdown` is cancelled.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Gateway> {
    config.validate()?;
    let gateway_id = GatewayId::parse(
        config
            .gateway_id
            .clone()
            .unwrap_or_else(|| format!("gw-{}", random_id(6))),
    )?;
    // Bound first: while it waits for the bus (the cluster may be starting or
    // electing) instead of exiting, its port says so (`/readyz` 503).
    let std_listener = std::net::TcpListener::bind(config.listen)
        .with_context(|| format!("binding {}", config.listen))?;
    std_listener.set_nonblocking(true)?;
    let waiting = bandsync_nats::service::answer_while_waiting(&std_listener)?;
    let bus = config
        .bus
        .bind_patiently(format!("bandsync-gateway-{gateway_id}"), &shutdown)
        .await
        .context("opening the NATS bus");
    waiting.stop().await;
    let Some(bus) = bus? else {
        anyhow::bail!("shut down while waiting for the bus");
    };
    let listener = tokio::net::TcpListener::from_std(std_listener)?;
    let addr = listener.local_addr()?;
    install_metrics();
    let tasks = TaskTracker::new();
    let app = Arc::new(AppState {
        hub: hub::Hub::new(bus.clone(), config.client_queue, tasks.clone()),
        tokens: token::TokenKey::new(config.token_secret.as_bytes()),
        origins: origin::Origins::new(&config.allowed_origins),
        failed_joins: guesses::FailedJoins::default(),
        config,
        gateway_id: gateway_id.clone(),
        bus,
        shutdown: shutdown.clone(),
        tasks,
        socket_write: metrics::histogram!("bandsync_gateway_socket_write_seconds"),
    });
    app.tasks.spawn(heartbeat(app.clone()));
    app.tasks.spawn({
        let app = app.clone();
        async move {
            app.shutdown.cancelled().await;
            app.hub.shut_down_all().await;
        }
    });
    let router = Router::new()
        .route("/", get(web::index))
        .route("/app.js", get(web::app_js))
        .route("/style.css", get(web::style_css))
        .route("/api/sessions", post(api::create))
        .route("/api/join", post(api::join))
        .route("/ws", get(api::websocket))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|| async { bandsync_nats::service::prometheus().render() }),
        )
        .layer(axum::middleware::map_response(web::security_headers))
        .with_state(app.clone());
    tracing::info!(%addr, gateway = %gateway_id, "gateway listening");
    let task = tokio::spawn(async move {
        let send_buffer = app.config.socket_send_buffer;
        let listener = listener.tap_io(move |tcp| tune_socket(tcp, send_buffer));
        // Stops accepting at once; returns when the HTTP requests in flight
        // are answered (an upgrade's socket task is spawned by then).
        let serve = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.cancelled_owned());
        serve.await.context("serving HTTP")?;
        // Sockets are told through their mailboxes (and one joining the hub
        // later sees the token): each says why, closes and says bye.
        app.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, app.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = app.tasks.len(),
                "tasks still running after the shutdown grace period"
            );
        }
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, app.bus.client.flush()).await;
        let _ = app.bus.gateways.delete(app.gateway_id.as_str()).await;
        tracing::info!("gateway stopped");
        Ok(())
    });
    Ok(Gateway {
        addr,
        id: gateway_id,
        task,
    })
}

/// Installs the process's Prometheus recorder (shared with other services in
/// the same process) and describes the gateway's metrics in it once.
fn install_metrics() {
    bandsync_nats::service::prometheus();
    static DESCRIBED: std::sync::Once = std::sync::Once::new();
    DESCRIBED.call_once(describe_metrics);
}

/// The gateway's metrics with their help text, exported at 0 from the start so
/// a dashboard (or a test reading them strictly) can tell "none yet" from "not
/// exported".
fn describe_metrics() {
    let counters = [
        (
            "bandsync_gateway_slow_clients_total",
            "Clients dropped because their event queue overflowed (slow_client).",
        ),
        (
            "bandsync_gateway_rate_limited_total",
            "Client messages dropped by the rate limit.",
        ),
        (
            "bandsync_gateway_join_guesses_refused_total",
            "Joins refused because their address gave too many wrong codes.",
        ),
        (
            "bandsync_gateway_origins_refused_total",
            "WebSocket upgrades refused because the page's Origin is not allowed.",
        ),
        (
            "bandsync_gateway_publish_failures_total",
            "Commands that could not be published to the bus.",
        ),
        (
            "bandsync_gateway_stale_epoch_dropped_total",
            "Bus messages dropped as coming from a deposed owner.",
        ),
        (
            "bandsync_gateway_ticks_forwarded_total",
            "Ticks handed to client mailboxes.",
        ),
    ];
    let gauges = [
        ("bandsync_gateway_connections", "Open client WebSockets."),
        (
            "bandsync_gateway_sessions",
            "Sessions this gateway is subscribed to.",
        ),
    ];
    // All in seconds.
    let histograms = [
        (
            "bandsync_gateway_bus_delay_seconds",
            "How old a tick or event is when it arrives from the bus (by kind).",
        ),
        (
            "bandsync_gateway_socket_write_seconds",
            "Time to write one frame to a client's socket.",
        ),
    ];
    bandsync_nats::service::MetricDescriptions {
        counters: &counters,
        gauges: &gauges,
        histograms_seconds: &histograms,
    }
    .describe();
}

/// Ticks and events are small and latency-bound: no Nagle delay. A bounded
/// kernel send buffer makes a device that stops reading block its own writes
/// soon, so the hub drops it (`slow_client`) instead of the kernel queueing
/// megabytes for it.
fn tune_socket(tcp: &mut tokio::net::TcpStream, send_buffer: usize) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    if let Err(e) = socket2::SockRef::from(&*tcp).set_send_buffer_size(send_buffer) {
        tracing::debug!(error = %e, "cannot set SO_SNDBUF");
    }
}

async fn readyz(State(app): State<Arc<AppState>>) -> (StatusCode, String) {
    let state = app.bus.client.connection_state();
    let ready = state == async_nats::connection::State::Connected;
    let sessions = app.hub.session_count().await;
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, format!("nats: {state:?}\nsessions: {sessions}\n"))
}

/// Announces this gateway in the gateways bucket so owners can tell live
/// connections from ones whose gateway died.
async fn heartbeat(app: Arc<AppState>) {
    let mut every = tokio::time::interval(GATEWAY_HEARTBEAT);
    loop {
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = every.tick() => {
                if let Err(e) = app.bus.gateways.put(app.gateway_id.as_str(), bandsync_nats::now_us().to_string().into()).await {
                    tracing::warn!(error = %e, "gateway heartbeat failed");
                }
            }
        }
    }
}
