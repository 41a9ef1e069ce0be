//! The HTTP side: analysts' API, health and metrics. Handlers are thin: they
//! parse the request, call `db::query`, and map errors to stable codes.

pub mod auth;
mod error;
mod export;
pub mod replay;
mod sessions;

pub use error::ApiError;

use crate::db;
use crate::decode::StreamKind;
use crate::health::IngestHealth;
use crate::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use deadpool_postgres::Pool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How long `/readyz` waits for PostgreSQL before calling it down.
const READY_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    pub metrics: Arc<Metrics>,
    pub health: Arc<IngestHealth>,
    /// Set once the bus is open; the store serves (not ready) while it waits.
    pub nats: Arc<OnceLock<async_nats::Client>>,
}

pub fn router(state: AppState, analysts: auth::Analysts) -> Router {
    let analysts_only = Router::new()
        .route("/sessions", get(sessions::list))
        .route("/sessions/{id}/events", get(sessions::events))
        .route("/sessions/{id}/commands", get(sessions::commands))
        .route("/sessions/{id}/export.csv", get(export::csv))
        .route("/sessions/{id}/export.ndjson", get(export::ndjson))
        .route("/sessions/{id}/state", get(replay::state_at))
        .layer(axum::middleware::from_fn_with_state(
            analysts,
            auth::require_analyst,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(analysts_only)
        .with_state(state)
}

/// Ready: NATS connected, PostgreSQL answering, and each stream's ingest
/// worker running and not stalled (`health`). One line each, with the reason.
async fn readyz(State(app): State<AppState>) -> Response {
    let nats = app
        .nats
        .get()
        .is_some_and(|c| c.connection_state() == async_nats::connection::State::Connected);
    let db = matches!(
        tokio::time::timeout(READY_TIMEOUT, db::query::ping(&app.pool)).await,
        Ok(Ok(()))
    );
    app.metrics.set_db_up(db);
    app.metrics.set_nats_up(nats);
    let nats_text = match app.nats.get() {
        None => "waiting for the bus",
        Some(_) => up(nats),
    };
    let mut body = format!("nats: {nats_text}\npostgres: {}\n", up(db));
    let mut ingest = true;
    for kind in [StreamKind::Commands, StreamKind::Events] {
        let status = app.health.status(kind);
        // The gauges say what this answer says (the watch updates them each second too).
        app.metrics
            .set_ingest(kind, status.backlog, status.stalled_for, status.ready);
        ingest &= status.ready;
        body.push_str(&format!("ingest {}: {}\n", kind.as_str(), status.text));
    }
    let status = if nats && db && ingest {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body).into_response()
}

fn up(ok: bool) -> &'static str {
    if ok { "up" } else { "down" }
}

async fn metrics(State(app): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}

/// A JSON body PostgreSQL already encoded.
fn json_text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}
