//! Sessions and members for the state machine's tests.

use super::*;

pub(crate) const T0: Micros = 1_700_000_000_000_000;

pub(crate) fn id(s: &str) -> MemberId {
    MemberId::parse(s).expect("valid id")
}
pub(crate) fn name(s: &str) -> DisplayName {
    DisplayName::parse(s).expect("valid name")
}
/// A connection id named by a tag (distinct tags, distinct connections).
pub(crate) fn conn(tag: &str) -> ConnId {
    ConnId::parse(format!("gw-{tag}/1")).expect("valid connection id")
}
pub(crate) fn hello(tag: &str) -> Command {
    Command::Hello {
        name: name("X"),
        conn: conn(tag),
    }
}

/// A new session `s1` led by "lead", who is not connected yet.
pub(crate) fn created() -> SessionState {
    SessionState::create(
        SessionId::parse("s1").expect("valid"),
        JoinCode::parse("ABCDEF").expect("valid"),
        id("lead"),
        name("Lead"),
        T0,
    )
}

/// A session led by "lead" with "lead", "a" and "b" connected.
pub(crate) fn band() -> (SessionState, Rules) {
    band_of(&["lead", "a", "b"])
}

/// A session led by "lead" with `members` (the leader first) connected.
pub(crate) fn band_of(members: &[&str]) -> (SessionState, Rules) {
    let rules = Rules::default();
    let mut s = created();
    for (i, m) in members.iter().enumerate() {
        s.apply(&hello(m), &id(m), None, T0 + i as i64, &rules)
            .expect("joins");
    }
    (s, rules)
}
