//! Read-side queries for the HTTP API. PostgreSQL builds the JSON itself
//! (`jsonb_agg`), so a page costs one round trip and no re-encoding here.

use super::DbError;
use bandsync_nats::Micros;
use deadpool_postgres::{Object, Pool};
use tokio_postgres::RowStream;

/// Filters for the session list; `None` means "any".
#[derive(Debug, Default, Clone)]
pub struct SessionFilter {
    /// RFC 3339 or anything PostgreSQL reads as a timestamptz.
    pub from: Option<String>,
    pub to: Option<String>,
    /// Member id or display name.
    pub member: Option<String>,
    pub song: Option<String>,
    pub ended: Option<bool>,
    pub limit: i64,
    pub offset: i64,
}

const LIST_SESSIONS: &str = "
SELECT coalesce(jsonb_agg(x ORDER BY x.created_at DESC, x.session_id), '[]')::text FROM (
    SELECT s.session_id, s.code, s.created_at, s.last_activity_at,
           extract(epoch FROM s.duration)::float8 AS duration_s, s.ended_at, s.end_reason,
           s.members, s.member_names, s.leaders, s.songs_played, s.tempo_changes,
           s.rejected_commands, s.changes_applied, s.last_song, s.last_bar, s.last_beat,
           s.playing, s.last_tempo_bpm, s.stopped_in_song, s.stopped_at_bar, s.stopped_at
    FROM session_summary s
    WHERE ($1::text IS NULL OR s.created_at >= $1::text::timestamptz)
      AND ($2::text IS NULL OR s.created_at < $2::text::timestamptz)
      AND ($3::text IS NULL OR EXISTS (
            SELECT 1 FROM members m
            WHERE m.session_id = s.session_id AND (m.member_id = $3 OR m.name = $3)))
      AND ($4::text IS NULL OR $4 = ANY (s.songs_played))
      AND ($5::bool IS NULL OR (s.ended_at IS NOT NULL) = $5)
    ORDER BY s.created_at DESC, s.session_id
    LIMIT $6 OFFSET $7
) x";

/// The session list as a JSON array.
pub async fn list_sessions(pool: &Pool, f: &SessionFilter) -> Result<String, DbError> {
    let client = pool.get().await?;
    let stmt = client.prepare_cached(LIST_SESSIONS).await?;
    let row = client
        .query_one(
            &stmt,
            &[
                &f.from, &f.to, &f.member, &f.song, &f.ended, &f.limit, &f.offset,
            ],
        )
        .await?;
    Ok(row.get(0))
}

/// Which log a page or export reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Log {
    Events,
    Commands,
}

const EVENTS_PAGE: &str = "
SELECT jsonb_build_object(
    'items', coalesce(jsonb_agg(x ORDER BY x.stream_seq), '[]'),
    'next_after', CASE WHEN count(*) = $3 THEN max(x.stream_seq) END)::text
FROM (
    SELECT stream_seq, seq, epoch, kind, changes, actor, cmd_id, error_code, occurred_at,
           published_at, stored_at, bandsync_message(payload, state, members, setlist) AS payload
    FROM events WHERE session_id = $1 AND stream_seq > $2
    ORDER BY stream_seq LIMIT $3
) x";

const COMMANDS_PAGE: &str = "
SELECT jsonb_build_object(
    'items', coalesce(jsonb_agg(x ORDER BY x.stream_seq), '[]'),
    'next_after', CASE WHEN count(*) = $3 THEN max(x.stream_seq) END)::text
FROM (
    SELECT stream_seq, cmd_id, kind, actor, gateway, sent_at, published_at, stored_at, payload
    FROM commands WHERE session_id = $1 AND stream_seq > $2
    ORDER BY stream_seq LIMIT $3
) x";

/// One page of a session's log, in stream order after stream sequence `after`:
/// `{"items": [...], "next_after": <seq or null>}`.
pub async fn page(
    pool: &Pool,
    log: Log,
    session: &str,
    after: i64,
    limit: i64,
) -> Result<String, DbError> {
    let client = pool.get().await?;
    let sql = match log {
        Log::Events => EVENTS_PAGE,
        Log::Commands => COMMANDS_PAGE,
    };
    let stmt = client.prepare_cached(sql).await?;
    Ok(client
        .query_one(&stmt, &[&session, &after, &limit])
        .await?
        .get(0))
}

