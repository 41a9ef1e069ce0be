//! A gateway that is stopped tells every connected client to reconnect
//! elsewhere before it closes their sockets.

use crate::common::*;
use bandsync_client::ClientError;
use bandsync_nats::ServerMsg;

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
