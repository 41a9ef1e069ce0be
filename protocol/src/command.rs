//! Commands: what members (through a gateway) ask a session's owner to do.
//! The same JSON shapes arrive from clients and travel on the bus; `validate`
//! is pure so the gateway refuses bad values at the edge and the owner re-checks.

use crate::ids::{
    CommandId, ConnId, DisplayName, GatewayId, InvalidValue, JoinCode, MemberId, SessionId,
};
use crate::timeline::{
    BEAT_UNITS, MAX_BEAT, MAX_BEATS_PER_BAR, MAX_BPM, MAX_COUNT_IN_BARS, MIN_BPM, Micros,
};
use serde::{Deserialize, Serialize};

pub const MAX_SONGS: usize = 50;
/// A title is a name (`text::check_name`): counted in characters, what people
/// see; at 4 bytes a character at most, 50 of them cost at most 20 KB.
pub const MAX_TITLE_CHARS: usize = 100;
/// A chart is counted in bytes of UTF-8, which is what it costs: on the
/// client's socket, in the session's state (every `welcome`) and on the bus.
/// 4 KiB is 4,096 ASCII characters, or 1,365 ♯ or ♭ (3 bytes each). The
/// largest setlist this allows (50 charts of 4 KiB, every byte escaped in
/// JSON) fits `wire::MAX_CLIENT_MESSAGE_BYTES` and `state::MAX_STATE_BYTES`;
/// tests in `wire` and `state` build it.
pub const MAX_CHART_BYTES: usize = 4_096;
/// A cue or a message, in bytes of UTF-8: a line on a stage screen.
pub const MAX_TEXT_BYTES: usize = 120;
/// Largest round trip or clock error a member may report (a minute).
pub const MAX_REPORTED_MS: f64 = 60_000.0;

/// A song in the setlist. Its chart is text: ChordPro, or plain lines of bars.
/// Loading it (`Command::Song`) applies its tempo and meter; a value it lacks
/// comes from the chart's `{tempo}` / `{time}` directives (`chordpro`).
/// Unknown fields are refused from clients (`ClientMsg::parse`), and ignored
/// when read back from a state or an event, which newer servers may extend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Song {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tempo_bpm: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beats_per_bar: Option<u8>,
    /// The note value of a beat: 8 for 6/8 (one of `timeline::BEAT_UNITS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beat_unit: Option<u8>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub chart: String,
}

impl Song {
    /// The fields a client may send in a song.
    pub const FIELDS: &'static [&'static str] =
        &["title", "tempo_bpm", "beats_per_bar", "beat_unit", "chart"];
}

/// One command. `type` names it on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    // --- sent by members (leader-only unless noted) ---
    Tempo {
        bpm: f64,
    },
    Meter {
        beats_per_bar: u8,
        beat_unit: u8,
    },
    Play {
        #[serde(default)]
        count_in_bars: u8,
    },
    Pause,
    Stop,
    Seek {
        beat: f64,
    },
    Setlist {
        songs: Vec<Song>,
    },
    Song {
        index: usize,
    },
    HandLeadership {
        to: MemberId,
    },
    /// Any member; granted at once if the leader is away or it is the displaced leader.
    RequestLeadership,
    /// Opens or closes the session to new members (members already in it can
    /// always reconnect).
    Joining {
        open: bool,
    },
    /// Removes a member: their token stops working and their socket closes.
    RemoveMember {
        member: MemberId,
    },
    /// A short cue every screen shows large ("last chorus"); `""` clears it.
    Cue {
        text: String,
    },
    /// Any member: a short message to the band; not kept in the state.
    Message {
        text: String,
    },
    /// Any member: the quality of its connection as its clock sync measures it
    /// (round trip and the clock estimate's uncertainty, in ms).
    Report {
        rtt_ms: f64,
        clock_error_ms: f64,
    },
    // --- sent by gateways on members' behalf; refused from clients ---
    Create {
        code: JoinCode,
        name: DisplayName,
    },
    Hello {
        name: DisplayName,
        conn: ConnId,
    },
    Bye {
        conn: ConnId,
    },
}

