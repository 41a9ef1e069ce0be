//! One member's WebSocket: welcome, clock-sync pongs, commands to the bus, and
//! the hub's events and ticks back out. One task per socket keeps memory per
//! idle connection small; a client only ever waits on its own socket.

use crate::AppState;
use crate::commands::{COMMAND_PATIENCE, CommandQueue, UNREACHABLE};
use crate::hub::ClientHandle;
use crate::mailbox::{Delivery, End, Mailbox, text_frame};
use crate::ratelimit::{ERROR_INTERVAL, RateLimit};
use crate::reports::ReportGate;
use crate::token::Claims;
use crate::upgrade::Socket;
use bandsync_nats::bus::BusError;
use bandsync_nats::service::random_id;
use bandsync_nats::state::not_leader;
use bandsync_nats::wire::ErrorMsg;
use bandsync_nats::{
    ClientMsg, Command, CommandEnvelope, CommandId, ConnId, ErrorCode, ServerMsg, SessionState,
    Subjects, now_us, shard_of,
};
use futures::{FutureExt, SinkExt, StreamExt};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Bytes, Message, Utf8Bytes};

/// A socket that cannot take a frame for this long is given up on.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closing socket waits for the client's close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// How long a connection closed by the gateway's shutdown waits before its
/// `bye`: clients reconnect within a second (the web client after 0.2–0.8 s).
/// Within `SHUTDOWN_GRACE` with the second a socket's close takes.
const MOVING_GRACE: std::time::Duration = std::time::Duration::from_millis(1500);

/// How a connection ended when nothing failed.
#[derive(Debug)]
enum Ended {
    /// The client closed its socket.
    ClientClosed,
    /// The session does not exist (any more).
    UnknownSession,
    /// The client sent a message over the limit.
    TooLarge,
    /// The hub dropped the client (too slow, or the session is full).
    Kicked(ErrorCode),
    /// The gateway is stopping; the client was told to reconnect.
    ShuttingDown,
}

impl Ended {
    fn reason(&self) -> &'static str {
        match self {
            Ended::ClientClosed => "closed by the client",
            Ended::UnknownSession => "unknown session",
            Ended::TooLarge => "message too large",
            Ended::Kicked(code) => code.as_str(),
            Ended::ShuttingDown => "gateway shutting down",
        }
    }
}

