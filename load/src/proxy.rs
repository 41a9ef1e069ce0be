//! A user-space TCP proxy that impairs the path between clients and a gateway
//! (tc netem is not available here): one-way delay with uniform jitter, set
//! separately per direction; stalls, which is what a lost segment looks like
//! to TCP (everything behind it waits for the retransmit); and a bandwidth cap.
//! Bytes are never reordered or dropped: the stream stays a valid TCP stream,
//! as after real loss and retransmission.

use crate::config::Impairment;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Chunks in flight per direction: bounds the memory a slow reader can pin
/// (at most this many reads of `CHUNK` bytes).
const IN_FLIGHT: usize = 64;
const CHUNK: usize = 16 * 1024;

/// One direction's impairment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Leg {
    pub delay: Duration,
    pub jitter: Duration,
    /// Mean time between stalls (exponentially distributed); `None`: no stalls.
    pub stall_every: Option<Duration>,
    pub stall: Duration,
    /// Bytes per second; `None`: no cap.
    pub bytes_per_sec: Option<f64>,
}

impl Impairment {
    fn leg(&self, delay_ms: f64, jitter_ms: f64) -> Leg {
        let ms = |v: f64| Duration::from_secs_f64(v.max(0.0) / 1000.0);
        Leg {
            delay: ms(delay_ms),
            jitter: ms(jitter_ms),
            stall_every: (self.stall_every_ms > 0.0).then(|| ms(self.stall_every_ms)),
            stall: ms(self.stall_ms),
            bytes_per_sec: (self.bandwidth_kbps > 0.0)
                .then_some(self.bandwidth_kbps * 1000.0 / 8.0),
        }
    }

    pub fn up(&self) -> Leg {
        self.leg(self.up_delay_ms, self.up_jitter_ms)
    }

    pub fn down(&self) -> Leg {
        self.leg(self.down_delay_ms, self.down_jitter_ms)
    }
}

/// When each chunk of one direction may be delivered.
pub struct Schedule {
    leg: Leg,
    rng: SmallRng,
    last: Option<Instant>,
    next_stall: Option<Instant>,
}

impl Schedule {
    pub fn new(leg: Leg, seed: u64, now: Instant) -> Self {
        let mut s = Self {
            leg,
            rng: SmallRng::seed_from_u64(seed),
            last: None,
            next_stall: None,
        };
        s.next_stall = s.draw_stall_gap().map(|gap| now + gap);
        s
    }

    fn draw_stall_gap(&mut self) -> Option<Duration> {
        let mean = self.leg.stall_every?;
        let u: f64 = self.rng.random_range(f64::EPSILON..1.0);
        Some(mean.mul_f64(-u.ln()))
    }

    /// Delivery time of a chunk read at `now`: `now + delay ± jitter`, held
    /// behind any stall in progress, never before the previous chunk.
    pub fn deliver_at(&mut self, now: Instant) -> Instant {
        let jitter = self.leg.jitter.as_secs_f64();
        let offset = if jitter > 0.0 {
            self.rng.random_range(-jitter..=jitter)
        } else {
            0.0
        };
        let delay = (self.leg.delay.as_secs_f64() + offset).max(0.0);
        let mut at = now + Duration::from_secs_f64(delay);
        while let Some(stall_at) = self.next_stall.filter(|&s| s <= at) {
            let stall_end = stall_at + self.leg.stall;
            at = at.max(stall_end);
            self.next_stall = self.draw_stall_gap().map(|gap| stall_end + gap);
        }
        if let Some(last) = self.last {
            at = at.max(last);
        }
        self.last = Some(at);
        at
    }
}

/// A running proxy: listens on `addr`, forwards to the target.
pub struct Proxy {
    pub addr: SocketAddr,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to `target`.
    pub async fn start(
        target: SocketAddr,
        impair: Impairment,
        stop: CancellationToken,
    ) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let mut seed: u64 = 1;
            loop {
                let accepted = tokio::select! {
                    _ = stop.cancelled() => return,
                    a = listener.accept() => a,
                };
                let (client, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors, typically: back off, do not spin.
                        tracing::warn!(error = %e, "proxy accept");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                seed = seed.wrapping_add(2);
                tokio::spawn(relay(client, peer, target, impair, seed, stop.clone()));
            }
        });
        Ok(Proxy { addr })
    }
}

