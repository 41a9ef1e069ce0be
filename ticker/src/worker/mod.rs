//! One owned shard: load its sessions from KV, consume its commands in stream
//! order from the shard's cursor, apply them with the pure state machine, write
//! the state back with compare-and-set, then publish the event.
//!
//! Exactly once: a session's state records the stream sequence of the last
//! command applied to it, in the same CAS write as the change, so a replay
//! (after a failover, from a cursor a little behind) skips what was applied.
//! Events are published with `Nats-Msg-Id = <session>-<seq>`; a new owner
//! re-publishes each session's latest event and the stream drops duplicates.
//!
//! Fencing: a command is applied only while the lease is proven; while it is not
//! (a renewal is late) the worker waits, and once the shard is stopped it leaves
//! the command unhandled, so its cursor never passes a command it did not apply.
//! An owner that took a shard whose lease *expired* first rewrites every session
//! of it once: any write still in flight from the frozen or cut-off previous owner
//! then fails its compare-and-set instead of landing after the takeover.
//!
//! Parts: `load` (cursor, sessions, fencing writes, re-publishing), `apply` (one
//! command: state machine, compare-and-set, event), `housekeeping` (time-driven
//! rules), `ending` (deleting an ended session and releasing its code, retried
//! until done), `cursor` (where consuming resumes; a corrupt one is rebuilt),
//! `publish` (events and rejections), `feed` (the shard's commands in order, on
//! a consumer replaced once it has been quiet for two heartbeats, 2 s).

mod apply;
mod cursor;
mod ending;
mod feed;
mod housekeeping;
mod load;
mod publish;

use crate::Ctx;
use crate::fleet::Vacated;
use crate::owned::OwnedShard;
use apply::{ApplyError, Next, next_step, stage};
use bandsync_nats::{SessionId, SessionState, Shard, now_us};
use cursor::Cursor;
use ending::Endings;
use feed::{Feed, FeedError};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How often time-driven rules (leader grace, idle expiry, dead gateways) run.
const HOUSEKEEPING: Duration = Duration::from_millis(250);
/// How often the shard's command cursor is saved; replay after a failover is at most this much.
const CURSOR_SAVE: Duration = Duration::from_millis(500);
/// Session states read or rewritten at once while a shard loads.
const LOAD_PARALLEL: usize = 16;

struct Session {
    state: SessionState,
    revision: u64,
}

/// Backoff while the bus cannot serve a shard's worker yet: `RETRY_FIRST`,
/// doubling up to `RETRY_MAX`, jittered.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(2);

struct Retry(Duration);

impl Default for Retry {
    fn default() -> Self {
        Self(RETRY_FIRST)
    }
}

impl Retry {
    /// Waits before the next attempt; false if the shard was stopped meanwhile.
    async fn wait(&mut self, stop: &tokio_util::sync::CancellationToken) -> bool {
        let delay = bandsync_nats::bus::jittered(self.0);
        self.0 = (self.0 * 2).min(RETRY_MAX);
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}

/// Why a shard's worker stopped before its shard did (the lease manager then
/// gives the shard up, and its next owner starts from the saved cursor).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("consuming the commands of shard {shard}")]
    Consume {
        shard: Shard,
        #[source]
        source: ConsumeError,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error("the command consumer ended")]
    Ended,
    #[error("applying command {seq}")]
    Apply {
        seq: u64,
        #[source]
        source: ApplyError,
    },
}

/// An error with its sources, `outer: inner: root`, for one log field. A
/// source its error already printed (async-nats errors print theirs) is not
/// repeated.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

pub struct Worker {
    ctx: Arc<Ctx>,
    owned: Arc<OwnedShard>,
    sessions: HashMap<SessionId, Session>,
    /// Ended sessions whose code or state is still to delete.
    endings: Endings,
    cursor: Cursor,
}

impl Drop for Worker {
    /// Pending deletions are the next owner's now (it finds the ended states).
    fn drop(&mut self) {
        metrics::gauge!("bandsync_ticker_sessions_ending").decrement(self.endings.len() as f64);
    }
}

