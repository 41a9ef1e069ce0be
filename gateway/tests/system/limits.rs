//! Per-address limits: one address that asks too much (requests, new
//! sessions, connections, open sockets) is refused `429 rate_limited` with a
//! retry time, and every other address goes on as before.

use crate::common::*;
use bandsync_testkit::{eventually, http_get_with, scrape_metric};
use futures::StreamExt;

/// Limits low enough to reach in a test.
fn low_limits() -> Vec<String> {
    vec![
        "--requests-per-address=20".into(),
        "--connects-per-address=10".into(),
        "--creates-per-address=2".into(),
        "--sockets-per-address=3".into(),
    ]
}

async fn stack() -> Stack {
    let mut stack = Stack::start(Knobs {
        gateways: 0,
        ..Knobs::default()
    })
    .await;
    stack.add_gateway_with("gw-0", &low_limits()).await;
    stack
}

/// A WebSocket upgrade from `from` (behind the trusted proxy): the socket, or
/// the refusal's status and body.
async fn upgrade_from(
    base: &str,
    token: &str,
    from: &str,
) -> Result<Socket, (u16, serde_json::Value)> {
    upgrade_with(base, token, &[("x-forwarded-for", from)]).await
}

fn assert_limited(status: u16, body: &serde_json::Value, words: &str) {
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "rate_limited", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(words), "{body}");
    assert!(
        body["retry_after_secs"].as_u64().is_some_and(|s| s >= 1),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_that_asks_too_much_is_refused_and_nobody_else() {
    let stack = stack().await;
    let base = stack.base(0);
    let ops = stack.ops_base(0);
    let limited = |limit: &str| {
        let url = format!("{ops}/metrics");
        let series = format!("bandsync_gateway_address_limited_total{{limit=\"{limit}\"}}");
        async move { scrape_metric(&url, &series).await }
    };

    // Sessions: two a minute from one address.
    let create = serde_json::json!({ "name": "Leader" });
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let (status, _, body) = post_from(&base, "/api/sessions", "198.51.100.1", &create).await;
        assert_eq!(status, 201, "{body}");
        tokens.push(body["token"].as_str().expect("a token").to_owned());
    }
    let (status, head, body) = post_from(&base, "/api/sessions", "198.51.100.1", &create).await;
    assert_limited(status, &body, "new sessions");
    assert!(head.contains("retry-after:"), "{head}");
    let (status, _, body) = post_from(&base, "/api/sessions", "198.51.100.2", &create).await;
    assert_eq!(status, 201, "another address creates: {body}");
    tokens.push(body["token"].as_str().expect("a token").to_owned());
    assert_eq!(limited("creates").await.expect("counted"), 1.0);

    // Sockets: three open at once from one address.
    let mut open = Vec::new();
    for token in &tokens {
        open.push(
            upgrade_from(&base, token, "198.51.100.3")
                .await
                .expect("under the limit"),
        );
    }
    let lead = stack.api(0).create("Fourth").await.expect("create");
    let (status, body) = upgrade_from(&base, &lead.token, "198.51.100.3")
        .await
        .expect_err("a fourth socket is refused");
    assert_limited(status, &body, "open connections");
    assert!(
        upgrade_from(&base, &lead.token, "198.51.100.4")
            .await
            .is_ok(),
        "another address connects"
    );
    assert_eq!(limited("sockets").await.expect("counted"), 1.0);
    // One closes: its place is free again.
    let mut first = open.remove(0);
    first.close(None).await.expect("close sent");
    while first.next().await.is_some() {}
    eventually(WAIT, "the closed socket's place to come free", || async {
        upgrade_from(&base, &lead.token, "198.51.100.3")
            .await
            .is_ok()
    })
    .await;

    // Connections: ten attempts a minute, refused ones (no token) included.
    for _ in 0..10 {
        let (status, _) = upgrade_from(&base, "", "198.51.100.5")
            .await
            .expect_err("no token, no socket");
        assert_eq!(status, 401);
    }
    let (status, body) = upgrade_from(&base, &lead.token, "198.51.100.5")
        .await
        .expect_err("the eleventh connection in a minute is refused");
    assert_limited(status, &body, "too many connections");
    assert_eq!(limited("connects").await.expect("counted"), 1.0);

    // Requests of any kind: twenty a minute.
    let page = |from: &'static str| {
        let url = format!("{base}/");
        async move {
            http_get_with(&url, &[("X-Forwarded-For", from)])
                .await
                .expect("an answer")
        }
    };
    for _ in 0..20 {
        assert_eq!(page("198.51.100.6").await.status, 200);
    }
    let asked = std::time::Instant::now();
    let refused = page("198.51.100.6").await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    // The refusal is answered after a moment: a loop gets one a second.
    assert!(
        asked.elapsed() >= std::time::Duration::from_millis(900),
        "refused at once ({:?})",
        asked.elapsed()
    );
    assert!(refused.header("retry-after").is_some());
    assert_eq!(page("198.51.100.7").await.status, 200, "another address");
    assert_eq!(limited("requests").await.expect("counted"), 1.0);
}

