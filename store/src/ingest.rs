//! One durable pull consumer per stream, feeding PostgreSQL in batches.
//!
//! Invariant: **a message is acked only after the transaction holding it has
//! committed.** A crash between commit and ack means redelivery, which the
//! (stream, stream_seq) key turns into a no-op; so every message lands once.
//! Every message of a batch is either a row or a dead letter (`decode` never
//! fails), so one bad message never holds back the good ones beside it. A
//! writer that panics takes its worker down with it, for `supervise` to see.

use crate::db::write::{Written, write_batch, write_isolating};
use crate::decode::{Decoded, Raw, StreamKind, decode};
use crate::health::IngestHealth;
use crate::metrics::{BatchReport, Metrics};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{self, AckKind, Message};
use bandsync_nats::{Subjects, now_us};
use deadpool_postgres::Pool;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Unacked messages are redelivered after this; in-progress acks extend it while
/// PostgreSQL is down, so a batch being retried is not handed to another worker.
const ACK_WAIT: Duration = Duration::from_secs(10);
const PROGRESS_EVERY: Duration = Duration::from_secs(3);
/// Delivered-but-unacked messages per consumer, across all workers: bounds what
/// the server hands out while writes are slow.
const MAX_ACK_PENDING: i64 = 20_000;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("opening consumer {durable} on {stream}: {message}")]
    Consumer {
        stream: String,
        durable: String,
        message: String,
    },
}

/// Everything one stream's ingest loop needs.
#[derive(Clone)]
pub struct Ingest {
    pub kind: StreamKind,
    pub stream: String,
    pub durable: String,
    pub js: jetstream::Context,
    pub pool: Pool,
    pub subjects: Subjects,
    pub metrics: Arc<Metrics>,
    pub health: Arc<IngestHealth>,
    pub batch_max: usize,
    pub batch_wait: Duration,
    /// Batches written at once (`--writers`); concurrent batches lock session
    /// rows in key order, so they cannot deadlock.
    pub writers: usize,
}