impl Command {
    /// Wire names a client may send (besides `ping`).
    pub const CLIENT_TYPES: &'static [&'static str] = &[
        "tempo",
        "meter",
        "play",
        "pause",
        "stop",
        "seek",
        "setlist",
        "song",
        "hand_leadership",
        "request_leadership",
        "joining",
        "remove_member",
        "cue",
        "message",
        "report",
    ];

    /// The fields of this command besides `type`. serde's `deny_unknown_fields`
    /// does not reach the unit variants of an internally tagged enum (`stop`,
    /// `pause`, `request_leadership` accepted anything), so `ClientMsg::parse`
    /// checks a client's fields against this list for every command.
    pub fn fields(&self) -> &'static [&'static str] {
        match self {
            Command::Tempo { .. } => &["bpm"],
            Command::Meter { .. } => &["beats_per_bar", "beat_unit"],
            Command::Play { .. } => &["count_in_bars"],
            Command::Pause | Command::Stop | Command::RequestLeadership => &[],
            Command::Seek { .. } => &["beat"],
            Command::Setlist { .. } => &["songs"],
            Command::Song { .. } => &["index"],
            Command::HandLeadership { .. } => &["to"],
            Command::Joining { .. } => &["open"],
            Command::RemoveMember { .. } => &["member"],
            Command::Cue { .. } | Command::Message { .. } => &["text"],
            Command::Report { .. } => &["rtt_ms", "clock_error_ms"],
            Command::Create { .. } => &["code", "name"],
            Command::Hello { .. } => &["name", "conn"],
            Command::Bye { .. } => &["conn"],
        }
    }

    /// Checks every value against the ranges the timeline accepts.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        match self {
            Command::Tempo { bpm } => check_bpm(*bpm),
            Command::Meter {
                beats_per_bar,
                beat_unit,
            } => check_meter(*beats_per_bar, *beat_unit),
            Command::Play { count_in_bars } if *count_in_bars > MAX_COUNT_IN_BARS => Err(
                InvalidValue::new("count_in_bars", format!("must be 0..={MAX_COUNT_IN_BARS}")),
            ),
            Command::Seek { beat } if !(beat.is_finite() && (0.0..=MAX_BEAT).contains(beat)) => {
                Err(InvalidValue::new(
                    "beat",
                    format!("must be a number in 0..={MAX_BEAT}"),
                ))
            }
            Command::Setlist { songs } => check_setlist(songs),
            Command::Cue { text } => crate::text::check_text("text", text, MAX_TEXT_BYTES),
            Command::Message { text } if text.is_empty() => Err(InvalidValue::new(
                "text",
                format!("must be 1..={MAX_TEXT_BYTES} bytes of UTF-8"),
            )),
            Command::Message { text } => crate::text::check_text("text", text, MAX_TEXT_BYTES),
            Command::Report {
                rtt_ms,
                clock_error_ms,
            } => check_ms("rtt_ms", *rtt_ms)
                .and_then(|()| check_ms("clock_error_ms", *clock_error_ms)),
            _ => Ok(()),
        }
    }

    /// Short name for logs and the store's `kind` column.
    /// Whether only the session's leader may send it (the state machine
    /// refuses it from anyone else with `not_leader`; a gateway that knows
    /// who leads refuses it at once, without a trip over the bus).
    pub fn leader_only(&self) -> bool {
        match self {
            Command::Tempo { .. }
            | Command::Meter { .. }
            | Command::Play { .. }
            | Command::Pause
            | Command::Stop
            | Command::Seek { .. }
            | Command::Setlist { .. }
            | Command::Song { .. }
            | Command::HandLeadership { .. }
            | Command::Joining { .. }
            | Command::RemoveMember { .. }
            | Command::Cue { .. } => true,
            Command::RequestLeadership
            | Command::Message { .. }
            | Command::Report { .. }
            | Command::Create { .. }
            | Command::Hello { .. }
            | Command::Bye { .. } => false,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Command::Tempo { .. } => "tempo",
            Command::Meter { .. } => "meter",
            Command::Play { .. } => "play",
            Command::Pause => "pause",
            Command::Stop => "stop",
            Command::Seek { .. } => "seek",
            Command::Setlist { .. } => "setlist",
            Command::Song { .. } => "song",
            Command::HandLeadership { .. } => "hand_leadership",
            Command::RequestLeadership => "request_leadership",
            Command::Joining { .. } => "joining",
            Command::RemoveMember { .. } => "remove_member",
            Command::Cue { .. } => "cue",
            Command::Message { .. } => "message",
            Command::Report { .. } => "report",
            Command::Create { .. } => "create",
            Command::Hello { .. } => "hello",
            Command::Bye { .. } => "bye",
        }
    }
}

