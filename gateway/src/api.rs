//! HTTP API: create a session, join one with its code, open the WebSocket.

use crate::AppState;
use crate::addresses::Refused;
use crate::hub::Admission;
use crate::token::Claims;
use crate::upgrade::Upgrade;
use axum::Json;
use axum::extract::{ConnectInfo, Extension, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bandsync_nats::service::{random_id, random_join_code};
use bandsync_nats::wire::BusHeader;
use bandsync_nats::{
    Command, CommandEnvelope, CommandId, DisplayName, ErrorCode, JoinCode, MemberId, SessionId,
    SessionState, Subjects, now_us, shard_of,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tungstenite::protocol::WebSocketConfig;

/// How long creating a session waits for the owner to confirm it.
const CREATE_TIMEOUT: Duration = Duration::from_secs(5);
const CODE_ATTEMPTS: usize = 8;

/// An HTTP error with a stable code and a sentence for people.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    /// Seconds until a refused client may try again (`Retry-After`, and
    /// `retry_after_secs` in the body).
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    /// A body that is not the JSON asked for: 413 `too_large` past the body
    /// limit (2 MB), else 400 `invalid` with the reason.
    fn from_json(e: axum::extract::rejection::JsonRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::TooLarge,
                "the request body is too large",
            );
        }
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::Invalid, e.body_text())
    }

    /// 429 `rate_limited`: `why`, and the whole seconds to wait (rounded up,
    /// at least one) in the sentence, the body and `Retry-After`.
    fn rate_limited(why: &str, wait: Duration) -> Self {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            format!("{why}; try again in {secs} s"),
        );
        e.retry_after = Some(secs);
        e
    }

    /// A per-address limit refused.
    fn limited(refused: Refused) -> Self {
        metrics::counter!("bandsync_gateway_address_limited_total", "limit" => refused.limit.as_str())
            .increment(1);
        Self::rate_limited(refused.limit.message(), refused.retry_after)
    }

    fn unavailable(what: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %what, "api dependency unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "BandSync is temporarily unavailable; try again",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "code": self.code, "message": self.message });
        let mut response = match self.retry_after {
            Some(secs) => {
                body["retry_after_secs"] = secs.into();
                (
                    self.status,
                    [(header::RETRY_AFTER, secs.to_string())],
                    Json(body),
                )
                    .into_response()
            }
            None => (self.status, Json(body)).into_response(),
        };
        *response.status_mut() = self.status;
        response
    }
}

/// The client's address (see `guesses::client_addr`), found once per request
/// by [`limit_requests`].
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// Every request: the per-address request limit, and the client's address for
/// the handlers' own limits.
pub async fn limit_requests(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let forwarded = request
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    let addr = crate::guesses::client_addr(peer.ip(), forwarded, &app.config.trusted_proxies);
    let response = match app.addresses.request(addr, Instant::now()) {
        Err(refused) => ApiError::limited(refused).into_response(),
        Ok(()) => {
            request.extensions_mut().insert(ClientAddr(addr));
            next.run(request).await
        }
    };
    if response.status() == StatusCode::TOO_MANY_REQUESTS {
        // Any limit's refusal: the answer waits a moment, so that a script
        // retrying in a loop costs the gateway a sleeping task a second, not
        // a request parsed and answered as fast as it can send them.
        tokio::time::sleep(REFUSAL_DELAY).await;
    }
    response
}

/// How long a refused (429) answer waits.
const REFUSAL_DELAY: Duration = Duration::from_secs(1);

#[derive(Deserialize)]
pub struct CreateRequest {
    name: String,
}

#[derive(Deserialize)]
pub struct JoinRequest {
    code: String,
    name: String,
}

#[derive(Serialize)]
pub struct Joined {
    session: SessionId,
    code: JoinCode,
    member: MemberId,
    token: String,
    /// When the token lapses unless refreshed over the socket, Unix seconds.
    token_expires_at: u64,
}

impl Joined {
    fn new(
        session: SessionId,
        code: JoinCode,
        member: MemberId,
        token: String,
        claims: &Claims,
    ) -> Self {
        Self {
            session,
            code,
            member,
            token,
            token_expires_at: claims.exp,
        }
    }
}

fn parse_name(name: &str) -> Result<DisplayName, ApiError> {
    DisplayName::parse(name)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::Invalid, e.to_string()))
}

