//! What a stranger's browser may do: open `/ws` only from the gateway's own
//! pages, and find every page marked against framing, sniffing, foreign
//! scripts and referrer leaks.

use crate::common::*;
use bandsync_testkit::http_get;
use tokio_tungstenite::tungstenite;

/// The upgrade's answer: 101 when the socket opened, else the refusal's status.
async fn upgrade_status(base: &str, token: &str, origin: Option<&str>) -> u16 {
    let headers: Vec<(&str, &str)> = origin.map(|o| ("origin", o)).into_iter().collect();
    match upgrade_with(base, token, &headers).await {
        Ok(_) => 101,
        Err((status, _)) => status,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_gateways_own_pages_open_a_socket() {
    let stack = Stack::start(Knobs::default()).await;
    let base = stack.base(0);
    let lead = stack.api(0).create("Leader").await.expect("create");
    // The page's origin is the gateway's own address.
    assert_eq!(upgrade_status(&base, &lead.token, Some(&base)).await, 101);
    assert_eq!(
        upgrade_status(&base, &lead.token, None).await,
        101,
        "not a browser: the token decides"
    );
    for foreign in ["https://evil.example", "null"] {
        assert_eq!(
            upgrade_status(&base, &lead.token, Some(foreign)).await,
            403,
            "a page of {foreign}"
        );
    }
    let metrics = http_get(&format!("{}/metrics", stack.ops_base(0)))
        .await
        .expect("metrics");
    let refused = bandsync_testkit::metric(&metrics.body, "bandsync_gateway_origins_refused_total")
        .expect("the refusals are counted");
    assert_eq!(refused, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_is_marked_for_the_browser() {
    let stack = Stack::start(Knobs {
        gateways: 1,
        ..Knobs::default()
    })
    .await;
    for path in ["/", "/js/app.js", "/js/timeline.js", "/style.css"] {
        let page = http_get(&format!("{}{path}", stack.base(0)))
            .await
            .expect("the page");
        assert_eq!(page.status, 200, "{path}");
        for expected in [
            "content-security-policy: default-src 'self'; script-src 'self';",
            "frame-ancestors 'none'",
            "x-content-type-options: nosniff",
            "x-frame-options: deny",
            "referrer-policy: no-referrer",
        ] {
            assert!(
                page.headers.to_ascii_lowercase().contains(expected),
                "{path} lacks {expected:?}: {}",
                page.headers
            );
        }
    }
}

/// `POST /api/join` as a client behind a proxy at `from`: (status, headers, body).
async fn join_from(base: &str, from: &str, code: &str) -> (u16, String, serde_json::Value) {
    let body = serde_json::json!({ "code": code, "name": "Guesser" });
    post_from(base, "/api/join", from, &body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_guessing_join_codes_is_held_back_and_nobody_else() {
    let stack = Stack::start(Knobs {
        gateways: 1,
        ..Knobs::default()
    })
    .await;
    let base = stack.base(0);
    let lead = stack.api(0).create("Leader").await.expect("create");
    let guesser = "203.0.113.7";
    // A code nobody has: the band's own code with its letters turned round.
    let wrong: String = lead.code.as_str().chars().rev().collect();
    let wrong = if wrong == lead.code.as_str() {
        "ZZZZZZ".to_owned()
    } else {
        wrong
    };
    for i in 0..bandsync_gateway::guesses::FAILURES_PER_WINDOW {
        let (status, _, body) = join_from(&base, guesser, &wrong).await;
        assert_eq!(status, 404, "wrong guess {i}: {body}");
    }
    let (status, head, body) = join_from(&base, guesser, &wrong).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "rate_limited");
    let retry = body["retry_after_secs"].as_u64().expect("a retry time");
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(head.contains(&format!("retry-after: {retry}")), "{head}");
    let (status, _, _) = join_from(&base, guesser, lead.code.as_str()).await;
    assert_eq!(
        status, 429,
        "even the right code, from that address, this minute"
    );

    // Another client (another address behind the same proxy) joins as usual.
    let (status, _, body) = join_from(&base, "198.51.100.1", lead.code.as_str()).await;
    assert_eq!(status, 200, "{body}");
}

/// Errors are JSON with a code everywhere: a socket opened without a token,
/// and a body past the limit (413 `too_large`, not 400).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_json_with_their_own_status() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = Stack::start(Knobs {
        gateways: 1,
        ..Knobs::default()
    })
    .await;
    let base = stack.base(0);
    let url = base.replace("http://", "ws://") + "/ws";
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 401);
            let body: serde_json::Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default())
                    .expect("a JSON body");
            assert_eq!(body["code"], "unauthorized", "{body}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    let authority = base
        .strip_prefix("http://")
        .expect("an http base")
        .to_owned();
    let tcp = tokio::net::TcpStream::connect(&authority)
        .await
        .expect("connects");
    let (mut rx, mut tx) = tcp.into_split();
    // 10 MB, past the 2 MB body limit: written in the background (the server
    // may answer and stop reading before the end).
    const BODY: usize = 10 << 20;
    tokio::spawn(async move {
        let head = format!(
            "POST /api/join HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
             Content-Length: {BODY}\r\nConnection: close\r\n\r\n"
        );
        let _ = tx.write_all(head.as_bytes()).await;
        let _ = tx.write_all(&vec![b' '; BODY]).await;
    });
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(Ok(n)) =
        tokio::time::timeout(std::time::Duration::from_secs(5), rx.read(&mut chunk)).await
    {
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&chunk[..n]);
        if String::from_utf8_lossy(&raw).contains('}') {
            break;
        }
    }
    let answer = String::from_utf8_lossy(&raw).into_owned();
    let (status_line, rest) = answer.split_once("\r\n").expect("an answer");
    assert!(status_line.contains(" 413 "), "{status_line}");
    let body = rest
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    assert!(body.contains("\"too_large\""), "{body}");
}

/// What members are sent holds nothing of the bus's inner workings: not the
/// connections (gateway ids and counters) in member lists, nor the command
/// stream's position, which counts every session's commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_sent_no_internals() {
    use futures::StreamExt;
    let stack = Stack::start(Knobs {
        gateways: 1,
        ..Knobs::default()
    })
    .await;
    let lead = stack.api(0).create("Leader").await.expect("create");
    let mut leader = stack.connect(0, &lead).await;
    // Activity, so that the stream's position is past zero.
    let before = leader.state.seq;
    leader
        .send(&bandsync_nats::Command::Tempo { bpm: 99.0 }, None)
        .await
        .expect("tempo");
    leader
        .wait_until(WAIT, |s| s.seq > before)
        .await
        .expect("tempo applied");

    let joined = stack
        .api(0)
        .join(lead.code.as_str(), "Ben")
        .await
        .expect("join");
    let request = bandsync_client::ws_request(&stack.base(0), &joined.token).expect("request");
    let (mut raw, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade");
    let mut texts = Vec::new();
    // The welcome (its state was written with the connections and the stream
    // position in it) and the event announcing this member, with the members.
    while !texts
        .iter()
        .any(|t: &String| t.contains(r#""type":"event""#) && t.contains(r#""members":["#))
    {
        let msg = tokio::time::timeout(WAIT, raw.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("a frame");
        if let tungstenite::Message::Text(t) = msg {
            texts.push(t.to_string());
        }
    }
    assert!(texts[0].starts_with(r#"{"type":"welcome""#), "{}", texts[0]);
    for text in &texts {
        for internal in [r#""conn""#, "last_cmd_seq"] {
            assert!(!text.contains(internal), "{internal} sent: {text}");
        }
    }
}
