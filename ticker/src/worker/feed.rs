//! A shard's commands, in stream order and without gaps, on a push consumer of
//! the feed's own that is replaced quickly when it goes quiet.
//!
//! Why not async-nats's ordered consumer: it notices a lost consumer only after
//! 10 s without a heartbeat, then retries its creation at 0.5, 1, 1.5, 2 and
//! then 10 s intervals. When the NATS node leading the command stream dies, the
//! (single-replica) consumer dies with it and Raft elects a new leader in 5–7 s;
//! with those timings the band's commands waited 15–17 s instead. Here the
//! consumer heartbeats every `HEARTBEAT` (a miss shows after two), and a new one
//! is tried (backing off from `RETRY_FIRST` to `RETRY_MAX`) from the next command not yet delivered, so commands
//! flow again within a retry of the new leader.
//!
//! Ordered: each message must carry the consumer sequence after the previous
//! one; a gap (a message the server dropped) also replaces the consumer, from
//! the next stream sequence wanted. Cancel-safe: `next` keeps its retry time in
//! the feed, so a caller polling it in a `select!` loop loses nothing.

use async_nats::jetstream::consumer::push::{Config, Messages};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy};
use async_nats::jetstream::{self, stream::Stream};
use bandsync_nats::bus::jittered;
use futures::StreamExt;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// The consumer's idle heartbeat; two missed ones replace it.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Between attempts to create a consumer (the stream may be electing a
/// leader): the first wait, doubling up to the last, each jittered.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// Consumer creations in flight at once in this process. A ticker holds
/// hundreds of shards whose consumers are all lost together; each creation is a
/// request to the cluster's metadata leader, which must not be flooded while it
/// is itself being elected. Once the stream is back they go through in turn, a
/// few milliseconds each.
static CREATING: Semaphore = Semaphore::const_new(8);
/// How long one creation may take before it is counted failed and its permit
/// freed (a request sent while the metadata leader is gone may get no answer).
const CREATE_TIMEOUT: Duration = Duration::from_secs(2);
/// A consumer whose subscriber is gone (our process died) is removed after this.
const INACTIVE: Duration = Duration::from_secs(10);

pub struct Feed {
    stream: Stream,
    client: async_nats::Client,
    filter: String,
    /// Where a new consumer starts: the first policy until a message arrives,
    /// then the sequence after the last one delivered.
    from: DeliverPolicy,
    live: Option<Live>,
    /// When creating a consumer may be tried again after a failure.
    retry_at: Option<Instant>,
    /// The wait after the next failure to create one.
    retry_in: Duration,
}

struct Live {
    name: String,
    messages: Messages,
    /// Consumer sequence of the last message delivered.
    delivered: u64,
}

/// What went wrong on the way to the next command: logged and retried, except
/// `Ended`.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("the command consumer went quiet; replacing it")]
    Quiet,
    #[error("the command consumer skipped from {delivered} to {got}; replacing it")]
    Gap { delivered: u64, got: u64 },
    #[error("creating the command consumer")]
    Create(#[source] async_nats::jetstream::stream::ConsumerError),
    #[error("creating the command consumer: no answer in time")]
    CreateTimedOut,
    #[error("subscribing to the command consumer")]
    Subscribe(#[source] async_nats::jetstream::consumer::StreamError),
    #[error("the connection to NATS is closed")]
    Ended,
}

impl Feed {
    pub fn new(
        stream: Stream,
        client: async_nats::Client,
        filter: String,
        from: DeliverPolicy,
    ) -> Self {
        Self {
            stream,
            client,
            filter,
            from,
            live: None,
            retry_at: None,
            retry_in: RETRY_FIRST,
        }
    }

    /// The next command. An error is one consumer lost (the next call makes
    /// another); the caller logs it and calls again.
    pub async fn next(&mut self) -> Result<jetstream::Message, FeedError> {
        if self.live.is_none() {
            if let Some(at) = self.retry_at {
                tokio::time::sleep_until(at).await;
            }
            let _permit = CREATING.acquire().await.expect("never closed");
            self.retry_at = Some(Instant::now() + jittered(self.retry_in));
            self.retry_in = (self.retry_in * 2).min(RETRY_MAX);
            let created = tokio::time::timeout(CREATE_TIMEOUT, self.create())
                .await
                .unwrap_or(Err(FeedError::CreateTimedOut))?;
            self.live = Some(created);
            self.retry_at = None;
            self.retry_in = RETRY_FIRST;
        }
        let live = self.live.as_mut().expect("created above");
        let msg = match live.messages.next().await {
            Some(Ok(msg)) => msg,
            Some(Err(_)) => return Err(self.replace(FeedError::Quiet)),
            None => return Err(FeedError::Ended),
        };
        let Ok(info) = msg.info() else {
            return Err(self.replace(FeedError::Quiet));
        };
        if info.consumer_sequence != live.delivered + 1 {
            let gap = FeedError::Gap {
                delivered: live.delivered,
                got: info.consumer_sequence,
            };
            return Err(self.replace(gap));
        }
        live.delivered = info.consumer_sequence;
        self.from = DeliverPolicy::ByStartSequence {
            start_sequence: info.stream_sequence + 1,
        };
        Ok(msg)
    }

    async fn create(&self) -> Result<Live, FeedError> {
        let config = Config {
            deliver_subject: self.client.new_inbox(),
            filter_subject: self.filter.clone(),
            deliver_policy: self.from,
            ack_policy: AckPolicy::None,
            idle_heartbeat: HEARTBEAT,
            flow_control: true,
            inactive_threshold: INACTIVE,
            memory_storage: true,
            num_replicas: 1,
            ..Default::default()
        };
        let consumer = self
            .stream
            .create_consumer(config)
            .await
            .map_err(FeedError::Create)?;
        let name = consumer.cached_info().name.clone();
        let messages = consumer.messages().await.map_err(FeedError::Subscribe)?;
        Ok(Live {
            name,
            messages,
            delivered: 0,
        })
    }

    /// Drops the current consumer (deleting it in the background, best effort)
    /// so the next call creates another from `from`.
    fn replace(&mut self, why: FeedError) -> FeedError {
        if let Some(live) = self.live.take() {
            self.delete_later(live.name);
        }
        why
    }

    fn delete_later(&self, name: String) {
        let stream = self.stream.clone();
        tokio::spawn(async move {
            if let Err(e) = stream.delete_consumer(&name).await {
                tracing::debug!(consumer = name, error = %e, "cannot delete a replaced command consumer");
            }
        });
    }

    /// Ends the feed, deleting its consumer (which would otherwise linger for
    /// `INACTIVE`, counting against the server's consumer limit).
    pub async fn close(mut self) {
        if let Some(live) = self.live.take() {
            drop(live.messages);
            if let Err(e) = self.stream.delete_consumer(&live.name).await {
                tracing::debug!(consumer = live.name, error = %e, "cannot delete the command consumer");
            }
        }
    }
}
