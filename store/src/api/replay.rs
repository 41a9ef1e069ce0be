//! `GET /sessions/{id}/state?at=`: the session as it stood at an instant.
//!
//! Every event carries the state after it (its members and setlist by
//! reference, see `bandsync_members` and `bandsync_setlist`), so the state at
//! `t` is the state of the last event applied at or before `t`; the timeline
//! inside it (the same `Timeline` the ticker and clients use) gives the
//! position at `t`.

use super::sessions::session_id;
use super::{ApiError, AppState};
use crate::db::query;
use axum::Json;
use axum::extract::{Path, Query, State};
use bandsync_nats::{Micros, SessionState, now_us};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
pub struct StateParams {
    /// Microseconds since the Unix epoch, or an RFC 3339 timestamp; now if absent.
    at: Option<String>,
}

/// Where the music was at the instant asked about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    pub beat: f64,
    pub bar: i64,
    /// 0-based beat within the bar.
    pub beat_in_bar: f64,
    pub playing: bool,
    pub counting_in: bool,
    pub tempo_bpm: f64,
    pub beats_per_bar: u8,
    pub beat_unit: u8,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replayed {
    pub session: String,
    pub at: Micros,
    /// The event the state comes from.
    pub seq: i64,
    pub epoch: i64,
    pub event_at: Micros,
    pub position: Position,
    pub song: Option<String>,
    pub state: SessionState,
}

/// Pure: the state and position at `at`, given the last event applied by then.
pub fn replay(state: &SessionState, at: Micros) -> Position {
    let seg = state.timeline.at(at);
    let beat = state.timeline.position(at);
    let bar_start = seg.bar_start(beat);
    Position {
        beat,
        bar: seg.bar_of(beat),
        beat_in_bar: beat - bar_start,
        playing: seg.playing && at >= seg.anchor_time,
        counting_in: seg.playing && seg.count_in_until.is_some_and(|c| beat < c),
        tempo_bpm: seg.tempo_bpm,
        beats_per_bar: seg.beats_per_bar,
        beat_unit: seg.beat_unit,
    }
}

pub async fn state_at(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Query(p): Query<StateParams>,
) -> Result<Json<Replayed>, ApiError> {
    let id = session_id(id)?;
    let at = match p.at {
        Some(text) => query::instant(&app.pool, &text).await?,
        None => now_us(),
    };
    let row = query::state_at(&app.pool, id.as_str(), at)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("session {id} has no event at or before {at}"))
        })?;
    let bad = |e: serde_json::Error| {
        ApiError::invalid(format!(
            "stored state of event {} does not decode: {e}",
            row.seq
        ))
    };
    let mut state: SessionState = serde_json::from_str(&row.state_json).map_err(bad)?;
    state.members = serde_json::from_str(&row.members_json).map_err(bad)?;
    state.setlist = serde_json::from_str(&row.setlist_json).map_err(bad)?;
    let position = replay(&state, at);
    let song = state
        .song
        .and_then(|i| state.setlist.get(i))
        .map(|s| s.title.clone());
    Ok(Json(Replayed {
        session: id.to_string(),
        at,
        seq: row.seq,
        epoch: row.epoch,
        event_at: row.event_at,
        position,
        song,
        state,
    }))
}