/// Columns of the CSV export, in order.
pub const EXPORT_COLUMNS: &[&str] = &[
    "stream_seq",
    "seq",
    "epoch",
    "kind",
    "changes",
    "actor",
    "cmd_id",
    "error_code",
    "occurred_at",
    "published_at",
    "payload",
];

const EXPORT_ROWS: &str = "
SELECT stream_seq::text, seq::text, epoch::text, kind, array_to_string(changes, ' '), actor, cmd_id,
       error_code, to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
       to_char(published_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
       (bandsync_message(payload, state, members, setlist))::text
FROM events WHERE session_id = $1 ORDER BY stream_seq";

const EXPORT_NDJSON: &str = "
SELECT jsonb_build_object('stream_seq', stream_seq, 'seq', seq, 'epoch', epoch, 'kind', kind,
                          'changes', changes, 'actor', actor, 'cmd_id', cmd_id,
                          'error_code', error_code, 'occurred_at', occurred_at,
                          'published_at', published_at,
                          'payload', bandsync_message(payload, state, members, setlist))::text
FROM events WHERE session_id = $1 ORDER BY stream_seq";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    Ndjson,
}

/// Streams a session's events; the pooled connection travels with the rows so
/// it stays checked out until the last row is read.
pub async fn export(
    pool: &Pool,
    session: &str,
    format: ExportFormat,
) -> Result<(Object, RowStream), DbError> {
    let client = pool.get().await?;
    let sql = match format {
        ExportFormat::Csv => EXPORT_ROWS,
        ExportFormat::Ndjson => EXPORT_NDJSON,
    };
    let stmt = client.prepare_cached(sql).await?;
    let rows = client.query_raw(&stmt, [session]).await?;
    Ok((client, rows))
}

/// The latest event of `session` applied at or before `at`.
#[derive(Debug, Clone)]
pub struct StateRow {
    pub seq: i64,
    pub epoch: i64,
    pub event_at: Micros,
    pub state_json: String,
    /// The members and the setlist the state refers to (the state's own are
    /// empty since they travel apart: see `bandsync_members`, `bandsync_setlist`).
    pub members_json: String,
    pub setlist_json: String,
}

const STATE_AT: &str = "
SELECT seq, epoch, bandsync_us(occurred_at), coalesce(state::text, (payload -> 'state')::text),
       bandsync_members(session_id, coalesce(state::jsonb, payload -> 'state'))::text,
       bandsync_setlist(session_id, coalesce(state::jsonb, payload -> 'state'))::text
FROM events
WHERE session_id = $1 AND kind = 'event' AND occurred_at <= bandsync_ts($2)
ORDER BY seq DESC, epoch DESC, stream_seq DESC
LIMIT 1";

pub async fn state_at(pool: &Pool, session: &str, at: Micros) -> Result<Option<StateRow>, DbError> {
    let client = pool.get().await?;
    let stmt = client.prepare_cached(STATE_AT).await?;
    let row = client.query_opt(&stmt, &[&session, &at]).await?;
    Ok(row.map(|r| StateRow {
        seq: r.get(0),
        epoch: r.get(1),
        event_at: r.get(2),
        state_json: r.get(3),
        members_json: r.get(4),
        setlist_json: r.get(5),
    }))
}

/// Reads an instant: microseconds since the epoch, or a timestamp PostgreSQL understands.
pub async fn instant(pool: &Pool, text: &str) -> Result<Micros, DbError> {
    if let Ok(us) = text.parse::<Micros>() {
        return Ok(us);
    }
    let client = pool.get().await?;
    Ok(client
        .query_one("SELECT bandsync_us($1::text::timestamptz)", &[&text])
        .await?
        .get(0))
}

/// A cheap round trip for `/readyz`.
pub async fn ping(pool: &Pool) -> Result<(), DbError> {
    let client = pool.get().await?;
    client.simple_query("SELECT 1").await?;
    Ok(())
}
