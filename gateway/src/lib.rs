//! BandSync gateway: thin and stateless apart from its sockets. It admits
//! members with signed tokens, answers clock-sync pings from its own clock,
//! validates and rate-limits client messages, publishes commands to the
//! session's shard on the bus, and forwards the owner's events and ticks to
//! its local members (subscribing per session, only while it has members).
//! Its public port serves the web client, the API and `/ws` (over HTTPS with
//! `--tls`); `/healthz`, `/readyz` and `/metrics` are on an operations port of
//! their own (`--ops-listen`).
//! On shutdown it tells every socket to reconnect elsewhere and waits for its
//! tasks (sockets, fan-outs, heartbeat) within `SHUTDOWN_GRACE`.
//!
//! Invariants: **a client only ever blocks itself** (bounded per-client queues,
//! ticks coalesce, slow clients are dropped); **bytes from the bus are forwarded
//! as they are** (serialised once, by the owner).

pub mod addresses;
pub mod api;
mod commands;
pub mod config;
mod conn;
pub mod guesses;
pub mod hub;
mod mailbox;
mod ops;
pub mod origin;
pub mod ratelimit;
mod reports;
pub mod tls;
pub mod token;
mod upgrade;
mod web;
mod windows;

use anyhow::Context;
use axum::Router;
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
    pub tokens: token::TokenKeys,
    pub shutdown: CancellationToken,
    /// Every task of this gateway (sockets, per-session fan-outs, heartbeat):
    /// shutdown waits for them, within `SHUTDOWN_GRACE`.
    pub tasks: TaskTracker,
    /// `bandsync_gateway_socket_write_seconds`, looked up once: it is recorded per write a connection waits on.
    pub socket_write: metrics::Histogram,
    /// Which pages may open `/ws`.
    pub origins: origin::Origins,
    /// Wrong join codes per client address.
    pub failed_joins: guesses::FailedJoins,
    pub addresses: addresses::AddressLimits,
}

/// A running gateway.
pub struct Gateway {
    /// The public address: web client, API, WebSocket.
    pub addr: SocketAddr,
    /// `/healthz`, `/readyz`, `/metrics`.
    pub ops_addr: SocketAddr,
    /// How to reach it over HTTPS, when it serves HTTPS.
    pub https: Option<Https>,
    pub id: GatewayId,
    task: JoinHandle<anyhow::Result<()>>,
}

