//! One client's inbox: a bounded event queue, a one-slot tick mailbox and the
//! end of the connection (a kick, or the gateway shutting down) behind one lock
//! and one wake-up, so a connection waits on its mailbox and its socket only.
//! (Racing two cancellation tokens as well cost two mutex locks per frame, one of
//! them on the gateway-wide shutdown token that every connection shares.)
//!
//! It holds no buffer while empty: most sockets of a gateway are idle at any
//! instant, and a channel per client (a 32-slot block, a watch, their shared
//! states) cost about 2 KB each of them whether used or not (massif, 1,200 idle
//! sockets).

use bandsync_nats::ErrorCode;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tungstenite::Utf8Bytes;

/// Something to write to one client's socket.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A state event; skipped if the client already has `seq` (from its welcome).
    Event { seq: u64, text: Utf8Bytes },
    /// An error for this member (a rejected command).
    Error { text: Utf8Bytes },
}

/// Why a client was disconnected by the gateway.
#[derive(Debug, Clone)]
pub struct Kick {
    pub code: ErrorCode,
    pub reason: String,
}

pub struct Mailbox {
    inner: Mutex<Inner>,
    ready: Notify,
    /// Events held at most; one more means the client is too slow.
    capacity: usize,
    /// Cancelled by a kick: interrupts a write stuck on a socket that does not drain.
    kicked: CancellationToken,
}

#[derive(Default)]
struct Inner {
    events: VecDeque<Outbound>,
    tick: Option<Utf8Bytes>,
    end: Option<End>,
}

/// Why a connection must end.
#[derive(Debug, Clone)]
pub enum End {
    Kicked(Kick),
    ShuttingDown,
}

/// What the connection does next.
#[derive(Debug)]
pub enum Delivery {
    Event(Outbound),
    Tick(Utf8Bytes),
    End(End),
}

impl Mailbox {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            ready: Notify::new(),
            capacity,
            kicked: CancellationToken::new(),
        }
    }

    /// Queues an event; false (nothing queued) when the queue is full.
    pub fn push_event(&self, out: Outbound) -> bool {
        {
            let mut inner = self.lock();
            if inner.events.len() >= self.capacity {
                return false;
            }
            inner.events.push_back(out);
        }
        self.ready.notify_one();
        true
    }

    /// Replaces the pending tick: a client that has not taken the last one skips
    /// to the newest.
    pub fn put_tick(&self, text: Utf8Bytes) {
        self.lock().tick = Some(text);
        self.ready.notify_one();
    }

    /// The next delivery: the end first, then events, then the tick; waits while
    /// there is none.
    /// Cancel-safe: a delivery is taken only by the poll that returns it.
    pub async fn next(&self) -> Delivery {
        loop {
            // Made before looking, so a push between the look and the wait
            // leaves a permit that this wait consumes.
            let notified = self.ready.notified();
            if let Some(delivery) = self.take() {
                return delivery;
            }
            notified.await;
        }
    }

    fn take(&self) -> Option<Delivery> {
        let mut inner = self.lock();
        if let Some(end) = inner.end.take() {
            return Some(Delivery::End(end));
        }
        if let Some(out) = inner.events.pop_front() {
            if inner.events.is_empty() {
                // A burst grew it; an idle client should not keep the memory.
                inner.events.shrink_to(0);
            }
            return Some(Delivery::Event(out));
        }
        inner.tick.take().map(Delivery::Tick)
    }

    /// Ends the connection: its task closes the socket with this code and reason
    /// (the first end's, if several race), interrupting a write stuck on it.
    pub fn kick(&self, code: ErrorCode, reason: &str) {
        self.end(End::Kicked(Kick {
            code,
            reason: reason.to_owned(),
        }));
        self.kicked.cancel();
    }

    /// The gateway is stopping: the connection tells its client to reconnect.
    pub fn shut_down(&self) {
        self.end(End::ShuttingDown);
    }

    fn end(&self, end: End) {
        self.lock().end.get_or_insert(end);
        self.ready.notify_one();
    }

    /// Cancelled once kicked: a write waiting on the socket races it.
    pub fn kicked(&self) -> &CancellationToken {
        &self.kicked
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing is left half-done while the lock is held.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::poll;
    use std::pin::pin;
    use std::sync::Arc;
    use std::time::Duration;

    fn event(seq: u64) -> Outbound {
        Outbound::Event {
            seq,
            text: Utf8Bytes::from(format!("e{seq}")),
        }
    }

    #[tokio::test]
    async fn events_come_first_ticks_coalesce_and_the_queue_is_bounded() {
        let m = Mailbox::new(2);
        m.put_tick(Utf8Bytes::from_static("t1"));
        assert!(m.push_event(event(1)));
        m.put_tick(Utf8Bytes::from_static("t2"));
        assert!(m.push_event(event(2)));
        assert!(!m.push_event(event(3)), "a third event overflows");
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(name(m.next().await));
        }
        assert_eq!(got, ["e1", "e2", "t2"]);
        assert!(poll!(pin!(m.next())).is_pending(), "nothing left");
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_on_a_push_from_another_task() {
        let m = Arc::new(Mailbox::new(4));
        let mut next = pin!(m.next());
        // Polled once, the reader has looked, found nothing and waits.
        assert!(poll!(next.as_mut()).is_pending(), "empty at first");
        let pusher = tokio::spawn({
            let m = m.clone();
            async move { m.put_tick(Utf8Bytes::from_static("t")) }
        });
        pusher.await.expect("the push ran");
        // The wake-up must come from the push: a lost one would leave this
        // pending for ever, caught by the deadline.
        let got = tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .expect("woken by the push");
        assert!(matches!(got, Delivery::Tick(t) if t.as_str() == "t"));
    }

    fn name(d: Delivery) -> String {
        match d {
            Delivery::Event(Outbound::Event { seq, .. }) => format!("e{seq}"),
            Delivery::Event(Outbound::Error { .. }) => "error".into(),
            Delivery::Tick(t) => t.to_string(),
            Delivery::End(End::Kicked(k)) => format!("kicked {}", k.code.as_str()),
            Delivery::End(End::ShuttingDown) => "shutdown".into(),
        }
    }

    #[tokio::test]
    async fn the_first_end_comes_before_anything_queued() {
        let m = Mailbox::new(4);
        assert!(m.push_event(event(1)));
        m.put_tick(Utf8Bytes::from_static("t1"));
        m.kick(ErrorCode::SlowClient, "too slow");
        m.kick(ErrorCode::SessionFull, "full");
        m.shut_down();
        assert!(m.kicked().is_cancelled());
        assert_eq!(name(m.next().await), "kicked slow_client");

        let m = Mailbox::new(4);
        assert!(m.push_event(event(1)));
        m.shut_down();
        m.kick(ErrorCode::SlowClient, "too slow");
        assert_eq!(name(m.next().await), "shutdown");
        assert!(
            m.kicked().is_cancelled(),
            "a kick still interrupts a stuck write"
        );
    }
}
