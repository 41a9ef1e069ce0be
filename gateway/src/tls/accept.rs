//! The HTTPS listener: accepts TCP connections and shakes hands with each in a
//! task of its own, within a time limit, and hands the finished ones to the
//! HTTP server. A client that connects and sends nothing (or trickles) holds
//! only its own task until the limit, never the accept loop or another client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// Handshakes in flight at once. Each holds a few KiB; a connection beyond
/// this is closed at once (counted as `busy`) rather than queued, so a flood
/// of silent connections cannot stall the ones behind it either.
const MAX_HANDSHAKES: usize = 1024;
/// Finished handshakes waiting for the HTTP server to take them: it takes
/// them as fast as it accepts, so a few are enough.
const READY_QUEUE: usize = 64;

const FAILURES: &str = "bandsync_gateway_tls_handshake_failures_total";

/// Finished TLS connections, for `axum::serve`.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `listener` until `stop` is cancelled or the
    /// listener is dropped. `tune` sees each TCP socket before its handshake.
    pub fn spawn(
        listener: TcpListener,
        acceptor: tokio_rustls::TlsAcceptor,
        handshake_timeout: Duration,
        tune: impl Fn(&mut TcpStream) + Send + 'static,
        stop: CancellationToken,
    ) -> std::io::Result<TlsListener> {
        let local_addr = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let (mut tcp, peer) = tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tx.closed() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(conn) => conn,
                        Err(e) => {
                            // Out of file descriptors, or a connection reset
                            // before it was taken: wait a little, go on.
                            tracing::debug!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    metrics::counter!(FAILURES, "reason" => "busy").increment(1);
                    continue; // dropped: closed
                };
                tune(&mut tcp);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    let started = tokio::time::Instant::now();
                    let mut first = [0u8; 1];
                    let peeked =
                        tokio::time::timeout(handshake_timeout, tcp.peek(&mut first)).await;
                    if matches!(peeked, Ok(Ok(1))) && super::plain::looks_like_http(first[0]) {
                        metrics::counter!(FAILURES, "reason" => "plain_http").increment(1);
                        super::plain::redirect(tcp, handshake_timeout).await;
                        return;
                    }
                    let left = handshake_timeout.saturating_sub(started.elapsed());
                    match tokio::time::timeout(left, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            metrics::counter!(FAILURES, "reason" => "error").increment(1);
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            metrics::counter!(FAILURES, "reason" => "timeout").increment(1);
                            tracing::debug!(%peer, "TLS handshake timed out");
                        }
                    }
                });
            }
        });
        Ok(TlsListener { ready, local_addr })
    }
}

/// The failure reasons, exported at 0 from the start.
pub const FAILURE_REASONS: [&str; 4] = ["timeout", "error", "busy", "plain_http"];

pub fn describe_metrics() {
    metrics::describe_counter!(
        FAILURES,
        "TLS handshakes that failed (error), did not finish in time (timeout), were refused because too many were in flight (busy), or were plain HTTP, answered with a redirect to HTTPS (plain_http)."
    );
    for reason in FAILURE_REASONS {
        metrics::counter!(FAILURES, "reason" => reason).increment(0);
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop stopped (shutdown): nothing more comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}
