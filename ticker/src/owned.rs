//! The shards this ticker owns right now, shared by the lease manager (which
//! adds and removes them), each shard's worker and the tick loop.
//!
//! Fencing lives here: `is_valid` is true only while the lease is provably ours
//! (measured on the monotonic clock from the send time of the last successful
//! renewal, so a wall-clock step or a frozen process cannot stretch it), and every
//! publisher holds `gate` while it checks and publishes, so once the lease
//! manager has cancelled `stop` and taken the gate, nothing more goes out.

use crate::fleet::Vacated;
use bandsync_nats::{SessionId, Shard, Timeline};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often a fenced publisher looks again whether a late renewal restored the lease.
const FENCED_POLL: Duration = Duration::from_millis(5);

/// One owned shard.
pub struct OwnedShard {
    pub shard: Shard,
    /// Revision of the lease when it was won: stamped on every tick and event.
    pub epoch: u64,
    /// How the previous owner left the shard.
    pub vacated: Vacated,
    /// Until when the lease is provably ours, in nanoseconds after `clock_base()`.
    valid_until: AtomicU64,
    /// Set once the worker has read the shard's sessions: the tick loop waits for it.
    loaded: AtomicBool,
    /// Highest tick sequence published for this shard, by us or (when it was
    /// handed over) by the previous owner: a sequence is published at most once.
    last_tick: AtomicU64,
    /// Timelines of the shard's sessions that are playing (or about to).
    pub playing: Mutex<HashMap<SessionId, Timeline>>,
    /// Publishers hold it shared; a release takes it exclusively after `stop`.
    pub gate: tokio::sync::RwLock<()>,
    /// Cancelled when the lease is lost or released.
    pub stop: CancellationToken,
}

fn clock_base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn to_nanos(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(clock_base()).as_nanos()).unwrap_or(u64::MAX)
}

impl OwnedShard {
    /// `valid_until`: the campaign's send time plus the proven part of the TTL;
    /// `first_tick`: ticks up to this sequence are someone else's.
    pub fn new(
        shard: Shard,
        epoch: u64,
        vacated: Vacated,
        valid_until: Instant,
        first_tick: u64,
    ) -> Self {
        Self {
            shard,
            epoch,
            vacated,
            valid_until: AtomicU64::new(to_nanos(valid_until)),
            loaded: AtomicBool::new(false),
            last_tick: AtomicU64::new(first_tick),
            playing: Mutex::new(HashMap::new()),
            gate: tokio::sync::RwLock::new(()),
            stop: CancellationToken::new(),
        }
    }

    /// A renewal sent at some instant succeeded: the lease is ours until `until`.
    pub fn extend(&self, until: Instant) {
        self.valid_until
            .fetch_max(to_nanos(until), Ordering::AcqRel);
    }

    /// Fencing: true only while the lease is proven and not given up.
    pub fn is_valid(&self) -> bool {
        !self.stop.is_cancelled() && self.lease_proven()
    }

    /// The lease is still ours by the clock (also while a release winds down).
    pub fn lease_proven(&self) -> bool {
        to_nanos(Instant::now()) < self.valid_until.load(Ordering::Acquire)
    }

    /// Waits while a late renewal may still restore the lease. True once valid;
    /// false once the shard is stopped (the lease was lost or released).
    pub async fn wait_valid(&self) -> bool {
        loop {
            if self.stop.is_cancelled() {
                return false;
            }
            if self.lease_proven() {
                return true;
            }
            tokio::select! {
                _ = self.stop.cancelled() => return false,
                _ = tokio::time::sleep(FENCED_POLL) => {}
            }
        }
    }

    pub fn mark_loaded(&self) {
        self.loaded.store(true, Ordering::Release);
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Takes tick `seq` for publishing; false if it (or a later one) was taken.
    pub fn claim_tick(&self, seq: u64) -> bool {
        self.last_tick.fetch_max(seq, Ordering::AcqRel) < seq
    }

    pub fn last_tick(&self) -> u64 {
        self.last_tick.load(Ordering::Acquire)
    }

    pub fn set_timeline(&self, session: &SessionId, timeline: Option<&Timeline>) {
        let mut playing = self.playing.lock().unwrap_or_else(|e| e.into_inner());
        match timeline {
            Some(tl) => {
                playing.insert(session.clone(), tl.clone());
            }
            None => {
                playing.remove(session);
            }
        }
    }

    pub fn playing_count(&self) -> usize {
        self.playing.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// All owned shards by number.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<RwLock<HashMap<Shard, Arc<OwnedShard>>>>,
}

impl Registry {
    pub fn insert(&self, owned: Arc<OwnedShard>) {
        self.write().insert(owned.shard, owned);
    }

    pub fn remove(&self, shard: Shard) -> Option<Arc<OwnedShard>> {
        self.write().remove(&shard)
    }

    pub fn snapshot(&self) -> Vec<Arc<OwnedShard>> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Shard, Arc<OwnedShard>>> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(valid_for: Duration) -> OwnedShard {
        OwnedShard::new(3, 7, Vacated::Absent, Instant::now() + valid_for, 100)
    }

    #[test]
    fn a_tick_sequence_is_claimed_once_and_never_below_the_floor() {
        let owned = shard(Duration::from_secs(1));
        assert!(!owned.claim_tick(100), "the previous owner's last tick");
        assert!(owned.claim_tick(101));
        assert!(!owned.claim_tick(101), "the same period twice");
        assert!(!owned.claim_tick(99));
        assert!(owned.claim_tick(105));
        assert_eq!(owned.last_tick(), 105);
    }

    #[test]
    fn validity_ends_with_the_proven_time_or_the_stop() {
        let owned = shard(Duration::from_secs(60));
        assert!(owned.is_valid());
        owned.stop.cancel();
        assert!(!owned.is_valid());
        assert!(owned.lease_proven(), "a release still holds the lease");
        let expired = shard(Duration::ZERO);
        assert!(!expired.is_valid());
        expired.extend(Instant::now() + Duration::from_secs(60));
        assert!(expired.is_valid(), "a late renewal restores it");
    }

    #[tokio::test]
    async fn wait_valid_returns_false_once_stopped() {
        let owned = Arc::new(shard(Duration::ZERO));
        let stopper = owned.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            stopper.stop.cancel();
        });
        assert!(!owned.wait_valid().await);
        let renewed = Arc::new(shard(Duration::ZERO));
        renewed.extend(Instant::now() + Duration::from_secs(60));
        assert!(renewed.wait_valid().await);
    }
}
