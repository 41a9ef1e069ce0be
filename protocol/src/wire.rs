//! Messages between gateway and client, which are also the bus payloads:
//! an event or tick is serialised once by the owner and the gateway forwards
//! those exact bytes to every member's socket. docs/protocol.md documents them.

use crate::command::{Command, Song};
use crate::error_code::ErrorCode;
use crate::ids::{CommandId, ConnId, MemberId, SessionId};
use crate::shard::Shard;
use crate::state::{Cause, Change, Member, SessionState};
use crate::timeline::{Micros, Timeline};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// Server → client (and owner → bus for `event`, `tick` and `error`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    Welcome {
        member: MemberId,
        server_time: Micros,
        state: Box<SessionState>,
    },
    Event(Box<EventMsg>),
    Tick(TickMsg),
    Pong {
        t0: f64,
        server_time: Micros,
    },
    Error(ErrorMsg),
    /// The gateway is going away: connect again (to any gateway) with the same token.
    Reconnect {
        reason: String,
    },
    /// A fresh member token (sent on connecting and after half a token's
    /// lifetime): keep it in place of the old one for the next connection.
    Token {
        token: String,
        /// When it lapses, Unix seconds.
        expires_at: u64,
    },
}

impl ServerMsg {
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("server messages always serialise"))
    }

    /// Parses one server message. Ticks and events, nearly every message a
    /// client reads, go straight into their struct (see `message_type`).
    pub fn parse(text: &str) -> serde_json::Result<ServerMsg> {
        match message_type(text.as_bytes())?.as_ref() {
            "tick" => serde_json::from_str(text).map(ServerMsg::Tick),
            "event" => serde_json::from_str(text).map(|e| ServerMsg::Event(Box::new(e))),
            _ => serde_json::from_str(text),
        }
    }
}

/// The `type` of a message, read before the message itself: decoding straight
/// into the variant's struct skips serde's buffering of internally tagged enums,
/// which was the largest CPU cost of the store's decoding and, for ticks, of the
/// load generator's reading. Serialised messages carry the tag first, so the
/// common case is a look at the first bytes.
pub fn message_type(json: &[u8]) -> serde_json::Result<Cow<'_, str>> {
    if let Some(rest) = json.strip_prefix(br#"{"type":""#)
        && let Some(end) = rest.iter().position(|&b| b == b'"' || b == b'\\')
        && rest[end] == b'"'
        && let Ok(kind) = std::str::from_utf8(&rest[..end])
    {
        return Ok(Cow::Borrowed(kind));
    }
    #[derive(Deserialize)]
    struct TypeOnly<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
    }
    serde_json::from_slice::<TypeOnly<'_>>(json).map(|t| t.kind)
}

/// A state change: what changed, why, and the state after it. The members and
/// the setlist (charts included, the bulk of a state) travel only in the event
/// that changed them; every other event's `state.members` and `state.setlist`
/// are empty and its `members_rev` and `setlist_rev` name the ones the receiver
/// should already hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventMsg {
    pub session: SessionId,
    pub seq: u64,
    /// Lease revision of the owner that applied it; older epochs are dropped.
    pub epoch: u64,
    /// Server time the change was applied (effective times are inside `changes`).
    pub at: Micros,
    pub cause: Cause,
    pub changes: Vec<Change>,
    pub state: SessionState,
    /// The members, in an event that changed them or the leader (`state.members_rev == seq`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<Member>>,
    /// The new setlist, in the event that replaced it (`state.setlist_rev == seq`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setlist: Option<Vec<Song>>,
    /// The member this event removed (also in `changes`): at the top, where a
    /// gateway's header read finds the socket to close.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<MemberId>,
}