/// A gateway serving HTTPS: where, and which certificate.
pub struct Https {
    /// The URLs that reach it (LAN addresses first).
    pub urls: Vec<String>,
    /// SHA-256 of its certificate, `AB:CD:…`.
    pub fingerprint: String,
    /// URLs, fingerprint and a QR code of the first URL, for a terminal.
    pub banner: String,
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
    // The certificate is read (or made) before anything is bound: a missing
    // file or an unwritable directory is a start-up error.
    let tls = tls::load(&config).context("setting up TLS")?;
    // Both ports are bound first, so a taken address fails at once. While the
    // gateway waits for the bus (the cluster may be starting or electing)
    // instead of exiting, its operations port says so (`/readyz` 503), and its
    // public port refuses connections (bound, not listening), so a proxy
    // sends clients to another gateway.
    let ops_listener = std::net::TcpListener::bind(config.ops_listen)
        .with_context(|| format!("binding {} (--ops-listen)", config.ops_listen))?;
    ops_listener.set_nonblocking(true)?;
    let public =
        bind_unlistened(config.listen).with_context(|| format!("binding {}", config.listen))?;
    let waiting = bandsync_nats::service::answer_while_waiting(&ops_listener)?;
    let bus = config
        .bus
        .bind_patiently(format!("bandsync-gateway-{gateway_id}"), &shutdown)
        .await
        .context("opening the NATS bus");
    waiting.stop().await;
    let Some(bus) = bus? else {
        anyhow::bail!("shut down while waiting for the bus");
    };
    let ops_listener = tokio::net::TcpListener::from_std(ops_listener)?;
    let ops_addr = ops_listener.local_addr()?;
    public
        .listen(LISTEN_BACKLOG)
        .with_context(|| format!("listening on {}", config.listen))?;
    let std_listener: std::net::TcpListener = public.into();
    std_listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(std_listener)?;
    let addr = listener.local_addr()?;
    install_metrics();
    let tasks = TaskTracker::new();
    let app = Arc::new(AppState {
        hub: hub::Hub::new(
            bus.clone(),
            gateway_id.clone(),
            config.shards,
            tasks.clone(),
        ),
        tokens: config.token_keys()?,
        origins: origin::Origins::new(&config.allowed_origins),
        failed_joins: guesses::FailedJoins::default(),
        addresses: addresses::AddressLimits::new(config.address_limits()),
        config,
        gateway_id: gateway_id.clone(),
        bus,
        shutdown: shutdown.clone(),
        tasks,
        socket_write: metrics::histogram!("bandsync_gateway_socket_write_seconds"),
    });
    app.tasks.spawn(heartbeat(app.clone()));
    app.hub
        .start_beats(app.shutdown.clone())
        .await
        .context("subscribing to the owners' beats")?;
    app.tasks.spawn({
        let app = app.clone();
        async move {
            app.shutdown.cancelled().await;
            app.hub.shut_down_all().await;
        }
    });
    let router = Router::new()
        .route("/", get(web::index))
        .route("/js/{name}", get(web::module))
        .route("/qr.svg", get(web::join_qr))
        .route("/style.css", get(web::style_css))
        .route("/api/sessions", post(api::create))
        .route("/api/join", post(api::join))
        .route("/ws", get(api::websocket))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            api::limit_requests,
        ))
        .layer(axum::middleware::map_response(web::security_headers))
        .with_state(app.clone());
    tracing::info!(%addr, %ops_addr, gateway = %gateway_id, "gateway listening");
    let https = tls.as_ref().map(|tls| {
        let lan = tls::lan_addresses();
        let urls = tls::banner::urls(addr, &lan);
        tracing::info!(
            urls = %urls.join(" "),
            fingerprint = %tls.fingerprint,
            cert = %tls.cert_path.display(),
            "serving HTTPS"
        );
        Https {
            banner: tls::banner::text(&urls, &tls.fingerprint, &tls.cert_path, tls.self_signed),
            fingerprint: tls.fingerprint.clone(),
            urls,
        }
    });
    let acceptor = tls.map(|tls| tls.acceptor);
    // Answers until the gateway has stopped: `/readyz` and `/metrics` stay
    // readable while its sockets close.
    let ops_stop = CancellationToken::new();
    let ops = tokio::spawn({
        let serve = axum::serve(ops_listener, ops::router(app.clone()))
            .with_graceful_shutdown(ops_stop.clone().cancelled_owned());
        async move {
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "the operations server failed");
            }
        }
    });
    let task = tokio::spawn(async move {
        // Also stops the operations server should serving fail.
        let ops_stop = ops_stop.drop_guard();
        let send_buffer = app.config.socket_send_buffer;
        let tune = move |tcp: &mut tokio::net::TcpStream| tune_socket(tcp, send_buffer);
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        // Stops accepting at once; returns when the HTTP requests in flight
        // are answered (an upgrade's socket task is spawned by then).
        let stopped = shutdown.clone().cancelled_owned();
        let served = match acceptor {
            None => {
                axum::serve(listener.tap_io(tune), service)
                    .with_graceful_shutdown(stopped)
                    .await
            }
            Some(acceptor) => {
                let timeout = Duration::from_millis(app.config.tls_handshake_timeout_ms);
                let tls = tls::TlsListener::spawn(listener, acceptor, timeout, tune, shutdown)
                    .context("starting the TLS listener")?;
                // `tap_io` is what gives a listener of our own axum's
                // `ConnectInfo<SocketAddr>` (the per-address limits read it).
                axum::serve(tls.tap_io(|_| {}), service)
                    .with_graceful_shutdown(stopped)
                    .await
            }
        };
        served.context("serving HTTP")?;
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
        drop(ops_stop);
        let _ = ops.await;
        tracing::info!("gateway stopped");
        Ok(())
    });
    Ok(Gateway {
        addr,
        ops_addr,
        https,
        id: gateway_id,
        task,
    })
}

/// Connections the kernel queues for the public port before they are accepted.
const LISTEN_BACKLOG: i32 = 1024;

/// A TCP socket bound to `addr` (so the address is ours, and port 0 resolved)
/// that does not listen yet: connections to it are refused.
fn bind_unlistened(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    // As std's and tokio's listeners do: a restart may rebind at once.
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
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
            "bandsync_gateway_floods_closed_total",
            "Connections closed for sending ten times the message rate within a second.",
        ),
        (
            "bandsync_gateway_address_limited_total",
            "Requests refused by a per-address limit (label limit: requests, connects, creates, sockets).",
        ),
        (
            "bandsync_gateway_join_codes_unknown_total",
            "Joins with a code that names no session (guesses and typos).",
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
            "Ticks handed to client sockets (written at once, or left in their mailboxes).",
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
            "Time a connection waited for its socket to take a write (its own messages, and what the socket could not take at once).",
        ),
    ];
    bandsync_nats::service::MetricDescriptions {
        counters: &counters,
        gauges: &gauges,
        histograms_seconds: &histograms,
    }
    .describe();
    tls::describe_metrics();
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
