//! Shard leases in the leases bucket (max age = TTL, with limit markers).
//! Campaign with `create`, renew with `update` on the revision, and treat any
//! failed renewal as lost leadership: stop the shard at once. The epoch of an
//! ownership term is the revision at which the lease was won, so a later
//! owner's epoch is always larger.
//!
//! Fair share: each ticker aims for ⌈shards ÷ live tickers⌉, preferring the
//! shards rendezvous hashing gives it, and releases the excess when tickers join.

use crate::Ctx;
use crate::owned::{OwnedShard, Registry};
use crate::worker::Worker;
use async_nats::jetstream::kv;
use bandsync_nats::{Micros, Shard, Subjects, now_us};
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct Held {
    revision: u64,
    owned: Arc<OwnedShard>,
    worker: JoinHandle<()>,
}

pub struct Leases {
    ctx: Arc<Ctx>,
    registry: Registry,
    held: HashMap<Shard, Held>,
    /// Shards some ticker holds, as seen on the leases bucket.
    taken: HashMap<Shard, String>,
    live_tickers: Vec<String>,
    ttl: Duration,
}

impl Leases {
    pub fn new(ctx: Arc<Ctx>, registry: Registry) -> Self {
        let ttl = ctx.config.lease_ttl();
        Self {
            ctx,
            registry,
            held: HashMap::new(),
            taken: HashMap::new(),
            live_tickers: Vec::new(),
            ttl,
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut watch = match self.ctx.bus.leases.watch_with_history(">").await {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch leases; campaigning on the timer only");
                None
            }
        };
        let mut every = tokio::time::interval(self.ttl / 3);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = every.tick() => self.round().await,
                entry = next_entry(&mut watch) => match entry {
                    Some(entry) => self.observe(entry).await,
                    None => watch = None,
                },
            }
        }
        self.release_all().await;
    }

    /// Records who holds what; a lease that vanished is campaigned for at once.
    async fn observe(&mut self, entry: kv::Entry) {
        let Ok(shard) = entry.key.parse::<Shard>() else {
            return;
        };
        if entry.operation == kv::Operation::Put {
            self.taken
                .insert(shard, String::from_utf8_lossy(&entry.value).into_owned());
            return;
        }
        let ours_before = self
            .held
            .get(&shard)
            .is_some_and(|h| h.revision < entry.revision);
        if self
            .held
            .get(&shard)
            .is_some_and(|h| h.revision >= entry.revision)
        {
            return; // a marker from before we won this term
        }
        self.taken.remove(&shard);
        if ours_before {
            // Our own lease expired or was deleted: we no longer own it.
            self.lose(shard, "lease vanished").await;
        } else if entry.seen_current && self.held.len() < self.fair_share() {
            self.campaign(shard).await;
        }
    }

    /// Heartbeat, renewals, rebalancing and campaigns: once per TTL/3.
    async fn round(&mut self) {
        self.heartbeat().await;
        let failed: Vec<Shard> = self
            .held
            .iter()
            .filter(|(_, h)| h.worker.is_finished())
            .map(|(&s, _)| s)
            .collect();
        for shard in failed {
            self.release(shard).await; // its worker gave up; let someone retry it
        }
        self.renew_all().await;
        let share = self.fair_share();
        let preferred = self.preferred();
        if self.held.len() > share {
            let mut excess: Vec<Shard> = self
                .held
                .keys()
                .copied()
                .filter(|s| !preferred.contains(s))
                .collect();
            excess.sort_unstable();
            for shard in excess.into_iter().take(self.held.len() - share) {
                self.release(shard).await;
            }
        }
        let mut wanted: Vec<Shard> = (0..self.ctx.config.shards)
            .filter(|s| !self.held.contains_key(s) && !self.taken.contains_key(s))
            .collect();
        wanted.sort_by_key(|s| !preferred.contains(s));
        for shard in wanted {
            if self.held.len() >= share {
                break;
            }
            self.campaign(shard).await;
        }
        metrics::gauge!("bandsync_ticker_shards_owned").set(self.held.len() as f64);
    }

    fn fair_share(&self) -> usize {
        let live = self.live_tickers.len().max(1);
        usize::from(self.ctx.config.shards).div_ceil(live)
    }

    /// Shards for which this ticker has the highest rendezvous weight among live tickers.
    fn preferred(&self) -> HashSet<Shard> {
        let me = &self.ctx.ticker_id;
        (0..self.ctx.config.shards)
            .filter(|&shard| {
                let mine = weight(me, shard);
                self.live_tickers
                    .iter()
                    .all(|t| t == me || weight(t, shard) < mine)
            })
            .collect()
    }

    async fn heartbeat(&mut self) {
        let tickers = &self.ctx.bus.tickers;
        if let Err(e) = tickers
            .put(&self.ctx.ticker_id, now_us().to_string().into())
            .await
        {
            tracing::warn!(error = %e, "ticker heartbeat failed");
        }
        if let Ok(keys) = tickers.keys().await {
            let mut live: Vec<String> = keys.filter_map(|k| async move { k.ok() }).collect().await;
            live.sort();
            if !live.contains(&self.ctx.ticker_id) {
                live.push(self.ctx.ticker_id.clone());
            }
            self.live_tickers = live;
        }
    }

    async fn renew_all(&mut self) {
        let sent_at = now_us();
        let renewals: Vec<_> = self
            .held
            .iter()
            .map(|(&shard, held)| {
                renew(
                    self.ctx.bus.leases.clone(),
                    self.ctx.ticker_id.clone(),
                    shard,
                    held.revision,
                )
            })
            .collect();
        let results = futures::stream::iter(renewals)
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await;
        let valid_until = sent_at + self.valid_for();
        for (shard, result) in results {
            match result {
                Ok(revision) => {
                    metrics::counter!("bandsync_ticker_lease_renewals_total").increment(1);
                    if let Some(held) = self.held.get_mut(&shard) {
                        held.revision = revision;
                        held.owned.extend(valid_until);
                    }
                }
                Err(e) => {
                    tracing::warn!(shard, error = %e, "lease renewal failed");
                    self.lose(shard, "renewal failed").await;
                }
            }
        }
    }

    /// How long after sending a renewal the lease is surely still ours: the TTL less a margin.
    fn valid_for(&self) -> Micros {
        let ttl = Micros::try_from(self.ttl.as_micros()).unwrap_or(1_500_000);
        ttl - ttl / 5
    }

    async fn campaign(&mut self, shard: Shard) {
        let sent_at = now_us();
        match self
            .ctx
            .bus
            .leases
            .create(
                Subjects::shard_key(shard),
                self.ctx.ticker_id.clone().into(),
            )
            .await
        {
            Ok(revision) => {
                let owned = Arc::new(OwnedShard::new(shard, revision, sent_at + self.valid_for()));
                self.registry.insert(owned.clone());
                let worker = tokio::spawn(run_worker(self.ctx.clone(), owned.clone()));
                self.held.insert(
                    shard,
                    Held {
                        revision,
                        owned,
                        worker,
                    },
                );
                self.taken.insert(shard, self.ctx.ticker_id.clone());
                metrics::counter!("bandsync_ticker_leases_acquired_total").increment(1);
                tracing::info!(shard, epoch = revision, "lease acquired");
            }
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => tracing::debug!(shard, error = %e, "campaign failed"),
        }
    }

    async fn lose(&mut self, shard: Shard, why: &str) {
        if let Some(held) = self.held.remove(&shard) {
            held.owned.stop.cancel();
            self.registry.remove(shard);
            metrics::counter!("bandsync_ticker_leases_lost_total").increment(1);
            tracing::warn!(shard, epoch = held.owned.epoch, why, "lease lost");
        }
    }

    /// Gives a shard up cleanly: stop its worker (it saves its cursor), then delete the lease.
    async fn release(&mut self, shard: Shard) {
        let Some(held) = self.held.remove(&shard) else {
            return;
        };
        held.owned.stop.cancel();
        self.registry.remove(shard);
        let _ = tokio::time::timeout(Duration::from_secs(2), held.worker).await;
        let _ = self
            .ctx
            .bus
            .leases
            .delete_expect_revision(Subjects::shard_key(shard), Some(held.revision))
            .await;
        self.taken.remove(&shard);
        tracing::info!(shard, "lease released");
    }

    async fn release_all(&mut self) {
        let shards: Vec<Shard> = self.held.keys().copied().collect();
        for held in self.held.values() {
            held.owned.stop.cancel();
        }
        let releases = shards.into_iter().map(|shard| {
            let held = self.held.remove(&shard);
            let leases = self.ctx.bus.leases.clone();
            let registry = self.registry.clone();
            async move {
                let Some(held) = held else { return };
                registry.remove(shard);
                let _ = tokio::time::timeout(Duration::from_secs(2), held.worker).await;
                let _ = leases
                    .delete_expect_revision(Subjects::shard_key(shard), Some(held.revision))
                    .await;
            }
        });
        futures::stream::iter(releases)
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await;
        let _ = self.ctx.bus.tickers.delete(&self.ctx.ticker_id).await;
        tracing::info!("all leases released");
    }
}