impl Worker {
    pub async fn run(ctx: Arc<Ctx>, owned: Arc<OwnedShard>) -> Result<(), WorkerError> {
        let shard = owned.shard;
        let mut worker = Worker {
            ctx,
            owned,
            sessions: HashMap::new(),
            endings: Endings::default(),
            cursor: Cursor::default(),
        };
        // A shard whose sessions cannot be read yet (their bucket is electing a
        // leader) is kept and retried: given up, it would move to a ticker that
        // meets the same election, and its bands would wait for both.
        let mut retry = Retry::default();
        while let Err(e) = worker.load().await {
            tracing::warn!(shard, error = %chain(&e), "cannot load the shard yet; retrying");
            if !retry.wait(&worker.owned.stop).await {
                return Ok(());
            }
        }
        worker.owned.mark_loaded();
        worker.ctx.ticks.catch_up(&worker.owned).await;
        if worker.owned.vacated == Vacated::Expired {
            worker.fence().await;
        }
        worker.republish_latest().await;
        let result = worker.consume().await;
        worker.save_cursor().await;
        result.map_err(|source| WorkerError::Consume { shard, source })
    }

    async fn consume(&mut self) -> Result<(), ConsumeError> {
        let bus = &self.ctx.bus;
        let stream_name = bus.subjects.cmd_stream();
        let mut retry = Retry::default();
        let stream = loop {
            match bus.js.get_stream(&stream_name).await {
                Ok(stream) => break stream,
                Err(e) => {
                    tracing::warn!(shard = self.owned.shard, stream = stream_name, error = %e, "cannot open the command stream yet; retrying");
                    if !retry.wait(&self.owned.stop).await {
                        return Ok(());
                    }
                }
            }
        };
        self.cursor
            .consuming_from(stream.cached_info().state.last_sequence);
        let mut feed = Feed::new(
            stream,
            bus.client.clone(),
            bus.subjects.cmd_shard(self.owned.shard),
            self.cursor.deliver_policy(),
        );
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        let mut cursor_save = tokio::time::interval(CURSOR_SAVE);
        let stop = self.owned.stop.clone();
        let result = loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break Ok(()),
                msg = feed.next() => match msg {
                    Ok(msg) => {
                        let (seq, stored_us) = msg.info().map_or((0, None), |i| {
                            (i.stream_sequence, i64::try_from(i.published.unix_timestamp_nanos() / 1_000).ok())
                        });
                        if let Some(stored) = stored_us {
                            stage("received", (now_us() - stored).max(0) as f64 / 1e6);
                        }
                        match next_step(self.handle(seq, stored_us, &msg.payload).await) {
                            Next::Continue => self.cursor.advance(seq),
                            // Left for the next owner, which replays from the cursor.
                            Next::Stop => break Ok(()),
                            Next::Fail(source) => break Err(ConsumeError::Apply { seq, source }),
                        }
                    }
                    Err(FeedError::Ended) => break Err(ConsumeError::Ended),
                    // The stream is electing a leader, or our consumer's node died
                    // or froze: keep the shard (and its ticks) while the feed
                    // makes another consumer.
                    Err(e @ (FeedError::Quiet | FeedError::Gap { .. })) => {
                        metrics::counter!("bandsync_ticker_command_consumer_resets_total").increment(1);
                        tracing::warn!(shard = self.owned.shard, error = %e, "command consumer lost");
                    }
                    // Retried every 250 ms while the stream elects: not worth a line each.
                    Err(e) => tracing::debug!(shard = self.owned.shard, error = %chain(&e), "no command consumer yet"),
                },
                _ = housekeeping.tick() => self.housekeep().await,
                _ = cursor_save.tick() => self.save_cursor().await,
            }
        };
        feed.close().await;
        result
    }

    /// Lets the tick loop see whether the session plays (or is about to).
    fn track_timeline(&self, state: &SessionState) {
        let active = state.timeline.is_active(now_us());
        self.owned
            .set_timeline(&state.id, active.then_some(&state.timeline));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("loading shard 3")]
        Load(#[source] Middle),
    }

    /// Prints its source itself, as async-nats errors do.
    #[derive(Debug, thiserror::Error)]
    #[error("reading: {0}")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn an_error_is_logged_with_each_source_once() {
        let e = Outer::Load(Middle(std::io::Error::other("no stream found")));
        assert_eq!(chain(&e), "loading shard 3: reading: no stream found");
    }
}
