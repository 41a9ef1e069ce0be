//! Folds a batch of event rows into `sessions` and `members` rows. Pure. The
//! upserts that write them are monotone (least/greatest, "newer seq wins", OR),
//! so applying a batch twice, or two batches in either order, gives one result.

use crate::decode::EventRow;
use bandsync_nats::{Change, Micros};
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

/// Rows sorted by key, so concurrent workers lock rows in one order (no deadlocks).
#[derive(Debug, Default)]
pub struct Summary {
    pub sessions: Vec<SessionRow>,
    pub members: Vec<MemberRow>,
}

pub fn summarise<'a>(events: impl IntoIterator<Item = &'a EventRow>) -> Summary {
    let mut sessions: BTreeMap<&str, SessionRow> = BTreeMap::new();
    let mut members: BTreeMap<(&str, &str), MemberRow> = BTreeMap::new();
    for row in events {
        let Some(state) = row.state.as_deref() else {
            continue;
        };
        let (seq, epoch) = (row.seq.unwrap_or(0), row.epoch.unwrap_or(0));
        let latest = state.timeline.latest();
        let position_beat = if latest.playing {
            state.timeline.position(row.occurred_us)
        } else {
            latest.anchor_beat
        };
        let ended = state.last_changes.iter().find_map(|c| match c {
            Change::Ended { reason } => Some(reason.clone()),
            _ => None,
        });
        let fresh = SessionRow {
            session_id: row.session_id.clone(),
            code: state.code.to_string(),
            created_us: state.created_at,
            first_us: row.occurred_us,
            last_us: row.occurred_us,
            last_seq: seq,
            last_epoch: epoch,
            song: state
                .song
                .and_then(|i| state.setlist.get(i))
                .map(|s| s.title.clone()),
            playing: latest.playing,
            position_beat,
            bar: latest.bar_of(position_beat),
            tempo_bpm: latest.tempo_bpm,
            ended_us: ended.as_ref().map(|_| row.occurred_us),
            end_reason: ended,
        };
        match sessions.get_mut(row.session_id.as_str()) {
            None => {
                sessions.insert(&row.session_id, fresh);
            }
            Some(acc) => merge_session(acc, fresh),
        }
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

/// Folds a newer or older row of the same session into `acc`, as the SQL upsert does.
fn merge_session(acc: &mut SessionRow, row: SessionRow) {
    acc.first_us = acc.first_us.min(row.first_us);
    acc.last_us = acc.last_us.max(row.last_us);
    acc.created_us = acc.created_us.min(row.created_us);
    if acc.ended_us.is_none() {
        acc.ended_us = row.ended_us;
        acc.end_reason = row.end_reason.clone();
    }
    if (row.last_seq, row.last_epoch) > (acc.last_seq, acc.last_epoch) {
        acc.last_seq = row.last_seq;
        acc.last_epoch = row.last_epoch;
        acc.song = row.song;
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

    #[test]
    fn latest_state_wins_whatever_the_order() {
        let ana = MemberId::parse("ana").expect("valid");
        let bo = MemberId::parse("bo").expect("valid");
        let rules = Rules::default();
        let mut s = SessionState::create(
            SessionId::parse("s1").expect("valid"),
            JoinCode::parse("ABCDEF").expect("valid"),
            ana.clone(),
            DisplayName::parse("Ana").expect("valid"),
            1_000,
        );
        let first = row(&s, 1);
        let hello = |name: &str, conn: &str| Command::Hello {
            name: DisplayName::parse(name).expect("valid"),
            conn: conn.into(),
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
}
