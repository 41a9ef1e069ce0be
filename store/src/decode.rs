//! Turns one raw stream message into a typed row, or a dead letter saying why
//! it could not be. Pure: no I/O, so every odd payload can be tested here.

use crate::summary::{self, SessionRow};
use bandsync_nats::state::{Cause, SessionState};
use bandsync_nats::wire::message_type;
use bandsync_nats::{Change, CommandEnvelope, ErrorCode, ErrorMsg, Micros, SessionId, Subjects};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Which stream a batch came from; each has its own table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Commands,
    Events,
}

impl StreamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Commands => "commands",
            StreamKind::Events => "events",
        }
    }
}

/// A message as delivered, before decoding.
#[derive(Debug, Clone)]
pub struct Raw<'a> {
    pub stream_seq: u64,
    pub subject: &'a str,
    pub payload: &'a [u8],
    /// When JetStream stored it.
    pub published_us: Micros,
}

/// One row of the `commands` table.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRow {
    pub stream_seq: i64,
    pub cmd_id: String,
    pub session_id: String,
    pub kind: &'static str,
    pub actor: String,
    pub gateway: String,
    pub sent_us: Micros,
    pub published_us: Micros,
    pub payload: String,
}

/// One row of the `events` table: an applied change set or a rejected command.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub stream_seq: i64,
    pub session_id: String,
    /// `event` or `rejected`.
    pub kind: &'static str,
    /// Kinds of the changes, comma-separated (`tempo`, `member_joined,leader_changed`).
    pub changes: String,
    pub actor: Option<String>,
    pub cmd_id: Option<String>,
    pub seq: Option<i64>,
    pub epoch: Option<i64>,
    pub error_code: Option<String>,
    /// When the owner applied it; a rejection carries no time, so its stream time.
    pub occurred_us: Micros,
    pub published_us: Micros,
    /// The message without its session state (which goes to `state_json`).
    pub payload: String,
    /// The session state after the change set as JSON text, as sent (events
    /// only): its members and setlist are empty unless the event was logged
    /// before they travelled on their own.
    pub state_json: Option<String>,
    /// The members as JSON text, in an event that changed them or the leader.
    pub members_json: Option<String>,
    /// The new setlist as JSON text, in the event that replaced it.
    pub setlist_json: Option<String>,
    /// The state after the change set (events only), for the members table;
    /// its members and setlist are the carried ones, if any.
    pub state: Option<Box<SessionState>>,
    /// This event's own `sessions` row (events only), made as it is decoded
    /// so that an event the summary cannot use is a dead letter, not a batch
    /// that fails to write. Boxed, as the state is: most rows are in flight
    /// as `Decoded`, whose size is its largest variant's.
    pub session: Option<Box<SessionRow>>,
}

/// One row of the `dead_letters` table.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadRow {
    pub stream_seq: i64,
    pub subject: String,
    pub reason: String,
    pub payload: Vec<u8>,
    pub published_us: Micros,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Command(CommandRow),
    Event(EventRow),
    Dead(DeadRow),
}

impl Decoded {
    pub fn stream_seq(&self) -> i64 {
        match self {
            Decoded::Command(r) => r.stream_seq,
            Decoded::Event(r) => r.stream_seq,
            Decoded::Dead(r) => r.stream_seq,
        }
    }
}

/// Decodes one message of `kind`'s stream. Never panics: whatever cannot be
/// decoded or summarised, or makes the decoder panic, is a dead letter.
pub fn decode(kind: StreamKind, subjects: &Subjects, raw: &Raw<'_>) -> Decoded {
    let stream_seq = i64::try_from(raw.stream_seq).unwrap_or(i64::MAX);
    dead_on_panic(raw, stream_seq, || match kind {
        StreamKind::Commands => decode_command(subjects, raw, stream_seq).map(Decoded::Command),
        StreamKind::Events => decode_event(subjects, raw, stream_seq).map(Decoded::Event),
    })
}

