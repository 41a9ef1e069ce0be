//! A Rust client for BandSync, used by the project's tests and by the load
//! generator: create or join a session over HTTP, then speak the WebSocket
//! protocol (docs/protocol.md) with clock sync and a local timeline estimate.

mod clock;
mod connect;
mod http;

pub use clock::{ClockSync, SETTLE_EVERY, SETTLE_PINGS};
pub use connect::{Backoff, ConnectOptions, tcp_connect};
pub use http::{Api, ApiError, Joined};

use bandsync_protocol::command::MAX_REPORTED_MS;
use bandsync_protocol::wire::ErrorMsg;
use bandsync_protocol::{
    Change, Command, EventMsg, Micros, ServerMsg, SessionState, Timeline, now_us,
};
use futures::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad gateway address {0:?} (expected http://host:port)")]
    BadAddress(String),
    #[error("a member token is letters, digits, '-', '_' and '.'")]
    BadToken,
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("server sent something that is not a BandSync message: {0}")]
    Decode(String),
    #[error("connection closed{}", .0.as_ref().map(|f| format!(" ({} {})", f.code, f.reason)).unwrap_or_default())]
    Closed(Option<CloseFrame>),
    #[error("the server sent {0} before the welcome")]
    NoWelcome(String),
    #[error("timed out")]
    Timeout,
    #[error(
        "event {seq} leaves out members or a setlist this connection never received \
         (it missed the event that changed them); reconnect for a fresh welcome"
    )]
    MissedChange { seq: u64 },
}

/// One member's live connection.
pub struct Connection {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The session as last seen (welcome, then every event), members and setlist included.
    pub state: SessionState,
    /// The newest timeline: from the state, or a newer tick.
    pub timeline: Timeline,
    pub member: bandsync_protocol::MemberId,
    pub clock: ClockSync,
    /// Highest owner epoch seen; older messages are dropped.
    pub epoch: u64,
    /// Messages read while waiting for something else (e.g. during clock sync).
    backlog: std::collections::VecDeque<ServerMsg>,
    /// Server time at which the last tick was received and its seq.
    pub last_tick: Option<(Micros, u64)>,
    /// The newest member token the gateway handed out (`token` messages): the
    /// one to reconnect with.
    pub token: String,
}

/// The WebSocket subprotocol BandSync speaks; a client offers it with a
/// second one, [`TOKEN_SUBPROTOCOL_PREFIX`] and its member token, which keeps
/// the token out of URLs (and so out of proxies' access logs).
pub const SUBPROTOCOL: &str = "bandsync";
pub const TOKEN_SUBPROTOCOL_PREFIX: &str = "bandsync.token.";

/// The upgrade request for `ws://host:port/ws` (for an `http://host:port`
/// base), offering the member's token.
pub fn ws_request(base: &str, token: &str) -> Result<Request, ClientError> {
    let base = base.trim_end_matches('/').replacen("http://", "ws://", 1);
    let mut request = format!("{base}/ws")
        .into_client_request()
        .map_err(|_| ClientError::BadAddress(base.clone()))?;
    let offered = format!("{SUBPROTOCOL}, {TOKEN_SUBPROTOCOL_PREFIX}{token}")
        .parse()
        .map_err(|_| ClientError::BadToken)?;
    request
        .headers_mut()
        .insert("sec-websocket-protocol", offered);
    Ok(request)
}

impl Connection {
    /// Connects and waits for the welcome.
    pub async fn connect(base: &str, token: &str) -> Result<Self, ClientError> {
        Self::connect_with(base, token, &ConnectOptions::default()).await
    }