impl Ingest {
    /// Creates the durable consumer if it is missing; every worker calls it.
    pub async fn consumer(&self) -> Result<PullConsumer, IngestError> {
        let fail = |message: String| IngestError::Consumer {
            stream: self.stream.clone(),
            durable: self.durable.clone(),
            message,
        };
        let stream = self
            .js
            .get_stream(&self.stream)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let config = pull::Config {
            durable_name: Some(self.durable.clone()),
            description: Some("bandsync-store: every message into PostgreSQL".into()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            deliver_policy: DeliverPolicy::All,
            max_ack_pending: MAX_ACK_PENDING,
            ..Default::default()
        };
        stream
            .get_or_create_consumer(&self.durable, config)
            .await
            .map_err(|e| fail(e.to_string()))
    }

    /// Messages of the stream the store has not acked yet, across every
    /// worker sharing the durable: the consumer's pending (not delivered) plus
    /// ack-pending (delivered, not acked), from consumer info: one request.
    pub async fn backlog(&self) -> Result<u64, String> {
        let stream = self
            .js
            .get_stream_no_info(&self.stream)
            .await
            .map_err(|e| e.to_string())?;
        let info = stream
            .consumer_info(&self.durable)
            .await
            .map_err(|e| e.to_string())?;
        Ok(info.num_pending + info.num_ack_pending as u64)
    }

    /// Runs until `shutdown`; then commits and acks the batch in flight and returns.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = BACKOFF_MIN;
        while !shutdown.is_cancelled() {
            match self.consume(&shutdown).await {
                Ok(()) => backoff = BACKOFF_MIN,
                Err(e) => {
                    self.metrics.set_nats_up(false);
                    warn!(stream = %self.stream, error = %e, "consumer unavailable; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        // Acks are queued publishes: push them out before the process may exit, so
        // what was committed is not redelivered to the next worker.
        if let Err(e) = self.js.client().flush().await {
            warn!(stream = %self.stream, error = %e, "flushing acks at shutdown");
        }
        info!(stream = %self.stream, "ingest stopped");
    }

    /// Reads batches until the message stream ends or `shutdown`.
    async fn consume(&self, shutdown: &CancellationToken) -> Result<(), IngestError> {
        let consumer = self.consumer().await?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(self.batch_max)
            .heartbeat(Duration::from_secs(5))
            .messages()
            .await
            .map_err(|e| IngestError::Consumer {
                stream: self.stream.clone(),
                durable: self.durable.clone(),
                message: e.to_string(),
            })?;
        self.metrics.set_nats_up(true);
        info!(stream = %self.stream, durable = %self.durable, "consuming");
        let writers = Arc::new(Semaphore::new(self.writers));
        let mut in_flight = JoinSet::new();
        let result = self
            .batches(&mut messages, &writers, &mut in_flight, shutdown)
            .await;
        // The batches already handed to writers commit (or nak) before we return.
        while let Some(done) = in_flight.join_next().await {
            resume_panic(done);
        }
        result
    }

    /// Gathers batches (up to `batch_max` messages or `batch_wait`) and hands each
    /// to a writer, at most `writers` at once.
    async fn batches(
        &self,
        messages: &mut pull::Stream,
        writers: &Arc<Semaphore>,
        in_flight: &mut JoinSet<()>,
        shutdown: &CancellationToken,
    ) -> Result<(), IngestError> {
        let mut batch: Vec<Message> = Vec::with_capacity(self.batch_max);
        loop {
            let first = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                next = messages.next() => next,
            };
            match first {
                None => return Ok(()),
                Some(Err(e)) => {
                    debug!(stream = %self.stream, error = %e, "pull stream");
                    continue;
                }
                Some(Ok(m)) => batch.push(m),
            }
            let deadline = Instant::now() + self.batch_wait;
            while batch.len() < self.batch_max {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    next = tokio::time::timeout_at(deadline, messages.next()) => match next {
                        Ok(Some(Ok(m))) => batch.push(m),
                        Ok(Some(Err(e))) => debug!(stream = %self.stream, error = %e, "pull stream"),
                        Ok(None) | Err(_) => break,
                    },
                }
            }
            // Decoded here, while the writers wait on PostgreSQL, not in a writer's turn.
            let decoded = self.decode(std::mem::take(&mut batch)).await;
            let Ok(permit) = writers.clone().acquire_owned().await else {
                return Ok(()); // never closed
            };
            let (this, token) = (self.clone(), shutdown.clone());
            in_flight.spawn(async move {
                this.commit(decoded, &token).await;
                drop(permit);
            });
            while let Some(done) = in_flight.try_join_next() {
                resume_panic(done);
            }
            if shutdown.is_cancelled() {
                return Ok(());
            }
        }
    }

    /// Decodes a batch into rows; a message without JetStream metadata cannot be
    /// placed in the log and is terminated.
    async fn decode(&self, batch: Vec<Message>) -> Batch {
        let started = Instant::now();
        let mut rows = Vec::with_capacity(batch.len());
        let mut acks = Vec::with_capacity(batch.len());
        for m in batch {
            let Ok(info) = m.info() else {
                warn!(stream = %self.stream, subject = %m.subject, "message without JetStream metadata; terminating it");
                let _ = m.ack_with(AckKind::Term).await;
                continue;
            };
            let published_us =
                i64::try_from(info.published.unix_timestamp_nanos() / 1_000).unwrap_or(0);
            let raw = Raw {
                stream_seq: info.stream_sequence,
                subject: &m.subject,
                payload: &m.payload,
                published_us,
            };
            rows.push(decode(self.kind, &self.subjects, &raw));
            acks.push(m);
        }
        Batch {
            rows,
            acks,
            decode_time: started.elapsed(),
        }
    }

    /// Writes the batch, retrying with backoff while PostgreSQL is unavailable,
    /// then acks it. On shutdown before a commit it naks instead, so another
    /// worker (or this one, restarted) takes the messages at once.
    async fn commit(&self, batch: Batch, shutdown: &CancellationToken) {
        let Batch {
            rows,
            acks,
            decode_time,
        } = batch;
        if rows.is_empty() {
            return;
        }
        let started = Instant::now();
        let Some(written) = self.write_with_retry(&rows, &acks, shutdown).await else {
            for m in &acks {
                let _ = m.ack_with(AckKind::Nak(None)).await;
            }
            return;
        };
        let committed_us = now_us();
        self.health.committed(self.kind);
        let written_in = started.elapsed();
        for m in &acks {
            // A lost ack only means a redelivery, which the insert skips.
            if let Err(e) = m.ack().await {
                debug!(stream = %self.stream, error = %e, "ack");
            }
        }
        debug!(
            stream = %self.stream,
            messages = rows.len(),
            decode_us = decode_time.as_micros() as u64,
            write_us = written_in.as_micros() as u64,
            ack_us = (started.elapsed() - written_in).as_micros() as u64,
            "batch committed"
        );
        let report = BatchReport {
            messages: rows.len() as u64,
            inserted: written.inserted,
            dead: written.dead,
        };
        let lags = rows
            .iter()
            .map(|r| published_of(r).map_or(0.0, |p| (committed_us - p).max(0) as f64 / 1e6));
        self.metrics.batch_committed(self.kind, report, lags);
        if written.dead > 0 {
            warn!(stream = %self.stream, dead = written.dead, "messages written to dead_letters");
        }
    }

    /// `None` when shutdown came before a commit.
    async fn write_with_retry(
        &self,
        rows: &[Decoded],
        acks: &[Message],
        shutdown: &CancellationToken,
    ) -> Option<Written> {
        let mut backoff = BACKOFF_MIN;
        let mut last_progress = Instant::now();
        loop {
            let result = match write_batch(&self.pool, &self.stream, self.kind, rows).await {
                Err(e) if e.is_data_error() => {
                    warn!(stream = %self.stream, error = %e, "batch refused; writing its messages one by one");
                    write_isolating(&self.pool, &self.stream, self.kind, rows).await
                }
                other => other,
            };
            match result {
                Ok(written) => return Some(written),
                Err(e) => {
                    self.metrics.write_failed(self.kind);
                    warn!(stream = %self.stream, error = %e, retry_in_ms = backoff.as_millis() as u64, "batch not written; retrying");
                }
            }
            if last_progress.elapsed() >= PROGRESS_EVERY {
                for m in acks {
                    let _ = m.ack_with(AckKind::Progress).await;
                }
                last_progress = Instant::now();
            }
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

/// A batch decoded and waiting for a writer: the rows and the messages to ack
/// once they are committed.
struct Batch {
    rows: Vec<Decoded>,
    acks: Vec<Message>,
    decode_time: Duration,
}

/// A writer that panicked takes its worker down with it: swallowed here, its
/// batch would stay unacked and come back to panic again, with nothing to
/// show for it. `supervise` reports and restarts the worker.
fn resume_panic(done: Result<(), JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        std::panic::resume_unwind(e.into_panic());
    }
}

fn published_of(row: &Decoded) -> Option<i64> {
    match row {
        Decoded::Command(c) => Some(c.published_us),
        Decoded::Event(e) => Some(e.published_us),
        Decoded::Dead(d) => Some(d.published_us),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_writers_panic_becomes_the_workers() {
        let mut writers = JoinSet::new();
        writers.spawn(async { panic!("a bug in a writer") });
        let done = writers.join_next().await.expect("one writer");
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| resume_panic(done)))
            .expect_err("the worker panics too, for its supervisor to see");
        assert_eq!(caught.downcast_ref::<&str>(), Some(&"a bug in a writer"));

        writers.spawn(async {});
        let done = writers.join_next().await.expect("one writer");
        resume_panic(done); // a writer that finished is nothing to report
    }
}
