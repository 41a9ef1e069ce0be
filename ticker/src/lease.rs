//! Shard leases in the leases bucket (max age = TTL, with limit markers).
//! Campaign with `create` (or, for a lease its holder handed over, `update` on
//! the hand-over's revision), renew with `update` on the revision every TTL/3,
//! and treat any failed renewal, or a newer revision of our key on the watch, as
//! lost leadership: stop the shard at once. The epoch of an ownership term is the
//! revision at which the lease was won; revisions of a bucket only grow, so a later
//! owner's epoch is always larger.
//!
//! Handing over (rebalance or shutdown): stop the shard, wait until nothing is
//! being published for it, then overwrite the lease with a "released" value that
//! names the last tick sequence published. The next owner continues from the next
//! sequence, so no tick period is published twice nor, if it is quick, skipped.
//! Which shards to take or give is decided by `fleet::Fleet`, including when a
//! holder's lease counts as expired because it stopped renewing it.

use crate::Ctx;
use crate::fleet::{Fleet, LeaseEvent, LeaseValue, Vacancy, Vacated};
use crate::owned::{OwnedShard, Registry};
use crate::worker::{Worker, chain};
use async_nats::jetstream::kv;
use bandsync_nats::timeline::{tick_phase, tick_seq};
use bandsync_nats::{Micros, Shard, Subjects, now_us};
use futures::{FutureExt, StreamExt};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Lease operations in flight at once (renewals, campaigns, releases).
const PARALLEL: usize = 64;
/// How long a release waits for the shard's worker to save its cursor.
const WORKER_STOP_WAIT: Duration = Duration::from_millis(300);
/// How often the fleet view is checked for leases that fell silent.
const SILENCE_CHECK: Duration = Duration::from_millis(50);
/// Shutdown: how long a step under way, or the heartbeat, may take to finish, and
/// how long the releases may take.
const SHUTDOWN_STEP: Duration = Duration::from_millis(500);
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// How long start-up waits to read the current leases and heartbeats.
const CATCH_UP_WAIT: Duration = Duration::from_secs(2);
/// How long a holder keeps its shards, ticking, while the leases bucket cannot be
/// written, counted from its last successful renewal: its Raft leader died and
/// another is being elected (5–7 s measured on three nodes), or froze (SIGSTOP
/// for 10 s: no write for 11.4 s, as the other nodes did not elect meanwhile).
/// Nobody can take a lease while nobody can write the bucket, and the others
/// count a holder's silence only while they can write it
/// (`Fleet::observe_bucket`), so the holder renews as soon as the bucket is back
/// and its shards stay where they are. Shorter than the bucket's max age, or the
/// bucket back from its election would expire the leases still ridden.
const RIDE_THROUGH: Duration = Duration::from_secs(15);
const _: () = assert!(RIDE_THROUGH.as_secs() < bandsync_nats::bus::LEASE_BACKSTOP.as_secs());

/// Who holds a shard's lease, as far as a read after a refused renewal can tell.
enum Holder {
    /// This ticker, at this revision.
    Us(u64),
    /// Another ticker, or nobody (released or expired), as the read said.
    Other(String),
    /// No answer, or an answer from a node behind on the bucket.
    Unknown,
}

struct Held {
    revision: u64,
    owned: Arc<OwnedShard>,
    worker: JoinHandle<()>,
    /// Send time of the last renewal (or the campaign) that succeeded.
    proven_at: Instant,
}

pub struct Leases {
    ctx: Arc<Ctx>,
    registry: Registry,
    fleet: Fleet,
    held: HashMap<Shard, Held>,
    ttl: Duration,
    /// The part of the TTL a successful renewal proves, counted from its send time.
    valid_for: Duration,
    /// When the previous renewal round started: a round long after it means this
    /// process was stalled (frozen), not the bus, and rides nothing through.
    last_round: Option<Instant>,
}

type Watch = Option<kv::Watch>;

