//! Keeps one stream's ingest worker running and watched.
//!
//! One supervisor task per stream spawns the worker and, every
//! `WATCH_EVERY`, reads the consumer's backlog into `IngestHealth` and the
//! metrics. A worker that ends before shutdown, or panics (a writer's panic is
//! resumed in the worker, see `ingest`), is reported (`/readyz` 503 with the
//! reason, `bandsync_store_ingest_restarts_total`) and restarted after a
//! backoff.
//!
//! Restart rather than exit the process: the store also runs embedded (tests,
//! `Store::start`) and on hosts with no supervisor of its own (`scripts/run`),
//! where an exit would stop the other stream's ingest and the analysts' API
//! with it; a worker holds nothing another worker cannot rebuild (a consumer
//! handle, its batches, which JetStream redelivers unacked); and a panic that
//! comes back on every redelivery still shows, as a stall (messages pending,
//! no commit) in `/readyz` and `bandsync_store_ingest_stalled_seconds`.

use crate::decode::StreamKind;
use crate::health::IngestHealth;
use crate::metrics::Metrics;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// How often the backlog is read from consumer info (one request per stream).
pub const WATCH_EVERY: Duration = Duration::from_secs(1);
const RESTART_MIN: Duration = Duration::from_millis(500);
const RESTART_MAX: Duration = Duration::from_secs(30);

/// Runs `worker` (one stream's ingest, as a fresh future each time) until
/// `shutdown`, restarting it whenever it ends early or panics, and reads the
/// backlog with `backlog` (consumer info: pending plus ack-pending) every
/// `WATCH_EVERY`. Returns once the worker has stopped after `shutdown`.
pub async fn supervise<W, F, B, BF>(
    kind: StreamKind,
    health: &IngestHealth,
    metrics: &Metrics,
    shutdown: CancellationToken,
    mut worker: W,
    mut backlog: B,
) where
    W: FnMut() -> F,
    F: Future<Output = ()> + Send + 'static,
    B: FnMut() -> BF,
    BF: Future<Output = Result<u64, String>>,
{
    let stream = kind.as_str();
    let mut delay = RESTART_MIN;
    let mut watch = tokio::time::interval(WATCH_EVERY);
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let started = Instant::now();
        let mut task = tokio::spawn(worker());
        health.worker_running(kind);
        let outcome = loop {
            tokio::select! {
                outcome = &mut task => break outcome,
                _ = watch.tick() => {
                    match backlog().await {
                        Ok(n) => health.backlog(kind, n),
                        Err(e) => health.backlog_unknown(kind, e),
                    }
                    let status = health.status(kind);
                    metrics.set_ingest(kind, status.backlog, status.stalled_for, status.ready);
                }
            }
        };
        if shutdown.is_cancelled() {
            // The worker committed or nak'ed its batches and returned, as asked.
            health.worker_down(kind, "shut down".into());
            return;
        }
        let reason = match outcome {
            Ok(()) => "ended without being asked to".to_owned(),
            Err(e) if e.is_panic() => format!("panicked: {}", panic_message(e.into_panic())),
            Err(e) => format!("was cancelled: {e}"),
        };
        metrics.worker_restarted(kind);
        // A worker that ran a good while before failing starts the backoff over.
        if started.elapsed() > RESTART_MAX {
            delay = RESTART_MIN;
        }
        error!(stream, %reason, restart_in_ms = delay.as_millis() as u64, "ingest worker stopped; restarting it");
        health.worker_down(
            kind,
            format!("the worker {reason}; restarting in {:?}", delay),
        );
        let status = health.status(kind);
        metrics.set_ingest(kind, status.backlog, status.stalled_for, status.ready);
        tokio::select! {
            () = shutdown.cancelled() => {
                health.worker_down(kind, "shut down".into());
                return;
            }
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RESTART_MAX);
        info!(stream, "restarting the ingest worker");
    }
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bandsync_testkit::metric;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A worker that panics on its first run, then runs until shutdown.
    #[tokio::test(start_paused = true)]
    async fn a_panicking_worker_is_reported_and_restarted() {
        let health = Arc::new(IngestHealth::new(Duration::from_secs(30)));
        let metrics = Arc::new(Metrics::default());
        let shutdown = CancellationToken::new();
        let runs = Arc::new(AtomicU32::new(0));
        let supervisor = {
            let (health, metrics, shutdown, runs) = (
                health.clone(),
                metrics.clone(),
                shutdown.clone(),
                runs.clone(),
            );
            tokio::spawn(async move {
                let stop = shutdown.clone();
                supervise(
                    StreamKind::Events,
                    &health,
                    &metrics,
                    shutdown,
                    move || {
                        let run = runs.fetch_add(1, Ordering::SeqCst);
                        let stop = stop.clone();
                        async move {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            assert!(run > 0, "a bug in the first run");
                            stop.cancelled().await;
                        }
                    },
                    || async { Ok(0) },
                )
                .await;
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let status = health.status(StreamKind::Events);
        assert!(!status.ready);
        assert!(
            status
                .text
                .starts_with("worker down: the worker panicked: a bug in the first run"),
            "{}",
            status.text
        );
        let text = metrics.render();
        assert_eq!(
            metric(
                &text,
                "bandsync_store_ingest_restarts_total{stream=\"events\"}"
            )
            .ok(),
            Some(1.0)
        );
        assert_eq!(
            metric(&text, "bandsync_store_ingest_ready{stream=\"events\"}").ok(),
            Some(0.0)
        );

        tokio::time::sleep(RESTART_MIN + WATCH_EVERY).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2, "restarted once");
        assert!(health.status(StreamKind::Events).ready);
        assert_eq!(
            metric(
                &metrics.render(),
                "bandsync_store_ingest_ready{stream=\"events\"}"
            )
            .ok(),
            Some(1.0)
        );

        shutdown.cancel();
        supervisor.await.expect("supervisor returns after shutdown");
        assert_eq!(runs.load(Ordering::SeqCst), 2, "not restarted on shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_that_ends_early_is_restarted() {
        let health = IngestHealth::new(Duration::from_secs(30));
        let metrics = Metrics::default();
        let shutdown = CancellationToken::new();
        let mut runs = 0;
        let stop = shutdown.clone();
        supervise(
            StreamKind::Commands,
            &health,
            &metrics,
            shutdown.clone(),
            || {
                runs += 1;
                if runs == 3 {
                    stop.cancel();
                }
                async {}
            },
            || async { Ok(0) },
        )
        .await;
        assert_eq!(runs, 3);
        assert_eq!(
            metric(
                &metrics.render(),
                "bandsync_store_ingest_restarts_total{stream=\"commands\"}"
            )
            .ok(),
            Some(2.0)
        );
    }
}
