//! Connection quality: what each member's clock sync measures (its round trip
//! and the uncertainty of its clock estimate), shown in every member list so a
//! band sees who is struggling, and the lead time the owner schedules changes
//! with, stretched for the slowest connected member.
//!
//! A steady band makes no events: a report becomes a `member_quality` change
//! only when it moved enough from the values the band already sees
//! (`moved_enough`), and at most once per `REPORT_EVERY_US` per member.

use super::{Change, Rejection, Rules, SessionState};
use crate::ids::MemberId;
use crate::timeline::Micros;

/// After a published report, the member's reports are ignored for this long.
pub const REPORT_EVERY_US: Micros = 2_000_000;
/// A round trip moved enough when it changed by more than this share of the
/// shown one and by more than `RTT_MOVE_MS` (jitter of a few ms on a fast
/// link, or of 10% on a slow one, is not news).
pub const RTT_MOVE_SHARE: f64 = 0.2;
pub const RTT_MOVE_MS: f64 = 5.0;
/// A clock error moved enough when it changed by more than this.
pub const CLOCK_MOVE_MS: f64 = 1.0;
/// The most a change is scheduled ahead, however slow a member is: beyond
/// it a leader's command would feel broken to the leader.
pub const MAX_LEAD_US: Micros = 1_000_000;
/// Room above the slowest round trip for the owner's and the gateways' work.
pub const LEAD_MARGIN_US: Micros = 50_000;

/// Whether a reported quality differs enough from the shown one (`None`:
/// nothing shown yet) to publish.
pub fn moved_enough(shown: Option<(f64, f64)>, rtt_ms: f64, clock_error_ms: f64) -> bool {
    let Some((shown_rtt, shown_error)) = shown else {
        return true;
    };
    let rtt_moved = (rtt_ms - shown_rtt).abs();
    (rtt_moved > RTT_MOVE_SHARE * shown_rtt && rtt_moved > RTT_MOVE_MS)
        || (clock_error_ms - shown_error).abs() > CLOCK_MOVE_MS
}

/// How far ahead a change is scheduled: the owner's base lead, or the slowest
/// member's round trip plus `LEAD_MARGIN_US` if that is longer (the event
/// then reaches it before the change happens: an event's way down is about
/// half a round trip), but never more than `MAX_LEAD_US` (unless the base
/// lead itself is more).
pub fn adaptive_lead(base_us: Micros, slowest_rtt_ms: Option<f64>) -> Micros {
    let wanted = slowest_rtt_ms
        .filter(|rtt| rtt.is_finite())
        .map_or(0, |rtt| (rtt * 1_000.0).ceil() as Micros + LEAD_MARGIN_US);
    wanted.min(MAX_LEAD_US).max(base_us)
}

impl SessionState {
    /// The lead time for a change now: `adaptive_lead` over the connected
    /// members' shown round trips.
    pub fn lead(&self, rules: &Rules) -> Micros {
        let slowest = self
            .members
            .iter()
            .filter(|m| m.connected)
            .filter_map(|m| m.rtt_ms)
            .reduce(f64::max);
        adaptive_lead(rules.lead_us, slowest)
    }

