//! The WebSocket upgrade, done here rather than by axum's `ws` extractor so the
//! gateway owns the socket's write side: tungstenite reads the socket (and
//! writes its own control frames), while ticks and events are framed once per
//! message and written to each socket by the hub through the member's mailbox
//! (`mailbox.rs`). Writing whole messages through tungstenite also kept its
//! write buffer at the size of the largest frame it ever wrote: a 30 KB
//! setlist kept 60 KiB more on every member's socket (13 → 73 KiB per
//! connection, `bandsync-load --setlist-kb 30`).

use crate::mailbox::Mailbox;
use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf};
use tokio_tungstenite::WebSocketStream;
use tokio_util::task::TaskTracker;
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::{Role, WebSocketConfig};

/// A member's WebSocket once upgraded: tungstenite reads it and writes its
/// control frames (pongs, the close); everything else goes out through the
/// mailbox, which the hub writes to directly.
pub struct Socket {
    pub ws: WebSocketStream<Duplex>,
    pub out: Arc<Mailbox>,
}

/// The connection as tungstenite sees it: it reads the socket, and writes
/// through the mailbox, so its frames and the hub's never interleave.
pub struct Duplex {
    read: ReadHalf<TokioIo<Upgraded>>,
    out: Arc<Mailbox>,
}

impl AsyncRead for Duplex {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for Duplex {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.out.poll_accept(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.out.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.out.poll_shutdown(cx)
    }
}

/// A request asking to become a WebSocket (RFC 6455 §4.2.1), not yet answered.
pub struct Upgrade {
    accept: HeaderValue,
    on_upgrade: OnUpgrade,
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        let refuse = |status: StatusCode, why: &str| (status, why.to_owned()).into_response();
        if parts.method != Method::GET {
            return Err(refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                "a WebSocket upgrade is a GET",
            ));
        }
        if !has_token(&parts.headers, header::CONNECTION, "upgrade")
            || !has_token(&parts.headers, header::UPGRADE, "websocket")
        {
            return Err(refuse(
                StatusCode::UPGRADE_REQUIRED,
                "this address takes WebSocket connections only",
            ));
        }
        if parts.headers.get(header::SEC_WEBSOCKET_VERSION) != Some(&HeaderValue::from_static("13"))
        {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "WebSocket version 13 is required",
            ));
        }
        let Some(key) = parts.headers.get(header::SEC_WEBSOCKET_KEY) else {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "the Sec-WebSocket-Key header is missing",
            ));
        };
        let accept = HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
            .expect("base64 is a valid header value");
        let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
            return Err(refuse(
                StatusCode::UPGRADE_REQUIRED,
                "this connection cannot be upgraded",
            ));
        };
        Ok(Upgrade { accept, on_upgrade })
    }
}

impl Upgrade {
    /// Answers 101 and runs `serve` on the socket, as one of `tasks`, once the
    /// client has switched. `queue`: the events its mailbox holds at most.
    pub fn on_upgrade<F, Fut>(
        self,
        tasks: &TaskTracker,
        config: WebSocketConfig,
        queue: usize,
        serve: F,
    ) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let on_upgrade = self.on_upgrade;
        tasks.spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let (read, write) = tokio::io::split(TokioIo::new(upgraded));
                    let out = Arc::new(Mailbox::new(queue, Box::pin(write)));
                    let duplex = Duplex {
                        read,
                        out: out.clone(),
                    };
                    let ws =
                        WebSocketStream::from_raw_socket(duplex, Role::Server, Some(config)).await;
                    serve(Socket { ws, out }).await;
                }
                Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
            }
        });
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, self.accept);
        response
    }
}

/// Whether a comma-separated header lists `token` (case-insensitively).
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_tokens_are_found_in_lists_and_any_case() {
        let mut h = HeaderMap::new();
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(has_token(&h, header::CONNECTION, "upgrade"));
        assert!(!has_token(&h, header::CONNECTION, "close"));
        assert!(!has_token(&h, header::UPGRADE, "websocket"));
    }

    #[test]
    fn the_accept_key_is_the_rfcs() {
        // RFC 6455 §1.3's example.
        assert_eq!(
            derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
