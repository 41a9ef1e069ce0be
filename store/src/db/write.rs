//! Writes one batch in one transaction: one multi-row `INSERT ... SELECT FROM
//! UNNEST(...) ON CONFLICT DO NOTHING` per table, so a redelivered message is
//! skipped by its (stream, stream_seq) key and the log holds each exactly once;
//! an event whose (session, seq) is stored already (a re-publication) becomes a
//! dead letter.

use super::DbError;
use crate::decode::{CommandRow, DeadRow, Decoded, EventRow, StreamKind};
use crate::summary::{self, MemberRow, SessionRow};
use deadpool_postgres::{Pool, Transaction};
use tokio_postgres::types::ToSql;

/// What a committed batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Rows new to the log (a redelivered message is not counted).
    pub inserted: u64,
    /// Messages of the batch that went to the dead-letter table.
    pub dead: u64,
}

impl std::ops::AddAssign for Written {
    fn add_assign(&mut self, other: Self) {
        self.inserted += other.inserted;
        self.dead += other.dead;
    }
}

const INSERT_EVENTS: &str = "
INSERT INTO events (stream, stream_seq, session_id, kind, changes, actor, cmd_id, seq, epoch,
                    error_code, occurred_at, published_at, payload, state, members, setlist)
SELECT $1, r.stream_seq, r.session_id, r.kind, string_to_array(r.changes, ','), r.actor, r.cmd_id,
       r.seq, r.epoch, r.error_code, bandsync_ts(r.occurred_us), bandsync_ts(r.published_us), r.payload::jsonb,
       r.state::json, r.members::json, r.setlist::json
FROM UNNEST($2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::int8[],
            $9::int8[], $10::text[], $11::int8[], $12::int8[], $13::text[], $14::text[], $15::text[],
            $16::text[])
     AS r(stream_seq, session_id, kind, changes, actor, cmd_id, seq, epoch, error_code,
          occurred_us, published_us, payload, state, members, setlist)
ON CONFLICT DO NOTHING";

/// After `INSERT_EVENTS` in the same transaction: an event the log did not take
/// although its message is new (its (session, seq) is stored already, from a
/// re-publication) becomes a dead letter, so every stream message is accounted
/// for. A redelivered message is in `events` under its own stream_seq: skipped.
const INSERT_DUPLICATE_EVENTS: &str = "
INSERT INTO dead_letters (stream, stream_seq, subject, reason, payload, published_at)
SELECT $1, r.stream_seq, '',
       format('duplicate: event %s of session %s is already stored', r.seq, r.session_id),
       convert_to(r.payload, 'UTF8'), bandsync_ts(r.published_us)
FROM UNNEST($2::int8[], $3::text[], $4::int8[], $5::text[], $6::int8[])
     AS r(stream_seq, session_id, seq, payload, published_us)
WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.stream = $1 AND e.stream_seq = r.stream_seq)
ON CONFLICT DO NOTHING";

const INSERT_COMMANDS: &str = "
INSERT INTO commands (stream, stream_seq, cmd_id, session_id, kind, actor, gateway, sent_at,
                      published_at, payload)
SELECT $1, r.stream_seq, r.cmd_id, r.session_id, r.kind, r.actor, r.gateway, bandsync_ts(r.sent_us),
       bandsync_ts(r.published_us), r.payload::jsonb
FROM UNNEST($2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::int8[],
            $9::int8[], $10::text[])
     AS r(stream_seq, cmd_id, session_id, kind, actor, gateway, sent_us, published_us, payload)
ON CONFLICT (stream, stream_seq) DO NOTHING";

const INSERT_DEAD: &str = "
INSERT INTO dead_letters (stream, stream_seq, subject, reason, payload, published_at)
SELECT $1, r.stream_seq, r.subject, r.reason, r.payload, bandsync_ts(r.published_us)
FROM UNNEST($2::int8[], $3::text[], $4::text[], $5::bytea[], $6::int8[])
     AS r(stream_seq, subject, reason, payload, published_us)
ON CONFLICT (stream, stream_seq) DO NOTHING";

/// "Newer state wins": the row whose (seq, epoch) is higher sets the live columns.
const UPSERT_SESSIONS: &str = "
INSERT INTO sessions AS s (session_id, code, created_at, first_event_at, last_event_at, last_seq,
                      last_epoch, song, song_seq, playing, position_beat, bar, tempo_bpm, ended_at,
                      end_reason)
