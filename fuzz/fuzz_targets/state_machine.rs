//! The session state machine under arbitrary command sequences from arbitrary
//! members at arbitrary times: never a panic, and after every step the
//! invariants of `SessionState::check_invariants` (at most one leader, a
//! member; the member cap; a valid timeline with finite positions; ...), `seq`
//! strictly increasing with every change set and unchanged otherwise, a
//! refusal changing nothing, every event rebuilding the state for a receiver
//! that held the one before, and the state surviving JSON (the KV bucket).
#![no_main]

use arbitrary::Arbitrary;
use bandsync_protocol::state::{MAX_STATE_BYTES, Rules, SessionState};
use bandsync_protocol::{
    Command, CommandId, ConnId, DisplayName, EventMsg, JoinCode, MemberId, SessionId, Song,
};
use libfuzzer_sys::fuzz_target;

/// The start of 2024 in µs: far from both ends of `Micros`.
const T0: i64 = 1_704_067_200_000_000;

#[derive(Debug, Arbitrary)]
enum Op {
    Tempo(f64),
    Meter(u8, u8),
    Play(u8),
    Pause,
    Stop,
    Seek(f64),
    Setlist(Vec<(String, Option<f64>, Option<u8>, Option<u8>, String)>),
    Song(u16),
    HandLeadership(u8),
    RequestLeadership,
    Hello(u8, String),
    Bye(u8),
    Create,
    Cue(String),
    Message(String),
    Report(f64, f64),
    Housekeep,
}

#[derive(Debug, Arbitrary)]
struct Step {
    op: Op,
    actor: u8,
    /// Time since the step before, in ms: up to ~65 s ahead, or 2 s back (a
    /// new owner whose clock is behind), or a jump of hours.
    gap_ms: i16,
    jump_hours: bool,
}

#[derive(Debug, Arbitrary)]
struct Input {
    band: bool,
    max_members: u8,
    lead_ms: u8,
    steps: Vec<Step>,
}

fn member(i: u8) -> MemberId {
    MemberId::parse(format!("m{}", i % 8)).expect("valid id")
}

fn conn(i: u8) -> ConnId {
    ConnId::parse(format!("gw-{}/{}", i % 3, i / 3)).expect("valid connection id")
}

fn command(op: Op) -> Option<Command> {
    Some(match op {
        Op::Tempo(bpm) => Command::Tempo { bpm },
        Op::Meter(beats_per_bar, beat_unit) => Command::Meter {
            beats_per_bar,
            beat_unit,
        },
        Op::Play(count_in_bars) => Command::Play { count_in_bars },
        Op::Pause => Command::Pause,
        Op::Stop => Command::Stop,
        Op::Seek(beat) => Command::Seek { beat },
        Op::Setlist(songs) => Command::Setlist {
            songs: songs
                .into_iter()
                .map(|(title, tempo_bpm, beats_per_bar, beat_unit, chart)| Song {
                    title,
                    tempo_bpm,
                    beats_per_bar,
                    beat_unit,
                    chart,
                })
                .collect(),
        },
        Op::Song(index) => Command::Song {
            index: usize::from(index),
        },
        Op::HandLeadership(to) => Command::HandLeadership { to: member(to) },
        Op::RequestLeadership => Command::RequestLeadership,
        Op::Hello(c, name) => Command::Hello {
            name: DisplayName::parse(&name)
                .unwrap_or_else(|_| DisplayName::parse("M").expect("valid")),
            conn: conn(c),
        },
        Op::Bye(c) => Command::Bye { conn: conn(c) },
        Op::Create => Command::Create {
            code: JoinCode::parse("ABCDEF").expect("valid"),
            name: DisplayName::parse("M").expect("valid"),
        },
        Op::Cue(text) => Command::Cue { text },
        Op::Message(text) => Command::Message { text },
        Op::Report(rtt_ms, clock_error_ms) => Command::Report {
            rtt_ms,
            clock_error_ms,
        },
        Op::Housekeep => return None,
    })
}

fuzz_target!(|input: Input| {
    let rules = Rules {
        max_members: usize::from(input.max_members % 16).max(1),
        lead_us: i64::from(input.lead_ms) * 1_000,
        ..Rules::default()
    };
    let mut s = SessionState::create(
        SessionId::parse("s1").expect("valid"),
        JoinCode::parse("ABCDEF").expect("valid"),
        member(0),
        DisplayName::parse("M0").expect("valid"),
        T0,
    );
    // Start from a band (the leader m0, m1 and m2 connected, if the cap lets
    // them in), so that a few steps reach the interplay of leadership,
    // requests and disconnections; members m3..m7 can still join and anyone
    // leave.
    if input.band {
        for i in 0..3u8 {
            let hello = Command::Hello {
                name: DisplayName::parse("M").expect("valid"),
                conn: conn(i),
            };
            let _ = s.apply(&hello, &member(i), None, T0, &rules);
        }
    }
    assert_eq!(s.check_invariants(&rules), Ok(()));
    let mut now = T0;
    for (n, step) in input.steps.into_iter().take(200).enumerate() {
        now += i64::from(step.gap_ms).max(-2_000) * 1_000;
        if step.jump_hours {
            now += 3_600_000_000;
        }
        let before = s.clone();
        match command(step.op) {
            Some(cmd) => {
                let actor = member(step.actor);
                let id = CommandId::parse(format!("c{n}")).expect("valid");
                match s.apply(&cmd, &actor, Some(&id), now, &rules) {
                    Ok(changes) if changes.is_empty() => assert_eq!(s.seq, before.seq),
                    Ok(_) => {
                        assert_eq!(s.seq, before.seq + 1, "seq moves by one per change set");
                        assert_eq!(cmd.validate(), Ok(()), "applied an invalid {cmd:?}");
                        let event = EventMsg::latest(&s, 1);
                        assert_eq!(event.state_after(&before).as_ref(), Some(&s));
                    }
                    Err(_) => assert_eq!(s, before, "a refusal changed the state"),
                }
            }
            None => {
                let changes = s.housekeep(now, &rules);
                assert_eq!(s.seq, before.seq + u64::from(!changes.is_empty()));
                if !changes.is_empty() {
                    let event = EventMsg::latest(&s, 1);
                    assert_eq!(event.state_after(&before).as_ref(), Some(&s));
                }
            }
        }
        if let Err(broken) = s.check_invariants(&rules) {
            panic!("step {n}: {broken}");
        }
        let json = serde_json::to_string(&s).expect("a state serialises");
        assert!(
            json.len() <= MAX_STATE_BYTES,
            "the state outgrew its bucket"
        );
        let back: SessionState = serde_json::from_str(&json).expect("a state reads back");
        assert_eq!(back, s, "the state changed through JSON");
    }
});
