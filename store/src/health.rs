//! Whether each stream's ingest is doing its job, for `/readyz` and the
//! metrics. NATS connected and PostgreSQL answering are not enough: a worker
//! that died, or one that is alive but commits nothing, must not leave a store
//! that says it is ready while its backlog grows.
//!
//! A stream's ingest is ready while its worker runs and it is not stalled.
//! Stalled: the consumer has messages the store has not acked (pending plus
//! ack-pending, read from consumer info) and no batch has committed for longer
//! than `stall_after`. A backlog read as empty counts as progress, so an idle
//! store is never stalled.

use crate::decode::StreamKind;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// One stream's ingest as last seen.
#[derive(Debug)]
struct Stream {
    /// `None` while the worker runs; why not, otherwise.
    down: Option<String>,
    /// Messages not yet acked by the store (consumer info); `None` until read.
    backlog: Option<u64>,
    /// The last committed batch, or the last time the backlog was empty.
    last_progress: Instant,
    /// Consumer info has failed since then, with this error.
    info_failing: Option<(Instant, String)>,
}

/// What `/readyz` and the metrics report for one stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub ready: bool,
    /// One line for `/readyz`: `ok`, or why not.
    pub text: String,
    pub backlog: u64,
    /// How long ingest has made no progress with messages pending (zero if none are).
    pub stalled_for: Duration,
}

#[derive(Debug)]
pub struct IngestHealth {
    streams: [Mutex<Stream>; 2],
    stall_after: Duration,
}

impl IngestHealth {
    /// Both workers start as "not started yet".
    pub fn new(stall_after: Duration) -> Self {
        let stream = || {
            Mutex::new(Stream {
                down: Some("not started".into()),
                backlog: None,
                last_progress: Instant::now(),
                info_failing: None,
            })
        };
        Self {
            streams: [stream(), stream()],
            stall_after,
        }
    }

    fn with<T>(&self, kind: StreamKind, f: impl FnOnce(&mut Stream) -> T) -> T {
        let i = match kind {
            StreamKind::Commands => 0,
            StreamKind::Events => 1,
        };
        // A panic elsewhere while holding this lock left plain data behind: keep using it.
        f(&mut self.streams[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner))
    }

    /// The worker was (re)started. Its progress clock starts now, so a
    /// restarted worker gets `stall_after` to commit before it counts as stalled.
    pub fn worker_running(&self, kind: StreamKind) {
        self.with(kind, |s| {
            s.down = None;
            s.last_progress = Instant::now();
        });
    }

    pub fn worker_down(&self, kind: StreamKind, reason: String) {
        self.with(kind, |s| s.down = Some(reason));
    }

    /// A batch committed.
    pub fn committed(&self, kind: StreamKind) {
        self.with(kind, |s| s.last_progress = Instant::now());
    }

    /// Consumer info read: `backlog` messages are not yet acked.
    pub fn backlog(&self, kind: StreamKind, backlog: u64) {
        self.with(kind, |s| {
            s.backlog = Some(backlog);
            s.info_failing = None;
            if backlog == 0 {
                s.last_progress = Instant::now();
            }
        });
    }

    /// Consumer info could not be read.
    pub fn backlog_unknown(&self, kind: StreamKind, error: String) {
        self.with(kind, |s| {
            let since = s.info_failing.take().map_or_else(Instant::now, |(t, _)| t);
            s.info_failing = Some((since, error));
        });
    }

    pub fn status(&self, kind: StreamKind) -> Status {
        let stall_after = self.stall_after;
        self.with(kind, |s| {
            let backlog = s.backlog.unwrap_or(0);
            let stalled_for = if backlog > 0 {
                s.last_progress.elapsed()
            } else {
                Duration::ZERO
            };
            let not_ready = |text: String| Status {
                ready: false,
                text,
                backlog,
                stalled_for,
            };
            if let Some(reason) = &s.down {
                return not_ready(format!("worker down: {reason}"));
            }
            if stalled_for > stall_after {
                return not_ready(format!(
                    "stalled: {backlog} messages pending, no batch committed for {:.0} s",
                    stalled_for.as_secs_f64()
                ));
            }
            if let Some((since, error)) = &s.info_failing
                && since.elapsed() > stall_after
            {
                return not_ready(format!(
                    "backlog unknown for {:.0} s: consumer info: {error}",
                    since.elapsed().as_secs_f64()
                ));
            }
            Status {
                ready: true,
                text: "ok".into(),
                backlog,
                stalled_for,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALL: Duration = Duration::from_secs(30);

    #[tokio::test(start_paused = true)]
    async fn pending_messages_without_progress_is_a_stall() {
        let h = IngestHealth::new(STALL);
        let events = StreamKind::Events;
        assert!(
            !h.status(events).ready,
            "not ready before the worker starts"
        );
        assert_eq!(h.status(events).text, "worker down: not started");
        h.worker_running(events);
        h.backlog(events, 0);
        tokio::time::advance(Duration::from_secs(120)).await;
        assert!(h.status(events).ready, "idle is not stalled");

        h.backlog(events, 12);
        tokio::time::advance(Duration::from_secs(20)).await;
        h.committed(events);
        tokio::time::advance(Duration::from_secs(20)).await;
        let s = h.status(events);
        assert!(s.ready, "a commit 20 s ago is progress: {s:?}");
        assert_eq!(s.stalled_for, Duration::from_secs(20));

        tokio::time::advance(Duration::from_secs(11)).await;
        let s = h.status(events);
        assert!(!s.ready);
        assert_eq!(
            s.text,
            "stalled: 12 messages pending, no batch committed for 31 s"
        );
        assert!(h.status(StreamKind::Commands).text.contains("not started"));

        h.backlog(events, 0);
        assert!(h.status(events).ready, "the backlog drained");
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_down_or_a_backlog_unknown_for_long_is_not_ready() {
        let h = IngestHealth::new(STALL);
        let cmds = StreamKind::Commands;
        h.worker_running(cmds);
        h.backlog(cmds, 0);
        h.worker_down(cmds, "panicked: boom".into());
        assert_eq!(h.status(cmds).text, "worker down: panicked: boom");
        h.worker_running(cmds);
        assert!(h.status(cmds).ready);

        h.backlog_unknown(cmds, "timed out".into());
        tokio::time::advance(Duration::from_secs(29)).await;
        h.backlog_unknown(cmds, "timed out again".into());
        assert!(h.status(cmds).ready, "a short gap in consumer info is fine");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            h.status(cmds).text,
            "backlog unknown for 31 s: consumer info: timed out again"
        );
        h.committed(cmds);
        h.backlog(cmds, 3);
        assert!(h.status(cmds).ready, "consumer info answers again");
    }
}