    /// Connects with options (source address, light buffers, welcome deadline)
    /// and waits for the welcome.
    pub async fn connect_with(
        base: &str,
        token: &str,
        options: &ConnectOptions,
    ) -> Result<Self, ClientError> {
        let mut ws = connect::open(base, token, options).await?;
        let first = tokio::time::timeout(options.welcome_timeout(), ws.next())
            .await
            .map_err(|_| ClientError::Timeout)?;
        let msg = match first {
            Some(Ok(Message::Text(t))) => parse(&t)?,
            Some(Ok(Message::Close(f))) => return Err(ClientError::Closed(f)),
            Some(Ok(other)) => return Err(ClientError::NoWelcome(format!("{other:?}"))),
            Some(Err(e)) => return Err(e.into()),
            None => return Err(ClientError::Closed(None)),
        };
        match msg {
            ServerMsg::Welcome { member, state, .. } => Ok(Self {
                ws,
                timeline: state.timeline.clone(),
                state: *state,
                member,
                clock: ClockSync::default(),
                epoch: 0,
                backlog: Default::default(),
                last_tick: None,
                token: token.to_owned(),
            }),
            ServerMsg::Error(e) => Err(ClientError::NoWelcome(format!(
                "error {}: {}",
                e.code.as_str(),
                e.message
            ))),
            other => Err(ClientError::NoWelcome(format!("{other:?}"))),
        }
    }

    /// Sends a command (with an optional client id echoed in errors).
    pub async fn send(&mut self, command: &Command, id: Option<&str>) -> Result<(), ClientError> {
        let mut value =
            serde_json::to_value(command).map_err(|e| ClientError::Decode(e.to_string()))?;
        if let (Some(id), Some(obj)) = (id, value.as_object_mut()) {
            obj.insert("id".into(), id.into());
        }
        self.send_raw(value.to_string()).await
    }

    /// Sends any text frame as it is (for tests of bad input).
    pub async fn send_raw(&mut self, text: String) -> Result<(), ClientError> {
        self.ws.send(Message::text(text)).await.map_err(Into::into)
    }

    /// The next message, applied to the local view: events replace the state,
    /// ticks refresh the timeline, pongs feed the clock. Stale epochs and old
    /// events are skipped, as a real client must.
    pub async fn next(&mut self) -> Result<ServerMsg, ClientError> {
        if let Some(msg) = self.backlog.pop_front() {
            return Ok(msg);
        }
        loop {
            let msg = self.next_raw().await?;
            if self.absorb(&msg)? {
                return Ok(msg);
            }
        }
    }

    /// Every message as it arrives, with whether the local view took it: false
    /// for what `next` skips (an older owner's epoch, an event already seen).
    /// For tests that must check what a client was sent, not only what it used.
    pub async fn next_unfiltered(&mut self) -> Result<(ServerMsg, bool), ClientError> {
        if let Some(msg) = self.backlog.pop_front() {
            return Ok((msg, true));
        }
        let msg = self.next_raw().await?;
        let taken = self.absorb(&msg)?;
        Ok((msg, taken))
    }