/// Runs a decoder over `raw`; an error, or a panic, makes the message a dead
/// letter with the reason. A panic while decoding is a bug tied to these
/// bytes: caught here it costs this message (in `dead_letters`, where it can
/// be looked at), where uncaught it would fail its whole batch on every
/// redelivery. Decoding is pure (no state outlives the call), so nothing is
/// left half-changed by the unwinding.
fn dead_on_panic(
    raw: &Raw<'_>,
    stream_seq: i64,
    decoder: impl FnOnce() -> Result<Decoded, String>,
) -> Decoded {
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(decoder)).unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".to_owned());
            Err(format!("the store panicked decoding it: {message}"))
        });
    result.unwrap_or_else(|reason| {
        Decoded::Dead(DeadRow {
            stream_seq,
            subject: raw.subject.to_owned(),
            reason,
            payload: raw.payload.to_vec(),
            published_us: raw.published_us,
        })
    })
}

fn payload_text(raw: &Raw<'_>) -> Result<String, String> {
    String::from_utf8(raw.payload.to_vec()).map_err(|e| format!("payload is not UTF-8: {e}"))
}

/// The session named by the subject must be the one in the payload.
fn check_subject(subjects: &Subjects, raw: &Raw<'_>, session: &str) -> Result<(), String> {
    match subjects.session_of(raw.subject) {
        Some(s) if s.as_str() == session => Ok(()),
        Some(s) => Err(format!(
            "subject names session {s} but the payload names {session}"
        )),
        None => Err(format!("subject {} names no session", raw.subject)),
    }
}

fn decode_command(
    subjects: &Subjects,
    raw: &Raw<'_>,
    stream_seq: i64,
) -> Result<CommandRow, String> {
    let env: CommandEnvelope =
        serde_json::from_slice(raw.payload).map_err(|e| format!("not a command envelope: {e}"))?;
    check_subject(subjects, raw, env.session.as_str())?;
    Ok(CommandRow {
        stream_seq,
        cmd_id: env.id.to_string(),
        session_id: env.session.to_string(),
        kind: env.command.kind(),
        actor: env.actor.to_string(),
        gateway: env.gateway.to_string(),
        sent_us: env.sent_at,
        published_us: raw.published_us,
        payload: payload_text(raw)?,
    })
}

/// PostgreSQL stores a `\u0000` in the `json` state column but refuses it
/// wherever it becomes jsonb (the analysts' views), so such a state is refused
/// here, where it costs one message and not a view.
fn check_no_nul(state: &SessionState) -> Result<(), String> {
    // Names and codes are validated ids; the setlist's free text is what can hold a NUL.
    if state
        .setlist
        .iter()
        .any(|s| s.title.contains('\0') || s.chart.contains('\0'))
    {
        return Err(
            "the session state holds a NUL character (\\u0000), which PostgreSQL's jsonb refuses"
                .into(),
        );
    }
    Ok(())
}

/// An event as stored in `events.payload`: everything but the state.
#[derive(serde::Serialize)]
struct EventHead<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    session: &'a SessionId,
    seq: u64,
    epoch: u64,
    at: Micros,
    cause: &'a Cause,
    changes: &'a [Change],
}

/// An `event` as published, its state kept as the exact JSON text it came in.
#[derive(Deserialize)]
struct EventWire<'a> {
    session: SessionId,
    seq: u64,
    epoch: u64,
    at: Micros,
    cause: Cause,
    changes: Vec<Change>,
    #[serde(borrow)]
    state: &'a RawValue,
    #[serde(default, borrow)]
    members: Option<&'a RawValue>,
    #[serde(default, borrow)]
    setlist: Option<&'a RawValue>,
}

