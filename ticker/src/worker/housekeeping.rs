//! Time-driven rules, every `HOUSEKEEPING` while the lease is proven: leadership
//! passes on after the grace, idle sessions end, and members whose gateway died
//! without saying goodbye are disconnected. Deletions of ended sessions that
//! failed are retried here too (`ending.rs`).

use super::apply::Commit;
use super::{Worker, chain};
use crate::gateways::Gateways;
use bandsync_nats::{Command, Micros, Rules, SessionState, now_us};

/// What housekeeping does to one session at `now`: its next state, or `None`
/// when nothing changes. `gateways` is `None` until the gateway watch has
/// started, and then no member counts as departed.
pub fn plan(
    state: &SessionState,
    gateways: Option<&Gateways>,
    now: Micros,
    rules: &Rules,
) -> Option<SessionState> {
    let departed = gateways.map_or_else(Vec::new, |g| g.departed(state, now));
    if departed.is_empty() && !state.needs_housekeeping(now, rules) {
        return None;
    }
    let mut next = state.clone();
    let mut changed = false;
    for (member, conn) in departed {
        changed |= next
            .apply(&Command::Bye { conn }, &member, None, now, rules)
            .is_ok_and(|c| !c.is_empty());
    }
    changed |= !next.housekeep(now, rules).is_empty();
    changed.then_some(next)
}

impl Worker {
    pub(super) async fn housekeep(&mut self) {
        if !self.owned.is_valid() {
            return;
        }
        self.retry_endings().await;
        let now = now_us();
        let gateways = self.ctx.live_gateways.borrow().clone();
        let rules = self.ctx.rules;
        let due: Vec<SessionState> = self
            .sessions
            .values()
            .filter_map(|s| plan(&s.state, gateways.as_ref(), now, &rules))
            .collect();
        for next in due {
            // `commit` logged it; the rule applies again at the next housekeeping.
            if let Commit::Failed(e) = self.commit(next).await {
                tracing::debug!(error = %chain(&e), "housekeeping write not done; retrying");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateways::tests::{T0, member, session_on_two_gateways};
    use bandsync_nats::Change;

    const SECOND: Micros = 1_000_000;

    fn rules() -> Rules {
        Rules {
            leader_grace_us: 5 * SECOND,
            idle_expiry_us: 60 * SECOND,
            ..Rules::default()
        }
    }

    #[test]
    fn nothing_to_do_for_a_session_whose_members_are_all_reachable() {
        let rules = rules();
        let s = session_on_two_gateways(&rules);
        let mut gateways = Gateways::new(T0);
        gateways.heard("gw-a".into(), T0 + SECOND);
        gateways.heard("gw-b".into(), T0 + SECOND);
        assert_eq!(plan(&s, Some(&gateways), T0 + 2 * SECOND, &rules), None);
    }

    #[test]
    fn members_of_a_dead_gateway_are_disconnected() {
        let rules = rules();
        let s = session_on_two_gateways(&rules);
        let now = T0 + 10 * SECOND;
        let mut gateways = Gateways::new(T0);
        for at in (T0..=now).step_by(2 * SECOND as usize) {
            gateways.heard("gw-a".into(), at);
        }
        let next = plan(&s, Some(&gateways), now, &rules).expect("a change");
        let b = next.member(&member("b")).expect("b stays a member");
        assert!(!b.connected, "b's gateway died");
        assert!(next.member(&member("lead")).is_some_and(|m| m.connected));
        assert!(
            plan(&s, None, now, &rules).is_none(),
            "nobody departs before the gateway watch has started"
        );
    }

    #[test]
    fn an_idle_session_ends() {
        let rules = rules();
        let mut s = session_on_two_gateways(&rules);
        let now = T0 + 61 * SECOND;
        let gateways = Gateways::new(now);
        for (m, conn) in [("lead", "gw-a/1"), ("b", "gw-b/1")] {
            let bye = Command::Bye {
                conn: bandsync_nats::ConnId::parse(conn).expect("valid"),
            };
            s.apply(&bye, &member(m), None, T0, &rules).expect("bye");
        }
        let next = plan(&s, Some(&gateways), now, &rules).expect("a change");
        assert!(
            next.last_changes
                .iter()
                .any(|c| matches!(c, Change::Ended { .. })),
            "{:?}",
            next.last_changes
        );
    }
}