impl Leases {
    pub fn new(ctx: Arc<Ctx>, registry: Registry) -> Self {
        let ttl = ctx.config.lease_ttl();
        let fleet = Fleet::new(
            &ctx.ticker_id,
            ctx.config.shards,
            ttl,
            ttl / 3,
            Instant::now(),
        );
        Self {
            ctx,
            registry,
            fleet,
            held: HashMap::new(),
            ttl,
            valid_for: ttl - ttl / 5,
            last_round: None,
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken, ready: CancellationToken) {
        let heartbeat_stop = CancellationToken::new();
        let heartbeat = tokio::spawn(heartbeat(self.ctx.clone(), heartbeat_stop.clone()));
        let (mut leases, mut tickers) = (None, None);
        interruptible(&shutdown, async {
            leases = self.open_watch(true).await;
            tickers = self.open_watch(false).await;
            self.catch_up(&mut leases, true).await;
            self.catch_up(&mut tickers, false).await;
        })
        .await;
        ready.cancel();
        let mut every = tokio::time::interval(self.ttl / 3);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Between rounds: notice leases that fell silent without waiting for a round.
        let mut watchdog = tokio::time::interval(SILENCE_CHECK);
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // Every step is cut short by a shutdown: with NATS unreachable a step may
        // wait for a reconnection that never comes, and SIGTERM must still work.
        // And every bucket operation in a step is bounded by TTL/3, so no step
        // (a campaign, a release, a watch to reopen) can hold the renewals back
        // while a bucket elects: a holder silent for 0.9 TTL loses its shards.
        let mut connects = self.ctx.bus.connects.clone();
        connects.borrow_and_update();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                // Back on a server after losing ours (it froze or died): renew
                // now, not at the next round, before the others count us silent.
                Ok(()) = connects.changed() => {
                    tracing::info!("reconnected to NATS; renewing the leases now");
                    every.reset();
                    interruptible(&shutdown, self.round()).await;
                }
                _ = every.tick() => interruptible(&shutdown, async {
                    if leases.is_none() {
                        leases = self.open_watch(true).await;
                    }
                    if tickers.is_none() {
                        tickers = self.open_watch(false).await;
                    }
                    self.round().await;
                }).await,
                entry = next_entry(&mut leases) => {
                    let Some(entry) = entry else { leases = None; continue };
                    interruptible(&shutdown, async {
                        self.observe_lease(entry).await;
                        // Fold in whatever else already arrived before deciding.
                        while let Some(Some(entry)) = next_entry(&mut leases).now_or_never() {
                            self.observe_lease(entry).await;
                        }
                        self.act().await;
                    }).await;
                }
                entry = next_entry(&mut tickers) => {
                    let Some(entry) = entry else { tickers = None; continue };
                    self.observe_ticker(&entry);
                    interruptible(&shutdown, self.act()).await;
                }
                _ = watchdog.tick() => interruptible(&shutdown, self.act()).await,
            }
        }
        heartbeat_stop.cancel();
        // With NATS unreachable these would wait for a reconnection that may never
        // come: the leases then lapse by themselves, and the process still exits.
        if tokio::time::timeout(SHUTDOWN_STEP, heartbeat)
            .await
            .is_err()
        {
            tracing::warn!("heartbeat still pending at shutdown");
        }
        if tokio::time::timeout(SHUTDOWN_GRACE, self.release_all())
            .await
            .is_err()
        {
            tracing::warn!("leases not all released in time; they lapse within the TTL");
        }
    }

    async fn open_watch(&self, leases: bool) -> Watch {
        let bucket = if leases {
            &self.ctx.bus.leases
        } else {
            &self.ctx.bus.tickers
        };
        match tokio::time::timeout(self.ttl / 3, bucket.watch_with_history(">"))
            .await
            .unwrap_or_else(|_| Err(kv::WatchError::new(kv::WatchErrorKind::TimedOut)))
        {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, leases, "cannot watch; campaigning on the timer only");
                None
            }
        }
    }

    /// Reads the bucket's current values before the first decision, so a
    /// joining ticker does not campaign for shards that are held.
    async fn catch_up(&mut self, watch: &mut Watch, leases: bool) {
        let bucket = if leases {
            &self.ctx.bus.leases
        } else {
            &self.ctx.bus.tickers
        };
        let stored = match bucket.status().await {
            Ok(status) => status.values(),
            Err(_) => 0,
        };
        if stored == 0 {
            return;
        }
        let deadline = tokio::time::Instant::now() + CATCH_UP_WAIT;
        while let Ok(Some(entry)) = tokio::time::timeout_at(deadline, next_entry(watch)).await {
            let caught_up = entry.delta == 0;
            if leases {
                self.observe_lease(entry).await;
            } else {
                self.observe_ticker(&entry);
            }
            if caught_up {
                return;
            }
        }
    }

    fn observe_ticker(&mut self, entry: &kv::Entry) {
        if entry.operation == kv::Operation::Put {
            // A heartbeat read from history is as old as its write.
            let age_us = (now_us() - timestamp_us(entry)).max(0);
            let age = Duration::from_micros(u64::try_from(age_us).unwrap_or(0));
            let seen = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
            self.fleet.observe_heartbeat(&entry.key, seen);
        } else {
            self.fleet.observe_ticker_gone(&entry.key);
        }
    }

    /// Records a lease change; one that shows our own lease gone loses the shard.
    async fn observe_lease(&mut self, entry: kv::Entry) {
        let Ok(shard) = entry.key.parse::<Shard>() else {
            return;
        };
        let event = match entry.operation {
            kv::Operation::Put => {
                LeaseEvent::Put(LeaseValue::parse(&String::from_utf8_lossy(&entry.value)))
            }
            kv::Operation::Purge => LeaseEvent::Expired,
            kv::Operation::Delete => LeaseEvent::Deleted,
        };
        let ours = event == LeaseEvent::Put(self.held_by_me());
        if let Some(held) = self.held.get_mut(&shard)
            && entry.revision > held.revision
        {
            if ours {
                // A renewal of ours that landed after we stopped waiting for
                // its answer: the next renewal goes on from it.
                held.revision = entry.revision;
            } else {
                self.lose(shard, "lease changed under us").await;
            }
        }
        self.fleet
            .observe_lease(shard, event, entry.revision, Instant::now());
    }

    /// Campaigns and hands over as the fleet view says.
    async fn act(&mut self) {
        let held: HashSet<Shard> = self.held.keys().copied().collect();
        let plan = self.fleet.plan(&held, Instant::now());
        if !plan.release.is_empty() {
            tracing::info!(
                shards = plan.release.len(),
                target = self.fleet.target(Instant::now()),
                "handing shards over"
            );
            let releases: Vec<_> = plan
                .release
                .iter()
                .filter_map(|s| self.held.remove(s).map(|h| (*s, h)))
                .collect();
            self.release_many(releases, false).await;
        }
        if !plan.campaign.is_empty() {
            self.campaign_many(plan.campaign).await;
        }
        self.publish_gauges();
    }

    /// Renewals, then campaigns and hand-overs: once per TTL/3.
    async fn round(&mut self) {
        let failed: Vec<Shard> = self
            .held
            .iter()
            .filter(|(_, h)| h.worker.is_finished())
            .map(|(&s, _)| s)
            .collect();
        let failed: Vec<_> = failed
            .into_iter()
            .filter_map(|s| self.held.remove(&s).map(|h| (s, h)))
            .collect();
        // Their workers gave up: let the fleet (or us, later) try them afresh.
        self.release_many(failed, false).await;
        self.renew_all().await;
        self.act().await;
    }

    async fn renew_all(&mut self) {
        // Rounds come every TTL/3; a much longer pause was this process stalling.
        let steady = self
            .last_round
            .is_none_or(|last| Instant::now().duration_since(last) < self.ttl);
        let (sent_at, results) = loop {
            let mut connects = self.ctx.bus.connects.clone();
            connects.borrow_and_update();
            let sent_at = Instant::now();
            let renewals: Vec<_> = self
                .held
                .iter()
                .map(|(&shard, held)| {
                    renew(
                        self.ctx.bus.leases.clone(),
                        self.ctx.ticker_id.clone(),
                        shard,
                        held.revision,
                        self.ttl / 3,
                    )
                })
                .collect();
            let round = futures::stream::iter(renewals)
                .buffer_unordered(PARALLEL)
                .collect::<Vec<_>>();
            tokio::select! {
                results = round => break (sent_at, results),
                // Sent on a connection that has since been replaced (its server
                // froze): no answer will come, so send them again on the new one
                // now rather than wait out the timeout, while the others may be
                // counting our silence.
                Ok(()) = connects.changed() => {
                    tracing::info!("reconnected to NATS during a renewal round; renewing again");
                }
            }
        };
        self.last_round = Some(sent_at);
        let mut riding: Vec<Shard> = Vec::new();
        let mut ride_error = None;
        for (shard, result) in results {
            match result {
                Ok(revision) => {
                    metrics::counter!("bandsync_ticker_lease_renewals_total").increment(1);
                    self.fleet.observe_bucket(true, Instant::now());
                    if let Some(held) = self.held.get_mut(&shard) {
                        held.revision = revision;
                        held.proven_at = sent_at;
                        held.owned.extend(sent_at + self.valid_for);
                    }
                    let me = self.held_by_me();
                    self.fleet
                        .observe_lease(shard, LeaseEvent::Put(me), revision, Instant::now());
                }
                Err(e) => {
                    metrics::counter!("bandsync_ticker_lease_renewal_failures_total").increment(1);
                    let holder = if bandsync_nats::bus::not_written(&e) {
                        self.fleet.observe_bucket(false, Instant::now());
                        Holder::Unknown
                    } else {
                        self.holder(shard).await
                    };
                    match holder {
                        Holder::Us(revision) => {
                            tracing::warn!(shard, error = %e, revision, "lease renewal failed, but the lease is still ours");
                            if let Some(held) = self.held.get_mut(&shard) {
                                held.revision = revision;
                            }
                        }
                        Holder::Unknown
                            if steady
                                && self.held.get(&shard).is_some_and(|held| {
                                    sent_at.duration_since(held.proven_at) < RIDE_THROUGH
                                }) =>
                        {
                            // The bucket is electing, or the answer came from a node
                            // that has not heard of the election yet: nobody can take
                            // the lease meanwhile, so keep the shard and its ticks going.
                            if let Some(held) = self.held.get(&shard) {
                                held.owned.extend(held.proven_at + RIDE_THROUGH);
                            }
                            metrics::counter!("bandsync_ticker_lease_rides_total").increment(1);
                            riding.push(shard);
                            ride_error.get_or_insert_with(|| e.to_string());
                        }
                        Holder::Unknown => {
                            tracing::warn!(shard, error = %e, "lease renewal failed; the bucket has been unwritable too long");
                            self.lose(shard, "renewal failed").await;
                        }
                        Holder::Other(now) => {
                            tracing::warn!(shard, error = %e, now, "lease renewal failed");
                            self.lose(shard, "renewal failed").await;
                        }
                    }
                }
            }
        }
        if let Some(error) = ride_error {
            // One line per round, not one per shard: a ticker holds hundreds.
            tracing::warn!(
                shards = riding.len(),
                error,
                "leases bucket unavailable; keeping the shards while it elects a leader"
            );
        }
    }

    /// A lease value naming this ticker as the holder.
    fn held_by_me(&self) -> LeaseValue {
        LeaseValue::Held {
            ticker: self.ctx.ticker_id.clone(),
        }
    }

    /// After a refused renewal: who holds the shard's key now. A renewal whose
    /// answer was lost (a timeout under load) may have landed anyway, leaving our
    /// name at a newer revision that the next renewal must use; giving the shard
    /// up for it would cost a failover for nothing. Safe: validity is not
    /// extended here (we do not know when it landed), so the workers stay fenced
    /// past the last proven renewal until the next one succeeds, and no other
    /// ticker may take a key that names us before it expires.
    ///
    /// A node waking from a freeze still believes for a moment that it leads the
    /// bucket, and answers from its old state: a refusal ("wrong last sequence")
    /// and a read older than our own proven revision. Revisions only grow, so
    /// such a read proves nothing either way.
    async fn holder(&self, shard: Shard) -> Holder {
        let Some(held) = self.held.get(&shard) else {
            return Holder::Other("not held".into());
        };
        let read = self.ctx.bus.leases.entry(Subjects::shard_key(shard));
        let entry = match tokio::time::timeout(self.ttl / 3, read).await {
            Ok(Ok(Some(entry))) => entry,
            // Absent: expired by the bucket's max age, or purged.
            Ok(Ok(None)) => return Holder::Other("no entry".into()),
            Ok(Err(_)) | Err(_) => return Holder::Unknown,
        };
        if entry.revision < held.revision {
            return Holder::Unknown;
        }
        let ours = entry.operation == kv::Operation::Put
            && std::str::from_utf8(&entry.value)
                .is_ok_and(|text| LeaseValue::parse(text) == self.held_by_me());
        if ours {
            Holder::Us(entry.revision)
        } else {
            Holder::Other(format!(
                "{:?} {:?} at revision {} (ours was {})",
                entry.operation,
                String::from_utf8_lossy(&entry.value),
                entry.revision,
                held.revision
            ))
        }
    }

    async fn campaign_many(&mut self, vacancies: Vec<Vacancy>) {
        let leases = self.ctx.bus.leases.clone();
        let value: bytes::Bytes = self.held_by_me().encode().into();
        let limit = self.ttl / 3;
        let attempts = vacancies.into_iter().map(|v| {
            let (leases, value) = (leases.clone(), value.clone());
            async move {
                let sent_at = Instant::now();
                // Unanswered: counted lost. If it landed, the key names us with
                // nobody renewing it, and it lapses like any silent holder's.
                let won = tokio::time::timeout(limit, campaign(&leases, &v, value))
                    .await
                    .unwrap_or(None);
                (v, sent_at, won)
            }
        });
        let results = futures::stream::iter(attempts)
            .buffer_unordered(PARALLEL)
            .collect::<Vec<_>>()
            .await;
        for (vacancy, sent_at, result) in results {
            match result {
                Some(revision) => self.won(vacancy, revision, sent_at),
                None => metrics::counter!("bandsync_ticker_campaigns_lost_total").increment(1),
            }
        }
    }

    fn won(&mut self, vacancy: Vacancy, revision: u64, sent_at: Instant) {
        let shard = vacancy.shard;
        let first_tick = match vacancy.how {
            Vacated::Released { last_tick } => last_tick,
            // Whoever held it before stopped publishing before its lease ran out,
            // and that was before now: every tick period from now on is ours.
            Vacated::Expired | Vacated::Absent => {
                let period = self.tick_period_us();
                tick_seq(now_us(), period, tick_phase(shard, period))
            }
        };
        let owned = Arc::new(OwnedShard::new(
            shard,
            revision,
            vacancy.how,
            sent_at + self.valid_for,
            first_tick,
        ));
        self.registry.insert(owned.clone());
        let worker = tokio::spawn(run_worker(self.ctx.clone(), owned.clone()));
        self.held.insert(
            shard,
            Held {
                revision,
                owned,
                worker,
                proven_at: sent_at,
            },
        );
        let me = self.held_by_me();
        self.fleet
            .observe_lease(shard, LeaseEvent::Put(me), revision, Instant::now());
        metrics::counter!("bandsync_ticker_leases_acquired_total").increment(1);
        let after = match vacancy.how {
            Vacated::Expired => {
                metrics::counter!("bandsync_ticker_failovers_total").increment(1);
                "expiry"
            }
            Vacated::Released { .. } => {
                metrics::counter!("bandsync_ticker_handovers_total").increment(1);
                "hand-over"
            }
            Vacated::Absent => "vacancy",
        };
        tracing::info!(shard, epoch = revision, after, "lease acquired");
    }

    fn tick_period_us(&self) -> Micros {
        Micros::try_from(self.ctx.config.tick_period().as_micros()).unwrap_or(100_000)
    }

    async fn lose(&mut self, shard: Shard, why: &str) {
        if let Some(held) = self.held.remove(&shard) {
            held.owned.stop.cancel();
            self.registry.remove(shard);
            metrics::counter!("bandsync_ticker_leases_lost_total").increment(1);
            tracing::warn!(shard, epoch = held.owned.epoch, why, "lease lost");
        }
    }

    /// Hands shards over: stop each, wait until nothing is published for it and
    /// its worker saved its cursor, then mark the lease released.
    async fn release_many(&mut self, shards: Vec<(Shard, Held)>, leaving: bool) {
        if shards.is_empty() {
            return;
        }
        for (shard, held) in &shards {
            held.owned.stop.cancel();
            self.registry.remove(*shard);
        }
        let leases = self.ctx.bus.leases.clone();
        let me = self.ctx.ticker_id.clone();
        let limit = self.ttl / 3;
        let releases = shards.into_iter().map(|(shard, held)| {
            let (leases, me) = (leases.clone(), me.clone());
            async move {
                let _quiet = held.owned.gate.write().await;
                let _ = tokio::time::timeout(WORKER_STOP_WAIT, held.worker).await;
                let value = LeaseValue::Released {
                    ticker: me,
                    last_tick: held.owned.last_tick(),
                    leaving,
                };
                let update = leases.update(
                    Subjects::shard_key(shard),
                    value.encode().into(),
                    held.revision,
                );
                (shard, value, within(limit, update).await)
            }
        });
        let results = futures::stream::iter(releases)
            .buffer_unordered(PARALLEL)
            .collect::<Vec<_>>()
            .await;
        for (shard, value, result) in results {
            match result {
                Ok(revision) => {
                    self.fleet.observe_lease(
                        shard,
                        LeaseEvent::Put(value),
                        revision,
                        Instant::now(),
                    );
                    metrics::counter!("bandsync_ticker_leases_released_total").increment(1);
                    tracing::info!(shard, "lease released");
                }
                // It lapses by itself within the TTL.
                Err(e) => tracing::warn!(shard, error = %e, "lease release failed"),
            }
        }
    }

    async fn release_all(&mut self) {
        if self.ctx.bus.client.connection_state() != async_nats::connection::State::Connected {
            tracing::warn!(
                shards = self.held.len(),
                "NATS unreachable: leases lapse within the TTL"
            );
            return;
        }
        // Leave the live set first, so the others' targets already count our shards.
        if let Err(e) = self.ctx.bus.tickers.delete(&self.ctx.ticker_id).await {
            tracing::warn!(error = %e, "cannot withdraw the heartbeat");
        }
        let all: Vec<_> = self.held.drain().collect();
        let count = all.len();
        self.release_many(all, true).await;
        self.publish_gauges();
        tracing::info!(shards = count, "all leases released");
    }

    fn publish_gauges(&self) {
        let now = Instant::now();
        metrics::gauge!("bandsync_ticker_shards_owned").set(self.held.len() as f64);
        metrics::gauge!("bandsync_ticker_shards_target").set(self.fleet.target(now) as f64);
        metrics::gauge!("bandsync_ticker_live_tickers").set(self.fleet.live(now).len() as f64);
    }
}