impl EventMsg {
    /// The event describing the state's latest change set.
    pub fn latest(state: &SessionState, epoch: u64) -> Self {
        let mut sent = state.clone();
        sent.hide_internals();
        let members = std::mem::take(&mut sent.members);
        let setlist = std::mem::take(&mut sent.setlist);
        Self {
            session: state.id.clone(),
            seq: state.seq,
            epoch,
            at: state.last_change_at,
            cause: state.last_cause.clone(),
            changes: state.last_changes.clone(),
            state: sent,
            members: (state.members_rev == state.seq).then_some(members),
            setlist: (state.setlist_rev == state.seq).then_some(setlist),
            removed: state.last_changes.iter().find_map(|c| match c {
                Change::MemberRemoved { member } => Some(member.clone()),
                _ => None,
            }),
        }
    }

    /// The whole state after this event, for a receiver that held `held` before
    /// it. `None` when the event leaves the members or the setlist out and
    /// `held`'s are of another revision: the receiver missed the event that
    /// changed them and must read the state afresh (a client reconnects and gets
    /// it in its `welcome`). An event logged before these travelled on their own
    /// has them inside its state.
    pub fn state_after(&self, held: &SessionState) -> Option<SessionState> {
        let members = part(
            &self.members,
            &self.state.members,
            (&held.members, held.members_rev == self.state.members_rev),
        )?;
        let setlist = part(
            &self.setlist,
            &self.state.setlist,
            (&held.setlist, held.setlist_rev == self.state.setlist_rev),
        )?;
        Some(SessionState {
            members,
            setlist,
            ..self.state.clone()
        })
    }
}

/// One by-reference part of a state after an event: carried, inside the state
/// (older events), or the receiver's own if it is of the same revision.
fn part<T: Clone>(carried: &Option<Vec<T>>, inside: &[T], held: (&[T], bool)) -> Option<Vec<T>> {
    match (carried, held) {
        (Some(list), _) => Some(list.clone()),
        (None, _) if !inside.is_empty() => Some(inside.to_vec()),
        (None, (list, true)) => Some(list.to_vec()),
        (None, (_, false)) => None,
    }
}

/// The heartbeat of a playing session: the timeline as it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TickMsg {
    pub session: SessionId,
    /// `timeline::tick_seq(server_time, period, shard phase)`: strictly increasing.
    pub seq: u64,
    pub epoch: u64,
    pub server_time: Micros,
    pub timeline: Timeline,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorMsg {
    pub code: ErrorCode,
    pub message: String,
    /// The client's `id` of the message this answers, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Set on rejections that travel the bus: whom to tell, and in which epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<MemberId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<CommandId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// The one connection it concerns (`replaced`: the member's older socket,
    /// on whichever gateway holds it). Read by gateways, never sent to members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<ConnId>,
}

impl ErrorMsg {
    pub fn new(code: ErrorCode, message: impl Into<String>, id: Option<String>) -> Self {
        Self {
            code,
            message: message.into(),
            id,
            session: None,
            to: None,
            cmd: None,
            epoch: None,
            conn: None,
        }
    }
}

/// The few fields a gateway reads from a bus message before forwarding its bytes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BusHeader {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub seq: u64,
    #[serde(default)]
    pub epoch: u64,
    #[serde(default)]
    pub to: Option<MemberId>,
    #[serde(default)]
    pub code: Option<ErrorCode>,
    /// A tick's `server_time`.
    #[serde(default)]
    pub server_time: Option<Micros>,
    /// An event's `at`.
    #[serde(default)]
    pub at: Option<Micros>,
    /// The member an event removed.
    #[serde(default)]
    pub removed: Option<MemberId>,
    /// The connection an error concerns (`replaced`).
    #[serde(default)]
    pub conn: Option<ConnId>,
    /// An event's state, of which a gateway reads who leads.
    #[serde(default)]
    pub state: Option<HeaderState>,
}

/// What a gateway reads of an event's state: who leads, and the timeline it
/// builds the session's ticks from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct HeaderState {
    #[serde(default)]
    pub leader: Option<MemberId>,
    #[serde(default)]
    pub timeline: Option<Timeline>,
}

