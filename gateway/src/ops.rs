//! The operations endpoints, on a listener of their own (`--ops-listen`):
//! `/healthz` (the process answers), `/readyz` (the bus is connected) and
//! `/metrics` (Prometheus text). They tell whoever reaches them how busy the
//! gateway is and whether it is up, which is nobody's business on the public
//! port, so that one answers 404 there.

use crate::AppState;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use std::sync::Arc;

pub fn router(app: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|| async { bandsync_nats::service::prometheus().render() }),
        )
        .with_state(app)
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
