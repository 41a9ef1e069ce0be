//! Cues and messages: the short texts a band sends itself on stage. The
//! leader's cue stays on every screen until cleared; a member's message is
//! an event only. Both are bounded in rate here, at the owner, per member, so
//! a stuck pedal or a loop in a client cannot bury the band's screens: the
//! times of a member's accepted texts are kept (the owner's, hidden from
//! members), and so the rule holds across owners and replays.

use super::{Change, Cue, Rejection, SessionState};
use crate::error_code::ErrorCode;
use crate::ids::MemberId;
use crate::timeline::Micros;

/// Cues and messages together a member may send per `WINDOW_US`.
pub const MAX_TEXTS: usize = 5;
pub const WINDOW_US: Micros = 10_000_000;

impl SessionState {
    pub(super) fn cue(
        &mut self,
        actor: &MemberId,
        text: &str,
        now: Micros,
    ) -> Result<Vec<Change>, Rejection> {
        if text.is_empty() && self.cue.is_none() {
            return Ok(Vec::new());
        }
        self.take_text_slot(actor, now)?;
        self.cue = (!text.is_empty()).then(|| Cue {
            text: text.to_owned(),
            by: actor.clone(),
            at: now,
        });
        Ok(vec![Change::Cue {
            text: text.to_owned(),
            by: actor.clone(),
        }])
    }

    pub(super) fn message(
        &mut self,
        actor: &MemberId,
        text: &str,
        now: Micros,
    ) -> Result<Vec<Change>, Rejection> {
        self.take_text_slot(actor, now)?;
        Ok(vec![Change::Message {
            from: actor.clone(),
            text: text.to_owned(),
        }])
    }

    /// Counts one text against the member's rate, or refuses it with
    /// `rate_limited` (and changes nothing).
    fn take_text_slot(&mut self, actor: &MemberId, now: Micros) -> Result<(), Rejection> {
        let m = self.member_mut(actor).ok_or_else(super::not_a_member)?;
        // Times ahead of `now` (an owner whose clock is behind the last
        // one's) still count: a new owner cannot reset the window.
        let recent: Vec<Micros> = m
            .texts_at
            .iter()
            .copied()
            .filter(|&t| now - t < WINDOW_US)
            .collect();
        if recent.len() >= MAX_TEXTS {
            let wait_us = recent[0] + WINDOW_US - now;
            return Err(Rejection::new(
                ErrorCode::RateLimited,
                format!(
                    "at most {MAX_TEXTS} cues and messages per {} s; wait {:.1} s",
                    WINDOW_US / 1_000_000,
                    wait_us.max(0) as f64 / 1e6
                ),
            ));
        }
        m.texts_at = recent;
        m.texts_at.push(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use crate::state::Rules;
    use crate::state::fixtures::*;
    use crate::wire::EventMsg;

    fn band() -> (SessionState, Rules) {
        band_of(&["lead", "a"])
    }

    fn cue(text: &str) -> Command {
        Command::Cue { text: text.into() }
    }

    fn message(text: &str) -> Command {
        Command::Message { text: text.into() }
    }

    #[test]
    fn the_leader_cues_and_clears_and_only_the_leader() {
        let (mut s, rules) = band();
        let err = s
            .apply(&cue("last chorus"), &id("a"), None, T0 + 1, &rules)
            .expect_err("a follower");
        assert_eq!(err.code, ErrorCode::NotLeader);
        let changes = s
            .apply(&cue("last chorus"), &id("lead"), None, T0 + 2, &rules)
            .expect("cued");
        assert_eq!(
            changes,
            vec![Change::Cue {
                text: "last chorus".into(),
                by: id("lead")
            }]
        );
        assert_eq!(
            s.cue,
            Some(Cue {
                text: "last chorus".into(),
                by: id("lead"),
                at: T0 + 2
            })
        );
        let event = serde_json::to_value(EventMsg::latest(&s, 1)).expect("ser");
        assert_eq!(
            event["changes"][0],
            serde_json::json!({"kind": "cue", "text": "last chorus", "by": "lead"})
        );
        assert_eq!(
            event["state"]["cue"],
            serde_json::json!({"text": "last chorus", "by": "lead", "at": T0 + 2})
        );
        assert_eq!(
            event["state"]["members"],
            serde_json::json!([]),
            "not a member change"
        );
        s.apply(&cue(""), &id("lead"), None, T0 + 3, &rules)
            .expect("cleared");
        assert_eq!(s.cue, None);
        let json = serde_json::to_value(&s).expect("ser");
        assert!(json.get("cue").is_none(), "absent when none");
        assert_eq!(
            s.apply(&cue(""), &id("lead"), None, T0 + 4, &rules),
            Ok(vec![]),
            "clearing nothing changes nothing"
        );
    }

    #[test]
    fn any_member_messages_and_nothing_is_kept() {
        let (mut s, rules) = band();
        let changes = s
            .apply(&message("one more?"), &id("a"), None, T0 + 1, &rules)
            .expect("sent");
        assert_eq!(
            changes,
            vec![Change::Message {
                from: id("a"),
                text: "one more?".into()
            }]
        );
        assert_eq!(s.cue, None);
        let err = s
            .apply(&message("hi"), &id("stranger"), None, T0 + 2, &rules)
            .expect_err("not a member");
        assert_eq!(err.code, ErrorCode::Unauthorized);
        let mut hidden = s.clone();
        hidden.hide_internals();
        assert!(
            hidden.members.iter().all(|m| m.texts_at.is_empty()),
            "the rate's bookkeeping stays with the owner"
        );
    }

    #[test]
    fn five_texts_per_member_per_ten_seconds() {
        let (mut s, rules) = band();
        for i in 0..MAX_TEXTS as i64 {
            let cmd = if i % 2 == 0 { message("m") } else { cue("c") };
            s.apply(&cmd, &id("lead"), None, T0 + i * 1_000_000, &rules)
                .expect("within the rate");
        }
        let before = s.clone();
        let err = s
            .apply(&message("m"), &id("lead"), None, T0 + 9_999_999, &rules)
            .expect_err("a sixth within 10 s");
        assert_eq!(err.code, ErrorCode::RateLimited);
        assert!(err.message.contains("wait 0.0 s"), "{}", err.message);
        assert_eq!(s, before, "a refusal changes nothing");
        s.apply(&message("ok"), &id("a"), None, T0 + 9_999_999, &rules)
            .expect("another member's messages still flow");
        s.apply(&message("m"), &id("lead"), None, T0 + WINDOW_US, &rules)
            .expect("the first has left the window");
        let err = s
            .apply(&cue("c"), &id("lead"), None, T0 + WINDOW_US + 1, &rules)
            .expect_err("cues count too");
        assert_eq!(err.code, ErrorCode::RateLimited);
        assert!(
            s.members.iter().all(|m| m.texts_at.len() <= MAX_TEXTS),
            "the bookkeeping stays bounded"
        );
    }
}
