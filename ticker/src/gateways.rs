//! Which gateways are alive, from their heartbeats in `<p>_gateways` (a put
//! every `GATEWAY_HEARTBEAT`, gone after `GATEWAY_TTL`). A member whose gateway
//! died without saying goodbye still shows as connected in its session's state;
//! an owner's housekeeping disconnects it (a `bye` on its connection's behalf).

use async_nats::jetstream::kv;
use bandsync_nats::bus::Bus;
use bandsync_nats::bus::{GATEWAY_HEARTBEAT, GATEWAY_TTL};
use bandsync_nats::{ConnId, MemberId, Micros, SessionState, now_us};
use futures::StreamExt;
use std::collections::HashMap;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// No heartbeat from any gateway for this long means the heartbeats are not
/// getting through (the bucket's Raft leader died and another is being
/// elected, or our watch is away), not that every gateway died: gateways write
/// one every `GATEWAY_HEARTBEAT`.
const ALL_SILENT: Micros = 2 * 2_000_000;
/// How long such a silence of all may last before it is believed after all (the
/// only gateway died): past the longest election measured (6.6 s), with room.
const ALL_SILENT_BELIEVED: Micros = 15_000_000;

/// When each gateway last announced itself.
#[derive(Debug, Clone)]
pub struct Gateways {
    /// When we started watching.
    since: Micros,
    last_seen: HashMap<String, Micros>,
    /// The newest heartbeat from any gateway (or `since`).
    last_any: Micros,
    /// When heartbeats got through again after all of them had stopped: a
    /// gateway's silence counts from then at the earliest.
    resumed: Micros,
}

impl Gateways {
    pub fn new(since: Micros) -> Self {
        Self {
            since,
            last_seen: HashMap::new(),
            last_any: since,
            resumed: since,
        }
    }

    /// A heartbeat of `gateway` written at `at`.
    pub fn heard(&mut self, gateway: String, at: Micros) {
        if at - self.last_any > ALL_SILENT {
            self.resumed = at;
        }
        self.last_any = self.last_any.max(at);
        self.last_seen.insert(gateway, at);
    }

    /// `gateway`'s heartbeat was deleted or expired.
    pub fn forget(&mut self, gateway: &str) {
        self.last_seen.remove(gateway);
    }

    /// A gateway is gone once its heartbeat is older than the bucket's TTL
    /// (or was never seen although we have been watching that long), unless
    /// every gateway fell silent at once: then the heartbeats are not getting
    /// through (a NATS node died and the bucket elects a leader), and nobody is
    /// judged until that silence has lasted `ALL_SILENT_BELIEVED`. And once
    /// they get through again, each gateway has a TTL from then to show up: the
    /// first one back does not condemn the others, whose next beat is due. So an
    /// election marks no member away; the death of the only gateway is noticed
    /// 15 s after its last heartbeat instead of 6 s.
    pub fn is_gone(&self, gateway: &str, now: Micros) -> bool {
        let ttl = Micros::try_from(GATEWAY_TTL.as_micros()).unwrap_or(6_000_000);
        let all_silent = now - self.last_any;
        if all_silent > ALL_SILENT && all_silent <= ALL_SILENT_BELIEVED {
            return false;
        }
        let seen = self.last_seen.get(gateway).copied().unwrap_or(self.since);
        now - seen.max(self.resumed) > ttl
    }

    /// The session's connected members whose gateway is gone, each with the
    /// connection a `bye` on its behalf must name.
    pub fn departed(&self, state: &SessionState, now: Micros) -> Vec<(MemberId, ConnId)> {
        state
            .members
            .iter()
            .filter(|m| m.connected)
            .filter_map(|m| {
                let conn = m.conn.as_ref()?;
                self.is_gone(conn.gateway(), now)
                    .then(|| (m.id.clone(), conn.clone()))
            })
            .collect()
    }
}