fn decode_event(subjects: &Subjects, raw: &Raw<'_>, stream_seq: i64) -> Result<EventRow, String> {
    let kind = message_type(raw.payload).map_err(|e| format!("not an event or error: {e}"))?;
    match kind.as_ref() {
        "event" => {
            let ev: EventWire<'_> =
                serde_json::from_slice(raw.payload).map_err(|e| format!("bad event: {e}"))?;
            check_subject(subjects, raw, ev.session.as_str())?;
            let mut state: SessionState = serde_json::from_str(ev.state.get())
                .map_err(|e| format!("bad event state: {e}"))?;
            if let Some(members) = ev.members {
                state.members = serde_json::from_str(members.get())
                    .map_err(|e| format!("bad event members: {e}"))?;
            }
            if let Some(setlist) = ev.setlist {
                state.setlist = serde_json::from_str(setlist.get())
                    .map_err(|e| format!("bad event setlist: {e}"))?;
            }
            check_no_nul(&state)?;
            let changes: Vec<&str> = ev.changes.iter().map(|c| c.kind()).collect();
            let mut row = EventRow {
                stream_seq,
                session_id: ev.session.to_string(),
                kind: "event",
                changes: changes.join(","),
                actor: ev.cause.by.as_ref().map(ToString::to_string),
                cmd_id: ev.cause.cmd.as_ref().map(ToString::to_string),
                seq: Some(i64::try_from(ev.seq).map_err(|_| "seq out of range".to_owned())?),
                epoch: Some(i64::try_from(ev.epoch).map_err(|_| "epoch out of range".to_owned())?),
                error_code: None,
                occurred_us: ev.at,
                published_us: raw.published_us,
                payload: serde_json::to_string(&EventHead {
                    kind: "event",
                    session: &ev.session,
                    seq: ev.seq,
                    epoch: ev.epoch,
                    at: ev.at,
                    cause: &ev.cause,
                    changes: &ev.changes,
                })
                .map_err(|e| format!("re-encoding the event: {e}"))?,
                state_json: Some(ev.state.get().to_owned()),
                members_json: ev.members.map(|m| m.get().to_owned()),
                setlist_json: ev.setlist.map(|s| s.get().to_owned()),
                state: None,
                session: None,
            };
            let session = summary::session_row(&row, &state)
                .map_err(|e| format!("cannot summarise the event: {e}"))?;
            row.session = Some(Box::new(session));
            row.state = Some(Box::new(state));
            Ok(row)
        }
        "error" => {
            let err: ErrorMsg =
                serde_json::from_slice(raw.payload).map_err(|e| format!("bad rejection: {e}"))?;
            let session = err.session.as_ref().ok_or("rejection names no session")?;
            check_subject(subjects, raw, session.as_str())?;
            Ok(EventRow {
                stream_seq,
                session_id: session.to_string(),
                // A member's older connection closed because they connected
                // again, or a refused command.
                kind: if err.code == ErrorCode::Replaced {
                    "replaced"
                } else {
                    "rejected"
                },
                changes: String::new(),
                actor: err.to.as_ref().map(ToString::to_string),
                cmd_id: err.cmd.as_ref().map(ToString::to_string),
                seq: None,
                epoch: err.epoch.map(|e| i64::try_from(e).unwrap_or(i64::MAX)),
                error_code: Some(err.code.as_str().to_owned()),
                occurred_us: raw.published_us,
                published_us: raw.published_us,
                payload: payload_text(raw)?,
                state_json: None,
                members_json: None,
                setlist_json: None,
                state: None,
                session: None,
            })
        }
        other => Err(format!(
            "unexpected \"{}\" message on the event stream",
            other.chars().take(40).collect::<String>()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bandsync_nats::{DisplayName, ErrorCode, EventMsg, JoinCode, MemberId, ServerMsg};

    fn subjects() -> Subjects {
        Subjects::new("bandsync").expect("valid prefix")
    }

    fn raw<'a>(subject: &'a str, payload: &'a [u8]) -> Raw<'a> {
        Raw {
            stream_seq: 7,
            subject,
            payload,
            published_us: 1_000,
        }
    }

    fn state() -> SessionState {
        SessionState::create(
            SessionId::parse("s1").expect("valid"),
            JoinCode::parse("ABCDEF").expect("valid"),
            MemberId::parse("m1").expect("valid"),
            DisplayName::parse("Ana").expect("valid"),
            500,
        )
    }

    #[test]
    fn events_become_typed_rows() {
        let bytes = ServerMsg::Event(Box::new(EventMsg::latest(&state(), 3))).to_bytes();
        let Decoded::Event(row) = decode(
            StreamKind::Events,
            &subjects(),
            &raw("bandsync.sess.s1.evt", &bytes),
        ) else {
            panic!("expected an event row");
        };
        assert_eq!(row.stream_seq, 7);
        assert_eq!(row.session_id, "s1");
        assert_eq!(row.kind, "event");
        assert_eq!(row.changes, "created,leader_changed");
        assert_eq!(
            (row.seq, row.epoch, row.occurred_us),
            (Some(1), Some(3), 500)
        );
        assert_eq!(row.state.as_deref(), Some(&state()));
    }

    #[test]
    fn rejections_become_rows_with_their_code() {
        let mut err = ErrorMsg::new(ErrorCode::NotLeader, "only the leader", None);
        err.session = Some(SessionId::parse("s1").expect("valid"));
        err.to = Some(MemberId::parse("m2").expect("valid"));
        let bytes = ServerMsg::Error(err).to_bytes();
        let Decoded::Event(row) = decode(
            StreamKind::Events,
            &subjects(),
            &raw("bandsync.sess.s1.evt", &bytes),
        ) else {
            panic!("expected a rejection row");
        };
        assert_eq!(
            (row.kind, row.error_code.as_deref(), row.actor.as_deref()),
            ("rejected", Some("not_leader"), Some("m2"))
        );
        assert_eq!(
            row.occurred_us, 1_000,
            "a rejection is dated by its stream time"
        );
    }

    #[test]
    fn garbage_and_mismatches_are_dead_letters_with_a_reason() {
        let dead = |kind, subject: &str, payload: &[u8]| match decode(
            kind,
            &subjects(),
            &raw(subject, payload),
        ) {
            Decoded::Dead(d) => d.reason,
            other => panic!("expected a dead letter, got {other:?}"),
        };
        assert!(
            dead(
                StreamKind::Events,
                "bandsync.sess.s1.evt",
                b"\xff\x00garbage"
            )
            .contains("not an event")
        );
        assert!(
            dead(StreamKind::Commands, "bandsync.cmd.1.s1", b"{}")
                .contains("not a command envelope")
        );
        let bytes = ServerMsg::Event(Box::new(EventMsg::latest(&state(), 1))).to_bytes();
        assert!(
            dead(StreamKind::Events, "bandsync.sess.s2.evt", &bytes).contains("names session s2")
        );
        let pong = ServerMsg::Pong {
            t0: 1.0,
            server_time: 2,
        }
        .to_bytes();
        assert!(dead(StreamKind::Events, "bandsync.sess.s1.evt", &pong).contains("\"pong\""));
    }

    /// An event of `state()` with its state's first timeline segment edited.
    fn event_with_segments(edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let bytes = ServerMsg::Event(Box::new(EventMsg::latest(&state(), 1))).to_bytes();
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        edit(&mut v["state"]["timeline"]["segments"]);
        serde_json::to_vec(&v).expect("json")
    }

    fn dead_reason(payload: &[u8]) -> String {
        match decode(
            StreamKind::Events,
            &subjects(),
            &raw("bandsync.sess.s1.evt", payload),
        ) {
            Decoded::Dead(d) => d.reason,
            other => panic!("expected a dead letter, got {other:?}"),
        }
    }

    #[test]
    fn an_invalid_timeline_is_a_dead_letter_not_a_panic() {
        let empty = event_with_segments(|s| *s = serde_json::json!([]));
        assert!(
            dead_reason(&empty).contains("bad event state: invalid timeline: it has no segments"),
            "{}",
            dead_reason(&empty)
        );
        let slow = event_with_segments(|s| s[0]["tempo_bpm"] = 0.into());
        assert!(
            dead_reason(&slow).contains("tempo_bpm 0 is outside 20..=400"),
            "{}",
            dead_reason(&slow)
        );
        let no_beats = event_with_segments(|s| s[0]["beats_per_bar"] = 0.into());
        assert!(dead_reason(&no_beats).contains("beats_per_bar 0"));
    }

    #[test]
    fn a_state_the_summary_cannot_use_is_a_dead_letter() {
        // A valid timeline whose bar count overflows a bigint.
        let far = event_with_segments(|s| s[0]["bar_origin_number"] = i64::MAX.into());
        let far = String::from_utf8(far)
            .expect("utf-8")
            .replace("\"anchor_beat\":0.0", "\"anchor_beat\":8.0");
        let reason = dead_reason(far.as_bytes());
        assert!(
            reason.contains("cannot summarise the event: the bar containing beat 8"),
            "{reason}"
        );
        let wide = event_with_segments(|s| {
            s[0]["anchor_beat"] = 1e308.into();
            s[0]["bar_origin_beat"] = (-1e308).into();
        });
        assert!(dead_reason(&wide).contains("cannot summarise the event"));
    }

    #[test]
    fn a_panic_while_decoding_is_a_dead_letter() {
        let payload = b"{}";
        let r = raw("bandsync.sess.s1.evt", payload);
        let Decoded::Dead(dead) = dead_on_panic(&r, 7, || panic!("a bug at {}", 42)) else {
            panic!("expected a dead letter");
        };
        assert_eq!(dead.reason, "the store panicked decoding it: a bug at 42");
        assert_eq!(
            (dead.stream_seq, dead.payload.as_slice()),
            (7, &payload[..])
        );
    }

    #[test]
    fn commands_become_typed_rows() {
        let json = r#"{"id":"c1","session":"s1","actor":"m1","gateway":"g1","sent_at":42,"command":{"type":"tempo","bpm":96.0}}"#;
        let Decoded::Command(row) = decode(
            StreamKind::Commands,
            &subjects(),
            &raw("bandsync.cmd.3.s1", json.as_bytes()),
        ) else {
            panic!("expected a command row");
        };
        assert_eq!(
            (row.cmd_id.as_str(), row.kind, row.sent_us),
            ("c1", "tempo", 42)
        );
        assert_eq!(row.payload, json);
    }

    #[test]
    fn an_event_is_split_into_payload_and_state() {
        let state = SessionState::create(
            bandsync_nats::SessionId::parse("s1").expect("valid"),
            bandsync_nats::JoinCode::parse("ABCDEF").expect("valid"),
            bandsync_nats::MemberId::parse("m1").expect("valid"),
            bandsync_nats::DisplayName::parse("Ana").expect("valid"),
            1_000,
        );
        let msg = ServerMsg::Event(Box::new(bandsync_nats::EventMsg::latest(&state, 3)));
        let bytes = msg.to_bytes();
        let Decoded::Event(row) = decode(
            StreamKind::Events,
            &subjects(),
            &raw("bandsync.sess.s1.evt", &bytes),
        ) else {
            panic!("expected an event row");
        };
        let head: serde_json::Value = serde_json::from_str(&row.payload).expect("payload is JSON");
        assert!(head.get("state").is_none(), "the state is stored apart");
        assert_eq!(
            (head["type"].as_str(), head["epoch"].as_u64()),
            (Some("event"), Some(3))
        );
        let mut back: SessionState =
            serde_json::from_str(row.state_json.as_deref().expect("state")).expect("state is JSON");
        assert!(back.members.is_empty(), "the members travel apart");
        back.members = serde_json::from_str(row.members_json.as_deref().expect("carried"))
            .expect("members are JSON");
        assert_eq!(back, state);
        assert_eq!(row.state.as_deref(), Some(&state), "typed with its members");
        // Put back together, it is the message that was published.
        let mut whole = head;
        whole["state"] =
            serde_json::from_str(row.state_json.as_deref().expect("state")).expect("json");
        whole["members"] =
            serde_json::from_str(row.members_json.as_deref().expect("members")).expect("json");
        assert_eq!(
            whole,
            serde_json::from_slice::<serde_json::Value>(&bytes).expect("json")
        );
    }
}