fn check_ms(what: &'static str, ms: f64) -> Result<(), InvalidValue> {
    if ms.is_finite() && (0.0..=MAX_REPORTED_MS).contains(&ms) {
        Ok(())
    } else {
        Err(InvalidValue::new(
            what,
            format!("must be a number of milliseconds in 0..={MAX_REPORTED_MS}"),
        ))
    }
}

pub fn check_bpm(bpm: f64) -> Result<(), InvalidValue> {
    if bpm.is_finite() && (MIN_BPM..=MAX_BPM).contains(&bpm) {
        Ok(())
    } else {
        Err(InvalidValue::new(
            "bpm",
            format!("must be between {MIN_BPM} and {MAX_BPM}"),
        ))
    }
}

pub fn check_meter(beats_per_bar: u8, beat_unit: u8) -> Result<(), InvalidValue> {
    if !(1..=MAX_BEATS_PER_BAR).contains(&beats_per_bar) {
        return Err(InvalidValue::new(
            "beats_per_bar",
            format!("must be 1..={MAX_BEATS_PER_BAR}"),
        ));
    }
    if !BEAT_UNITS.contains(&beat_unit) {
        return Err(InvalidValue::new(
            "beat_unit",
            format!("must be one of {BEAT_UNITS:?}"),
        ));
    }
    Ok(())
}

fn check_setlist(songs: &[Song]) -> Result<(), InvalidValue> {
    if songs.len() > MAX_SONGS {
        return Err(InvalidValue::new(
            "songs",
            format!("at most {MAX_SONGS} songs"),
        ));
    }
    for song in songs {
        // A title is kept as sent, so its length counts the whitespace around
        // it too: trimmed first, `x` and 200,000 spaces passed as one character.
        if song.title.chars().count() > MAX_TITLE_CHARS {
            return Err(InvalidValue::new(
                "title",
                format!("must be 1..={MAX_TITLE_CHARS} characters"),
            ));
        }
        crate::text::check_name("title", &song.title, MAX_TITLE_CHARS)?;
        if song
            .chart
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(InvalidValue::new(
                "chart",
                "must be text: no control characters besides line breaks and tabs",
            ));
        }
        if song.chart.len() > MAX_CHART_BYTES {
            return Err(InvalidValue::new(
                "chart",
                format!(
                    "at most {MAX_CHART_BYTES} bytes of UTF-8 (this one has {}; ♯ and ♭ take 3 bytes each)",
                    song.chart.len()
                ),
            ));
        }
        if let Some(bpm) = song.tempo_bpm {
            check_bpm(bpm)?;
        }
        if song.beats_per_bar.is_some() || song.beat_unit.is_some() {
            check_meter(song.beats_per_bar.unwrap_or(4), song.beat_unit.unwrap_or(4))?;
        }
    }
    Ok(())
}

