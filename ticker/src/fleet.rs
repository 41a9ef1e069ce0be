//! The fleet as one ticker sees it: who holds each shard's lease, which tickers
//! are alive, and from that which shards to campaign for and which to hand
//! over. Pure logic fed by the lease and heartbeat watches, so every rule here is
//! tested without a network.
//!
//! Rules, in priority order:
//! 1. **Availability.** A shard vacant for longer than the grace (one campaign
//!    interval) is campaigned for by every ticker, whatever its share.
//! 2. **Fair share.** The live tickers, sorted by id, own ⌊S/n⌋ shards each and the
//!    first S mod n one more, so their targets add up to S and every ticker
//!    computes the same targets. A ticker below its target campaigns for vacant
//!    shards at once, its rendezvous favourites first.
//! 3. **Handover.** A ticker above its target releases only as many shards as live
//!    tickers below theirs still need after the vacant ones, so a stale view never
//!    leaves shards without a taker.
//!
//! A ticker is live while its heartbeat is fresher than the lease TTL. A ticker
//! whose lease expired is presumed dead until it sends a heartbeat after that,
//! and one that released its shards because it is leaving is dropped at once: in
//! both cases the others' targets grow before they look for takers.
//!
//! **Silent leases.** A lease whose holder has not renewed it for 0.9·TTL (as
//! seen on the watch) is treated as expired before the bucket's max age removes
//! it: the holder sent that last renewal before we saw it, and it stops
//! publishing 0.8·TTL after sending it, so it is fenced by then. The takeover is
//! an `update` on the holder's last revision, which fails if it renewed after all.
//! This takes about half a second off a failover; max age stays the backstop.

use bandsync_nats::Shard;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

const RELEASED: &str = "!released";

/// What a lease key holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseValue {
    Held {
        ticker: String,
    },
    /// Given up cleanly by `ticker` after it published ticks up to `last_tick`;
    /// `leaving` when that ticker is shutting down.
    Released {
        ticker: String,
        last_tick: u64,
        leaving: bool,
    },
}

impl LeaseValue {
    pub fn encode(&self) -> String {
        match self {
            LeaseValue::Held { ticker } => ticker.clone(),
            LeaseValue::Released {
                ticker,
                last_tick,
                leaving,
            } => format!("{RELEASED} {ticker} {last_tick} {}", u8::from(*leaving)),
        }
    }

    /// Ticker ids cannot contain '!' or spaces, so a plain id is a held lease.
    pub fn parse(text: &str) -> LeaseValue {
        let mut parts = text.split(' ');
        if parts.next() != Some(RELEASED) {
            return LeaseValue::Held {
                ticker: text.to_owned(),
            };
        }
        let ticker = parts.next().unwrap_or_default().to_owned();
        let last_tick = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let leaving = parts.next() == Some("1");
        LeaseValue::Released {
            ticker,
            last_tick,
            leaving,
        }
    }
}

/// How a vacant shard became vacant: it decides what its next owner may assume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vacated {
    /// Never held while we watched, or deleted.
    Absent,
    /// The lease ran out: its holder died, froze or was cut off.
    Expired,
    /// Handed over after ticks up to `last_tick` were published.
    Released { last_tick: u64 },
}

/// A change seen on a lease key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEvent {
    Put(LeaseValue),
    /// Expired (a max-age marker) or purged.
    Expired,
    Deleted,
}

#[derive(Debug, Clone)]
enum Slot {
    Held {
        ticker: String,
        revision: u64,
        /// When we saw this revision.
        seen: Instant,
    },
    Vacant {
        since: Instant,
        how: Vacated,
        /// The key's latest revision, when it still has one (a campaign updates on it).
        revision: Option<u64>,
    },
}

/// A vacant shard, as a campaign needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vacancy {
    pub shard: Shard,
    pub how: Vacated,
    pub revision: Option<u64>,
}

/// What to do now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub campaign: Vec<Vacancy>,
    pub release: Vec<Shard>,
}