SELECT r.session_id, r.code, bandsync_ts(r.created_us), bandsync_ts(r.first_us), bandsync_ts(r.last_us),
       r.last_seq, r.last_epoch, r.song, r.song_seq, r.playing, r.position_beat, r.bar, r.tempo_bpm,
       bandsync_ts(r.ended_us), r.end_reason
FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], $7::int8[],
            $8::text[], $9::int8[], $10::bool[], $11::float8[], $12::int8[], $13::float8[], $14::int8[],
            $15::text[])
     AS r(session_id, code, created_us, first_us, last_us, last_seq, last_epoch, song, song_seq,
          playing, position_beat, bar, tempo_bpm, ended_us, end_reason)
ON CONFLICT (session_id) DO UPDATE SET
    created_at     = least(s.created_at, excluded.created_at),
    first_event_at = least(s.first_event_at, excluded.first_event_at),
    last_event_at  = greatest(s.last_event_at, excluded.last_event_at),
    ended_at       = coalesce(s.ended_at, excluded.ended_at),
    end_reason     = CASE WHEN s.ended_at IS NULL THEN excluded.end_reason ELSE s.end_reason END,
    code          = CASE WHEN (excluded.last_seq, excluded.last_epoch) > (s.last_seq, s.last_epoch) THEN excluded.code ELSE s.code END,
    song          = CASE WHEN excluded.song_seq > coalesce(s.song_seq, -1) THEN excluded.song ELSE s.song END,
    song_seq      = greatest(s.song_seq, excluded.song_seq),
    playing       = CASE WHEN (excluded.last_seq, excluded.last_epoch) > (s.last_seq, s.last_epoch) THEN excluded.playing ELSE s.playing END,
    position_beat = CASE WHEN (excluded.last_seq, excluded.last_epoch) > (s.last_seq, s.last_epoch) THEN excluded.position_beat ELSE s.position_beat END,
    bar           = CASE WHEN (excluded.last_seq, excluded.last_epoch) > (s.last_seq, s.last_epoch) THEN excluded.bar ELSE s.bar END,
    tempo_bpm     = CASE WHEN (excluded.last_seq, excluded.last_epoch) > (s.last_seq, s.last_epoch) THEN excluded.tempo_bpm ELSE s.tempo_bpm END,
    last_epoch    = CASE WHEN (excluded.last_seq, excluded.last_epoch) > (s.last_seq, s.last_epoch) THEN excluded.last_epoch ELSE s.last_epoch END,
    last_seq      = greatest(s.last_seq, excluded.last_seq)";

/// Skips the write when nothing would change, so steady traffic does not churn member rows.
const UPSERT_MEMBERS: &str = "
INSERT INTO members AS m (session_id, member_id, name, joined_at, has_led)
SELECT r.session_id, r.member_id, r.name, bandsync_ts(r.joined_us), r.has_led
FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::bool[])
     AS r(session_id, member_id, name, joined_us, has_led)
ON CONFLICT (session_id, member_id) DO UPDATE SET
    name      = excluded.name,
    joined_at = least(m.joined_at, excluded.joined_at),
    has_led   = m.has_led OR excluded.has_led
WHERE (excluded.has_led AND NOT m.has_led) OR excluded.joined_at < m.joined_at OR excluded.name <> m.name";

/// Writes `rows` (all from `stream`) and commits. Nothing is half-written: on
/// error the transaction rolls back and the caller may retry the same rows.
pub async fn write_batch(
    pool: &Pool,
    stream: &str,
    kind: StreamKind,
    rows: &[Decoded],
) -> Result<Written, DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let mut written = Written::default();
    let dead: Vec<&DeadRow> = rows
        .iter()
        .filter_map(|r| {
            if let Decoded::Dead(d) = r {
                Some(d)
            } else {
                None
            }
        })
        .collect();
    match kind {
        StreamKind::Events => {
            let events: Vec<&EventRow> = rows
                .iter()
                .filter_map(|r| {
                    if let Decoded::Event(e) = r {
                        Some(e)
                    } else {
                        None
                    }
                })
                .collect();
            written.inserted = insert_events(&tx, stream, &events).await?;
            written.dead += insert_duplicate_events(&tx, stream, &events).await?;
            let summary = summary::summarise(events.iter().copied());
            upsert_sessions(&tx, &summary.sessions).await?;
            upsert_members(&tx, &summary.members).await?;
        }
        StreamKind::Commands => {
            let commands: Vec<&CommandRow> = rows
                .iter()
                .filter_map(|r| {
                    if let Decoded::Command(c) = r {
                        Some(c)
                    } else {
                        None
                    }
                })
                .collect();
            written.inserted = insert_commands(&tx, stream, &commands).await?;
        }
    }
    written.dead += insert_dead(&tx, stream, &dead).await?;
    tx.commit().await?;
    Ok(written)
}

