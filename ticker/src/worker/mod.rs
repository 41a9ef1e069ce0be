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
//! `publish` (events and rejections).

mod apply;
mod cursor;
mod ending;
mod housekeeping;
mod load;
mod publish;

use crate::Ctx;
use crate::fleet::Vacated;
use crate::owned::OwnedShard;
use apply::{ApplyError, Next, next_step, stage};
use async_nats::jetstream::consumer::StreamError;
use async_nats::jetstream::consumer::push::{OrderedConfig, OrderedError};
use async_nats::jetstream::context::GetStreamError;
use async_nats::jetstream::stream::ConsumerError;
use bandsync_nats::{SessionId, SessionState, Shard, now_us};
use cursor::Cursor;
use ending::Endings;
use futures::StreamExt;
use load::LoadError;
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

/// Why a shard's worker stopped before its shard did (the lease manager then
/// gives the shard up, and its next owner starts from the saved cursor).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("loading shard {shard}")]
    Load {
        shard: Shard,
        #[source]
        source: LoadError,
    },
    #[error("consuming the commands of shard {shard}")]
    Consume {
        shard: Shard,
        #[source]
        source: ConsumeError,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error("opening the command stream {stream}")]
    OpenStream {
        stream: String,
        #[source]
        source: GetStreamError,
    },
    #[error("creating the command consumer")]
    CreateConsumer(#[source] ConsumerError),
    #[error("subscribing to the command consumer")]
    Subscribe(#[source] StreamError),
    #[error("receiving a command")]
    Receive(#[source] OrderedError),
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
        worker
            .load()
            .await
            .map_err(|source| WorkerError::Load { shard, source })?;
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
        let stream =
            bus.js
                .get_stream(&stream_name)
                .await
                .map_err(|source| ConsumeError::OpenStream {
                    stream: stream_name,
                    source,
                })?;
        self.cursor
            .consuming_from(stream.cached_info().state.last_sequence);
        let config = OrderedConfig {
            deliver_subject: bus.client.new_inbox(),
            filter_subject: bus.subjects.cmd_shard(self.owned.shard),
            deliver_policy: self.cursor.deliver_policy(),
            ..Default::default()
        };
        let consumer = stream
            .create_consumer(config)
            .await
            .map_err(ConsumeError::CreateConsumer)?;
        let name = consumer.cached_info().name.clone();
        let mut messages = consumer.messages().await.map_err(ConsumeError::Subscribe)?;
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        let mut cursor_save = tokio::time::interval(CURSOR_SAVE);
        let stop = self.owned.stop.clone();
        let result = loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break Ok(()),
                msg = messages.next() => match msg {
                    Some(Ok(msg)) => {
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
                    Some(Err(e)) => break Err(ConsumeError::Receive(e)),
                    None => break Err(ConsumeError::Ended),
                },
                _ = housekeeping.tick() => self.housekeep().await,
                _ = cursor_save.tick() => self.save_cursor().await,
            }
        };
        drop(messages);
        // Ordered consumers linger 30 s after their subscriber goes; with many
        // hand-overs that would pile up against the server's consumer limit.
        if let Err(e) = stream.delete_consumer(&name).await {
            tracing::debug!(shard = self.owned.shard, error = %e, "cannot delete the command consumer");
        }
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
