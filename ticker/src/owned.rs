//! The shards this ticker owns right now, shared by the lease manager (which
//! adds and removes them), each shard's worker and the tick loop.

use bandsync_nats::{Micros, SessionId, Shard, Timeline, now_us};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio_util::sync::CancellationToken;

/// One owned shard.
pub struct OwnedShard {
    pub shard: Shard,
    /// Revision of the lease when it was won: stamped on every tick and event.
    pub epoch: u64,
    /// Until when the lease is provably ours (server µs); past it nothing is published.
    valid_until: AtomicI64,
    /// Timelines of the shard's sessions that are playing (or about to).
    pub playing: Mutex<HashMap<SessionId, Timeline>>,
    /// Cancelled when the lease is lost or released.
    pub stop: CancellationToken,
}

impl OwnedShard {
    pub fn new(shard: Shard, epoch: u64, valid_until: Micros) -> Self {
        Self {
            shard,
            epoch,
            valid_until: AtomicI64::new(valid_until),
            playing: Mutex::new(HashMap::new()),
            stop: CancellationToken::new(),
        }
    }

    pub fn extend(&self, until: Micros) {
        self.valid_until.fetch_max(until, Ordering::AcqRel);
    }

    /// Fencing: true only while the lease is proven and not given up.
    pub fn is_valid(&self) -> bool {
        !self.stop.is_cancelled() && now_us() < self.valid_until.load(Ordering::Acquire)
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
