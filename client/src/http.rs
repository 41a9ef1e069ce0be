//! The two HTTP calls: create a session, join one by code. Plain HTTP/1.1 on
//! loopback or behind a TLS-terminating proxy; hyper does the protocol.

use bandsync_protocol::{JoinCode, MemberId, SessionId};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Joined {
    pub session: SessionId,
    pub code: JoinCode,
    pub member: MemberId,
    pub token: String,
    /// When the token lapses unless refreshed over the socket, Unix seconds.
    pub token_expires_at: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("HTTP transport: {0}")]
    Transport(String),
    /// The gateway answered with an error: its status, code and sentence.
    #[error("{status} {code}: {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
}

/// A gateway's HTTP API at `http://host:port`.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    /// Source address for the requests (see `ConnectOptions::local_ip`).
    local_ip: Option<std::net::IpAddr>,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
}

impl Api {
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into().trim_end_matches('/').to_owned(),
            local_ip: None,
        }
    }

    /// The same API, reached from `ip` (e.g. one of 127.0.0.0/8).
    pub fn with_local_ip(mut self, ip: std::net::IpAddr) -> Self {
        self.local_ip = Some(ip);
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Creates a session; the caller is its leader.
    pub async fn create(&self, name: &str) -> Result<Joined, ApiError> {
        self.post("/api/sessions", serde_json::json!({ "name": name }))
            .await
    }

    /// Joins the session behind `code`.
    pub async fn join(&self, code: &str, name: &str) -> Result<Joined, ApiError> {
        self.post(
            "/api/join",
            serde_json::json!({ "code": code, "name": name }),
        )
        .await
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> Result<Joined, ApiError> {
        let transport = |e: &dyn std::fmt::Display| ApiError::Transport(e.to_string());
        let authority = self
            .base
            .strip_prefix("http://")
            .ok_or_else(|| transport(&"base must start with http://"))?;
        let addr = tokio::net::lookup_host(authority)
            .await
            .map_err(|e| transport(&e))?
            .next()
            .ok_or_else(|| transport(&"the gateway address does not resolve"))?;
        let stream = crate::connect::tcp_connect(addr, self.local_ip)
            .await
            .map_err(|e| transport(&e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| transport(&e))?;
        tokio::spawn(conn);
        let req = Request::post(path)
            .header("host", authority)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| transport(&e))?;
        let res = sender.send_request(req).await.map_err(|e| transport(&e))?;
        let status = res.status().as_u16();
        let bytes = res
            .into_body()
            .collect()
            .await
            .map_err(|e| transport(&e))?
            .to_bytes();
        if (200..300).contains(&status) {
            return serde_json::from_slice(&bytes).map_err(|e| transport(&e));
        }
        let err: ErrorBody = serde_json::from_slice(&bytes).map_err(|e| transport(&e))?;
        Err(ApiError::Refused {
            status,
            code: err.code,
            message: err.message,
        })
    }
}
