//! A gateway that is stopped tells every connected client to reconnect
//! elsewhere before it closes their sockets.

use crate::common::*;
use bandsync_client::{ClientError, Connection};
use bandsync_gateway::SHUTDOWN_GRACE;
use bandsync_nats::{Command, CommandEnvelope, ServerMsg};
use std::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_gateway_tells_its_clients_to_reconnect() {
    let stack = Stack::start(Knobs::default()).await;
    let (mut leader, mut followers) = band(&stack, 0, &[0, 1]).await;
    stack.gateways[0].1.cancel();

    for c in [&mut leader, &mut followers[0]] {
        let msg = c
            .wait_for(WAIT, |m| matches!(m, ServerMsg::Reconnect { .. }))
            .await
            .expect("told to reconnect");
        let ServerMsg::Reconnect { reason } = msg else {
            unreachable!("matched")
        };
        assert!(reason.contains("shutting down"), "{reason}");
        match c.next_within(WAIT).await {
            Err(ClientError::Closed(Some(frame))) => {
                assert_eq!(u16::from(frame.code), 1012, "close code: service restart")
            }
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
    // The other gateway's member stays connected and is told nothing.
    let other = &mut followers[1];
    let msg = other
        .wait_for(std::time::Duration::from_millis(500), |m| {
            matches!(m, ServerMsg::Reconnect { .. })
        })
        .await;
    assert!(
        matches!(msg, Err(ClientError::Timeout)),
        "the other gateway's client: {msg:?}"
    );
}

/// Byes from `gateway`'s connections in the command stream: a connection's
/// task publishes its `bye` as its last step (after its socket closed) and
/// waits for the stream's ack, so each one here is a task that finished.
async fn byes_from(stack: &Stack, gateway: &str) -> usize {
    let mut stream = stack.command_stream().await;
    let last = stream
        .info()
        .await
        .expect("stream info")
        .state
        .last_sequence;
    let mut byes = 0;
    for seq in 1..=last {
        let msg = stream.get_raw_message(seq).await.expect("message");
        let envelope: CommandEnvelope =
            serde_json::from_slice(&msg.payload).expect("a command envelope");
        if matches!(&envelope.command, Command::Bye { conn } if conn.gateway() == gateway) {
            byes += 1;
        }
    }
    byes
}

/// Shutdown waits for the sockets themselves, not a fixed delay: when `wait`
/// returns, every connection was told to reconnect, closed, and said `bye`.
/// Nobody reads the clients while the gateway stops, so each socket's task
/// waits for its client's close frame (a second) before it can finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_gateway_returns_once_its_sockets_are_closed() {
    let mut stack = Stack::start(Knobs {
        gateways: 1,
        ..Knobs::default()
    })
    .await;
    let (leader, followers) = band(&stack, 0, &[0, 0, 0]).await;
    let clients: Vec<Connection> = std::iter::once(leader).chain(followers).collect();
    assert_eq!(byes_from(&stack, "gw-0").await, 0, "nobody has left yet");

    let (gateway, token) = stack.gateways.remove(0);
    token.cancel();
    let started = Instant::now();
    tokio::time::timeout(SHUTDOWN_GRACE * 2, gateway.wait())
        .await
        .expect("the gateway stops")
        .expect("the gateway stops cleanly");
    let took = started.elapsed();
    println!("gateway with {} sockets stopped in {took:?}", clients.len());
    assert_eq!(
        byes_from(&stack, "gw-0").await,
        clients.len(),
        "every connection's task ended before wait returned"
    );
    assert!(
        took < SHUTDOWN_GRACE,
        "stopping took {took:?}, beyond the {SHUTDOWN_GRACE:?} grace"
    );
    for mut c in clients {
        // Events and pongs sent before the shutdown come first.
        let msg = c
            .wait_for(WAIT, |m| matches!(m, ServerMsg::Reconnect { .. }))
            .await
            .expect("told to reconnect");
        assert!(
            matches!(&msg, ServerMsg::Reconnect { reason } if reason.contains("shutting down")),
            "{msg:?}"
        );
        match c.next_within(WAIT).await {
            Err(ClientError::Closed(Some(frame))) => {
                assert_eq!(u16::from(frame.code), 1012, "close code: service restart")
            }
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// A member whose gateway stops moves to another and is never shown away: the
/// stopping gateway's `bye` for it comes after its hello elsewhere, and is stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_moved_by_a_gateway_stop_is_never_shown_away() {
    let stack = Stack::start(Knobs::default()).await;
    let lead = stack.api(1).create("Leader").await.expect("create");
    let mut watcher = stack.connect(1, &lead).await;
    let mover = stack
        .api(0)
        .join(lead.code.as_str(), "Mover")
        .await
        .expect("join");
    let mut moving = stack.connect(0, &mover).await;
    watcher
        .wait_until(WAIT, |s| {
            s.member(&mover.member).is_some_and(|m| m.connected)
        })
        .await
        .expect("the mover is seen");

    stack.gateways[0].1.cancel();
    moving
        .wait_for(WAIT, |m| matches!(m, ServerMsg::Reconnect { .. }))
        .await
        .expect("told to reconnect");
    // As the web client does: close at once, come back a moment later.
    moving.close().await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let _moved = stack.connect(1, &mover).await;
    // Past the moving grace and the old connection's bye.
    let watch_until = Instant::now() + std::time::Duration::from_secs(4);
    while let Some(left) = watch_until.checked_duration_since(Instant::now()) {
        match watcher.next_within(left).await {
            Ok(ServerMsg::Event(event)) => assert!(
                !event.changes.iter().any(|c| matches!(
                    c,
                    bandsync_nats::Change::MemberDisconnected { member, .. } if *member == mover.member
                )),
                "the mover was shown away: {event:?}"
            ),
            Ok(_) => {}
            Err(ClientError::Timeout) => break,
            Err(e) => panic!("the watcher's connection failed: {e}"),
        }
    }
    assert!(
        watcher
            .state
            .member(&mover.member)
            .is_some_and(|m| m.connected),
        "the mover is connected"
    );
}