/// Runs `work`; if a shutdown comes first, gives it `SHUTDOWN_STEP` more and then
/// drops it half done. A step under way (renewals, a hand-over) normally ends in
/// milliseconds and leaves revisions the releases can use; one waiting for an
/// unreachable NATS is abandoned, and leases it leaves behind lapse within the TTL.
async fn interruptible(shutdown: &CancellationToken, work: impl std::future::Future<Output = ()>) {
    tokio::pin!(work);
    tokio::select! {
        biased;
        _ = &mut work => return,
        _ = shutdown.cancelled() => {}
    }
    let _ = tokio::time::timeout(SHUTDOWN_STEP, work).await;
}

/// Announces this ticker in the tickers bucket every TTL/3 (the others count
/// live tickers from these to size their share).
async fn heartbeat(ctx: Arc<Ctx>, stop: CancellationToken) {
    let mut every = tokio::time::interval(ctx.config.lease_ttl() / 3);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let put = ctx
            .bus
            .tickers
            .put(&ctx.ticker_id, now_us().to_string().into());
        if let Err(e) = put.await {
            tracing::warn!(error = %e, "ticker heartbeat failed");
        }
    }
}

/// One campaign: the revision won, or `None` if someone else holds the shard.
async fn campaign(leases: &kv::Store, vacancy: &Vacancy, value: bytes::Bytes) -> Option<u64> {
    let key = Subjects::shard_key(vacancy.shard);
    // A known revision (a hand-over or an expiry marker) is one round trip;
    // `create` also copes with a key that has no message left at all.
    if let Some(revision) = vacancy.revision
        && let Ok(won) = leases.update(&key, value.clone(), revision).await
    {
        return Some(won);
    }
    // Someone else took it first, or the hand-over value itself has expired
    // since: `create` tells the two apart.
    match leases.create(&key, value).await {
        Ok(won) => Some(won),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => None,
        Err(e) => {
            tracing::debug!(shard = vacancy.shard, error = %e, "campaign failed");
            None
        }
    }
}