async fn relay(
    client: TcpStream,
    peer: SocketAddr,
    target: SocketAddr,
    impair: Impairment,
    seed: u64,
    stop: CancellationToken,
) {
    // From the client's own source address, so the proxy does not fold many
    // source addresses back into one and run out of ports.
    let server = match bandsync_client::tcp_connect(target, Some(peer.ip())).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "proxy connect");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let now = Instant::now();
    let up = pump(cr, sw, Schedule::new(impair.up(), seed, now), impair.up());
    let down = pump(
        sr,
        cw,
        Schedule::new(impair.down(), seed ^ 0xd0d0, now),
        impair.down(),
    );
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = async { tokio::join!(up, down) } => {}
    }
}

/// Copies one direction, each chunk held until its delivery time and paced to the cap.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut schedule: Schedule, leg: Leg) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(IN_FLIGHT);
    let reader = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let at = schedule.deliver_at(Instant::now());
            if tx.send((at, buf[..n].to_vec())).await.is_err() {
                return;
            }
        }
    };
    let writer = async move {
        // Pacing: the next byte may leave no earlier than this.
        let mut free_at = Instant::now();
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at.max(free_at)).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
            if let Some(rate) = leg.bytes_per_sec {
                free_at = Instant::now().max(free_at)
                    + Duration::from_secs_f64(bytes.len() as f64 / rate);
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leg(delay_ms: u64, jitter_ms: u64) -> Leg {
        Leg {
            delay: Duration::from_millis(delay_ms),
            jitter: Duration::from_millis(jitter_ms),
            stall_every: None,
            stall: Duration::ZERO,
            bytes_per_sec: None,
        }
    }

    #[test]
    fn delay_with_jitter_stays_in_range_and_in_order() {
        let t0 = Instant::now();
        let mut s = Schedule::new(leg(50, 25), 7, t0);
        let mut last = t0;
        let mut spread = (Duration::MAX, Duration::ZERO);
        for i in 0..1000u64 {
            let now = t0 + Duration::from_millis(i * 10);
            let at = s.deliver_at(now);
            assert!(at >= last, "never reordered");
            let d = at - now;
            assert!(d >= Duration::from_millis(25), "{d:?}");
            // Held behind an earlier chunk by at most the jitter span.
            assert!(d <= Duration::from_millis(75 + 50), "{d:?}");
            spread = (spread.0.min(d), spread.1.max(d));
            last = at;
        }
        assert!(
            spread.1 - spread.0 > Duration::from_millis(30),
            "jitter happens"
        );
    }

    #[test]
    fn stalls_hold_traffic() {
        let t0 = Instant::now();
        let mut l = leg(0, 0);
        l.stall_every = Some(Duration::from_millis(100));
        l.stall = Duration::from_millis(200);
        let mut s = Schedule::new(l, 3, t0);
        let held = (0..1000u64)
            .filter(|i| {
                let now = t0 + Duration::from_millis(i * 5);
                s.deliver_at(now) > now
            })
            .count();
        assert!(held > 300, "{held} of 1000 chunks held by stalls");
    }

    #[tokio::test]
    async fn forwards_bytes_both_ways_with_delay() {
        let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let target = echo.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.expect("accept");
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.expect("read");
            s.write_all(&buf).await.expect("write");
        });
        let impair = Impairment {
            up_delay_ms: 30.0,
            down_delay_ms: 10.0,
            ..Default::default()
        };
        let stop = CancellationToken::new();
        let proxy = Proxy::start(target, impair, stop.clone())
            .await
            .expect("proxy");
        let mut c = TcpStream::connect(proxy.addr).await.expect("connect");
        let t0 = std::time::Instant::now();
        c.write_all(b"hello").await.expect("write");
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).await.expect("read back");
        assert_eq!(&buf, b"hello");
        assert!(
            t0.elapsed() >= Duration::from_millis(40),
            "{:?}",
            t0.elapsed()
        );
        stop.cancel();
    }
}