/// A connection that ended because something failed.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("reading the session state for the welcome")]
    ReadState(#[source] ReadStateError),
    #[error("announcing the member to the session owner")]
    Hello(#[source] PublishError),
    #[error("writing to the socket")]
    Write(#[from] WriteError),
    #[error("reading from the socket")]
    Read(#[source] tungstenite::Error),
}

/// Reading a session's state from the sessions bucket.
#[derive(Debug, thiserror::Error)]
enum ReadStateError {
    #[error("getting the session's key from KV")]
    Kv(#[source] async_nats::jetstream::kv::EntryError),
    #[error("decoding the session state")]
    Decode(#[source] serde_json::Error),
}

/// Writing one message to a client's socket.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("sending a frame")]
    Socket(#[source] std::io::Error),
    #[error("the socket took no frame for {0:?}")]
    TimedOut(Duration),
    #[error("kicked while a write waited on the socket")]
    Kicked,
}

/// Publishing a member's command to the session's shard.
#[derive(Debug, thiserror::Error)]
#[error("publishing a {command} command")]
pub(crate) struct PublishError {
    command: &'static str,
    #[source]
    source: BusError,
}

/// Serves one member's socket until it closes. Everything the connection holds
/// goes into one `Conn` first: the arguments of an async fn keep their own room
/// in its future for as long as it runs, even once moved elsewhere.
pub fn serve(socket: Socket, app: Arc<AppState>, claims: Claims) -> impl Future<Output = ()> {
    Conn {
        app,
        claims,
        socket,
        kick: CancellationToken::new(),
        commands: None,
        reports: ReportGate::default(),
        refresh_at: Instant::now(),
    }
    .serve()
}

struct Conn {
    app: Arc<AppState>,
    claims: Claims,
    socket: Socket,
    /// Cancelled by the hub when this client must go (e.g. it fell behind):
    /// it also interrupts a write stuck on a socket that does not drain.
    kick: CancellationToken,
    /// The member's commands on their way to the bus, once it has sent one.
    commands: Option<CommandQueue>,
    /// Which quality reports are news for the owner.
    reports: ReportGate,
    /// When the member's token is next refreshed: it was handed a fresh one
    /// on connecting, and gets another on a ping after half its lifetime.
    refresh_at: Instant,
}

impl Conn {
    async fn serve(mut self) {
        let session = self.claims.session.clone();
        let mailbox = self.socket.out.clone();
        let joined = Box::pin(self.app.hub.join(&session, &self.claims.member, mailbox)).await;
        let handle = match joined {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = &e as &dyn std::error::Error, "cannot join the hub");
                self.close(
                    ErrorCode::Unavailable,
                    "the message bus is unavailable; try again",
                )
                .await;
                return;
            }
        };
        self.kick = handle.mailbox.kicked().clone();
        let conn = handle.conn;
        metrics::gauge!("bandsync_gateway_connections").increment(1);
        // Matched in place, not bound to a local: a local would keep its room
        // in this future across the awaits below.
        let mut moving = false;
        let mut replaced = false;
        match self.run(handle).await {
            Ok(ended) => {
                moving = matches!(ended, Ended::ShuttingDown);
                // The member's new connection took over: its hello is the
                // member's news, and a bye from this one could land first.
                replaced = matches!(ended, Ended::Kicked(ErrorCode::Replaced));
                tracing::debug!(member = %self.claims.member, reason = ended.reason(), "connection ended")
            }
            // The gateway's own dependencies failed: worth an operator's look.
            Err(e @ (ConnError::ReadState(_) | ConnError::Hello(_))) => tracing::warn!(
                member = %self.claims.member,
                error = &e as &dyn std::error::Error,
                "connection failed"
            ),
            // The client's network or device: routine.
            Err(e) => tracing::debug!(
                member = %self.claims.member,
                error = &e as &dyn std::error::Error,
                "connection lost"
            ),
        }
        metrics::gauge!("bandsync_gateway_connections").decrement(1);
        Box::pin(self.app.hub.leave(&session, conn)).await;
        if replaced {
            return;
        }
        if moving {
            // Told to reconnect, the member is moving to another gateway, whose
            // hello replaces this connection: a bye landing first would show the
            // band a member away for a moment. After the wait it is stale, and
            // ignored, unless the member did not come back.
            tokio::time::sleep(MOVING_GRACE).await;
        }
        // Best effort: tell the owner this connection is gone (a stale bye is ignored).
        let bye = Command::Bye {
            conn: ConnId::new(&self.app.gateway_id, conn),
        };
        match self.commands.take() {
            // Behind the member's waiting commands, never ahead of them.
            Some(queue) => Box::pin(queue.finish(bye)).await,
            None => {
                if let Err(e) = Box::pin(publish(&self.app, &self.claims, bye, None)).await {
                    tracing::warn!(error = &e as &dyn std::error::Error, "cannot say bye");
                }
            }
        }
    }

    async fn run(&mut self, handle: ClientHandle) -> Result<Ended, ConnError> {
        if let Some(ended) = Box::pin(self.greet(&handle)).await? {
            return Ok(ended);
        }
        let mut limit = RateLimit::new(self.app.config.rate_limit, Instant::now());
        let mut last_limit_error: Option<Instant> = None;
        if self.app.shutdown.is_cancelled() {
            handle.mailbox.shut_down(); // it began before we joined the hub
        }
        loop {
            tokio::select! {
                biased;
                delivery = handle.mailbox.next() => match delivery {
                    Delivery::Write => self.drain().await?,
                    Delivery::End(End::Kicked(kick)) => {
                        self.close(kick.code, &kick.reason).await;
                        return Ok(Ended::Kicked(kick.code));
                    }
                    Delivery::End(End::ShuttingDown) => {
                        Box::pin(self.restart()).await;
                        return Ok(Ended::ShuttingDown);
                    }
                },
                incoming = self.socket.ws.next() => {
                    let now = Instant::now();
                    match incoming {
                        Some(Ok(Message::Text(text))) if text.len() > self.app.config.max_frame_bytes => {
                            let max = self.app.config.max_frame_bytes;
                            self.close_code(CloseCode::Size, ErrorCode::TooLarge, &format!("message larger than {max} bytes")).await;
                            return Ok(Ended::TooLarge);
                        }
                        Some(Ok(Message::Text(text))) => {
                            if !limit.allow(now) {
                                metrics::counter!("bandsync_gateway_rate_limited_total").increment(1);
                                if limit.flooding() {
                                    metrics::counter!("bandsync_gateway_floods_closed_total").increment(1);
                                    // Told why; the rest of the flood is then
                                    // discarded unread (parsing it was most of
                                    // what a flooder cost the gateway).
                                    let why = "far too many messages; disconnected";
                                    Box::pin(async {
                                        goodbye(&mut self.socket, CloseCode::Policy, ErrorCode::RateLimited, why).await;
                                        discard_until_closed(&mut self.socket).await;
                                    })
                                    .await;
                                    return Ok(Ended::Kicked(ErrorCode::RateLimited));
                                }
                                if last_limit_error.is_none_or(|t| now.duration_since(t) >= ERROR_INTERVAL) {
                                    last_limit_error = Some(now);
                                    Box::pin(self.send_error(ErrorCode::RateLimited, "too many messages; slow down", None)).await?;
                                }
                                continue;
                            }
                            // Boxed, like the other rare paths below: a future
                            // inlined here is room in every connection's state.
                            Box::pin(self.handle_text(&text, &handle)).await?;
                        }
                        Some(Ok(Message::Binary(_))) => {
                            Box::pin(self.send_error(ErrorCode::BadJson, "send JSON text frames, not binary", None)).await?;
                        }
                        Some(Ok(Message::Close(_))) | None => return Ok(Ended::ClientClosed),
                        Some(Ok(_)) => {} // WebSocket ping/pong are answered by the library
                        Some(Err(e)) => {
                            if is_too_large(&e) {
                                let limit = self.app.config.max_frame_bytes;
                                self.close_code(CloseCode::Size, ErrorCode::TooLarge, &format!("message larger than {limit} bytes")).await;
                                return Ok(Ended::TooLarge);
                            }
                            return Err(ConnError::Read(e));
                        }
                    }
                }
            }
        }
    }

    /// The welcome (the session's state), then `hello` to the owner. Boxed:
    /// it runs once, and what it holds across its awaits (the state, an error
    /// while the socket closes) would otherwise be room in every connection's
    /// future. `Some` when the connection ends here without a failure.
    async fn greet(&mut self, handle: &ClientHandle) -> Result<Option<Ended>, ConnError> {
        let mut state = match read_state(&self.app, &self.claims).await {
            Ok(Some(state)) => state,
            Ok(None) => {
                let reason = "this session has ended or never existed";
                self.close(ErrorCode::UnknownSession, reason).await;
                return Ok(Some(Ended::UnknownSession));
            }
            Err(e) => {
                let reason = "session state is unavailable; try again";
                self.close(ErrorCode::Unavailable, reason).await;
                return Err(ConnError::ReadState(e));
            }
        };
        // Early refusals; the owner refuses the hello too, whatever the timing.
        let me = &self.claims.member;
        let refused = if state.removed.contains(me) {
            Some(ErrorCode::Removed)
        } else if state.joining_closed && state.member(me).is_none() {
            Some(ErrorCode::JoiningClosed)
        } else {
            None
        };
        if let Some(code) = refused {
            self.close(code, crate::hub::refusal(code)).await;
            return Ok(Some(Ended::Kicked(code)));
        }
        let seq = state.seq;
        handle.saw_state(&state);
        state.hide_internals();
        self.send_msg(&ServerMsg::Welcome {
            member: self.claims.member.clone(),
            server_time: now_us(),
            state: Box::new(state),
        })
        .await?;
        // From here on the hub writes events newer than the welcome's state.
        self.socket.out.open(seq);
        self.refresh_token().await?;
        let hello = Command::Hello {
            name: self.claims.name.clone(),
            conn: ConnId::new(&self.app.gateway_id, handle.conn),
        };
        if let Err(e) = publish(&self.app, &self.claims, hello, None).await {
            let reason = "cannot reach the session owner; try again";
            self.close(ErrorCode::Unavailable, reason).await;
            return Err(ConnError::Hello(e));
        }
        Ok(None)
    }

    async fn handle_text(&mut self, text: &str, handle: &ClientHandle) -> Result<(), WriteError> {
        match ClientMsg::parse(text) {
            Ok(ClientMsg::Ping { t0 }) => {
                self.send_msg(&ServerMsg::Pong {
                    t0,
                    server_time: now_us(),
                })
                .await?;
                if Instant::now() >= self.refresh_at {
                    Box::pin(self.refresh_token()).await?;
                }
                Ok(())
            }
            Ok(ClientMsg::Command { id, command }) => {
                if let Command::Report {
                    rtt_ms,
                    clock_error_ms,
                } = command
                    && !self.reports.pass(Instant::now(), rtt_ms, clock_error_ms)
                {
                    metrics::counter!("bandsync_gateway_reports_held_total").increment(1);
                    return Ok(());
                }
                if command.leader_only() && !handle.leadership.leads(&self.claims.member) {
                    let refusal = not_leader();
                    return self.send_error(refusal.code, &refusal.message, id).await;
                }
                let (app, claims) = (&self.app, &self.claims);
                let queue = self
                    .commands
                    .get_or_insert_with(|| CommandQueue::start(app, claims, &handle.mailbox));
                if queue.push(command, id.clone()) {
                    return Ok(());
                }
                metrics::counter!("bandsync_gateway_publish_failures_total").increment(1);
                self.send_error(ErrorCode::Unavailable, UNREACHABLE, id)
                    .await
            }
            Err(err) => self.send_msg(&ServerMsg::Error(err)).await,
        }
    }

    /// Hands the member a fresh token, signed with the current key.
    async fn refresh_token(&mut self) -> Result<(), WriteError> {
        let tokens = &self.app.tokens;
        let c = &self.claims;
        let (token, claims) = tokens.sign(&c.session, &c.member, &c.name, SystemTime::now());
        self.refresh_at = Instant::now() + tokens.lifetime() / 2;
        self.send_msg(&ServerMsg::Token {
            token,
            expires_at: claims.exp,
        })
        .await
    }

    async fn send_msg(&mut self, msg: &ServerMsg) -> Result<(), WriteError> {
        self.send(frame_of(msg)).await
    }

    async fn send_error(
        &mut self,
        code: ErrorCode,
        message: &str,
        id: Option<String>,
    ) -> Result<(), WriteError> {
        self.send_msg(&ServerMsg::Error(ErrorMsg::new(code, message, id)))
            .await
    }

    /// One frame of the connection's own to the client, behind whatever the
    /// socket has not taken yet.
    async fn send(&mut self, frame: Bytes) -> Result<(), WriteError> {
        self.socket.out.enqueue(frame);
        self.write_out(Waiting::Unsent).await
    }

    /// What the hub left in the mailbox because the socket could not take it.
    async fn drain(&mut self) -> Result<(), WriteError> {
        self.write_out(Waiting::All).await
    }

    /// Waits for the socket to take what waits, given up after `SEND_TIMEOUT`
    /// or when the hub kicks this client. A write given up for a kick is no
    /// failure: the kick waits in the mailbox, whose end comes before anything
    /// else, and the connection closes with its reason (`slow_client` for a
    /// socket that stopped draining) instead of dropping the socket unexplained.
    async fn write_out(&mut self, waiting: Waiting) -> Result<(), WriteError> {
        let started = Instant::now();
        let sent = write_out(&self.socket.out, waiting, SEND_TIMEOUT, Some(&self.kick)).await;
        self.app
            .socket_write
            .record(started.elapsed().as_secs_f64());
        match sent {
            Err(WriteError::Kicked) => Ok(()),
            sent => sent,
        }
    }

    async fn close(&mut self, code: ErrorCode, reason: &str) {
        self.close_code(CloseCode::Policy, code, reason).await;
    }

    /// Sends an error frame, then a close frame whose reason is the error code,
    /// and waits briefly for the client's close so it reads both before the
    /// TCP connection goes. Boxed: it runs once per connection at most.
    async fn close_code(&mut self, ws_code: CloseCode, code: ErrorCode, reason: &str) {
        Box::pin(async {
            // Not `send`: a kicked client is still told why, if its socket takes it.
            goodbye(&mut self.socket, ws_code, code, reason).await;
            linger(&mut self.socket).await;
        })
        .await;
    }

    /// The gateway is stopping: tell the client to connect again, close, and
    /// wait briefly for the client's close (as `close_code` does).
    async fn restart(&mut self) {
        let msg = ServerMsg::Reconnect {
            reason: "gateway shutting down; connect again".into(),
        };
        // Each write given up after `CLOSE_LINGER`, not `SEND_TIMEOUT`: a stuck
        // socket must not hold the gateway's shutdown past its grace.
        self.socket.out.enqueue(frame_of(&msg));
        let _ = write_out(&self.socket.out, Waiting::Unsent, CLOSE_LINGER, None).await;
        let close = CloseFrame {
            code: CloseCode::Restart,
            reason: Utf8Bytes::from_static("gateway shutting down"),
        };
        send_close(&mut self.socket, close).await;
        linger(&mut self.socket).await;
    }
}

/// A server message as a WebSocket text frame.
fn frame_of(msg: &ServerMsg) -> Bytes {
    let text = serde_json::to_vec(msg).expect("server messages serialise");
    text_frame(&text)
}

/// What a write waits for the socket to take.
#[derive(Clone, Copy)]
enum Waiting {
    /// The bytes already taken for it (the connection's own frames).
    Unsent,
    /// Those, then what the hub queued (`Mailbox::poll_drain`).
    All,
}

/// Waits until the socket took what waits, given up after `limit` or when
/// `abort` is cancelled. Most writes complete at once; only one that waits on
/// the socket arms the timer and the race.
async fn write_out(
    out: &Mailbox,
    waiting: Waiting,
    limit: Duration,
    abort: Option<&CancellationToken>,
) -> Result<(), WriteError> {
    let mut written = std::future::poll_fn(|cx| match waiting {
        Waiting::Unsent => out.poll_flush(cx),
        Waiting::All => out.poll_drain(cx),
    });
    if let Some(done) = (&mut written).now_or_never() {
        return done.map_err(WriteError::Socket);
    }
    // Boxed: the timer and the race would otherwise take room in every
    // connection's future, used or not.
    Box::pin(async move {
        let timed = tokio::time::timeout(limit, written);
        let result = match abort {
            Some(abort) => tokio::select! {
                biased;
                _ = abort.cancelled() => return Err(WriteError::Kicked),
                result = timed => result,
            },
            None => timed.await,
        };
        match result {
            Ok(sent) => sent.map_err(WriteError::Socket),
            Err(_) => Err(WriteError::TimedOut(limit)),
        }
    })
    .await
}

/// Sends a close frame (through tungstenite, which then expects the client's
/// close), given up after `CLOSE_LINGER`.
async fn send_close(socket: &mut Socket, frame: CloseFrame) {
    let _ = tokio::time::timeout(CLOSE_LINGER, socket.ws.send(Message::Close(Some(frame)))).await;
}

/// Reads until the client's close frame, for at most `CLOSE_LINGER`: a TCP
/// connection dropped with the client's data unread is reset, and the client
/// could lose the frames that said why before it read them.
async fn linger(socket: &mut Socket) {
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while let Some(Ok(msg)) = socket.ws.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Reads and drops whatever the client still sends, without parsing it, until
/// it closes or `CLOSE_LINGER` passes (as `linger`, for a client whose
/// messages are not worth reading).
async fn discard_until_closed(socket: &mut Socket) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0; 4096];
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while let Ok(n) = socket.ws.get_mut().read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Publishes a member's command to its session's shard, waiting out a command
/// stream without a leader for up to `COMMAND_PATIENCE`.
pub(crate) async fn publish(
    app: &AppState,
    claims: &Claims,
    command: Command,
    client_ref: Option<String>,
) -> Result<(), PublishError> {
    let command_kind = command.kind();
    let id = CommandId::parse(random_id(16)).expect("random ids are valid");
    let envelope = CommandEnvelope {
        id: id.clone(),
        session: claims.session.clone(),
        actor: claims.member.clone(),
        gateway: app.gateway_id.clone(),
        client_ref,
        sent_at: now_us(),
        command,
    };
    let shard = shard_of(&claims.session, app.config.shards);
    let subject = app.bus.subjects.cmd(shard, &claims.session);
    let payload = serde_json::to_vec(&envelope).expect("commands serialise");
    app.bus
        .publish_durable_patiently(subject, id.as_str(), payload.into(), COMMAND_PATIENCE)
        .await
        .map(|_| ())
        .map_err(|source| {
            metrics::counter!("bandsync_gateway_publish_failures_total").increment(1);
            PublishError {
                command: command_kind,
                source,
            }
        })
}

fn is_too_large(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Capacity(_))
}

/// Tells a client why it cannot stay, then closes with the error code as the reason.
pub async fn refuse(mut socket: Socket, code: ErrorCode, reason: &str) {
    goodbye(&mut socket, CloseCode::Policy, code, reason).await;
}

/// An error frame saying why, then a close frame whose reason is the error code;
/// each write is given up after `CLOSE_LINGER`.
async fn goodbye(socket: &mut Socket, ws_code: CloseCode, code: ErrorCode, reason: &str) {
    socket.out.closing(code, reason);
    let err = ServerMsg::Error(ErrorMsg::new(code, reason, None));
    socket.out.enqueue(frame_of(&err));
    let _ = write_out(&socket.out, Waiting::Unsent, CLOSE_LINGER, None).await;
    let frame = CloseFrame {
        code: ws_code,
        reason: Utf8Bytes::from(code.as_str()),
    };
    send_close(socket, frame).await;
}

/// The session's current state from KV (`None` if it does not exist).
async fn read_state(
    app: &AppState,
    claims: &Claims,
) -> Result<Option<SessionState>, ReadStateError> {
    let shard = shard_of(&claims.session, app.config.shards);
    let key = Subjects::session_key(shard, &claims.session);
    let entry = app
        .bus
        .sessions
        .get(key)
        .await
        .map_err(ReadStateError::Kv)?;
    match entry {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(ReadStateError::Decode),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every open socket holds one connection future: 1,784 bytes with rustc
    /// 1.95 (2,144 before the welcome and hello moved into the boxed `greet`).
    /// A rare path inlined again, or an error held across an await, adds
    /// hundreds of bytes to every idle socket.
    const SERVE_FUTURE_LIMIT: usize = 2048;

    #[test]
    fn the_connection_future_stays_small() {
        fn future_size<F, Fut>(_: F) -> usize
        where
            F: FnOnce(Socket, Arc<AppState>, Claims) -> Fut,
        {
            std::mem::size_of::<Fut>()
        }
        let size = future_size(serve);
        println!("connection future: {size} bytes");
        assert!(
            size <= SERVE_FUTURE_LIMIT,
            "the connection future grew to {size} bytes (limit {SERVE_FUTURE_LIMIT})"
        );
    }
}
