//! One client's way out: the socket's write side and what waits for it.
//!
//! The hub frames each tick and event once and writes the frame straight to
//! every member's socket from its fan-out, without waking the member's task,
//! whenever the socket takes it at once and nothing else is waiting. Only what
//! a socket cannot take at once waits here, behind one lock and one wake-up:
//! the rest of a frame the socket took part of, a bounded event queue, a
//! one-slot tick (a slow client skips to the newest) and the end of the
//! connection (a kick, or the gateway shutting down). The connection's task
//! then writes it out, with a deadline. (Waking a task per socket per frame,
//! which then framed and wrote the same bytes through tungstenite, was most of
//! the gateway's CPU per delivered frame.)
//!
//! It holds no buffer while empty: most sockets of a gateway are idle at any
//! instant, and a channel per client (a 32-slot block, a watch, their shared
//! states) cost about 2 KB each of them whether used or not (massif, 1,200 idle
//! sockets).

use bandsync_nats::ErrorCode;
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use tokio::io::AsyncWrite;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tungstenite::Bytes;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Data, OpCode};

/// The socket's write side.
pub type Writer = Pin<Box<dyn AsyncWrite + Send>>;

/// What tungstenite's own frames (close, pong) may leave unsent before the
/// client counts as not reading: they are a few bytes each.
const MAX_CONTROL_BACKLOG: usize = 64 * 1024;

/// A text message as one unmasked WebSocket frame, the bytes every member's
/// socket gets: a server's frames are not masked, so they are the same for all.
pub fn text_frame(payload: &[u8]) -> Bytes {
    let header = FrameHeader {
        opcode: OpCode::Data(Data::Text),
        ..FrameHeader::default()
    };
    let length = payload.len() as u64;
    let mut frame = Vec::with_capacity(header.len(length) + payload.len());
    header
        .format(length, &mut frame)
        .expect("writing to a Vec cannot fail");
    frame.extend_from_slice(payload);
    frame.into()
}

/// Something for one client's socket, framed.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A state event; skipped if the client already has `seq` (from its welcome).
    Event { seq: u64, frame: Bytes },
    /// An error for this member (a rejected command).
    Error { frame: Bytes },
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

struct Inner {
    socket: Writer,
    /// Whether the hub may write: from the welcome on (before it, everything waits).
    open: bool,
    /// Newest event seq the client has: its welcome's, then each one written.
    last_seq: u64,
    /// Bytes taken for the socket, in order, that it has not taken yet.
    unsent: VecDeque<Bytes>,
    unsent_bytes: usize,
    /// The socket took bytes it has not flushed (a TLS stream buffers them).
    unflushed: bool,
    events: VecDeque<Outbound>,
    tick: Option<Bytes>,
    end: Option<End>,
}

/// Why a connection must end.
#[derive(Debug, Clone)]
pub enum End {
    Kicked(Kick),
    ShuttingDown,
}

/// How a write straight to the socket went.
enum Now {
    /// The socket took the whole frame.
    Written,
    /// It took part: the rest waits for the connection's task.
    Started,
    /// It took nothing, or something else waits first.
    Refused,
}

/// What the connection does next.
#[derive(Debug)]
pub enum Delivery {
    /// Something waits for the socket: `drain` it.
    Write,
    End(End),
}

impl Mailbox {
    pub fn new(capacity: usize, socket: Writer) -> Self {
        Self {
            inner: Mutex::new(Inner {
                socket,
                open: false,
                last_seq: 0,
                unsent: VecDeque::new(),
                unsent_bytes: 0,
                unflushed: false,
                events: VecDeque::new(),
                tick: None,
                end: None,
            }),
            ready: Notify::new(),
            capacity,
            kicked: CancellationToken::new(),
        }
    }

    /// The welcome, holding the state up to event `last_seq`, is out: from
    /// now on the hub writes to the socket, and what waited is drained.
    pub fn open(&self, last_seq: u64) {
        {
            let mut inner = self.lock();
            inner.open = true;
            inner.last_seq = last_seq;
        }
        self.ready.notify_one();
    }

    /// Writes a tick now if the socket takes it, else keeps it in place of
    /// the pending one: a client that has not taken the last skips to the newest.
    pub fn put_tick(&self, frame: &Bytes) {
        let mut inner = self.lock();
        if inner.end.is_some() {
            return;
        }
        match inner.write_now(frame) {
            Now::Written => return,
            Now::Started => {}
            Now::Refused => inner.tick = Some(frame.clone()),
        }
        drop(inner);
        self.ready.notify_one();
    }

