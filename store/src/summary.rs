//! Folds a batch of event rows into `sessions` and `members` rows. Pure. The
//! upserts that write them are monotone (least/greatest, "newer seq wins", OR),
//! so applying a batch twice, or two batches in either order, gives one result.
//!
//! Each event's own `sessions` row is made once, by `session_row`, when the
//! message is decoded: what it cannot summarise (a position or bar no column
//! holds) makes the message a dead letter there, with the reason. Folding a
//! batch (`summarise`) then only merges rows already made, and cannot fail.

use crate::decode::EventRow;
use bandsync_nats::{Change, Micros, SessionState};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    pub session_id: String,
    pub code: String,
    pub created_us: Micros,
    pub first_us: Micros,
    pub last_us: Micros,
    pub last_seq: i64,
    pub last_epoch: i64,
    pub song: Option<String>,
    /// The `seq` as of which `song` is known; `None` when this event cannot tell
    /// (it names a song index, but neither carries the setlist nor picked the song).
    pub song_seq: Option<i64>,
    pub playing: bool,
    /// Where the band is (playing) or stopped (paused), in beats, as of the last event.
    pub position_beat: f64,
    pub bar: i64,
    pub tempo_bpm: f64,
    pub ended_us: Option<Micros>,
    pub end_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MemberRow {
    pub session_id: String,
    pub member_id: String,
    pub name: String,
    pub joined_us: Micros,
    pub has_led: bool,
}

/// Why an event's state cannot be summarised into a `sessions` row. The
/// timeline is valid (deserialising checked it), but valid numbers can still
/// be too far out for the position or the bar count to be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SummaryError {
    #[error("the position at {at} µs is not a finite number of beats")]
    Position { at: Micros },
    #[error("the bar containing beat {beat} is not a number a bigint column holds")]
    Bar { beat: f64 },
}

/// The `sessions` row one event says on its own, before the batch is folded.
/// `row` is the event, `state` the state after it.
pub fn session_row(row: &EventRow, state: &SessionState) -> Result<SessionRow, SummaryError> {
    let (seq, epoch) = (row.seq.unwrap_or(0), row.epoch.unwrap_or(0));
    let latest = state.timeline.latest();
    let position_beat = if latest.playing {
        state.timeline.position(row.occurred_us)
    } else {
        latest.anchor_beat
    };
    if !position_beat.is_finite() {
        return Err(SummaryError::Position {
            at: row.occurred_us,
        });
    }
    let bar = latest
        .checked_bar_of(position_beat)
        .ok_or(SummaryError::Bar {
            beat: position_beat,
        })?;
    let ended = state.last_changes.iter().find_map(|c| match c {
        Change::Ended { reason } => Some(reason.clone()),
        _ => None,
    });
    let song = song_title(state);
    Ok(SessionRow {
        session_id: row.session_id.clone(),
        code: state.code.to_string(),
        created_us: state.created_at,
        first_us: row.occurred_us,
        last_us: row.occurred_us,
        last_seq: seq,
        last_epoch: epoch,
        song: song.clone().flatten(),
        song_seq: song.map(|_| seq),
        playing: latest.playing,
        position_beat,
        bar,
        tempo_bpm: latest.tempo_bpm,
        ended_us: ended.as_ref().map(|_| row.occurred_us),
        end_reason: ended,
    })
}

/// Rows sorted by key, so concurrent workers lock rows in one order (no deadlocks).
#[derive(Debug, Default)]
pub struct Summary {
    pub sessions: Vec<SessionRow>,
    pub members: Vec<MemberRow>,
}

/// Folds the events' own rows (`EventRow::session`, made at decoding) and
/// their members. Rejections carry no state and add nothing.
pub fn summarise<'a>(events: impl IntoIterator<Item = &'a EventRow>) -> Summary {
    let mut sessions: BTreeMap<&str, SessionRow> = BTreeMap::new();
    let mut members: BTreeMap<(&str, &str), MemberRow> = BTreeMap::new();
    for row in events {
        if let Some(fresh) = &row.session {
            match sessions.get_mut(row.session_id.as_str()) {
                None => {
                    sessions.insert(&row.session_id, SessionRow::clone(fresh));
                }
                Some(acc) => merge_session(acc, SessionRow::clone(fresh)),
            }
        }
        let Some(state) = row.state.as_deref() else {
            continue;
        };
        // Members only change when one joins or leadership moves; other events
        // would re-send the same rows.
        let roster_changed = row
            .changes
            .split(',')
            .any(|k| matches!(k, "created" | "member_joined" | "leader_changed"));
        if !roster_changed {
            continue;
        }
        for m in &state.members {
            let led = state.leader.as_ref() == Some(&m.id);
            members
                .entry((&row.session_id, m.id.as_str()))
                .and_modify(|r| r.has_led |= led)
                .or_insert_with(|| MemberRow {
                    session_id: row.session_id.clone(),
                    member_id: m.id.to_string(),
                    name: m.name.as_str().to_owned(),
                    joined_us: m.joined_at,
                    has_led: led,
                });
        }
    }
    Summary {
        sessions: sessions.into_values().collect(),
        members: members.into_values().collect(),
    }
}

/// The live song's title after `row`, if the event can tell: `Some(None)` for
/// no song. Events leave the setlist out unless they replaced it, so a title is
/// known from a carried (or, in events logged earlier, embedded) setlist, from
/// a song pick, or when no song is live.
fn song_title(state: &SessionState) -> Option<Option<String>> {
    let Some(index) = state.song else {
        return Some(None);
    };
    if let Some(song) = state.setlist.get(index) {
        return Some(Some(song.title.clone()));
    }
    state.last_changes.iter().rev().find_map(|c| match c {
        Change::Song {
            index: i, title, ..
        } if *i == index => Some(Some(title.clone())),
        _ => None,
    })
}