/// `POST /api/sessions`: the caller becomes the leader of a new session.
pub async fn create(
    State(app): State<Arc<AppState>>,
    Extension(ClientAddr(addr)): Extension<ClientAddr>,
    body: Result<Json<CreateRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Joined>), ApiError> {
    app.addresses
        .create(addr, Instant::now())
        .map_err(ApiError::limited)?;
    let Json(req) = body.map_err(ApiError::from_json)?;
    let name = parse_name(&req.name)?;
    let session = SessionId::parse(random_id(12)).expect("random ids are valid");
    let member = MemberId::parse(random_id(12)).expect("random ids are valid");
    let code = reserve_code(&app, &session).await?;
    if let Err(e) = confirm_create(&app, &session, &member, &name, &code).await {
        // Give the code back; if that fails too it stays reserved, so say which.
        if let Err(delete) = app.bus.codes.delete(code.as_str()).await {
            tracing::warn!(code = %code, session = %session, error = %delete, "join code of a failed create left reserved");
        }
        return Err(e);
    }
    tracing::info!(session = %session, "session created");
    let (token, claims) = app.tokens.sign(&session, &member, &name, SystemTime::now());
    Ok((
        StatusCode::CREATED,
        Json(Joined::new(session, code, member, token, &claims)),
    ))
}

async fn reserve_code(app: &AppState, session: &SessionId) -> Result<JoinCode, ApiError> {
    for _ in 0..CODE_ATTEMPTS {
        let code = random_join_code();
        match app
            .bus
            .codes
            .create(code.as_str(), session.as_str().to_owned().into())
            .await
        {
            Ok(_) => return Ok(code),
            Err(e) if e.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists => {
                continue;
            }
            Err(e) => return Err(ApiError::unavailable(e)),
        }
    }
    Err(ApiError::unavailable("no free join code found"))
}

/// Sends `create` to the session's owner and waits for the `created` event.
async fn confirm_create(
    app: &AppState,
    session: &SessionId,
    member: &MemberId,
    name: &DisplayName,
    code: &JoinCode,
) -> Result<(), ApiError> {
    let mut events = app
        .bus
        .client
        .subscribe(app.bus.subjects.evt(session))
        .await
        .map_err(ApiError::unavailable)?;
    let id = CommandId::parse(random_id(16)).expect("random ids are valid");
    let envelope = CommandEnvelope {
        id: id.clone(),
        session: session.clone(),
        actor: member.clone(),
        gateway: app.gateway_id.clone(),
        client_ref: None,
        sent_at: now_us(),
        command: Command::Create {
            code: code.clone(),
            name: name.clone(),
        },
    };
    let subject = app
        .bus
        .subjects
        .cmd(shard_of(session, app.config.shards), session);
    let payload = serde_json::to_vec(&envelope).expect("commands serialise");
    app.bus
        .publish_durable(subject, id.as_str(), payload.into())
        .await
        .map_err(ApiError::unavailable)?;
    let confirmed = tokio::time::timeout(CREATE_TIMEOUT, async {
        while let Some(msg) = events.next().await {
            if let Ok(head) = serde_json::from_slice::<BusHeader>(&msg.payload) {
                if head.kind == "event" {
                    return true;
                }
                if head.kind == "error" {
                    return false;
                }
            }
        }
        false
    })
    .await;
    match confirmed {
        Ok(true) => Ok(()),
        Ok(false) => Err(ApiError::unavailable("create was refused")),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "no session owner answered in time; is a ticker running?",
        )),
    }
}

/// `POST /api/join`: a member token for the session behind a join code.
pub async fn join(
    State(app): State<Arc<AppState>>,
    Extension(ClientAddr(addr)): Extension<ClientAddr>,
    body: Result<Json<JoinRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Joined>, ApiError> {
    let now = Instant::now();
    if let Some(wait) = app.failed_joins.wait_needed(addr, now) {
        metrics::counter!("bandsync_gateway_join_guesses_refused_total").increment(1);
        return Err(ApiError::rate_limited(
            "too many wrong join codes from your address",
            wait,
        ));
    }
    let Json(req) = body.map_err(ApiError::from_json)?;
    let name = parse_name(&req.name)?;
    let code = JoinCode::parse(&req.code)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::Invalid, e.to_string()))?;
    // A code that names no session is a guess, right or wrong: counted.
    let unknown = || {
        app.failed_joins.failed(addr, now);
        metrics::counter!("bandsync_gateway_join_codes_unknown_total").increment(1);
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownSession,
            format!("no session has the code {code}"),
        )
    };
    let raw = app
        .bus
        .codes
        .get(code.as_str())
        .await
        .map_err(ApiError::unavailable)?
        .ok_or_else(unknown)?;
    let session =
        SessionId::parse(String::from_utf8_lossy(&raw).into_owned()).map_err(|_| unknown())?;
    let key = Subjects::session_key(shard_of(&session, app.config.shards), &session);
    let raw = app
        .bus
        .sessions
        .get(key)
        .await
        .map_err(ApiError::unavailable)?
        .ok_or_else(unknown)?;
    let state: SessionState = serde_json::from_slice(&raw).map_err(ApiError::unavailable)?;
    // Early refusals for the common cases; the owner enforces both exactly.
    if state.joining_closed {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::JoiningClosed,
            "the leader has closed this session to new members",
        ));
    }
    if state.members.len() >= app.config.max_members {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::SessionFull,
            "this session is full",
        ));
    }
    let member = MemberId::parse(random_id(12)).expect("random ids are valid");
    let (token, claims) = app.tokens.sign(&session, &member, &name, SystemTime::now());
    Ok(Json(Joined::new(session, code, member, token, &claims)))
}