    /// Writes an event or an error now if the socket takes it, else queues it;
    /// false (nothing queued) when the queue is full.
    pub fn push_event(&self, out: Outbound) -> bool {
        let mut inner = self.lock();
        if let Outbound::Event { seq, .. } = out
            && inner.open
            && seq <= inner.last_seq
        {
            return true; // the client has it already
        }
        if inner.end.is_none() {
            let (Outbound::Event { frame, .. } | Outbound::Error { frame }) = &out;
            let now = inner.write_now(frame);
            if !matches!(now, Now::Refused) {
                if let Outbound::Event { seq, .. } = out {
                    inner.last_seq = seq;
                }
                if matches!(now, Now::Started) {
                    drop(inner);
                    self.ready.notify_one();
                }
                return true;
            }
        }
        if inner.events.len() >= self.capacity {
            return false;
        }
        inner.events.push_back(out);
        drop(inner);
        self.ready.notify_one();
        true
    }

    /// The next thing for the connection to do: end first, else write what
    /// waits; waits while there is neither.
    /// Cancel-safe: an end is taken only by the poll that returns it.
    pub async fn next(&self) -> Delivery {
        loop {
            // Made before looking, so a push between the look and the wait
            // leaves a permit that this wait consumes.
            let notified = self.ready.notified();
            {
                let inner = self.lock();
                // Kept, not taken: an ended mailbox must go on refusing the
                // hub's frames while the connection says goodbye, or one lands
                // after the close frame (the browser then fails the socket
                // without reading the close's reason).
                if let Some(end) = inner.end.clone() {
                    return Delivery::End(end);
                }
                if inner.waiting() {
                    return Delivery::Write;
                }
            }
            notified.await;
        }
    }

    /// Queues a frame of the connection's own (a welcome, a pong) behind
    /// whatever the socket has not taken yet; `flush` writes it.
    pub fn enqueue(&self, frame: Bytes) {
        let mut inner = self.lock();
        if inner.unsent.is_empty() && !inner.unflushed {
            if let Now::Refused = inner.start_writing(&frame) {
                inner.push_unsent(frame);
            }
        } else {
            inner.push_unsent(frame);
        }
    }