async fn renew(
    leases: kv::Store,
    id: String,
    shard: Shard,
    revision: u64,
    renew_timeout: Duration,
) -> (Shard, Result<u64, kv::UpdateError>) {
    let started = Instant::now();
    let value = LeaseValue::Held { ticker: id }.encode();
    // A renewal is due every TTL/3: one without an answer by then counts as
    // not written (the bucket may be electing), so the holder knows in time to
    // ride through before its proven time runs out.
    let update = leases.update(Subjects::shard_key(shard), value.into(), revision);
    let result = within(renew_timeout, update).await;
    metrics::histogram!("bandsync_ticker_lease_renew_seconds")
        .record(started.elapsed().as_secs_f64());
    (shard, result)
}

/// A lease update given up after `limit`, as a timed-out one (not written).
async fn within(
    limit: Duration,
    update: impl std::future::Future<Output = Result<u64, kv::UpdateError>>,
) -> Result<u64, kv::UpdateError> {
    tokio::time::timeout(limit, update)
        .await
        .unwrap_or_else(|_| Err(kv::UpdateError::new(kv::UpdateErrorKind::TimedOut)))
}

async fn run_worker(ctx: Arc<Ctx>, owned: Arc<OwnedShard>) {
    let shard = owned.shard;
    if let Err(e) = Worker::run(ctx, owned).await {
        // The lease manager sees the worker finished and hands the shard over.
        tracing::error!(shard, error = %chain(&e), "shard worker failed; giving the shard up");
    }
}

async fn next_entry(watch: &mut Watch) -> Option<kv::Entry> {
    match watch {
        Some(w) => match w.next().await {
            Some(Ok(entry)) => Some(entry),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "watch error");
                None
            }
            None => None,
        },
        None => std::future::pending().await,
    }
}

fn timestamp_us(entry: &kv::Entry) -> Micros {
    i64::try_from(entry.created.unix_timestamp_nanos() / 1000).unwrap_or(0)
}