/// Writes rows one transaction each, after a batch was refused for its data:
/// a row the server refuses becomes a dead letter naming the server's reason.
pub async fn write_isolating(
    pool: &Pool,
    stream: &str,
    kind: StreamKind,
    rows: &[Decoded],
) -> Result<Written, DbError> {
    let mut total = Written::default();
    for row in rows {
        match write_batch(pool, stream, kind, std::slice::from_ref(row)).await {
            Ok(w) => total += w,
            Err(e) if e.is_data_error() => {
                let dead = as_dead(row, format!("refused by PostgreSQL: {e}"));
                total += write_batch(pool, stream, kind, &[Decoded::Dead(dead)]).await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

fn as_dead(row: &Decoded, reason: String) -> DeadRow {
    let (stream_seq, subject, payload, published_us) = match row {
        Decoded::Command(c) => (
            c.stream_seq,
            String::new(),
            c.payload.as_bytes().to_vec(),
            c.published_us,
        ),
        Decoded::Event(e) => (
            e.stream_seq,
            String::new(),
            e.payload.as_bytes().to_vec(),
            e.published_us,
        ),
        Decoded::Dead(d) => (
            d.stream_seq,
            d.subject.clone(),
            d.payload.clone(),
            d.published_us,
        ),
    };
    DeadRow {
        stream_seq,
        subject,
        reason,
        payload,
        published_us,
    }
}

async fn run(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, DbError> {
    let stmt = tx.prepare_cached(sql).await?;
    Ok(tx.execute(&stmt, params).await?)
}

async fn insert_events(
    tx: &Transaction<'_>,
    stream: &str,
    rows: &[&EventRow],
) -> Result<u64, DbError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let col = |f: fn(&EventRow) -> i64| rows.iter().map(|r| f(r)).collect::<Vec<i64>>();
    let text =
        |f: for<'r> fn(&'r EventRow) -> &'r str| rows.iter().map(|r| f(r)).collect::<Vec<&str>>();
    let opt = |f: for<'r> fn(&'r EventRow) -> Option<&'r str>| {
        rows.iter().map(|r| f(r)).collect::<Vec<_>>()
    };
    let seq: Vec<Option<i64>> = rows.iter().map(|r| r.seq).collect();
    let epoch: Vec<Option<i64>> = rows.iter().map(|r| r.epoch).collect();
    run(
        tx,
        INSERT_EVENTS,
        &[
            &stream,
            &col(|r| r.stream_seq),
            &text(|r| &r.session_id),
            &text(|r| r.kind),
            &text(|r| &r.changes),
            &opt(|r| r.actor.as_deref()),
            &opt(|r| r.cmd_id.as_deref()),
            &seq,
            &epoch,
            &opt(|r| r.error_code.as_deref()),
            &col(|r| r.occurred_us),
            &col(|r| r.published_us),
            &text(|r| &r.payload),
            &opt(|r| r.state_json.as_deref()),
            &opt(|r| r.members_json.as_deref()),
            &opt(|r| r.setlist_json.as_deref()),
        ],
    )
    .await
}

async fn insert_duplicate_events(
    tx: &Transaction<'_>,
    stream: &str,
    rows: &[&EventRow],
) -> Result<u64, DbError> {
    let events: Vec<&&EventRow> = rows.iter().filter(|r| r.kind == "event").collect();
    if events.is_empty() {
        return Ok(0);
    }
    let stream_seq: Vec<i64> = events.iter().map(|r| r.stream_seq).collect();
    let session: Vec<&str> = events.iter().map(|r| r.session_id.as_str()).collect();
    let seq: Vec<Option<i64>> = events.iter().map(|r| r.seq).collect();
    let payload: Vec<&str> = events.iter().map(|r| r.payload.as_str()).collect();
    let published: Vec<i64> = events.iter().map(|r| r.published_us).collect();
    run(
        tx,
        INSERT_DUPLICATE_EVENTS,
        &[&stream, &stream_seq, &session, &seq, &payload, &published],
    )
    .await
}

async fn insert_commands(
    tx: &Transaction<'_>,
    stream: &str,
    rows: &[&CommandRow],
) -> Result<u64, DbError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let col = |f: fn(&CommandRow) -> i64| rows.iter().map(|r| f(r)).collect::<Vec<i64>>();
    let text =
        |f: for<'r> fn(&'r CommandRow) -> &'r str| rows.iter().map(|r| f(r)).collect::<Vec<&str>>();
    run(
        tx,
        INSERT_COMMANDS,
        &[
            &stream,
            &col(|r| r.stream_seq),
            &text(|r| &r.cmd_id),
            &text(|r| &r.session_id),
            &text(|r| r.kind),
            &text(|r| &r.actor),
            &text(|r| &r.gateway),
            &col(|r| r.sent_us),
            &col(|r| r.published_us),
            &text(|r| &r.payload),
        ],
    )
    .await
}