    /// Takes bytes for the socket (tungstenite's frames: whole frames, one
    /// call each): written now as far as the socket takes them, the rest kept
    /// in order. Refused once far too much is kept: the client is not reading.
    pub fn poll_accept(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut inner = self.lock();
        if inner.unsent_bytes + buf.len() > MAX_CONTROL_BACKLOG {
            return Poll::Ready(Err(io::Error::other("the client is not reading")));
        }
        let written = if inner.unsent.is_empty() && !inner.unflushed {
            match inner.socket.as_mut().poll_write(cx, buf) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => 0,
            }
        } else {
            0
        };
        if written < buf.len() {
            inner.push_unsent(Bytes::copy_from_slice(&buf[written..]));
        } else if written > 0 {
            inner.unflushed = true;
        }
        Poll::Ready(Ok(buf.len()))
    }

    /// Writes out every byte taken for the socket, and flushes it.
    pub fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.lock().poll_flush(cx)
    }

    /// Writes out everything that waits: unsent bytes, then the queued events
    /// (skipping those the client has) and the tick, in order, until nothing
    /// waits or the connection must end.
    pub fn poll_drain(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut inner = self.lock();
        loop {
            std::task::ready!(inner.poll_flush(cx))?;
            if inner.end.is_some() || !inner.open {
                return Poll::Ready(Ok(()));
            }
            let frame = match inner.events.pop_front() {
                Some(Outbound::Event { seq, .. }) if seq <= inner.last_seq => continue,
                Some(Outbound::Event { seq, frame }) => {
                    inner.last_seq = seq;
                    frame
                }
                Some(Outbound::Error { frame }) => frame,
                None => match inner.tick.take() {
                    Some(frame) => frame,
                    None => {
                        // A burst grew it; an idle client should not keep the memory.
                        inner.events.shrink_to(0);
                        return Poll::Ready(Ok(()));
                    }
                },
            };
            inner.push_unsent(frame);
        }
    }

    /// Shuts the socket's write side down once every byte is out.
    pub fn poll_shutdown(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut inner = self.lock();
        std::task::ready!(inner.poll_flush(cx))?;
        inner.socket.as_mut().poll_shutdown(cx)
    }

    /// Ends the connection: its task closes the socket with this code and reason
    /// (the first end's, if several race), interrupting a write stuck on it.
    pub fn kick(&self, code: ErrorCode, reason: &str) {
        self.closing(code, reason);
        self.kicked.cancel();
    }

    /// The connection closes on its own (a flood, a frame too large): the hub
    /// writes nothing more, so nothing lands after the close frame. Unlike
    /// `kick`, the write under way is not interrupted: it is the goodbye.
    pub fn closing(&self, code: ErrorCode, reason: &str) {
        self.end(End::Kicked(Kick {
            code,
            reason: reason.to_owned(),
        }));
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

impl Inner {
    /// Whether the connection's task has something to write.
    fn waiting(&self) -> bool {
        !self.unsent.is_empty()
            || self.unflushed
            || (self.open && (!self.events.is_empty() || self.tick.is_some()))
    }

    /// Writes `frame` at once if nothing waits and the socket takes any of it
    /// (the rest then waits: a socket must get whole frames). Polled without a
    /// waker: a socket that takes nothing is left to the connection's task,
    /// which waits on it.
    fn write_now(&mut self, frame: &Bytes) -> Now {
        if !self.open || self.waiting() {
            return Now::Refused;
        }
        self.start_writing(frame)
    }

    fn start_writing(&mut self, frame: &Bytes) -> Now {
        let mut cx = Context::from_waker(Waker::noop());
        let written = match self.socket.as_mut().poll_write(&mut cx, frame) {
            Poll::Ready(Ok(n)) if n > 0 => n,
            // Nothing taken, or an error the connection's own write will meet.
            _ => return Now::Refused,
        };
        if written < frame.len() {
            self.push_unsent(frame.slice(written..));
            Now::Started
        } else if self.socket.as_mut().poll_flush(&mut cx).is_pending() {
            self.unflushed = true;
            Now::Started
        } else {
            Now::Written
        }
    }

    fn push_unsent(&mut self, bytes: Bytes) {
        self.unsent_bytes += bytes.len();
        self.unsent.push_back(bytes);
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(front) = self.unsent.front_mut() {
            let n = std::task::ready!(self.socket.as_mut().poll_write(cx, front))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.unsent_bytes -= n;
            self.unflushed = true;
            if n == front.len() {
                self.unsent.pop_front();
            } else {
                let _ = front.split_to(n);
            }
        }
        if self.unsent.capacity() > 0 {
            self.unsent = VecDeque::new();
        }
        if self.unflushed {
            std::task::ready!(self.socket.as_mut().poll_flush(cx))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use futures::poll;
    use std::future::poll_fn;
    use std::pin::pin;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, DuplexStream};

    /// A mailbox on an in-memory socket that takes `room` bytes until read.
    fn mailbox(capacity: usize, room: usize) -> (Arc<Mailbox>, DuplexStream) {
        let (ours, client) = tokio::io::duplex(room);
        (Arc::new(Mailbox::new(capacity, Box::pin(ours))), client)
    }

    fn frame(text: &str) -> Bytes {
        text_frame(text.as_bytes())
    }

    fn event(seq: u64) -> Outbound {
        Outbound::Event {
            seq,
            frame: frame(&format!("event {seq} {}", "x".repeat(20))),
        }
    }

    /// Everything the client can read now, as the texts of whole frames
    /// (a server's: unmasked, final, below 64 KiB). The hub's tests read theirs too.
    pub(crate) async fn read_frames(client: &mut DuplexStream) -> Vec<String> {
        let mut bytes = Vec::new();
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(50), client.read_buf(&mut bytes)).await
        {
            if n == 0 {
                break;
            }
        }
        let mut texts = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            assert_eq!(rest[0], 0x81, "a final text frame");
            let (len, at) = match rest[1] {
                126 => (usize::from(u16::from_be_bytes([rest[2], rest[3]])), 4),
                n => {
                    assert!(n < 126, "unmasked, below 64 KiB in these tests");
                    (usize::from(n), 2)
                }
            };
            texts.push(String::from_utf8(rest[at..at + len].to_vec()).expect("UTF-8"));
            rest = &rest[at + len..];
        }
        texts
    }

    fn first_two_words(text: &str) -> String {
        text.split(' ').take(2).collect::<Vec<_>>().join(" ")
    }

    async fn drain(m: &Mailbox) {
        poll_fn(|cx| m.poll_drain(cx)).await.expect("drained");
    }

    #[tokio::test]
    async fn a_socket_that_takes_the_frame_gets_it_without_waking_the_connection() {
        let (m, mut client) = mailbox(4, 4096);
        m.open(0);
        m.put_tick(&frame("tick 1"));
        assert!(m.push_event(event(1)));
        assert_eq!(
            read_frames(&mut client).await,
            ["tick 1", &format!("event 1 {}", "x".repeat(20))]
        );
        assert!(
            poll!(pin!(m.next())).is_pending(),
            "nothing was left for the connection's task"
        );
    }

    #[tokio::test]
    async fn what_a_full_socket_cannot_take_waits_in_order_and_ticks_coalesce() {
        // Room for part of one event: the rest of it, then everything else waits.
        let (m, mut client) = mailbox(2, 16);
        m.open(0);
        assert!(m.push_event(event(1)), "written in part");
        m.put_tick(&frame("tick 1"));
        assert!(m.push_event(event(2)));
        m.put_tick(&frame("tick 2"));
        assert!(m.push_event(event(3)));
        assert!(!m.push_event(event(4)), "a third queued event overflows");
        assert!(matches!(m.next().await, Delivery::Write));
        let (texts, ()) = tokio::join!(read_frames(&mut client), drain(&m));
        let names: Vec<String> = texts.iter().map(|t| first_two_words(t)).collect();
        assert_eq!(names, ["event 1", "event 2", "event 3", "tick 2"]);
    }

    #[tokio::test]
    async fn before_the_welcome_everything_waits_and_what_it_holds_is_skipped() {
        let (m, mut client) = mailbox(4, 4096);
        for seq in 1..=3 {
            assert!(m.push_event(event(seq)));
        }
        m.put_tick(&frame("tick 1"));
        m.enqueue(frame("welcome"));
        assert!(
            poll!(pin!(m.next())).is_pending(),
            "not drained before the welcome is out"
        );
        m.open(2);
        assert!(matches!(m.next().await, Delivery::Write));
        drain(&m).await;
        let texts = read_frames(&mut client).await;
        let names: Vec<String> = texts.iter().map(|t| first_two_words(t)).collect();
        assert_eq!(names, ["welcome", "event 3", "tick 1"]);
        assert!(m.push_event(event(3)), "a copy of an event it has");
        assert!(read_frames(&mut client).await.is_empty(), "is not sent");
    }

    #[tokio::test]
    async fn a_waiting_connection_wakes_when_the_socket_cannot_take_a_frame() {
        let (m, _client) = mailbox(4, 8);
        m.open(0);
        let mut next = pin!(m.next());
        // Polled once, the connection has looked, found nothing and waits.
        assert!(poll!(next.as_mut()).is_pending(), "empty at first");
        let pusher = tokio::spawn({
            let m = m.clone();
            async move { m.put_tick(&frame("a tick longer than the room")) }
        });
        pusher.await.expect("the push ran");
        // The wake-up must come from the push: a lost one would leave this
        // pending for ever, caught by the deadline.
        let got = tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .expect("woken by the push");
        assert!(matches!(got, Delivery::Write));
    }

    #[tokio::test]
    async fn the_first_end_comes_before_anything_queued() {
        let (m, _client) = mailbox(4, 8);
        m.open(0);
        assert!(m.push_event(event(1)));
        m.put_tick(&frame("tick 1"));
        m.kick(ErrorCode::SlowClient, "too slow");
        m.kick(ErrorCode::SessionFull, "full");
        m.shut_down();
        assert!(m.kicked().is_cancelled());
        assert!(matches!(
            m.next().await,
            Delivery::End(End::Kicked(Kick {
                code: ErrorCode::SlowClient,
                ..
            }))
        ));

        let (m, _client) = mailbox(4, 8);
        assert!(m.push_event(event(1)));
        m.shut_down();
        m.kick(ErrorCode::SlowClient, "too slow");
        assert!(matches!(m.next().await, Delivery::End(End::ShuttingDown)));
        assert!(
            m.kicked().is_cancelled(),
            "a kick still interrupts a stuck write"
        );
    }

    #[tokio::test]
    async fn once_ended_the_hub_writes_nothing_more_while_the_connection_says_goodbye() {
        let (m, mut client) = mailbox(4, 4096);
        m.open(0);
        m.kick(ErrorCode::Replaced, "replaced");
        assert!(matches!(m.next().await, Delivery::End(End::Kicked(_))));
        // The connection's goodbye, then what the hub still fans out to the
        // session while the socket is closing: only the goodbye is written.
        m.enqueue(frame("goodbye"));
        assert!(m.push_event(event(1)));
        m.put_tick(&frame("tick 1"));
        assert_eq!(read_frames(&mut client).await, ["goodbye"]);
    }
}