pub struct Fleet {
    me: String,
    shards: u16,
    ttl: Duration,
    grace: Duration,
    /// A lease not renewed for this long (seen from here) counts as expired.
    silence: Duration,
    /// Since when the leases bucket has taken our writes again, after a spell
    /// when it could not (a Raft election): silence is counted from here too.
    writable_since: Instant,
    /// Our last write to the leases bucket failed for want of a leader.
    unwritable: bool,
    slots: Vec<Slot>,
    /// When each ticker's latest heartbeat was seen.
    heartbeats: HashMap<String, Instant>,
    /// Tickers whose lease expired at that instant; dead until a later heartbeat.
    suspects: HashMap<String, Instant>,
    leaving: HashSet<String>,
}

impl Fleet {
    pub fn new(me: &str, shards: u16, ttl: Duration, grace: Duration, now: Instant) -> Self {
        Self {
            me: me.to_owned(),
            shards,
            ttl,
            grace,
            silence: ttl * 9 / 10,
            writable_since: now,
            unwritable: false,
            slots: vec![
                Slot::Vacant {
                    since: now,
                    how: Vacated::Absent,
                    revision: None,
                };
                usize::from(shards)
            ],
            heartbeats: HashMap::new(),
            suspects: HashMap::new(),
            leaving: HashSet::new(),
        }
    }

    fn slot(&self, shard: Shard) -> Option<&Slot> {
        self.slots.get(usize::from(shard))
    }

    fn revision(slot: &Slot) -> Option<u64> {
        match slot {
            Slot::Held { revision, .. } => Some(*revision),
            Slot::Vacant { revision, .. } => *revision,
        }
    }

    /// Folds in a change of one lease key (older revisions than known are ignored).
    pub fn observe_lease(&mut self, shard: Shard, event: LeaseEvent, revision: u64, now: Instant) {
        let Some(slot) = self.slots.get(usize::from(shard)) else {
            return;
        };
        if Self::revision(slot).is_some_and(|known| known > revision) {
            return;
        }
        let next = match event {
            LeaseEvent::Put(LeaseValue::Held { ticker }) => {
                // Taken from a holder that never released it: the holder fell
                // silent, so it is presumed dead like one whose lease expired.
                if let Slot::Held { ticker: before, .. } = slot
                    && *before != ticker
                    && *before != self.me
                {
                    self.suspects.insert(before.clone(), now);
                }
                Slot::Held {
                    ticker,
                    revision,
                    seen: now,
                }
            }
            LeaseEvent::Put(LeaseValue::Released {
                ticker,
                last_tick,
                leaving,
            }) => {
                if leaving {
                    self.heartbeats.remove(&ticker);
                    self.leaving.insert(ticker);
                }
                Slot::Vacant {
                    since: now,
                    how: Vacated::Released { last_tick },
                    revision: Some(revision),
                }
            }
            LeaseEvent::Expired => match slot {
                Slot::Held { ticker, .. } => {
                    if *ticker != self.me {
                        self.suspects.insert(ticker.clone(), now);
                    }
                    Slot::Vacant {
                        since: now,
                        how: Vacated::Expired,
                        revision: Some(revision),
                    }
                }
                // A released lease ran out: who released it, and when, still holds.
                Slot::Vacant { since, how, .. } => Slot::Vacant {
                    since: *since,
                    how: *how,
                    revision: Some(revision),
                },
            },
            LeaseEvent::Deleted => Slot::Vacant {
                since: now,
                how: Vacated::Absent,
                revision: Some(revision),
            },
        };
        self.slots[usize::from(shard)] = next;
    }

    pub fn observe_heartbeat(&mut self, ticker: &str, now: Instant) {
        self.heartbeats.insert(ticker.to_owned(), now);
        self.leaving.remove(ticker);
    }

    pub fn observe_ticker_gone(&mut self, ticker: &str) {
        self.heartbeats.remove(ticker);
    }

    /// Whether our last write to the leases bucket went through. While the bucket
    /// cannot be written (its leader died and Raft elects another), no holder can
    /// renew, so silence proves nothing: it is counted only while we can write,
    /// from the moment we could again.
    pub fn observe_bucket(&mut self, writable: bool, now: Instant) {
        if writable && self.unwritable {
            self.writable_since = now;
        }
        self.unwritable = !writable;
    }