/// Follows gateway heartbeats on the gateways bucket (current values first,
/// then every put), so owners can tell which members' gateways are gone.
pub async fn watch(bus: Bus, view: watch::Sender<Option<Gateways>>, shutdown: CancellationToken) {
    let mut gateways = Gateways::new(now_us());
    loop {
        let mut entries = match bus.gateways.watch_with_history(">").await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch gateways; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(GATEWAY_HEARTBEAT) => continue,
                }
            }
        };
        loop {
            let entry = tokio::select! {
                _ = shutdown.cancelled() => return,
                entry = entries.next() => entry,
            };
            match entry {
                Some(Ok(entry)) => {
                    if entry.operation == kv::Operation::Put {
                        let seen =
                            i64::try_from(entry.created.unix_timestamp_nanos() / 1000).unwrap_or(0);
                        gateways.heard(entry.key, seen);
                    } else {
                        gateways.forget(&entry.key);
                    }
                    view.send_replace(Some(gateways.clone()));
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "gateway watch error; restarting it");
                    break;
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bandsync_nats::{Command, DisplayName, JoinCode, Rules, SessionId};

    pub const T0: Micros = 1_700_000_000_000_000;
    const TTL: Micros = 6_000_000;

    pub fn member(id: &str) -> MemberId {
        MemberId::parse(id).expect("valid member id")
    }

    /// A session led by "lead", with "lead" connected through gateway `gw-a`
    /// and "b" through `gw-b`.
    pub fn session_on_two_gateways(rules: &Rules) -> SessionState {
        let mut s = SessionState::create(
            SessionId::parse("s1").expect("valid"),
            JoinCode::parse("ABCDEF").expect("valid"),
            member("lead"),
            DisplayName::parse("Lead").expect("valid"),
            T0,
        );
        for (m, gateway) in [("lead", "gw-a"), ("b", "gw-b")] {
            let hello = Command::Hello {
                name: DisplayName::parse("X").expect("valid"),
                conn: ConnId::parse(format!("{gateway}/1")).expect("valid"),
            };
            s.apply(&hello, &member(m), None, T0, rules).expect("joins");
        }
        s
    }

    #[test]
    fn a_gateway_is_gone_a_ttl_after_its_last_heartbeat_or_after_watching_that_long() {
        let mut g = Gateways::new(T0);
        g.heard("gw-a".into(), T0 + 1_000_000);
        // gw-b keeps beating: the heartbeats get through, so silence is death.
        let beat = |g: &mut Gateways, now: Micros| g.heard("gw-b".into(), now);
        for at in (T0 + 1_000_000..=T0 + 1_000_000 + TTL).step_by(2_000_000) {
            beat(&mut g, at);
        }
        assert!(!g.is_gone("gw-a", T0 + 1_000_000 + TTL));
        assert!(g.is_gone("gw-a", T0 + 1_000_001 + TTL));
        let mut fresh = Gateways::new(T0);
        for at in (T0..=T0 + TTL).step_by(2_000_000) {
            beat(&mut fresh, at);
        }
        assert!(
            !fresh.is_gone("gw-never", T0 + TTL),
            "not watched long enough"
        );
        assert!(fresh.is_gone("gw-never", T0 + TTL + 1));
        g.forget("gw-a");
        assert!(
            g.is_gone("gw-a", T0 + 1_000_001 + TTL),
            "a deleted heartbeat"
        );
    }

    #[test]
    fn when_every_heartbeat_stops_at_once_nobody_is_gone_until_it_lasts() {
        let mut g = Gateways::new(T0);
        g.heard("gw-a".into(), T0);
        g.heard("gw-b".into(), T0);
        // The gateways bucket elects a leader: no heartbeat gets through.
        assert!(
            !g.is_gone("gw-a", T0 + TTL + 1),
            "an election is not a death"
        );
        assert!(!g.is_gone("gw-b", T0 + ALL_SILENT_BELIEVED));
        // Heartbeats are back: gw-b beats first; gw-a's beat is due within a
        // heartbeat, so it has a TTL from the return to show up.
        let back = T0 + 8_000_000;
        g.heard("gw-b".into(), back);
        assert!(
            !g.is_gone("gw-a", back + 2_000_000),
            "the first back condemns nobody"
        );
        for at in (back..=back + TTL).step_by(2_000_000) {
            g.heard("gw-b".into(), at);
        }
        // gw-a stays silent: it died.
        assert!(g.is_gone("gw-a", back + TTL + 1));
        assert!(!g.is_gone("gw-b", back + TTL + 1));
        // The only gateway died: believed once the silence has lasted.
        let mut only = Gateways::new(T0);
        only.heard("gw-a".into(), T0);
        assert!(!only.is_gone("gw-a", T0 + ALL_SILENT_BELIEVED));
        assert!(only.is_gone("gw-a", T0 + ALL_SILENT_BELIEVED + 1));
    }

    #[test]
    fn only_connected_members_of_gone_gateways_have_departed() {
        let rules = Rules::default();
        let mut s = session_on_two_gateways(&rules);
        let mut g = Gateways::new(T0);
        let now = T0 + 2 * TTL;
        for at in (T0..=now).step_by(2_000_000) {
            g.heard("gw-a".into(), at);
        }
        let departed = g.departed(&s, now);
        assert_eq!(
            departed,
            vec![(member("b"), ConnId::parse("gw-b/1").expect("valid"))]
        );
        // Once "b" said goodbye it is no longer connected: nothing left to do.
        let bye = Command::Bye {
            conn: ConnId::parse("gw-b/1").expect("valid"),
        };
        s.apply(&bye, &member("b"), None, now, &rules).expect("bye");
        assert!(g.departed(&s, now).is_empty());
    }
}