/// A member sending far more than the message rate is disconnected (every
/// frame costs the gateway a read, allowed or not); the band plays on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_flooding_messages_is_disconnected_and_the_band_plays_on() {
    use bandsync_client::ClientError;
    use bandsync_nats::{Command, ServerMsg};
    let stack = Stack::start(Knobs {
        gateways: 1,
        ..Knobs::default()
    })
    .await;
    let (mut leader, mut followers) = band(&stack, 0, &[0]).await;
    let joined = stack
        .api(0)
        .join(leader.state.code.as_str(), "Flood")
        .await
        .expect("join");
    let mut flood = stack.connect(0, &joined).await;
    let mut sent = 0;
    for _ in 0..1_000 {
        if flood
            .send_raw(r#"{"type":"ping","t0":1}"#.to_owned())
            .await
            .is_err()
        {
            break;
        }
        sent += 1;
    }
    match flood.wait_for(WAIT, |_| false).await {
        Err(ClientError::Closed(Some(frame))) => {
            assert_eq!(
                frame.reason.as_str(),
                "rate_limited",
                "after {sent} messages"
            )
        }
        other => panic!("the flood was not cut off after {sent} messages: {other:?}"),
    }
    leader
        .send(&Command::Play { count_in_bars: 0 }, None)
        .await
        .expect("play");
    let follower = &mut followers[0];
    follower
        .wait_for(WAIT, |m| matches!(m, ServerMsg::Tick(_)))
        .await
        .expect("the band plays on");
    let me = follower.member.clone();
    assert!(leader.state.member(&me).is_some_and(|m| m.connected));
}

/// A flooder is told why and closed. While the gateway reads away the rest of
/// the flood, the band's ticks go on, and none may reach the flooder's socket
/// after its close frame: a browser fails a socket that receives data after
/// the close, without reading the reason. The socket is raw so that nothing
/// answers the close and every byte the gateway writes is seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_follows_the_close_frame_that_ends_a_flood() {
    use bandsync_nats::Command;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = Stack::start(Knobs {
        gateways: 1,
        tick_ms: 20,
        ..Knobs::default()
    })
    .await;
    let (mut leader, _) = band(&stack, 0, &[]).await;
    leader
        .send(&Command::Play { count_in_bars: 0 }, None)
        .await
        .expect("play");
    let joined = stack
        .api(0)
        .join(leader.state.code.as_str(), "Flood")
        .await
        .expect("join");
    let tcp = tokio::net::TcpStream::connect(stack.addr(0))
        .await
        .expect("connect");
    let (mut rx, mut tx) = tcp.into_split();
    let handshake = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: bandsync, bandsync.token.{}\r\n\r\n",
        stack.addr(0),
        joined.token
    );
    tx.write_all(handshake.as_bytes()).await.expect("handshake");
    // Read until the first tick is in: the flooder hears the band.
    let mut bytes = Vec::new();
    let tick = br#"{"type":"tick""#;
    tokio::time::timeout(WAIT, async {
        while !bytes.windows(tick.len()).any(|w| w == tick) {
            assert_ne!(
                rx.read_buf(&mut bytes).await.expect("read"),
                0,
                "closed early"
            );
        }
    })
    .await
    .expect("a tick within the wait");
    // Then everything else it sends, until it closes the TCP connection.
    let reader = tokio::spawn(async move {
        let _ = tokio::time::timeout(WAIT, rx.read_to_end(&mut bytes)).await;
        bytes
    });
    // Masked (with a zero key) as a client's frames must be.
    let ping = br#"{"type":"ping","t0":1}"#;
    let mut frame = vec![0x81, 0x80 | ping.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(ping);
    for _ in 0..1_000 {
        if tx.write_all(&frame).await.is_err() {
            break;
        }
    }
    let bytes = reader.await.expect("the reader");
    let head = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a handshake answer");
    assert!(bytes.starts_with(b"HTTP/1.1 101"), "upgraded");
    let frames = server_frames(&bytes[head + 4..]);
    let close = frames
        .iter()
        .position(|(op, _)| *op == 0x8)
        .expect("a close frame");
    assert_eq!(&frames[close].1[2..], b"rate_limited");
    let texts = |fs: &[(u8, Vec<u8>)]| {
        fs.iter()
            .map(|(_, p)| {
                String::from_utf8_lossy(p)
                    .chars()
                    .take(40)
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
    };
    assert!(
        frames[..close]
            .iter()
            .any(|(_, p)| p.starts_with(br#"{"type":"tick""#)),
        "ticks reached the flooder before: {:?}",
        texts(&frames[..close])
    );
    assert_eq!(
        texts(&frames[close + 1..]),
        Vec::<String>::new(),
        "after the close frame"
    );
}

/// A server's frames (never masked) as (opcode, payload).
fn server_frames(mut rest: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while rest.len() >= 2 {
        let (op, len7) = (rest[0] & 0x0f, (rest[1] & 0x7f) as usize);
        let (len, at) = match len7 {
            126 => (u16::from_be_bytes([rest[2], rest[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(rest[2..10].try_into().expect("8 bytes")) as usize,
                10,
            ),
            n => (n, 2),
        };
        frames.push((op, rest[at..at + len].to_vec()));
        rest = &rest[at + len..];
    }
    frames
}
