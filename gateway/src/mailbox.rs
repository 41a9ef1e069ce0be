//! One client's inbox: a bounded event queue and a one-slot tick mailbox behind
//! one lock and one wake-up, plus the kick that ends the connection. It holds no
//! buffer while empty: most sockets of a gateway are idle at any instant, and a
//! channel per client (a 32-slot block, a watch, their shared states) cost about
//! 2 KB each of them whether used or not (massif, 1,200 idle sockets).

use crate::hub::{Kick, Outbound};
use axum::extract::ws::Utf8Bytes;
use bandsync_nats::ErrorCode;
use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub struct Mailbox {
    inner: Mutex<Inner>,
    ready: Notify,
    /// Events held at most; one more means the client is too slow.
    capacity: usize,
    kick: CancellationToken,
    kick_reason: OnceLock<Kick>,
}

#[derive(Default)]
struct Inner {
    events: VecDeque<Outbound>,
    tick: Option<Utf8Bytes>,
}

/// What the connection writes next.
#[derive(Debug)]
pub enum Delivery {
    Event(Outbound),
    Tick(Utf8Bytes),
}

impl Mailbox {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            ready: Notify::new(),
            capacity,
            kick: CancellationToken::new(),
            kick_reason: OnceLock::new(),
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

    /// The next delivery, events before the tick; waits while there is none.
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
    /// (the first kick's, if several race).
    pub fn kick(&self, code: ErrorCode, reason: &str) {
        let _ = self.kick_reason.set(Kick {
            code,
            reason: reason.to_owned(),
        });
        self.kick.cancel();
    }

    /// Cancelled once kicked; a clone interrupts a write stuck on the socket.
    pub fn kicked(&self) -> &CancellationToken {
        &self.kick
    }

    pub fn kick_reason(&self) -> Option<&Kick> {
        self.kick_reason.get()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing is left half-done while the lock is held.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
            got.push(match m.next().await {
                Delivery::Event(Outbound::Event { seq, .. }) => format!("e{seq}"),
                Delivery::Event(Outbound::Error { .. }) => "error".into(),
                Delivery::Tick(t) => t.to_string(),
            });
        }
        assert_eq!(got, ["e1", "e2", "t2"]);
        let idle = tokio::time::timeout(Duration::from_millis(20), m.next()).await;
        assert!(idle.is_err(), "nothing left");
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_on_a_push_from_another_task() {
        let m = std::sync::Arc::new(Mailbox::new(4));
        let reader = tokio::spawn({
            let m = m.clone();
            async move { m.next().await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        m.put_tick(Utf8Bytes::from_static("t"));
        let got = tokio::time::timeout(Duration::from_secs(1), reader)
            .await
            .expect("woken")
            .expect("joined");
        assert!(matches!(got, Delivery::Tick(t) if t.as_str() == "t"));
    }

    #[test]
    fn the_first_kick_names_the_reason() {
        let m = Mailbox::new(1);
        m.kick(ErrorCode::SlowClient, "too slow");
        m.kick(ErrorCode::SessionFull, "full");
        assert!(m.kicked().is_cancelled());
        assert_eq!(m.kick_reason().map(|k| k.code), Some(ErrorCode::SlowClient));
    }
}
