//! What every BandSync binary does the same way at start-up: structured logs,
//! a shutdown token cancelled by SIGINT/SIGTERM, random identifiers, and an
//! HTTP port that answers "not ready" while the service waits for the bus.

use rand::Rng;
use tokio_util::sync::CancellationToken;

/// Logs to stderr; `RUST_LOG` overrides the default `info` level.
pub fn init_tracing() {
    init_tracing_at("info");
}

/// Logs to stderr at `default` unless `RUST_LOG` says otherwise (tests use "warn").
pub fn init_tracing_at(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // A second call (tests start several services in one process) is harmless.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}

/// A token cancelled on the first SIGINT or SIGTERM.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        cancel.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown requested");
        cancel.cancel();
    });
    token
}

/// How often recorded histogram samples are folded into their summaries.
const METRICS_UPKEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// A service's metrics with their help text: `(name, help)` per counter, gauge
/// and histogram (histograms in seconds). Counters and gauges are exported at 0
/// from the start, so a dashboard (or a test reading them strictly) can tell
/// "none yet" from "not exported".
pub struct MetricDescriptions<'a> {
    pub counters: &'a [(&'static str, &'static str)],
    pub gauges: &'a [(&'static str, &'static str)],
    pub histograms_seconds: &'a [(&'static str, &'static str)],
}

impl MetricDescriptions<'_> {
    /// Describes them in the process's recorder (call once per service).
    pub fn describe(&self) {
        for &(name, help) in self.counters {
            metrics::describe_counter!(name, help);
            metrics::counter!(name).increment(0);
        }
        for &(name, help) in self.gauges {
            metrics::describe_gauge!(name, help);
            metrics::gauge!(name).increment(0.0);
        }
        for &(name, help) in self.histograms_seconds {
            metrics::describe_histogram!(name, metrics::Unit::Seconds, help);
        }
    }
}

/// The process-wide Prometheus recorder, installed on first use. Services in one
/// process (as in tests) share it; each describes its own metrics after.
pub fn prometheus() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; its metrics then go there.
        let _ = metrics::set_global_recorder(recorder);
        // Histogram samples pile up until a scrape folds them in; with nobody
        // scraping (a laptop on stage) they would grow without bound, a few bytes
        // per message. A plain thread: this may run before or outside any runtime.
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(METRICS_UPKEEP);
                    upkeep.run_upkeep();
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no metrics upkeep thread: histograms fold in only when scraped");
        }
        handle
    })
}

const ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A random lowercase id of `len` characters (12 gives about 62 bits).
pub fn random_id(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ID_ALPHABET[rng.random_range(0..ID_ALPHABET.len())] as char)
        .collect()
}

/// A random join code from the unambiguous alphabet.
pub fn random_join_code() -> crate::JoinCode {
    let mut rng = rand::rng();
    let alphabet = crate::ids::JOIN_CODE_ALPHABET;
    let code: String = (0..crate::ids::JOIN_CODE_LEN)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect();
    crate::JoinCode::parse(&code).expect("generated from the join-code alphabet")
}

/// A stand-in HTTP server on a service's port while it waits for the bus:
/// `/healthz` answers 200 (the process is alive) and everything else 503
/// "waiting for the bus", so an orchestrator or an operator sees "not ready"
/// and why, instead of a refused connection.
pub struct WaitingForBus {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Starts answering on a clone of `listener` (which stays the caller's, for the
/// service's own server once the bus is open).
pub fn answer_while_waiting(listener: &std::net::TcpListener) -> std::io::Result<WaitingForBus> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let clone = tokio::net::TcpListener::from_std(listener.try_clone()?)?;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { (StatusCode::SERVICE_UNAVAILABLE, "waiting for the bus\n") });
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move {
            let serve = axum::serve(clone, app).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "the waiting server failed");
            }
        }
    });
    Ok(WaitingForBus { stop, task })
}

impl WaitingForBus {
    /// Stops answering (requests in flight are answered first).
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_valid_and_distinct() {
        let a = random_id(12);
        assert_eq!(a.len(), 12);
        assert!(crate::SessionId::parse(a.clone()).is_ok());
        assert_ne!(a, random_id(12));
        assert_eq!(random_join_code().as_str().len(), crate::ids::JOIN_CODE_LEN);
    }
}