async fn insert_dead(
    tx: &Transaction<'_>,
    stream: &str,
    rows: &[&DeadRow],
) -> Result<u64, DbError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let seqs: Vec<i64> = rows.iter().map(|r| r.stream_seq).collect();
    let subjects: Vec<&str> = rows.iter().map(|r| r.subject.as_str()).collect();
    let reasons: Vec<&str> = rows.iter().map(|r| r.reason.as_str()).collect();
    let payloads: Vec<&[u8]> = rows.iter().map(|r| r.payload.as_slice()).collect();
    let published: Vec<i64> = rows.iter().map(|r| r.published_us).collect();
    run(
        tx,
        INSERT_DEAD,
        &[&stream, &seqs, &subjects, &reasons, &payloads, &published],
    )
    .await
}

async fn upsert_sessions(tx: &Transaction<'_>, rows: &[SessionRow]) -> Result<u64, DbError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = rows.iter().map(|r| r.session_id.as_str()).collect();
    let codes: Vec<&str> = rows.iter().map(|r| r.code.as_str()).collect();
    let created: Vec<i64> = rows.iter().map(|r| r.created_us).collect();
    let first: Vec<i64> = rows.iter().map(|r| r.first_us).collect();
    let last: Vec<i64> = rows.iter().map(|r| r.last_us).collect();
    let seq: Vec<i64> = rows.iter().map(|r| r.last_seq).collect();
    let epoch: Vec<i64> = rows.iter().map(|r| r.last_epoch).collect();
    let song: Vec<Option<&str>> = rows.iter().map(|r| r.song.as_deref()).collect();
    let song_seq: Vec<Option<i64>> = rows.iter().map(|r| r.song_seq).collect();
    let playing: Vec<bool> = rows.iter().map(|r| r.playing).collect();
    let beat: Vec<f64> = rows.iter().map(|r| r.position_beat).collect();
    let bar: Vec<i64> = rows.iter().map(|r| r.bar).collect();
    let tempo: Vec<f64> = rows.iter().map(|r| r.tempo_bpm).collect();
    let ended: Vec<Option<i64>> = rows.iter().map(|r| r.ended_us).collect();
    let reason: Vec<Option<&str>> = rows.iter().map(|r| r.end_reason.as_deref()).collect();
    run(
        tx,
        UPSERT_SESSIONS,
        &[
            &ids, &codes, &created, &first, &last, &seq, &epoch, &song, &song_seq, &playing, &beat,
            &bar, &tempo, &ended, &reason,
        ],
    )
    .await
}

async fn upsert_members(tx: &Transaction<'_>, rows: &[MemberRow]) -> Result<u64, DbError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let sessions: Vec<&str> = rows.iter().map(|r| r.session_id.as_str()).collect();
    let ids: Vec<&str> = rows.iter().map(|r| r.member_id.as_str()).collect();
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    let joined: Vec<i64> = rows.iter().map(|r| r.joined_us).collect();
    let led: Vec<bool> = rows.iter().map(|r| r.has_led).collect();
    run(
        tx,
        UPSERT_MEMBERS,
        &[&sessions, &ids, &names, &joined, &led],
    )
    .await
}