    /// When a slot held by another ticker fell silent, if it has.
    fn silent_since(&self, slot: &Slot, now: Instant) -> Option<Instant> {
        if self.unwritable {
            return None;
        }
        match slot {
            Slot::Held { ticker, seen, .. } if *ticker != self.me => {
                let heard = (*seen).max(self.writable_since);
                (now.saturating_duration_since(heard) > self.silence).then(|| heard + self.silence)
            }
            _ => None,
        }
    }

    /// Tickers holding a silent lease: presumed dead like those whose lease expired.
    fn silent_holders(&self, now: Instant) -> HashSet<&str> {
        self.slots
            .iter()
            .filter(|slot| self.silent_since(slot, now).is_some())
            .filter_map(|slot| match slot {
                Slot::Held { ticker, .. } => Some(ticker.as_str()),
                Slot::Vacant { .. } => None,
            })
            .collect()
    }

    /// Live tickers, sorted; always includes this one.
    pub fn live(&self, now: Instant) -> Vec<String> {
        let silent = self.silent_holders(now);
        let mut live: Vec<String> = self
            .heartbeats
            .iter()
            .filter(|(t, seen)| {
                now.saturating_duration_since(**seen) <= self.ttl
                    && !self.leaving.contains(*t)
                    && !silent.contains(t.as_str())
                    && self.suspects.get(*t).is_none_or(|at| **seen > *at)
            })
            .map(|(t, _)| t.clone())
            .collect();
        if !live.contains(&self.me) {
            live.push(self.me.clone());
        }
        live.sort();
        live
    }

    fn targets(&self, live: &[String]) -> HashMap<String, usize> {
        let n = live.len().max(1);
        let shards = usize::from(self.shards);
        live.iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), shards / n + usize::from(i < shards % n)))
            .collect()
    }

    /// The number of shards this ticker should own.
    pub fn target(&self, now: Instant) -> usize {
        let live = self.live(now);
        self.targets(&live).get(&self.me).copied().unwrap_or(0)
    }

    fn counts(&self) -> HashMap<&str, usize> {
        let mut counts = HashMap::new();
        for slot in &self.slots {
            if let Slot::Held { ticker, .. } = slot {
                *counts.entry(ticker.as_str()).or_insert(0) += 1;
            }
        }
        counts
    }

    /// The shard as a campaign needs it, if it is vacant (or silent) at `now`.
    pub fn vacancy(&self, shard: Shard, now: Instant) -> Option<Vacancy> {
        let slot = self.slot(shard)?;
        match slot {
            Slot::Vacant { how, revision, .. } => Some(Vacancy {
                shard,
                how: *how,
                revision: *revision,
            }),
            Slot::Held { revision, .. } => self.silent_since(slot, now).map(|_| Vacancy {
                shard,
                how: Vacated::Expired,
                revision: Some(*revision),
            }),
        }
    }

    /// Which shards to campaign for and which to hand over, given the ones held.
    pub fn plan(&self, held: &HashSet<Shard>, now: Instant) -> Plan {
        let live = self.live(now);
        let targets = self.targets(&live);
        let target = targets.get(&self.me).copied().unwrap_or(0);
        let mine = held.len();
        let mut vacant: Vec<(Shard, Duration)> = self
            .slots
            .iter()
            .zip(0..self.shards)
            .filter(|(_, shard)| !held.contains(shard))
            .filter_map(|(slot, shard)| match slot {
                Slot::Vacant { since, .. } => Some((shard, now.saturating_duration_since(*since))),
                Slot::Held { .. } => self
                    .silent_since(slot, now)
                    .map(|since| (shard, now.saturating_duration_since(since))),
            })
            .collect();
        vacant.sort_by_key(|&(shard, _)| std::cmp::Reverse(weight(&self.me, shard)));
        let wanted = target.saturating_sub(mine);
        let campaign: Vec<Vacancy> = vacant
            .iter()
            .enumerate()
            .filter(|&(i, &(_, vacant_for))| i < wanted || vacant_for >= self.grace)
            .filter_map(|(_, &(shard, _))| self.vacancy(shard, now))
            .collect();
        let mut release = Vec::new();
        if mine > target {
            let counts = self.counts();
            let deficit: usize = live
                .iter()
                .filter(|t| **t != self.me)
                .map(|t| {
                    let want = targets.get(t).copied().unwrap_or(0);
                    want.saturating_sub(counts.get(t.as_str()).copied().unwrap_or(0))
                })
                .sum();
            let give = (mine - target).min(deficit.saturating_sub(vacant.len()));
            let mut mine_sorted: Vec<Shard> = held.iter().copied().collect();
            mine_sorted.sort_by_key(|&shard| (weight(&self.me, shard), shard));
            release = mine_sorted.into_iter().take(give).collect();
        }
        Plan { campaign, release }
    }
}

