//! The heartbeat: once a period, a beat for every owned shard with a playing
//! session; each gateway makes the shard's sessions' ticks from it (`BeatMsg`).
//! A period is split into wall-clock-aligned slots about 10 ms wide
//! (`tick_slots`) and each shard beats in its own (`tick_phase`), so every ticker
//! agrees on when a session ticks and the work is spread over the period, not
//! burst at its start.
//! Beats go over core NATS only; they are cheap to lose.
//!
//! A tick sequence number is `floor((t − phase) / period)`. Each owned shard
//! remembers the highest one published for it (`OwnedShard::claim_tick`), seeded
//! from the previous owner's hand-over, so no period is ever published twice for
//! a session, by one owner or by two.

use crate::owned::{OwnedShard, Registry};
use bandsync_nats::timeline::{next_tick_slot, tick_phase, tick_seq, tick_slots};
use bandsync_nats::{BeatMsg, Micros, Subjects, now_us};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Most tasks one tick round is split over; more lanes than cores only adds
/// switching.
const MAX_LANES: usize = 4;

#[derive(Clone)]
pub struct Ticks {
    pub client: async_nats::Client,
    pub subjects: Subjects,
    pub period: Duration,
}

impl Ticks {
    fn period_us(&self) -> Micros {
        Micros::try_from(self.period.as_micros()).unwrap_or(100_000)
    }

    pub async fn run(&self, registry: Registry, shutdown: CancellationToken) {
        let period_us = self.period_us();
        let slot_us = period_us / tick_slots(period_us);
        let mut rate = Rate::new();
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let mut due = next_tick_slot(now_us(), period_us);
        loop {
            let now = now_us();
            let (next, slot) = round_due(due, now, period_us);
            due = next_tick_slot(next, period_us);
            let wait = Duration::from_micros(u64::try_from(next - now).unwrap_or(0));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            metrics::histogram!("bandsync_ticker_tick_round_late_seconds")
                .record((now_us() - next).max(0) as f64 / 1e6);
            let seq = tick_seq(next, period_us, 0);
            // This slot's shards, split over a few tasks so a big round uses every core.
            let shards: Vec<Arc<OwnedShard>> = registry
                .snapshot()
                .into_iter()
                .filter(|o| tick_phase(o.shard, period_us) == slot * slot_us)
                .collect();
            let lanes = cores.clamp(1, MAX_LANES).min(shards.len().max(1));
            let rounds: Vec<_> = (0..lanes)
                .map(|lane| {
                    let part: Vec<Arc<OwnedShard>> =
                        shards.iter().skip(lane).step_by(lanes).cloned().collect();
                    let ticks = self.clone();
                    tokio::spawn(async move { ticks.publish_round(part, seq).await })
                })
                .collect();
            let mut sent = 0u64;
            for round in futures::future::join_all(rounds).await {
                sent += round.unwrap_or_default();
            }
            metrics::counter!("bandsync_ticker_ticks_total").increment(sent);
            if slot == 0 {
                let playing: usize = registry.snapshot().iter().map(|o| o.playing_count()).sum();
                metrics::gauge!("bandsync_ticker_playing_sessions").set(playing as f64);
            }
            if let Some(per_second) = rate.add(sent) {
                metrics::gauge!("bandsync_ticker_ticks_per_second").set(per_second);
            }
        }
    }

    /// One lane of a tick round: how many ticks went out.
    async fn publish_round(&self, shards: Vec<Arc<OwnedShard>>, seq: u64) -> u64 {
        let mut sent = 0;
        for owned in shards {
            // The worker's catch-up tick covers a shard still loading.
            if owned.is_loaded() {
                sent += self.publish_shard(&owned, seq).await;
            }
        }
        sent
    }

    /// Right after a shard is loaded: the tick for the current period, unless it
    /// went out already (from the previous owner or from the tick loop).
    pub async fn catch_up(&self, owned: &OwnedShard) -> u64 {
        let period = self.period_us();
        let seq = tick_seq(now_us(), period, tick_phase(owned.shard, period));
        let sent = self.publish_shard(owned, seq).await;
        metrics::counter!("bandsync_ticker_ticks_total").increment(sent);
        sent
    }

    /// Publishes beat `seq` for the shard, if the lease is proven, any of its
    /// sessions plays and nobody published that period yet. Returns how many
    /// sessions it ticks (the gateways make their ticks from it).
    async fn publish_shard(&self, owned: &OwnedShard, seq: u64) -> u64 {
        let _gate = owned.gate.read().await;
        let server_time = now_us();
        let playing = {
            let mut playing = owned.playing.lock().unwrap_or_else(|e| e.into_inner());
            playing.retain(|_, tl| tl.is_active(server_time));
            playing.len() as u64
        };
        if playing == 0 || !owned.is_valid() || !owned.claim_tick(seq) {
            return 0;
        }
        let beat = BeatMsg {
            shard: owned.shard,
            seq,
            epoch: owned.epoch,
            server_time,
        };
        let subject = self.subjects.beat(owned.shard);
        if self.client.publish(subject, beat.to_bytes()).await.is_err() {
            metrics::counter!("bandsync_ticker_tick_publish_failures_total").increment(1);
            return 0;
        }
        playing
    }
}

/// The round to run next: the slot due, even when the last round ran late (a
/// slot skipped is a period without ticks for its shards, which a loaded
/// ticker did at 6,000 sessions); more than a period behind, the missed rounds
/// are stale, so it goes on from `now`.
fn round_due(due: (Micros, i64), now: Micros, period_us: Micros) -> (Micros, i64) {
    if now - due.0 > period_us {
        next_tick_slot(now, period_us)
    } else {
        due
    }
}

/// Ticks per second over the last whole second.
struct Rate {
    since: Instant,
    count: u64,
}

impl Rate {
    fn new() -> Self {
        Self {
            since: Instant::now(),
            count: 0,
        }
    }

    fn add(&mut self, n: u64) -> Option<f64> {
        self.count += n;
        let elapsed = self.since.elapsed();
        if elapsed < Duration::from_secs(1) {
            return None;
        }
        let rate = self.count as f64 / elapsed.as_secs_f64();
        *self = Self::new();
        Some(rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_round_runs_every_slot_it_missed() {
        let period = 1_000_000;
        let t0 = 1_700_000_000_000_000;
        let due = next_tick_slot(t0, period);
        // 35 ms late: the slot due still runs, then the three after it.
        let mut now = due.0 + 35_000;
        let mut slots = Vec::new();
        let mut next = due;
        for _ in 0..4 {
            let round = round_due(next, now, period);
            slots.push(round.1);
            next = next_tick_slot(round.0, period);
            now += 1_000;
        }
        assert_eq!(slots, [due.1, due.1 + 1, due.1 + 2, due.1 + 3]);
        // Over a period late: start again from now.
        let stale = round_due(due, due.0 + period + 5_000, period);
        assert_eq!(stale, next_tick_slot(due.0 + period + 5_000, period));
    }
}