    /// Like `next`, with a deadline.
    pub async fn next_within(&mut self, limit: Duration) -> Result<ServerMsg, ClientError> {
        tokio::time::timeout(limit, self.next())
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    /// Waits for the first message matching `pred`, keeping the view up to date.
    pub async fn wait_for(
        &mut self,
        limit: Duration,
        mut pred: impl FnMut(&ServerMsg) -> bool,
    ) -> Result<ServerMsg, ClientError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let msg = self.next_within(left).await?;
            if pred(&msg) {
                return Ok(msg);
            }
        }
    }

    /// Waits for the next event with a change of `kind` (`Change::kind`, e.g.
    /// "tempo"): the event and that change.
    pub async fn wait_for_change(
        &mut self,
        limit: Duration,
        kind: &str,
    ) -> Result<(EventMsg, Change), ClientError> {
        let change_of = |e: &EventMsg| e.changes.iter().find(|c| c.kind() == kind).cloned();
        let msg = self
            .wait_for(
                limit,
                |m| matches!(m, ServerMsg::Event(e) if change_of(e).is_some()),
            )
            .await?;
        match msg {
            ServerMsg::Event(e) => {
                let change = change_of(&e).expect("matched");
                Ok((*e, change))
            }
            _ => unreachable!("matched an event"),
        }
    }

    /// Reads messages until this connection's view of the session satisfies
    /// `pred` (at once if it already does), with a deadline.
    pub async fn wait_until(
        &mut self,
        limit: Duration,
        mut pred: impl FnMut(&SessionState) -> bool,
    ) -> Result<(), ClientError> {
        let deadline = tokio::time::Instant::now() + limit;
        while !pred(&self.state) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            self.next_within(left).await?;
        }
        Ok(())
    }

    /// Returns false for messages a client must ignore.
    fn absorb(&mut self, msg: &ServerMsg) -> Result<bool, ClientError> {
        match msg {
            ServerMsg::Event(e) => {
                if e.epoch < self.epoch || e.seq <= self.state.seq {
                    return Ok(false);
                }
                self.state = e
                    .state_after(&self.state)
                    .ok_or(ClientError::MissedChange { seq: e.seq })?;
                self.epoch = e.epoch;
                self.timeline = e.state.timeline.clone();
            }
            ServerMsg::Tick(t) => {
                if t.epoch < self.epoch {
                    return Ok(false);
                }
                self.epoch = t.epoch;
                self.timeline = t.timeline.clone();
                self.last_tick = Some((t.server_time, t.seq));
            }
            ServerMsg::Pong { t0, server_time } => {
                self.clock.add_sample(*t0 as Micros, *server_time, now_us());
            }
            ServerMsg::Token { token, .. } => self.token.clone_from(token),
            _ => {}
        }
        Ok(true)
    }

    /// Sends `n` pings one after another and folds the pongs into the clock.
    /// Other messages that arrive meanwhile are kept for `next`.
    pub async fn sync_clock(&mut self, n: usize) -> Result<(), ClientError> {
        for _ in 0..n {
            let t0 = now_us();
            self.send_raw(format!(r#"{{"type":"ping","t0":{t0}}}"#))
                .await?;
            loop {
                let msg = tokio::time::timeout(Duration::from_secs(5), self.next_raw())
                    .await
                    .map_err(|_| ClientError::Timeout)??;
                let is_pong =
                    matches!(msg, ServerMsg::Pong { t0: echoed, .. } if echoed as Micros == t0);
                if self.absorb(&msg)? && !is_pong {
                    self.backlog.push_back(msg);
                }
                if is_pong {
                    break;
                }
            }
        }
        Ok(())
    }

    async fn next_raw(&mut self) -> Result<ServerMsg, ClientError> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) => return parse(&t),
                Some(Ok(Message::Close(f))) => return Err(ClientError::Closed(f)),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
                None => return Err(ClientError::Closed(None)),
            }
        }
    }

    /// The `report` of this connection's quality (docs/protocol.md, "Connection
    /// quality"): the lowest recent round trip and the clock estimate's
    /// uncertainty now, in ms; `None` before the first pong.
    pub fn quality_report(&self) -> Option<Command> {
        let ms = |us: Micros| (us as f64 / 1_000.0).clamp(0.0, MAX_REPORTED_MS);
        Some(Command::Report {
            rtt_ms: ms(self.clock.min_rtt()?),
            clock_error_ms: ms(self.clock.uncertainty(now_us())?),
        })
    }

    /// Server time now, as this client estimates it.
    pub fn server_now(&self) -> Micros {
        self.clock.to_server(now_us())
    }

    /// Beat position this client would show/click at server time `t`.
    pub fn position_at(&self, t: Micros) -> f64 {
        self.timeline.position(t)
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// The error in a server message, if it is one.
pub fn as_error(msg: &ServerMsg) -> Option<&ErrorMsg> {
    match msg {
        ServerMsg::Error(e) => Some(e),
        _ => None,
    }
}

fn parse(text: &str) -> Result<ServerMsg, ClientError> {
    ServerMsg::parse(text).map_err(|e| {
        ClientError::Decode(format!(
            "{e}: {}",
            text.chars().take(200).collect::<String>()
        ))
    })
}
