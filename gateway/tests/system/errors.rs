//! Acceptance 3: bad input gets a clear error and hurts nobody else.

use crate::common::*;
use bandsync_client::{ClientError, as_error};
use bandsync_nats::{Command, ErrorCode, ServerMsg};

async fn expect_error(c: &mut bandsync_client::Connection, code: ErrorCode) -> String {
    let msg = c
        .wait_for(WAIT, |m| matches!(m, ServerMsg::Error(_)))
        .await
        .expect("an error reply");
    let err = as_error(&msg).expect("error");
    assert_eq!(err.code, code, "got {}: {}", err.code.as_str(), err.message);
    assert!(!err.message.is_empty());
    err.message.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_commands_and_bad_input_get_clear_errors() {
    let stack = Stack::start(Knobs::default()).await;
    let (mut leader, mut followers) = band(&stack, 0, &[1, 1]).await;
    let seq_before = leader.state.seq;
    let tempo_before = leader.state.timeline.latest().tempo_bpm;

    // Refused by the session's owner.
    let f = &mut followers[0];
    f.send(&Command::Tempo { bpm: 90.0 }, Some("c1"))
        .await
        .expect("send");
    let msg = f
        .wait_for(WAIT, |m| matches!(m, ServerMsg::Error(_)))
        .await
        .expect("reply");
    let err = as_error(&msg).expect("error");
    assert_eq!(
        (err.code, err.id.as_deref()),
        (ErrorCode::NotLeader, Some("c1"))
    );
    // Refused by the gateway.
    f.send_raw("{not json".into()).await.expect("send");
    expect_error(f, ErrorCode::BadJson).await;
    f.send_raw(r#"{"type":"moonwalk"}"#.into())
        .await
        .expect("send");
    expect_error(f, ErrorCode::UnknownType).await;
    f.send_raw(r#"{"type":"hello","name":"x","conn":"gw/1"}"#.into())
        .await
        .expect("send");
    expect_error(f, ErrorCode::UnknownType).await;
    // A barrier: a valid command from the same member takes the same way to
    // the owner, after the refused one. Had the tempo been applied, its event
    // would come first and this one would not be the next seq.
    f.send(&Command::RequestLeadership, None)
        .await
        .expect("send");
    let (event, _) = event_of_kind(f, "leadership_requested").await;
    assert_eq!(
        event.seq,
        seq_before + 1,
        "only the follower's valid command changed the session"
    );
    assert_eq!(event.state.timeline.latest().tempo_bpm, tempo_before);

    leader
        .send_raw(r#"{"type":"tempo","bpm":500}"#.into())
        .await
        .expect("send");
    let message = expect_error(&mut leader, ErrorCode::Invalid).await;
    assert!(message.contains("bpm"), "{message}");
    leader
        .send_raw(r#"{"type":"tempo","bpm":19}"#.into())
        .await
        .expect("send");
    expect_error(&mut leader, ErrorCode::Invalid).await;
    leader
        .send_raw(r#"{"type":"seek","beat":-1}"#.into())
        .await
        .expect("send");
    expect_error(&mut leader, ErrorCode::Invalid).await;
    // The same barrier for the leader's refused values.
    leader
        .send(&Command::Tempo { bpm: 101.0 }, None)
        .await
        .expect("send");
    let (event, _) = event_of_kind(&mut leader, "tempo").await;
    assert_eq!(
        event.seq,
        seq_before + 2,
        "only the leader's valid command changed the session"
    );
    assert_eq!(event.state.timeline.latest().tempo_bpm, 101.0);

    // Every connection is still usable.
    leader
        .sync_clock(1)
        .await
        .expect("leader still answers pings");
    followers[0]
        .sync_clock(1)
        .await
        .expect("follower still answers pings");

    // An over-size frame closes only that connection, with a reason.
    let big = format!(
        r#"{{"type":"tempo","bpm":100,"pad":"{}"}}"#,
        "x".repeat(8_192)
    );
    followers[1].send_raw(big).await.expect("send");
    let closed = loop {
        match followers[1].next_within(WAIT).await {
            Err(ClientError::Closed(frame)) => break frame,
            Err(e) => panic!("expected a close, got {e}"),
            Ok(ServerMsg::Error(e)) => assert_eq!(e.code, ErrorCode::TooLarge),
            Ok(_) => {}
        }
    };
    let frame = closed.expect("a close frame with a reason");
    assert_eq!(frame.reason.as_str(), "too_large");

    // The others carry on.
    leader
        .send(&Command::Tempo { bpm: 102.0 }, None)
        .await
        .expect("send");
    followers[0]
        .wait_until(WAIT, |s| s.timeline.latest().tempo_bpm == 102.0)
        .await
        .expect("the other follower gets the leader's next tempo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_errors_are_specific() {
    let stack = Stack::start(Knobs {
        max_members: 2,
        gateways: 1,
        ..Knobs::default()
    })
    .await;
    let api = stack.api(0);
    let refused = |r: Result<bandsync_client::Joined, bandsync_client::ApiError>| match r {
        Err(bandsync_client::ApiError::Refused { status, code, .. }) => (status, code),
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(
        refused(api.join("ZZZZZZ", "Ann").await),
        (404, "unknown_session".into())
    );
    assert_eq!(
        refused(api.join("12", "Ann").await),
        (400, "invalid".into())
    );
    assert_eq!(refused(api.create("   ").await), (400, "invalid".into()));
    let lead = api.create("Lead").await.expect("create");
    let b = api
        .join(lead.code.as_str(), "B")
        .await
        .expect("second member");
    let _lead_conn = stack.connect(0, &lead).await;
    let _b_conn = stack.connect(0, &b).await;
    assert_eq!(
        refused(api.join(&lead.code.as_str().to_lowercase(), "C").await),
        (409, "session_full".into())
    );
    // A bad token is told why on the socket (browsers cannot read an upgrade's HTTP status).
    let err = bandsync_client::Connection::connect(&stack.base(0), "forged.token")
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("unauthorized"), "{err}");
}