/// The WebSocket subprotocol a client offers, and the gateway answers with.
pub const SUBPROTOCOL: &str = "bandsync";
/// The client's other offered subprotocol is this prefix and its token: a
/// header, unlike a query string, stays out of proxies' access logs.
pub const TOKEN_SUBPROTOCOL_PREFIX: &str = "bandsync.token.";

/// The token a client offers in `Sec-WebSocket-Protocol`, if any.
fn offered_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| {
            p.trim()
                .strip_prefix(TOKEN_SUBPROTOCOL_PREFIX)
                .filter(|t| !t.is_empty())
        })
}

/// Why a member's connection is refused past their allowance.
const TOO_OFTEN: &str = "this member connects too often; wait a few seconds";

/// `GET /ws`, offering the subprotocols `bandsync` and `bandsync.token.<token>`:
/// the member's WebSocket.
pub async fn websocket(
    State(app): State<Arc<AppState>>,
    Extension(ClientAddr(addr)): Extension<ClientAddr>,
    headers: HeaderMap,
    ws: Upgrade,
) -> Response {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if !app
        .origins
        .allows(header(header::ORIGIN), header(header::HOST))
    {
        metrics::counter!("bandsync_gateway_origins_refused_total").increment(1);
        return (
            StatusCode::FORBIDDEN,
            "this page's origin may not open a BandSync connection here\n",
        )
            .into_response();
    }
    // Held by the connection for as long as it is open.
    let slot = match app.addresses.connect(addr, Instant::now()) {
        Ok(slot) => slot,
        Err(refused) => return ApiError::limited(refused).into_response(),
    };
    let Some(token) = offered_token(&headers) else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            format!(
                "a member token is required: offer the WebSocket subprotocols \
                 {SUBPROTOCOL} and {TOKEN_SUBPROTOCOL_PREFIX}<token>"
            ),
        )
        .into_response();
    };
    let verified = app.tokens.verify(token, SystemTime::now());
    let admission = match &verified {
        Ok(claims) => app.hub.admit(&claims.member, Instant::now()),
        Err(_) => Admission::Admitted,
    };
    if let Admission::Refused { retry_at } = admission {
        return ApiError::rate_limited(
            TOO_OFTEN,
            retry_at.saturating_duration_since(Instant::now()),
        )
        .into_response();
    }
    // Messages up to 4x the limit are read whole and refused with a clean
    // close (`too_large`); only larger ones hit the transport's hard cap.
    let max = app.config.max_frame_bytes.saturating_mul(4);
    // Clients send pings and commands of a few hundred bytes; a longer message
    // grows the buffer while it is read. Every idle socket holds this much.
    let config = WebSocketConfig::default()
        .read_buffer_size(256)
        .write_buffer_size(0)
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let tasks = app.tasks.clone();
    let queue = app.config.client_queue;
    let mut response = ws.on_upgrade(&tasks, config, queue, move |socket| async move {
        let _slot = slot;
        match verified {
            Ok(_) if admission == Admission::TellOnSocket => {
                crate::conn::refuse(socket, ErrorCode::RateLimited, TOO_OFTEN).await
            }
            Ok(claims) => crate::conn::serve(socket, app, claims).await,
            // A browser cannot read an HTTP status on a failed upgrade, so the
            // refusal is said on the socket, where the client can act on it.
            Err(e) => {
                crate::conn::refuse(
                    socket,
                    ErrorCode::Unauthorized,
                    &format!("{e}; join the session again"),
                )
                .await
            }
        }
    });
    // A browser that offered subprotocols fails a handshake that picks none.
    response.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(SUBPROTOCOL),
    );
    response
}
