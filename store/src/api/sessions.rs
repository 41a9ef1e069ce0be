//! Listing sessions and paging through a session's log.

use super::{ApiError, AppState, json_text};
use crate::db::query::{self, Log, SessionFilter};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use bandsync_nats::SessionId;
use serde::Deserialize;

const MAX_LIMIT: i64 = 1000;
const DEFAULT_LIMIT: i64 = 100;

#[derive(Debug, Deserialize)]
pub struct ListParams {
    from: Option<String>,
    to: Option<String>,
    member: Option<String>,
    song: Option<String>,
    ended: Option<bool>,
    limit: Option<i64>,
    offset: Option<i64>,
}

fn limit(l: Option<i64>) -> Result<i64, ApiError> {
    match l.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok(n),
        _ => Err(ApiError::invalid(format!("limit must be 1..={MAX_LIMIT}"))),
    }
}

/// `GET /sessions?from=&to=&member=&song=&ended=&limit=&offset=`, newest first.
pub async fn list(
    State(app): State<AppState>,
    Query(p): Query<ListParams>,
) -> Result<Response, ApiError> {
    let offset = p.offset.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError::invalid("offset must not be negative"));
    }
    let filter = SessionFilter {
        from: p.from,
        to: p.to,
        member: p.member,
        song: p.song,
        ended: p.ended,
        limit: limit(p.limit)?,
        offset,
    };
    Ok(json_text(query::list_sessions(&app.pool, &filter).await?))
}

#[derive(Debug, Deserialize)]
pub struct PageParams {
    /// Stream sequence to start after (the previous page's `next_after`).
    after: Option<i64>,
    limit: Option<i64>,
}

pub fn session_id(id: String) -> Result<SessionId, ApiError> {
    SessionId::parse(id).map_err(|e| ApiError::invalid(e.to_string()))
}

/// `GET /sessions/{id}/events?after=&limit=`: events and rejections in stream order.
pub async fn events(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Query(p): Query<PageParams>,
) -> Result<Response, ApiError> {
    page(app, Log::Events, id, p).await
}

/// `GET /sessions/{id}/commands?after=&limit=`: the commands members sent.
pub async fn commands(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Query(p): Query<PageParams>,
) -> Result<Response, ApiError> {
    page(app, Log::Commands, id, p).await
}

async fn page(app: AppState, log: Log, id: String, p: PageParams) -> Result<Response, ApiError> {
    let id = session_id(id)?;
    let after = p.after.unwrap_or(0);
    Ok(json_text(
        query::page(&app.pool, log, id.as_str(), after, limit(p.limit)?).await?,
    ))
}