async fn renew(
    leases: kv::Store,
    id: String,
    shard: Shard,
    revision: u64,
) -> (Shard, Result<u64, kv::UpdateError>) {
    let started = std::time::Instant::now();
    let result = leases
        .update(Subjects::shard_key(shard), id.into(), revision)
        .await;
    metrics::histogram!("bandsync_ticker_lease_renew_seconds")
        .record(started.elapsed().as_secs_f64());
    (shard, result)
}

async fn run_worker(ctx: Arc<Ctx>, owned: Arc<OwnedShard>) {
    let shard = owned.shard;
    if let Err(e) = Worker::run(ctx, owned.clone()).await {
        tracing::error!(shard, error = %e, "shard worker failed; giving the shard up");
        // Let the lease lapse so another ticker (or this one, later) takes over.
        owned.stop.cancel();
    }
}

async fn next_entry(watch: &mut Option<kv::Watch>) -> Option<kv::Entry> {
    match watch {
        Some(w) => match w.next().await {
            Some(Ok(entry)) => Some(entry),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "lease watch error");
                None
            }
            None => None,
        },
        None => std::future::pending().await,
    }
}

/// Rendezvous weight of a (ticker, shard) pair: FNV-1a of "ticker/shard".
fn weight(ticker: &str, shard: Shard) -> u64 {
    bandsync_nats::shard::fnv1a(format!("{ticker}/{shard}").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::weight;

    #[test]
    fn rendezvous_spreads_shards_evenly() {
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
}