    pub(super) fn report(
        &mut self,
        actor: &MemberId,
        rtt_ms: f64,
        clock_error_ms: f64,
        now: Micros,
    ) -> Result<Vec<Change>, Rejection> {
        let m = self.member_mut(actor).ok_or_else(super::not_a_member)?;
        if m.quality_at.is_some_and(|t| now - t < REPORT_EVERY_US) {
            return Ok(Vec::new());
        }
        let shown = m.rtt_ms.zip(m.clock_error_ms);
        if !moved_enough(shown, rtt_ms, clock_error_ms) {
            return Ok(Vec::new());
        }
        m.rtt_ms = Some(rtt_ms);
        m.clock_error_ms = Some(clock_error_ms);
        m.quality_at = Some(now);
        Ok(vec![Change::MemberQuality {
            member: actor.clone(),
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use crate::state::fixtures::*;
    use crate::wire::EventMsg;

    fn report(rtt_ms: f64, clock_error_ms: f64) -> Command {
        Command::Report {
            rtt_ms,
            clock_error_ms,
        }
    }

    #[test]
    fn moved_enough_is_twenty_percent_and_five_ms_or_a_ms_of_clock() {
        assert!(moved_enough(None, 40.0, 1.0), "the first report shows");
        let shown = Some((40.0, 1.0));
        assert!(!moved_enough(shown, 40.0, 1.0));
        assert!(!moved_enough(shown, 47.9, 1.0), "+7.9 ms is under 20%");
        assert!(
            moved_enough(shown, 48.1, 1.0),
            "+8.1 ms is over 20% and 5 ms"
        );
        assert!(moved_enough(shown, 31.9, 1.0), "-8.1 ms");
        assert!(
            !moved_enough(Some((10.0, 1.0)), 14.9, 1.0),
            "+49% but under 5 ms"
        );
        assert!(moved_enough(Some((10.0, 1.0)), 15.1, 1.0));
        assert!(!moved_enough(shown, 40.0, 2.0), "exactly 1 ms of clock");
        assert!(moved_enough(shown, 40.0, 2.01));
        assert!(
            moved_enough(Some((40.0, 2.0)), 40.0, 0.99),
            "down by 1.01 ms"
        );
    }

    #[test]
    fn a_report_is_published_only_when_it_moved_and_not_too_often() {
        let (mut s, rules) = band();
        let changes = s
            .apply(&report(42.5, 1.2), &id("a"), None, T0 + 1, &rules)
            .expect("first");
        assert_eq!(changes, vec![Change::MemberQuality { member: id("a") }]);
        let event = serde_json::to_value(EventMsg::latest(&s, 1)).expect("ser");
        let a = &event["members"][1];
        assert_eq!(
            (a["id"].as_str(), a["rtt_ms"].as_f64()),
            (Some("a"), Some(42.5))
        );
        assert_eq!(a["clock_error_ms"].as_f64(), Some(1.2));
        assert!(
            a.get("quality_at").is_none(),
            "the owner's bookkeeping is hidden"
        );
        assert!(
            event["members"][2].get("rtt_ms").is_none(),
            "absent until reported"
        );

        let seq = s.seq;
        let steady = REPORT_EVERY_US + 10;
        assert_eq!(
            s.apply(&report(45.0, 1.5), &id("a"), None, T0 + steady, &rules),
            Ok(vec![]),
            "a steady band makes no events"
        );
        assert_eq!(
            s.apply(
                &report(300.0, 1.2),
                &id("a"),
                None,
                T0 + REPORT_EVERY_US,
                &rules
            ),
            Ok(vec![]),
            "within 2 s of the last published report"
        );
        assert_eq!(s.seq, seq);
        s.apply(
            &report(300.0, 1.2),
            &id("a"),
            None,
            T0 + 1 + REPORT_EVERY_US,
            &rules,
        )
        .expect("moved, 2 s on");
        assert_eq!(s.seq, seq + 1);
        assert_eq!(s.member(&id("a")).and_then(|m| m.rtt_ms), Some(300.0));
        assert_eq!(s.members_rev, s.seq, "the event carries the members");
    }

    #[test]
    fn the_lead_stretches_for_the_slowest_connected_member_within_bounds() {
        assert_eq!(adaptive_lead(150_000, None), 150_000);
        assert_eq!(adaptive_lead(150_000, Some(40.0)), 150_000, "fast band");
        assert_eq!(adaptive_lead(150_000, Some(600.0)), 650_000);
        assert_eq!(adaptive_lead(150_000, Some(0.5)), 150_000);
        assert_eq!(
            adaptive_lead(150_000, Some(5_000.0)),
            MAX_LEAD_US,
            "bounded"
        );
        assert_eq!(adaptive_lead(150_000, Some(f64::NAN)), 150_000);
        assert_eq!(
            adaptive_lead(1_500_000, Some(600.0)),
            1_500_000,
            "a longer base wins"
        );

        let (mut s, rules) = band();
        assert_eq!(s.lead(&rules), rules.lead_us);
        s.apply(&report(20.0, 1.0), &id("a"), None, T0 + 1, &rules)
            .expect("a");
        s.apply(&report(600.0, 1.0), &id("b"), None, T0 + 2, &rules)
            .expect("b");
        assert_eq!(s.lead(&rules), 650_000, "b's 600 ms + 50");
        let changes = s
            .apply(
                &Command::Tempo { bpm: 90.0 },
                &id("lead"),
                None,
                T0 + 3,
                &rules,
            )
            .expect("tempo");
        assert!(
            matches!(changes[..], [Change::Tempo { at, .. }] if at == T0 + 3 + 650_000),
            "{changes:?}"
        );
        s.apply(
            &Command::Bye { conn: conn("b") },
            &id("b"),
            None,
            T0 + 4,
            &rules,
        )
        .expect("b leaves");
        assert_eq!(
            s.lead(&rules),
            rules.lead_us,
            "only connected members count"
        );
    }
}