/// A command on the bus: who sent it, through which gateway, and a unique id that
/// de-duplicates it (JetStream `Nats-Msg-Id` and the owner's replay check).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandEnvelope {
    pub id: CommandId,
    pub session: SessionId,
    pub actor: MemberId,
    pub gateway: GatewayId,
    /// The client's own reference, echoed in an error so it can match it up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ref: Option<String>,
    /// Gateway clock when the command was published.
    pub sent_at: Micros,
    pub command: Command,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn golden_command_json() {
        let c: Command =
            serde_json::from_str(r#"{"type":"play","count_in_bars":2}"#).expect("parses");
        assert_eq!(c, Command::Play { count_in_bars: 2 });
        assert_eq!(
            serde_json::to_string(&Command::Pause).expect("ser"),
            r#"{"type":"pause"}"#
        );
        let c: Command = serde_json::from_str(r#"{"type":"play"}"#).expect("count-in defaults");
        assert_eq!(c, Command::Play { count_in_bars: 0 });
        assert!(serde_json::from_str::<Command>(r#"{"type":"tempo","bpm":"fast"}"#).is_err());
        assert!(serde_json::from_str::<Command>(r#"{"type":"tempo","bpm":1,"x":1}"#).is_err());
    }

    #[test]
    fn validation_ranges() {
        assert!(Command::Tempo { bpm: 19.9 }.validate().is_err());
        assert!(Command::Tempo { bpm: 400.1 }.validate().is_err());
        assert!(Command::Tempo { bpm: f64::NAN }.validate().is_err());
        assert!(Command::Tempo { bpm: 120.0 }.validate().is_ok());
        assert!(Command::Seek { beat: -1.0 }.validate().is_err());
        assert!(
            Command::Meter {
                beats_per_bar: 7,
                beat_unit: 8
            }
            .validate()
            .is_ok()
        );
        assert!(
            Command::Meter {
                beats_per_bar: 0,
                beat_unit: 4
            }
            .validate()
            .is_err()
        );
        assert!(
            Command::Meter {
                beats_per_bar: 4,
                beat_unit: 3
            }
            .validate()
            .is_err()
        );
        assert!(Command::Play { count_in_bars: 9 }.validate().is_err());
        let cue = |t: &str| Command::Cue { text: t.into() };
        let message = |t: &str| Command::Message { text: t.into() };
        assert!(cue("").validate().is_ok(), "an empty cue clears it");
        assert!(
            message("").validate().is_err(),
            "an empty message says nothing"
        );
        assert!(cue(&"x".repeat(120)).validate().is_ok());
        assert!(message(&"x".repeat(121)).validate().is_err());
        assert!(cue("\u{202E}txet").validate().is_err());
        let report = |rtt_ms, clock_error_ms| Command::Report {
            rtt_ms,
            clock_error_ms,
        };
        assert!(report(0.0, 60_000.0).validate().is_ok());
        for (rtt, err) in [
            (-1.0, 1.0),
            (60_000.1, 1.0),
            (f64::NAN, 1.0),
            (1.0, f64::INFINITY),
        ] {
            assert!(report(rtt, err).validate().is_err(), "{rtt} {err}");
        }
        let song = |t: &str| Song {
            title: t.into(),
            tempo_bpm: None,
            beats_per_bar: None,
            beat_unit: None,
            chart: String::new(),
        };
        assert!(
            Command::Setlist {
                songs: vec![song("Intro")]
            }
            .validate()
            .is_ok()
        );
        assert!(
            Command::Setlist {
                songs: vec![song(" ")]
            }
            .validate()
            .is_err()
        );
        let with_unit = |beat_unit| Command::Setlist {
            songs: vec![Song {
                beat_unit: Some(beat_unit),
                ..song("Waltz")
            }],
        };
        assert!(with_unit(8).validate().is_ok());
        let err = with_unit(3).validate().expect_err("no such note value");
        assert_eq!(err.what, "beat_unit");
        let with_chart = |chart: &str| Song {
            chart: chart.into(),
            ..song("Intro")
        };
        assert!(
            Command::Setlist {
                songs: vec![with_chart("| G |\n| C |\t")]
            }
            .validate()
            .is_ok()
        );
        assert!(
            Command::Setlist {
                songs: vec![with_chart("intro\u{0}verse")]
            }
            .validate()
            .is_err()
        );
        assert!(
            Command::Setlist {
                songs: vec![song("x"); MAX_SONGS + 1]
            }
            .validate()
            .is_err()
        );
    }

    fn setlist_of(title: &str, chart: String) -> Command {
        Command::Setlist {
            songs: vec![Song {
                title: title.into(),
                tempo_bpm: None,
                beats_per_bar: None,
                beat_unit: None,
                chart,
            }],
        }
    }

    #[test]
    fn charts_are_limited_in_bytes() {
        assert!(
            setlist_of("Intro", "x".repeat(MAX_CHART_BYTES))
                .validate()
                .is_ok()
        );
        let err = setlist_of("Intro", "x".repeat(MAX_CHART_BYTES + 1))
            .validate()
            .expect_err("one byte over");
        assert_eq!(err.what, "chart");
        // 1,366 sharps are far fewer than 4,096 characters, but 4,098 bytes.
        let sharps = "♯".repeat(1_366);
        assert_eq!(sharps.len(), 4_098);
        let err = setlist_of("Intro", sharps)
            .validate()
            .expect_err("over in bytes");
        assert!(err.why.contains("bytes"), "{err}");
        assert!(
            setlist_of("Intro", "| F♯m | B♭ |\n".repeat(200))
                .validate()
                .is_ok(),
            "3,200 bytes"
        );
    }

    #[test]
    fn titles_follow_the_name_rule() {
        for bad in [
            "Intro\u{202E}",
            "\u{2066}Intro",
            "\u{FEFF}Intro",
            "\u{200B}\u{200D}",
            " \u{2060} ",
            "a\u{1b}[31mb",
        ] {
            let err = setlist_of(bad, String::new()).validate().expect_err(bad);
            assert_eq!(err.what, "title", "{bad:?}");
        }
        assert!(setlist_of("Déjà Vu 🎸", String::new()).validate().is_ok());
        // Surrounding whitespace counts: the title is kept as sent.
        let padded = format!("x{}", " ".repeat(200_000));
        let err = setlist_of(&padded, String::new())
            .validate()
            .expect_err("a 200,001-character title");
        assert_eq!(err.what, "title");
        assert!(
            setlist_of(&format!(" {} ", "x".repeat(98)), String::new())
                .validate()
                .is_ok()
        );
        assert!(
            setlist_of(&"é".repeat(MAX_TITLE_CHARS), String::new())
                .validate()
                .is_ok()
        );
        assert!(
            setlist_of(&"é".repeat(MAX_TITLE_CHARS + 1), String::new())
                .validate()
                .is_err()
        );
    }

    /// Every command, one of each variant.
    pub(crate) fn one_of_each() -> Vec<Command> {
        let member = MemberId::parse("m").expect("valid");
        let conn = ConnId::parse("gw/1").expect("valid");
        let name = DisplayName::parse("Ana").expect("valid");
        vec![
            Command::Tempo { bpm: 120.0 },
            Command::Meter {
                beats_per_bar: 4,
                beat_unit: 4,
            },
            Command::Play { count_in_bars: 0 },
            Command::Pause,
            Command::Stop,
            Command::Seek { beat: 0.0 },
            Command::Setlist { songs: vec![] },
            Command::Song { index: 0 },
            Command::HandLeadership { to: member.clone() },
            Command::RequestLeadership,
            Command::Joining { open: false },
            Command::RemoveMember { member },
            Command::Cue {
                text: "last chorus".into(),
            },
            Command::Message {
                text: "tag ×2".into(),
            },
            Command::Report {
                rtt_ms: 42.5,
                clock_error_ms: 1.2,
            },
            Command::Create {
                code: JoinCode::parse("ABCDEF").expect("valid"),
                name: name.clone(),
            },
            Command::Hello {
                name,
                conn: conn.clone(),
            },
            Command::Bye { conn },
        ]
    }

    #[test]
    fn fields_are_the_serialised_fields() {
        for c in one_of_each() {
            let json = serde_json::to_value(&c).expect("ser");
            let mut keys: Vec<&str> = json
                .as_object()
                .expect("an object")
                .keys()
                .map(String::as_str)
                .filter(|k| *k != "type")
                .collect();
            keys.sort_unstable();
            let mut fields = c.fields().to_vec();
            fields.sort_unstable();
            assert_eq!(keys, fields, "{}", c.kind());
        }
        let song = Song {
            title: "t".into(),
            tempo_bpm: Some(90.0),
            beats_per_bar: Some(4),
            beat_unit: Some(4),
            chart: "c".into(),
        };
        let json = serde_json::to_value(&song).expect("ser");
        let keys: Vec<&str> = json
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), Song::FIELDS.len());
        assert!(keys.iter().all(|k| Song::FIELDS.contains(k)), "{keys:?}");
    }

    #[test]
    fn client_types_are_exactly_the_member_commands() {
        // Every command but the three gateways send on members' behalf.
        let member_commands: Vec<Command> = one_of_each()
            .into_iter()
            .filter(|c| {
                !matches!(
                    c,
                    Command::Create { .. } | Command::Hello { .. } | Command::Bye { .. }
                )
            })
            .collect();
        let kinds: Vec<&str> = member_commands.iter().map(Command::kind).collect();
        assert_eq!(kinds, Command::CLIENT_TYPES);
        for c in &member_commands {
            let json = serde_json::to_value(c).expect("ser");
            assert_eq!(json["type"], c.kind(), "wire tag equals kind()");
        }
    }
}