/// Rendezvous weight of a (ticker, shard) pair: FNV-1a of "ticker/shard", then
/// MurmurHash3's 64-bit finaliser. FNV alone barely mixes its last bytes, so ids
/// that differ in one character would rank shards almost alike.
pub fn weight(ticker: &str, shard: Shard) -> u64 {
    let mut h = bandsync_nats::shard::fnv1a(format!("{ticker}/{shard}").as_bytes());
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_millis(1500);
    const GRACE: Duration = Duration::from_millis(500);

    fn held_by(
        fleet: &mut Fleet,
        ticker: &str,
        shards: impl IntoIterator<Item = Shard>,
        t: Instant,
    ) {
        for s in shards {
            let rev = 1000 + u64::from(s);
            let value = LeaseValue::Held {
                ticker: ticker.into(),
            };
            fleet.observe_lease(s, LeaseEvent::Put(value), rev, t);
        }
    }

    fn mine(fleet: &Fleet) -> HashSet<Shard> {
        fleet
            .slots
            .iter()
            .zip(0..)
            .filter(|(s, _)| matches!(s, Slot::Held { ticker, .. } if *ticker == fleet.me))
            .map(|(_, i)| i)
            .collect()
    }

    #[test]
    fn lease_values_round_trip() {
        for v in [
            LeaseValue::Held {
                ticker: "t-1".into(),
            },
            LeaseValue::Released {
                ticker: "t-1".into(),
                last_tick: 17_000_000_123,
                leaving: true,
            },
            LeaseValue::Released {
                ticker: "t-2".into(),
                last_tick: 5,
                leaving: false,
            },
        ] {
            assert_eq!(LeaseValue::parse(&v.encode()), v);
        }
        assert_eq!(
            LeaseValue::parse("ticker-abc"),
            LeaseValue::Held {
                ticker: "ticker-abc".into()
            },
            "values written by earlier versions"
        );
    }

    #[test]
    fn targets_add_up_to_the_shard_count_and_differ_by_at_most_one() {
        let t0 = Instant::now();
        for n in 1..=7usize {
            let mut fleet = Fleet::new("t0", 64, TTL, GRACE, t0);
            for i in 1..n {
                fleet.observe_heartbeat(&format!("t{i}"), t0);
            }
            let live = fleet.live(t0);
            assert_eq!(live.len(), n);
            let targets = fleet.targets(&live);
            assert_eq!(targets.values().sum::<usize>(), 64);
            let (lo, hi) = (targets.values().min(), targets.values().max());
            assert!(hi.zip(lo).is_some_and(|(h, l)| h - l <= 1), "{targets:?}");
        }
    }

    #[test]
    fn a_lone_ticker_campaigns_for_every_shard() {
        let t0 = Instant::now();
        let fleet = Fleet::new("a", 16, TTL, GRACE, t0);
        let plan = fleet.plan(&HashSet::new(), t0);
        assert_eq!(plan.campaign.len(), 16);
        assert!(plan.release.is_empty());
    }

    #[test]
    fn a_below_target_ticker_takes_only_its_share_until_the_grace_passes() {
        let t0 = Instant::now();
        let mut fleet = Fleet::new("a", 16, TTL, GRACE, t0);
        fleet.observe_heartbeat("b", t0);
        let plan = fleet.plan(&HashSet::new(), t0);
        assert_eq!(plan.campaign.len(), 8, "its share of 16 between two");
        let later = t0 + GRACE;
        fleet.observe_heartbeat("b", later);
        let plan = fleet.plan(&HashSet::new(), later);
        assert_eq!(
            plan.campaign.len(),
            16,
            "vacant past the grace: anyone takes it"
        );
    }

    #[test]
    fn shards_of_a_ticker_whose_lease_expired_are_taken_at_once() {
        let t0 = Instant::now();
        let mut fleet = Fleet::new("a", 12, TTL, GRACE, t0);
        for t in ["b", "c"] {
            fleet.observe_heartbeat(t, t0);
        }
        held_by(&mut fleet, "a", 0..4, t0);
        held_by(&mut fleet, "b", 4..8, t0);
        held_by(&mut fleet, "c", 8..12, t0);
        assert_eq!(fleet.plan(&mine(&fleet), t0), Plan::default());
        // c is killed: its first lease expires while its heartbeat still looks fresh.
        let t1 = t0 + Duration::from_millis(1200);
        fleet.observe_heartbeat("b", t1);
        fleet.observe_lease(8, LeaseEvent::Expired, 2000, t1);
        assert_eq!(fleet.live(t1), vec!["a", "b"], "c is presumed dead");
        assert_eq!(fleet.target(t1), 6);
        let plan = fleet.plan(&mine(&fleet), t1);
        assert_eq!(plan.campaign.len(), 1, "the one vacant shard, at once");
        assert_eq!(plan.campaign[0].how, Vacated::Expired);
        // A heartbeat from c after the expiry brings it back (it was only slow).
        fleet.observe_heartbeat("c", t1 + Duration::from_millis(10));
        assert_eq!(fleet.live(t1 + Duration::from_millis(10)).len(), 3);
    }

    #[test]
    fn silence_counts_only_while_the_leases_bucket_takes_our_writes() {
        let t0 = Instant::now();
        let mut fleet = Fleet::new("a", 4, TTL, GRACE, t0);
        fleet.observe_heartbeat("b", t0);
        held_by(&mut fleet, "a", 0..2, t0);
        held_by(&mut fleet, "b", 2..4, t0);
        // The bucket's leader dies: our renewals fail too, so b's are no proof.
        fleet.observe_bucket(false, t0 + GRACE);
        let electing = t0 + Duration::from_secs(6);
        fleet.observe_heartbeat("b", electing);
        assert!(
            fleet.plan(&mine(&fleet), electing).campaign.is_empty(),
            "no holder is silent while nobody can renew"
        );
        assert_eq!(fleet.live(electing), vec!["a", "b"]);
        // A leader again: silence counts from now, so b has its TTL to renew.
        fleet.observe_bucket(true, electing);
        let soon = electing + TTL / 2;
        fleet.observe_heartbeat("b", soon);
        assert!(
            fleet.plan(&mine(&fleet), soon).campaign.is_empty(),
            "b gets time to renew after the election"
        );
        let late = electing + TTL;
        fleet.observe_heartbeat("b", late);
        assert_eq!(
            fleet.plan(&mine(&fleet), late).campaign.len(),
            2,
            "a holder still silent that long after is presumed dead"
        );
    }

    #[test]
    fn a_lease_not_renewed_for_most_of_the_ttl_is_taken_on_its_last_revision() {
        let t0 = Instant::now();
        let mut fleet = Fleet::new("a", 4, TTL, GRACE, t0);
        fleet.observe_heartbeat("b", t0);
        held_by(&mut fleet, "a", 0..2, t0);
        held_by(&mut fleet, "b", 2..4, t0);
        let quiet = t0 + TTL * 9 / 10;
        fleet.observe_heartbeat("b", quiet);
        assert!(
            fleet.plan(&mine(&fleet), quiet).campaign.is_empty(),
            "not yet"
        );
        let later = quiet + Duration::from_millis(1);
        fleet.observe_heartbeat("b", later);
        assert_eq!(
            fleet.live(later),
            vec!["a"],
            "a silent holder is presumed dead"
        );
        let plan = fleet.plan(&mine(&fleet), later);
        let taken: Vec<(Shard, Vacated, Option<u64>)> = plan
            .campaign
            .iter()
            .map(|v| (v.shard, v.how, v.revision))
            .collect();
        assert_eq!(
            taken.len(),
            2,
            "both of b's shards, on b's revisions: {taken:?}"
        );
        assert!(taken.contains(&(2, Vacated::Expired, Some(1002))));
        // a takes shard 2: b stays presumed dead although its slot 3 is no longer silent.
        let taken_by_a = LeaseValue::Held { ticker: "a".into() };
        fleet.observe_lease(2, LeaseEvent::Put(taken_by_a), 1200, later);
        assert_eq!(fleet.live(later), vec!["a"]);
        // b renews after all: its lease is live again.
        let renewed = LeaseValue::Held { ticker: "b".into() };
        fleet.observe_lease(3, LeaseEvent::Put(renewed), 1101, later);
        assert!(fleet.plan(&mine(&fleet), later).campaign.is_empty());
        let beat = later + Duration::from_millis(1);
        fleet.observe_heartbeat("b", beat);
        assert_eq!(
            fleet.live(beat),
            vec!["a", "b"],
            "a heartbeat after it revives b"
        );
    }

    #[test]
    fn a_leaving_ticker_is_dropped_with_its_first_release() {
        let t0 = Instant::now();
        let mut fleet = Fleet::new("a", 4, TTL, GRACE, t0);
        fleet.observe_heartbeat("b", t0);
        held_by(&mut fleet, "a", 0..2, t0);
        held_by(&mut fleet, "b", 2..4, t0);
        let released = LeaseValue::Released {
            ticker: "b".into(),
            last_tick: 99,
            leaving: true,
        };
        fleet.observe_lease(2, LeaseEvent::Put(released), 3000, t0);
        assert_eq!(fleet.live(t0), vec!["a"]);
        let plan = fleet.plan(&mine(&fleet), t0);
        assert_eq!(
            plan.campaign,
            vec![Vacancy {
                shard: 2,
                how: Vacated::Released { last_tick: 99 },
                revision: Some(3000)
            }]
        );
    }

    #[test]
    fn a_joining_ticker_gets_exactly_the_excess_of_the_others() {
        let t0 = Instant::now();
        let tickers = ["a", "b", "c"];
        let mut views: Vec<Fleet> = tickers
            .iter()
            .map(|me| Fleet::new(me, 64, TTL, GRACE, t0))
            .collect();
        let split = [0..22u16, 22..43, 43..64];
        for view in &mut views {
            for (t, range) in tickers.iter().zip(split.iter()) {
                view.observe_heartbeat(t, t0);
                held_by(view, t, range.clone(), t0);
            }
            view.observe_heartbeat("d", t0);
        }
        let released: usize = views
            .iter()
            .map(|v| {
                let plan = v.plan(&mine(v), t0);
                assert!(plan.campaign.is_empty(), "nothing vacant yet");
                plan.release.len()
            })
            .sum();
        assert_eq!(released, 16, "d's target, no more");
    }

    #[test]
    fn an_over_target_ticker_keeps_its_shards_when_nobody_needs_them() {
        let t0 = Instant::now();
        let mut fleet = Fleet::new("a", 8, TTL, GRACE, t0);
        fleet.observe_heartbeat("b", t0);
        held_by(&mut fleet, "a", 0..8, t0);
        // b is live but its view says it holds nothing and wants 4: hand 4 over.
        assert_eq!(fleet.plan(&mine(&fleet), t0).release.len(), 4);
        // b goes silent: nobody to hand to, so a keeps everything.
        let later = t0 + TTL + Duration::from_millis(1);
        assert!(fleet.plan(&mine(&fleet), later).release.is_empty());
    }

    #[test]
    fn rendezvous_preferences_spread_shards_evenly() {
        let tickers = ["t-a", "t-b", "t-c"];
        let mut counts = [0usize; 3];
        for shard in 0..256u16 {
            let best = (0..3)
                .max_by_key(|&i| weight(tickers[i], shard))
                .expect("non-empty");
            counts[best] += 1;
        }
        assert!(
            counts.iter().all(|&c| (60..=110).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn older_revisions_do_not_overwrite_newer_ones() {
        let t0 = Instant::now();
        let mut fleet = Fleet::new("a", 2, TTL, GRACE, t0);
        let held = |t: &str| {
            LeaseEvent::Put(LeaseValue::Held {
                ticker: t.to_owned(),
            })
        };
        fleet.observe_lease(0, held("b"), 10, t0);
        fleet.observe_lease(0, LeaseEvent::Expired, 5, t0);
        assert!(fleet.vacancy(0, t0).is_none());
        fleet.observe_lease(0, LeaseEvent::Expired, 11, t0);
        assert_eq!(fleet.vacancy(0, t0).map(|v| v.how), Some(Vacated::Expired));
    }
}
