//! A member never hurts their own band: however often a member connects, the
//! band holds one socket of theirs (a new one replaces the old, as a reload
//! does), and a member connecting in a loop is held back.

use crate::common::*;
use bandsync_client::{ClientError, Connection, as_error};
use bandsync_nats::{Change, ErrorCode, ServerMsg};
use std::time::Duration;

/// What ended a connection: the error code it was told, then the close reason.
async fn ending(c: &mut Connection) -> (Option<ErrorCode>, Option<String>) {
    let mut code = None;
    loop {
        match c.next_within(WAIT).await {
            Ok(msg) => {
                if let Some(e) = as_error(&msg) {
                    code = Some(e.code);
                }
            }
            Err(ClientError::Closed(frame)) => {
                return (code, frame.map(|f| f.reason.to_string()));
            }
            Err(e) => panic!("expected a close, got {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_has_one_live_connection_and_cannot_flood_the_band() {
    let stack = Stack::start(Knobs {
        gateways: 1,
        ..Knobs::default()
    })
    .await;
    let lead = stack.api(0).create("Leader").await.expect("create");
    let mut leader = stack.connect(0, &lead).await;
    let joined = stack
        .api(0)
        .join(lead.code.as_str(), "Drummer")
        .await
        .expect("join");
    let mut first = stack.connect(0, &joined).await;

    // The same member again (another tab): the first connection is closed.
    let _second = stack.connect(0, &joined).await;
    let (code, reason) = ending(&mut first).await;
    assert_eq!(code, Some(ErrorCode::Replaced), "told why");
    assert_eq!(reason.as_deref(), Some("replaced"));

    // A member reconnecting in a loop: past the allowance (3 per 10 s, two
    // used above) the first refusal is said on the socket, where a browser can
    // read it, and the rest are answered 429 before any upgrade, slowly. Eight
    // attempts end well inside the window (six slow refusals, about 6 s).
    let (mut told, mut refused, mut admitted) = (0, 0, Vec::new());
    for _ in 0..8 {
        let started = std::time::Instant::now();
        match Connection::connect(&stack.base(0), &joined.token).await {
            Ok(c) => admitted.push(c),
            Err(ClientError::NoWelcome(why)) if why.contains("rate_limited") => told += 1,
            Err(ClientError::WebSocket(tungstenite::Error::Http(r))) if r.status() == 429 => {
                assert!(
                    started.elapsed() >= Duration::from_millis(900),
                    "a 429 is answered slowly: {:?}",
                    started.elapsed()
                );
                refused += 1;
            }
            Err(e) => panic!("neither admitted nor refused as too often: {e}"),
        }
    }
    assert_eq!(
        (admitted.len(), told, refused),
        (1, 1, 6),
        "(admitted, told on the socket, refused before the upgrade)"
    );

    // The leader stayed connected throughout, never kicked, and heard no more
    // than one member_connected per admitted connection.
    let mut connected_events = 0;
    loop {
        match leader.next_within(Duration::from_secs(2)).await {
            Ok(ServerMsg::Event(e)) => {
                connected_events += e
                    .changes
                    .iter()
                    .filter(|c| matches!(c, Change::MemberConnected { member } if *member == joined.member))
                    .count();
            }
            Ok(msg) => assert!(as_error(&msg).is_none(), "the leader got {msg:?}"),
            Err(ClientError::Timeout) => break,
            Err(e) => panic!("the leader's connection failed: {e}"),
        }
    }
    assert!(
        connected_events <= 3,
        "at most one event per admitted connection: {connected_events}"
    );
    assert!(
        leader
            .state
            .member(&lead.member)
            .is_some_and(|m| m.connected)
    );
}

/// Another gateway too: the member's older socket is closed wherever it is,
/// and their new one, elsewhere, stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_connecting_on_another_gateway_replaces_the_older_socket() {
    let stack = Stack::start(Knobs::default()).await;
    let lead = stack.api(0).create("Leader").await.expect("create");
    let mut leader = stack.connect(0, &lead).await;
    let joined = stack
        .api(0)
        .join(lead.code.as_str(), "Keys")
        .await
        .expect("join");
    let mut first = stack.connect(0, &joined).await;
    let mut second = stack.connect(1, &joined).await;
    let (code, reason) = ending(&mut first).await;
    assert_eq!(code, Some(ErrorCode::Replaced), "told why");
    assert_eq!(reason.as_deref(), Some("replaced"));
    // The new socket stays, and the band sees the member connected.
    second
        .sync_clock(2)
        .await
        .expect("the new connection answers");
    let me = joined.member.clone();
    leader
        .wait_until(WAIT, |s| s.member(&me).is_some_and(|m| m.connected))
        .await
        .expect("connected");
    // And it still answers once the band has heard of it.
    second
        .sync_clock(1)
        .await
        .expect("the new connection is live");
}