/// Folds a newer or older row of the same session into `acc`, as the SQL upsert does.
fn merge_session(acc: &mut SessionRow, row: SessionRow) {
    acc.first_us = acc.first_us.min(row.first_us);
    acc.last_us = acc.last_us.max(row.last_us);
    acc.created_us = acc.created_us.min(row.created_us);
    if acc.ended_us.is_none() {
        acc.ended_us = row.ended_us;
        acc.end_reason = row.end_reason.clone();
    }
    if row.song_seq > acc.song_seq {
        acc.song_seq = row.song_seq;
        acc.song = row.song;
    }
    if (row.last_seq, row.last_epoch) > (acc.last_seq, acc.last_epoch) {
        acc.last_seq = row.last_seq;
        acc.last_epoch = row.last_epoch;
        acc.playing = row.playing;
        acc.position_beat = row.position_beat;
        acc.bar = row.bar;
        acc.tempo_bpm = row.tempo_bpm;
        acc.code = row.code;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Decoded, Raw, StreamKind, decode};
    use bandsync_nats::state::Rules;
    use bandsync_nats::{
        Command, DisplayName, EventMsg, JoinCode, MemberId, ServerMsg, SessionId, SessionState,
        Subjects,
    };

    fn row(state: &SessionState, stream_seq: u64) -> EventRow {
        let bytes = ServerMsg::Event(Box::new(EventMsg::latest(state, 1))).to_bytes();
        let subjects = Subjects::new("bandsync").expect("valid");
        let subject = subjects.evt(&state.id);
        let raw = Raw {
            stream_seq,
            subject: &subject,
            payload: &bytes,
            published_us: 0,
        };
        match decode(StreamKind::Events, &subjects, &raw) {
            Decoded::Event(r) => r,
            other => panic!("not an event: {other:?}"),
        }
    }

    /// Session `s1`, created at 1,000 µs by `leader` ("Ana").
    fn created(leader: &MemberId) -> SessionState {
        SessionState::create(
            SessionId::parse("s1").expect("valid"),
            JoinCode::parse("ABCDEF").expect("valid"),
            leader.clone(),
            DisplayName::parse("Ana").expect("valid"),
            1_000,
        )
    }

    #[test]
    fn latest_state_wins_whatever_the_order() {
        let ana = MemberId::parse("ana").expect("valid");
        let bo = MemberId::parse("bo").expect("valid");
        let rules = Rules::default();
        let mut s = created(&ana);
        let first = row(&s, 1);
        let hello = |name: &str, conn: &str| Command::Hello {
            name: DisplayName::parse(name).expect("valid"),
            conn: bandsync_nats::ConnId::parse(conn).expect("valid"),
        };
        s.apply(&hello("Ana", "g/1"), &ana, None, 2_000, &rules)
            .expect("applies");
        s.apply(&hello("Bo", "g/2"), &bo, None, 3_000, &rules)
            .expect("applies");
        let joined = row(&s, 3);
        s.apply(&Command::Tempo { bpm: 90.0 }, &ana, None, 4_000, &rules)
            .expect("applies");
        let last = row(&s, 4);
        let forward = summarise([&first, &joined, &last]);
        let backward = summarise([&last, &joined, &first]);
        assert_eq!(forward.sessions, backward.sessions);
        let s1 = &forward.sessions[0];
        assert_eq!(
            (s1.first_us, s1.last_us, s1.last_seq, s1.tempo_bpm),
            (1_000, 4_000, 4, 90.0)
        );
        let names: Vec<(&str, bool)> = forward
            .members
            .iter()
            .map(|m| (m.member_id.as_str(), m.has_led))
            .collect();
        assert_eq!(names, [("ana", true), ("bo", false)]);
        assert!(
            summarise([&last]).members.is_empty(),
            "a tempo change re-sends no members"
        );
    }

    #[test]
    fn the_live_song_is_known_from_the_setlist_event_or_the_pick_only() {
        let ana = MemberId::parse("ana").expect("valid");
        let rules = Rules::default();
        let mut s = created(&ana);
        let song = |title: &str| bandsync_nats::Song {
            title: title.into(),
            tempo_bpm: None,
            beats_per_bar: None,
            beat_unit: None,
            chart: "| C |".into(),
        };
        let apply = |s: &mut SessionState, cmd: Command, at| {
            s.apply(&cmd, &ana, None, at, &rules).expect("applies");
        };
        apply(
            &mut s,
            Command::Setlist {
                songs: vec![song("A"), song("B")],
            },
            2_000,
        );
        let listed = row(&s, 2);
        apply(&mut s, Command::Song { index: 1 }, 3_000);
        let picked = row(&s, 3);
        apply(&mut s, Command::Tempo { bpm: 90.0 }, 4_000);
        let later = row(&s, 4);
        apply(
            &mut s,
            Command::Setlist {
                songs: vec![song("B2"), song("B")],
            },
            5_000,
        );
        let relisted = row(&s, 5);

        let known = |rows: &[&EventRow]| {
            let r = &summarise(rows.iter().copied()).sessions[0];
            (r.song.clone(), r.song_seq)
        };
        assert_eq!(known(&[&listed]), (None, Some(2)), "no song live yet");
        assert_eq!(known(&[&picked]), (Some("B".into()), Some(3)));
        // A tempo change carries no setlist: it cannot name the song, nor blank it.
        assert_eq!(known(&[&later]), (None, None));
        assert_eq!(known(&[&later, &picked]), (Some("B".into()), Some(3)));
        // The live song followed by title into the new setlist.
        assert_eq!(known(&[&relisted, &later]), (Some("B".into()), Some(5)));
    }
}
