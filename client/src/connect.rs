//! Opening the WebSocket: from a chosen source address (so one machine can
//! hold more than the ~28k sockets one loopback address allows towards one
//! gateway), with small buffers when thousands of sockets share a process, and
//! again with backoff when a gateway goes away.

use crate::{ClientError, Connection, ws_request};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Default wait for the welcome after the upgrade.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// Read buffer of a light socket: a tick is ~300 bytes and an event a few KB;
/// larger messages still arrive whole, the buffer only sets the read chunk.
const LIGHT_READ_BUFFER: usize = 4096;

/// How to open a connection. The default is what `Connection::connect` does.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Local address to connect from (e.g. one of 127.0.0.0/8); the port is the kernel's choice.
    pub local_ip: Option<IpAddr>,
    /// Small read/write buffers (4 KiB read, unbuffered writes) instead of
    /// tungstenite's 128 KiB each: for load generators holding thousands of sockets.
    pub light: bool,
    /// How long to wait for the welcome (default 10 s).
    pub welcome_timeout: Option<Duration>,
}

impl ConnectOptions {
    pub(crate) fn welcome_timeout(&self) -> Duration {
        self.welcome_timeout.unwrap_or(WELCOME_TIMEOUT)
    }

    fn ws_config(&self) -> Option<WebSocketConfig> {
        self.light.then(|| {
            WebSocketConfig::default()
                .read_buffer_size(LIGHT_READ_BUFFER)
                .write_buffer_size(0)
        })
    }
}

/// Retry schedule: `first`, doubling up to `max`, each wait jittered by up to
/// half of itself so a crowd of clients does not come back in step.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    /// Connection attempts in all (at least one).
    pub attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            first: Duration::from_millis(100),
            max: Duration::from_secs(5),
            attempts: 8,
        }
    }
}

impl Backoff {
    /// The wait before attempt `n + 1` (n ≥ 1), with jitter from `seed`.
    pub fn delay(&self, n: u32, seed: u64) -> Duration {
        let base = self
            .first
            .saturating_mul(1u32 << n.saturating_sub(1).min(16))
            .min(self.max);
        let half = u64::try_from(base.as_micros() / 2)
            .unwrap_or(u64::MAX)
            .max(1);
        base / 2 + Duration::from_micros(splitmix(seed) % half)
    }
}

fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub(crate) async fn open(
    base: &str,
    token: &str,
    options: &ConnectOptions,
) -> Result<WebSocketStream<MaybeTlsStream<TcpStream>>, ClientError> {
    let authority = base
        .trim_end_matches('/')
        .strip_prefix("http://")
        .ok_or_else(|| ClientError::BadAddress(base.to_owned()))?;
    let addr = tokio::net::lookup_host(authority)
        .await?
        .next()
        .ok_or_else(|| ClientError::BadAddress(base.to_owned()))?;
    let stream = tcp_connect(addr, options.local_ip).await?;
    let (ws, _) = tokio_tungstenite::client_async_with_config(
        ws_request(base, token)?,
        MaybeTlsStream::Plain(stream),
        options.ws_config(),
    )
    .await?;
    Ok(ws)
}

/// A TCP connection to `addr`, from `local` if given, without Nagle's delay.
pub async fn tcp_connect(addr: SocketAddr, local: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = local {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl Connection {
    /// Connects to the first of `bases` that answers, rotating through them with
    /// `backoff` between attempts: what a member does when its gateway goes
    /// away. The token is the same, so the member is the same. A server that
    /// refuses the token (an error instead of the welcome) is not retried.
    pub async fn connect_retrying(
        bases: &[String],
        token: &str,
        options: &ConnectOptions,
        backoff: Backoff,
    ) -> Result<Self, ClientError> {
        let mut last = ClientError::BadAddress(String::from("no gateway given"));
        let seed = bandsync_protocol::now_us().unsigned_abs();
        for attempt in 0..backoff.attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(backoff.delay(attempt, seed ^ u64::from(attempt))).await;
            }
            let Some(base) = bases.get(attempt as usize % bases.len().max(1)) else {
                break;
            };
            match Self::connect_with(base, token, options).await {
                Ok(c) => return Ok(c),
                Err(e @ ClientError::NoWelcome(_)) => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let b = Backoff {
            first: Duration::from_millis(100),
            max: Duration::from_millis(800),
            attempts: 10,
        };
        for seed in 0..50 {
            for (n, base_ms) in [(1, 100), (2, 200), (3, 400), (4, 800), (9, 800)] {
                let d = b.delay(n, seed);
                let base = Duration::from_millis(base_ms);
                assert!(d >= base / 2 && d <= base, "attempt {n}: {d:?}");
            }
        }
        assert_ne!(b.delay(3, 1), b.delay(3, 2), "jitter varies with the seed");
    }

    #[tokio::test]
    async fn binds_the_source_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let local: IpAddr = "127.0.0.7".parse().expect("ip");
        let (client, accepted) = tokio::join!(tcp_connect(addr, Some(local)), listener.accept());
        let client = client.expect("connects");
        let (_, peer) = accepted.expect("accepts");
        assert_eq!(peer.ip(), local);
        assert_eq!(client.local_addr().expect("local").ip(), local);
    }

    #[tokio::test]
    async fn retrying_gives_up_after_the_attempts() {
        let b = Backoff {
            first: Duration::from_millis(1),
            max: Duration::from_millis(2),
            attempts: 3,
        };
        // Nothing listens on port 1.
        let bases = vec![String::from("http://127.0.0.1:1")];
        let r = Connection::connect_retrying(&bases, "t", &ConnectOptions::default(), b).await;
        assert!(matches!(r, Err(ClientError::Io(_))), "{:?}", r.err());
    }
}