/// The owner's heartbeat for one shard, once per tick period while any of its
/// sessions plays (bus only, subject `<p>.beat.<shard>`). Each gateway turns it
/// into a `tick` for every playing session of the shard it has members of,
/// with the timeline of the newest state it has seen: the timelines cross the
/// bus once per change, in events, and the bus carries one small message per
/// shard per period however many sessions play. A tick therefore still proves
/// that the session's owner is alive and holds its lease (no beat, no tick),
/// and carries the owner's epoch and the period's `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BeatMsg {
    pub shard: Shard,
    /// `timeline::tick_seq(server_time, period, shard phase)`: the ticks' `seq`.
    pub seq: u64,
    pub epoch: u64,
    /// When the owner sent it, on its clock.
    pub server_time: Micros,
}

impl BeatMsg {
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("beats always serialise"))
    }
}

impl BusHeader {
    /// When the owner sent it (a tick) or applied it (an event).
    pub fn sent_at(&self) -> Option<Micros> {
        self.server_time.or(self.at)
    }
}

/// Longest client `id`, in bytes of UTF-8: it is echoed back and carried on the
/// bus with the command.
pub const MAX_CLIENT_REF: usize = 64;

/// Largest message a client may send, in bytes: the largest setlist command the
/// owner accepts (`command::MAX_SONGS` songs, each with a title of
/// `MAX_TITLE_CHARS` 4-byte characters and a chart of `MAX_CHART_BYTES` bytes
/// that JSON escapes to twice that, every field present), sent as compact JSON
/// (`JSON.stringify`, serde_json), is about 434 KB; this leaves room above it.
/// The gateway's `--max-frame-bytes` defaults to it.
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 512 * 1024;

/// Client → gateway. One rule per field: `type` a known name; `id` absent or a
/// string of 1..=`MAX_CLIENT_REF` bytes; no field the message does not define
/// (nor in a song of a setlist); each value as `Command::validate` says.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMsg {
    Ping {
        t0: f64,
    },
    Command {
        id: Option<String>,
        command: Command,
    },
}

impl ClientMsg {
    /// Parses one text frame, with an error a person can act on. The error
    /// carries the client's `id` when it could be read.
    // The error is the reply itself, built once per bad frame; boxing it would
    // only add an allocation to the error path.
    #[allow(clippy::result_large_err)]
    pub fn parse(text: &str) -> Result<Self, ErrorMsg> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            ErrorMsg::new(
                ErrorCode::BadJson,
                format!("expected a JSON object with a \"type\": {e}"),
                None,
            )
        })?;
        let serde_json::Value::Object(mut obj) = value else {
            return Err(ErrorMsg::new(
                ErrorCode::Invalid,
                "expected a JSON object with a \"type\"",
                None,
            ));
        };
        let id = match obj.remove("id") {
            None => None,
            Some(serde_json::Value::String(s)) if (1..=MAX_CLIENT_REF).contains(&s.len()) => {
                Some(s)
            }
            Some(_) => {
                return Err(ErrorMsg::new(
                    ErrorCode::Invalid,
                    format!("id: must be a string of 1..={MAX_CLIENT_REF} bytes"),
                    None,
                ));
            }
        };
        let kind = match obj.get("type") {
            Some(serde_json::Value::String(kind)) => kind.clone(),
            _ => {
                return Err(ErrorMsg::new(
                    ErrorCode::Invalid,
                    "expected a JSON object with a \"type\" string",
                    id,
                ));
            }
        };
        let invalid = |message: String| ErrorMsg::new(ErrorCode::Invalid, message, id.clone());
        let unknown_field = |field: &str, fields: &[&str]| {
            let field: String = field.chars().take(40).collect();
            let takes = if fields.is_empty() {
                "no fields".to_owned()
            } else {
                format!("only {}", fields.join(", "))
            };
            invalid(format!(
                "bad \"{kind}\" message: unknown field `{field}`, it takes {takes}"
            ))
        };
        if kind == "ping" {
            if let Some(field) = obj.keys().find(|k| !matches!(k.as_str(), "type" | "t0")) {
                return Err(unknown_field(field, &["t0"]));
            }
            let t0 = obj
                .get("t0")
                .and_then(serde_json::Value::as_f64)
                .ok_or_else(|| {
                    invalid("bad \"ping\" message: \"t0\" must be a number".to_owned())
                })?;
            return Ok(ClientMsg::Ping { t0 });
        }
        if !Command::CLIENT_TYPES.contains(&kind.as_str()) {
            let kind: String = kind.chars().take(40).collect();
            return Err(ErrorMsg::new(
                ErrorCode::UnknownType,
                format!("unknown message type \"{kind}\""),
                id.clone(),
            ));
        }
        if kind == "setlist"
            && let Some(serde_json::Value::Array(songs)) = obj.get("songs")
        {
            let extra = songs
                .iter()
                .filter_map(serde_json::Value::as_object)
                .flat_map(|song| song.keys())
                .find(|k| !Song::FIELDS.contains(&k.as_str()));
            if let Some(field) = extra {
                let field: String = field.chars().take(40).collect();
                return Err(invalid(format!(
                    "bad \"setlist\" message: unknown field `{field}` in a song, it takes only {}",
                    Song::FIELDS.join(", ")
                )));
            }
        }
        let keys: Vec<String> = obj.keys().filter(|k| *k != "type").cloned().collect();
        let command: Command = serde_json::from_value(serde_json::Value::Object(obj))
            .map_err(|e| invalid(format!("bad \"{kind}\" message: {e}")))?;
        let fields = command.fields();
        if let Some(field) = keys.iter().find(|k| !fields.contains(&k.as_str())) {
            return Err(unknown_field(field, fields));
        }
        command
            .validate()
            .map_err(|e| ErrorMsg::new(ErrorCode::Invalid, e.to_string(), id.clone()))?;
        Ok(ClientMsg::Command { id, command })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{DisplayName, JoinCode};
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;

    #[test]
    fn parses_commands_and_pings() {
        assert_eq!(
            ClientMsg::parse(r#"{"type":"ping","t0":12.5}"#),
            Ok(ClientMsg::Ping { t0: 12.5 })
        );
        assert_eq!(
            ClientMsg::parse(r#"{"type":"tempo","bpm":96,"id":"c7"}"#),
            Ok(ClientMsg::Command {
                id: Some("c7".into()),
                command: Command::Tempo { bpm: 96.0 }
            })
        );
    }

    #[test]
    fn errors_are_specific() {
        let code = |t: &str| ClientMsg::parse(t).err().map(|e| e.code);
        assert_eq!(code("{not json"), Some(ErrorCode::BadJson));
        assert_eq!(code("[1,2]"), Some(ErrorCode::Invalid));
        assert_eq!(code(r#"{"type":"dance"}"#), Some(ErrorCode::UnknownType));
        assert_eq!(
            code(r#"{"type":"hello","name":"x","conn":"y"}"#),
            Some(ErrorCode::UnknownType),
            "gateway-only"
        );
        assert_eq!(
            code(r#"{"type":"tempo","bpm":500}"#),
            Some(ErrorCode::Invalid)
        );
        assert_eq!(
            code(r#"{"type":"seek","beat":-4}"#),
            Some(ErrorCode::Invalid)
        );
        assert_eq!(code(r#"{"type":"tempo"}"#), Some(ErrorCode::Invalid));
        let e =
            ClientMsg::parse(r#"{"type":"tempo","bpm":1000,"id":"c9"}"#).expect_err("out of range");
        assert_eq!(e.id.as_deref(), Some("c9"));
        assert!(e.message.contains("bpm"), "{}", e.message);
    }

    #[test]
    fn unknown_fields_are_refused_in_every_client_message() {
        let client_commands: Vec<Command> = crate::command::tests::one_of_each()
            .into_iter()
            .filter(|c| Command::CLIENT_TYPES.contains(&c.kind()))
            .collect();
        assert_eq!(client_commands.len(), Command::CLIENT_TYPES.len());
        for c in client_commands {
            let mut json = serde_json::to_value(&c).expect("ser");
            let text = json.to_string();
            assert_eq!(
                ClientMsg::parse(&text),
                Ok(ClientMsg::Command {
                    id: None,
                    command: c.clone()
                }),
                "{text}"
            );
            json["extra"] = 1.into();
            let text = json.to_string();
            let e = ClientMsg::parse(&text).expect_err(&text);
            assert_eq!(e.code, ErrorCode::Invalid, "{text}");
            assert!(
                e.message.contains("unknown field `extra`"),
                "{text}: {}",
                e.message
            );
        }
        let e = ClientMsg::parse(r#"{"type":"ping","t0":1,"extra":1}"#).expect_err("ping");
        assert_eq!(e.code, ErrorCode::Invalid);
        let e = ClientMsg::parse(r#"{"type":"stop","id":"c1","force":true}"#).expect_err("stop");
        assert_eq!((e.code, e.id.as_deref()), (ErrorCode::Invalid, Some("c1")));
        assert!(e.message.contains("takes no fields"), "{}", e.message);
        let e = ClientMsg::parse(r#"{"type":"setlist","songs":[{"title":"A","key":"E"}]}"#)
            .expect_err("song field");
        assert_eq!(e.code, ErrorCode::Invalid);
        assert!(e.message.contains("in a song"), "{}", e.message);
    }

    #[test]
    fn command_ids_are_strings_of_at_most_64_bytes() {
        let with_id = |id: &str| format!(r#"{{"type":"stop","id":{id}}}"#);
        for bad in [
            "9".to_owned(),
            "1.5".to_owned(),
            r#"{"a":1}"#.to_owned(),
            "[1,2]".to_owned(),
            "true".to_owned(),
            "null".to_owned(),
            r#""""#.to_owned(),
            format!("\"{}\"", "x".repeat(65)),
            // 33 characters, 66 bytes.
            format!("\"{}\"", "é".repeat(33)),
        ] {
            let e = ClientMsg::parse(&with_id(&bad)).expect_err(&bad);
            assert_eq!(e.code, ErrorCode::Invalid, "{bad}");
            assert_eq!(e.message, "id: must be a string of 1..=64 bytes", "{bad}");
            assert_eq!(e.id, None, "a refused id is not echoed");
        }
        for good in ["x".repeat(64), "é".repeat(32), "c1".to_owned()] {
            assert_eq!(
                ClientMsg::parse(&with_id(&format!("\"{good}\""))),
                Ok(ClientMsg::Command {
                    id: Some(good.clone()),
                    command: Command::Stop
                })
            );
        }
    }

    /// The largest setlist the owner accepts, as JSON: every song at every
    /// limit, each title of 4-byte characters, each chart of characters JSON
    /// escapes (`"` becomes `\"`), with a 64-byte id.
    fn largest_setlist_message(chart_char: char) -> String {
        use crate::command::{MAX_CHART_BYTES, MAX_SONGS, MAX_TITLE_CHARS};
        let chart: String = std::iter::repeat(chart_char)
            .scan(0, |bytes, c| {
                *bytes += c.len_utf8();
                (*bytes <= MAX_CHART_BYTES).then_some(c)
            })
            .collect();
        let song = Song {
            title: "𝄞".repeat(MAX_TITLE_CHARS),
            tempo_bpm: Some(399.99999999999994),
            beats_per_bar: Some(32),
            beat_unit: Some(32),
            chart,
        };
        let command = Command::Setlist {
            songs: vec![song; MAX_SONGS],
        };
        assert_eq!(command.validate(), Ok(()), "the owner accepts it");
        let mut json = serde_json::to_value(&command).expect("ser");
        json["id"] = "x".repeat(MAX_CLIENT_REF).into();
        json.to_string()
    }

    #[test]
    fn the_largest_setlist_fits_a_client_message() {
        // '"' is what JSON escapes; '♯' is what the issue's charts held.
        for chart_char in ['"', '♯', '♭', 'x'] {
            let text = largest_setlist_message(chart_char);
            assert!(
                text.len() <= MAX_CLIENT_MESSAGE_BYTES,
                "charts of {chart_char:?}: {} bytes over the {MAX_CLIENT_MESSAGE_BYTES}-byte limit",
                text.len()
            );
            assert!(
                matches!(ClientMsg::parse(&text), Ok(ClientMsg::Command { .. })),
                "charts of {chart_char:?} refused"
            );
        }
        // The issue's setlist: 50 charts of a realistic mix of chords, ♯ and ♭.
        let line = "| F♯m7 . B♭ . | E♭maj7 . . . | C♯7 . . . |\n";
        let chart: String = line.repeat(crate::command::MAX_CHART_BYTES / line.len());
        let songs = vec![
            Song {
                title: "Song".into(),
                tempo_bpm: Some(120.0),
                beats_per_bar: Some(4),
                beat_unit: None,
                chart,
            };
            crate::command::MAX_SONGS
        ];
        let text = serde_json::to_string(&Command::Setlist { songs }).expect("ser");
        assert!(text.len() <= MAX_CLIENT_MESSAGE_BYTES, "{}", text.len());
        assert!(ClientMsg::parse(&text).is_ok());
    }

    /// JSON shaped like a client message: the fields and types the decoder
    /// knows, with values of every kind, nested a few levels.
    fn json_like_a_client_message() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let key = prop::sample::select(vec![
            "type",
            "id",
            "t0",
            "bpm",
            "beats_per_bar",
            "beat_unit",
            "count_in_bars",
            "beat",
            "songs",
            "title",
            "tempo_bpm",
            "chart",
            "index",
            "to",
            "name",
            "conn",
            "code",
            "text",
            "rtt_ms",
            "clock_error_ms",
            "x",
        ]);
        let kind = prop::sample::select(
            [
                Command::CLIENT_TYPES,
                &["ping", "hello", "create", "bye", "", "PING"],
            ]
            .concat(),
        );
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            (0.0..500.0f64).prop_map(Value::from),
            (0u8..40).prop_map(Value::from),
            ".{0,70}".prop_map(Value::from),
            kind.clone().prop_map(Value::from),
        ];
        let value = leaf.prop_recursive(4, 64, 8, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                proptest::collection::btree_map(key.clone(), inner, 0..6).prop_map(|m| {
                    Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                }),
            ]
        });
        (kind, value).prop_map(|(kind, value)| match value {
            Value::Object(mut m) => {
                m.entry("type").or_insert_with(|| kind.into());
                Value::Object(m)
            }
            other => other,
        })
    }

    /// What an accepted message promises its receiver.
    fn check_accepted(text: &str, msg: &ClientMsg) -> Result<(), TestCaseError> {
        if let ClientMsg::Command { id, command } = msg {
            prop_assert!(Command::CLIENT_TYPES.contains(&command.kind()), "{text}");
            prop_assert_eq!(command.validate(), Ok(()), "{}", text);
            prop_assert!(
                id.as_ref()
                    .is_none_or(|id| (1..=MAX_CLIENT_REF).contains(&id.len()))
            );
        }
        Ok(())
    }

    proptest! {
        /// Any text at all, random or a real message with bytes changed and
        /// cut: an answer (a message or an error a person can read), never a
        /// panic.
        #[test]
        fn the_client_decoder_takes_any_bytes(
            random in proptest::collection::vec(any::<u8>(), 0..300),
            template in prop::sample::select(vec![
                r#"{"type":"ping","t0":1795765893541020.5}"#,
                r#"{"type":"tempo","bpm":96,"id":"c3"}"#,
                r#"{"type":"stop"}"#,
                r#"{"type":"setlist","songs":[{"title":"Blackbird","tempo_bpm":94,"beats_per_bar":3,"chart":"| G ♯ |\n| C |"}],"id":"c9"}"#,
                r#"{"type":"hand_leadership","to":"igjikumefo0d"}"#,
            ]),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            cut in any::<prop::sample::Index>(),
            use_random in any::<bool>(),
        ) {
            let bytes = if use_random {
                random
            } else {
                let mut bytes = template.as_bytes().to_vec();
                for (at, b) in edits {
                    let i = at.index(bytes.len());
                    bytes[i] = b;
                }
                bytes.truncate(cut.index(bytes.len() + 1));
                bytes
            };
            let text = String::from_utf8_lossy(&bytes);
            match ClientMsg::parse(&text) {
                Ok(msg) => check_accepted(&text, &msg)?,
                Err(e) => prop_assert!(!e.message.is_empty()),
            }
        }

        /// JSON that looks like a client message, nearly right or wrong in
        /// every way: never a panic, and what is accepted is valid.
        #[test]
        fn the_client_decoder_takes_any_json(value in json_like_a_client_message()) {
            let text = value.to_string();
            match ClientMsg::parse(&text) {
                Ok(msg) => check_accepted(&text, &msg)?,
                Err(e) => prop_assert!(!e.message.is_empty()),
            }
        }

        /// Every valid command comes back as it was sent, with its id.
        #[test]
        fn valid_commands_round_trip(
            bpm in 20.0..=400.0f64,
            beat in 0.0..=1_000_000.0f64,
            index in any::<usize>(),
            which in 0usize..13,
            id in "[a-z0-9é]{1,21}",
        ) {
            let song = Song { title: "A".into(), tempo_bpm: Some(bpm), beats_per_bar: Some(3), beat_unit: Some(8), chart: "| A♭ |".into() };
            let commands = [
                Command::Tempo { bpm },
                Command::Meter { beats_per_bar: 7, beat_unit: 8 },
                Command::Play { count_in_bars: 2 },
                Command::Pause,
                Command::Stop,
                Command::Seek { beat },
                Command::Setlist { songs: vec![song] },
                Command::Song { index },
                Command::HandLeadership { to: MemberId::parse("m1").expect("valid") },
                Command::RequestLeadership,
                Command::Cue { text: id.clone() },
                Command::Message { text: format!("{id} 🎸") },
                Command::Report { rtt_ms: bpm, clock_error_ms: beat / 100.0 },
            ];
            let command = commands[which].clone();
            let mut json = serde_json::to_value(&command).expect("ser");
            json["id"] = id.clone().into();
            prop_assert_eq!(
                ClientMsg::parse(&json.to_string()),
                Ok(ClientMsg::Command { id: Some(id), command })
            );
        }
    }

    #[test]
    fn golden_server_messages() {
        let pong = ServerMsg::Pong {
            t0: 1.5,
            server_time: 42,
        };
        assert_eq!(
            String::from_utf8_lossy(&pong.to_bytes()),
            r#"{"type":"pong","t0":1.5,"server_time":42}"#
        );
        let err = ServerMsg::Error(ErrorMsg::new(
            ErrorCode::NotLeader,
            "only the leader",
            Some("c1".into()),
        ));
        assert_eq!(
            String::from_utf8_lossy(&err.to_bytes()),
            r#"{"type":"error","code":"not_leader","message":"only the leader","id":"c1"}"#
        );
    }

    fn new_session() -> SessionState {
        SessionState::create(
            SessionId::parse("s1").expect("valid"),
            JoinCode::parse("ABCDEF").expect("valid"),
            MemberId::parse("m1").expect("valid"),
            DisplayName::parse("Ana").expect("valid"),
            1_000,
        )
    }

    #[test]
    fn events_round_trip_and_expose_their_header() {
        let state = new_session();
        let msg = ServerMsg::Event(Box::new(EventMsg::latest(&state, 7)));
        let bytes = msg.to_bytes();
        let back: ServerMsg = serde_json::from_slice(&bytes).expect("parses");
        assert_eq!(back, msg);
        let head: BusHeader = serde_json::from_slice(&bytes).expect("header");
        assert_eq!((head.kind.as_str(), head.seq, head.epoch), ("event", 1, 7));
        let leader = head.state.and_then(|s| s.leader);
        assert_eq!(leader.as_ref().map(|m| m.as_str()), Some("m1"), "who leads");
    }

    #[test]
    fn parse_reads_every_message_as_serde_does() {
        let state = new_session();
        let messages = [
            ServerMsg::Event(Box::new(EventMsg::latest(&state, 7))),
            ServerMsg::Tick(TickMsg {
                session: state.id.clone(),
                seq: 3,
                epoch: 7,
                server_time: 2_000,
                timeline: state.timeline.clone(),
            }),
            ServerMsg::Welcome {
                member: MemberId::parse("m1").expect("valid"),
                server_time: 5,
                state: Box::new(state.clone()),
            },
            ServerMsg::Pong {
                t0: 1.5,
                server_time: 42,
            },
            ServerMsg::Error(ErrorMsg::new(ErrorCode::NotLeader, "no", None)),
            ServerMsg::Reconnect {
                reason: "bye".into(),
            },
            ServerMsg::Token {
                token: "k1.e30.c2ln".into(),
                expires_at: 1_800_000_000,
            },
        ];
        for msg in messages {
            let text = String::from_utf8(msg.to_bytes().to_vec()).expect("utf-8");
            assert_eq!(ServerMsg::parse(&text).expect("parses"), msg, "{text}");
        }
        // The tag anywhere, or escaped, is still found; bad input is an error.
        let late = r#"{"t0":1.5,"server_time":42,"type":"pong"}"#;
        assert_eq!(
            message_type(late.as_bytes()).expect("found").as_ref(),
            "pong"
        );
        assert!(matches!(ServerMsg::parse(late), Ok(ServerMsg::Pong { .. })));
        let escaped = r#"{"type":"po\u006eg","t0":1.5,"server_time":42}"#;
        assert_eq!(
            message_type(escaped.as_bytes()).expect("found").as_ref(),
            "pong"
        );
        assert!(ServerMsg::parse(r#"{"type":"tick","seq":"x"}"#).is_err());
        assert!(ServerMsg::parse(r#"{"type":"dance"}"#).is_err());
        assert!(message_type(b"[1]").is_err());
    }

    #[test]
    fn only_the_event_that_replaced_the_setlist_carries_it() {
        let leader = MemberId::parse("m1").expect("valid");
        let mut state = SessionState::create(
            SessionId::parse("s1").expect("valid"),
            JoinCode::parse("ABCDEF").expect("valid"),
            leader.clone(),
            DisplayName::parse("Ana").expect("valid"),
            1_000,
        );
        let rules = crate::state::Rules::default();
        let held_before = state.clone();
        let song = |title: &str| Song {
            title: title.into(),
            tempo_bpm: Some(100.0),
            beats_per_bar: Some(4),
            beat_unit: None,
            chart: "| C | G |\n".repeat(50),
        };
        let setlist = Command::Setlist {
            songs: vec![song("One"), song("Two")],
        };
        state
            .apply(&setlist, &leader, None, 2_000, &rules)
            .expect("leader sets it");
        let carrying = EventMsg::latest(&state, 1);
        assert_eq!(carrying.setlist.as_deref(), Some(&state.setlist[..]));
        assert!(carrying.state.setlist.is_empty(), "not twice in one event");
        assert_eq!(carrying.state_after(&held_before), Some(state.clone()));

        let held = state.clone();
        state
            .apply(&Command::Tempo { bpm: 90.0 }, &leader, None, 3_000, &rules)
            .expect("leader steers");
        let light = EventMsg::latest(&state, 1);
        assert_eq!(light.setlist, None);
        let bytes = ServerMsg::Event(Box::new(light.clone())).to_bytes();
        assert!(
            bytes.len()
                < ServerMsg::Event(Box::new(carrying.clone()))
                    .to_bytes()
                    .len()
                    / 2,
            "an event without the setlist is small"
        );
        assert_eq!(light.state_after(&held), Some(state.clone()));
        // A receiver that missed the setlist event cannot rebuild the state.
        assert_eq!(light.state_after(&held_before), None);
    }
}
