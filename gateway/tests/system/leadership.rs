//! Acceptance 4 and 5: reconnects keep identity; leadership survives the leader leaving.

use crate::common::*;
use bandsync_nats::state::LeaderReason;
use bandsync_nats::{Change, Command, ServerMsg};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_with_the_same_token_is_the_same_member() {
    let stack = Stack::start(Knobs::default()).await;
    let api = stack.api(0);
    let lead = api.create("Lead").await.expect("create");
    let joined = api.join(lead.code.as_str(), "Bea").await.expect("join");
    let mut leader = stack.connect(0, &lead).await;
    let first = stack.connect(0, &joined).await;
    leader
        .send(&Command::Tempo { bpm: 87.0 }, None)
        .await
        .expect("send");
    event_of_kind(&mut leader, "tempo").await;
    first.close().await;
    // Back through the other gateway.
    let again = stack.connect(1, &joined).await;
    assert_eq!(again.member, joined.member);
    assert_eq!(again.state.members.len(), 2, "no duplicate member");
    assert_eq!(
        again.state.timeline.latest().tempo_bpm,
        87.0,
        "current state on reconnect"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_leaving_keeps_the_music_and_passes_leadership() {
    let stack = Stack::start(Knobs {
        leader_grace_ms: 1_000,
        ..Knobs::default()
    })
    .await;
    let api = stack.api(0);
    let lead = api.create("Lead").await.expect("create");
    let mut leader = stack.connect(0, &lead).await;
    let first = api.join(lead.code.as_str(), "First").await.expect("join");
    let mut a = stack.connect(1, &first).await;
    let second = api.join(lead.code.as_str(), "Second").await.expect("join");
    let mut b = stack.connect(1, &second).await;
    leader
        .send(&Command::Play { count_in_bars: 0 }, None)
        .await
        .expect("play");
    event_of_kind(&mut a, "play").await;
    leader.close().await;

    let (event, _) = event_of_kind(&mut a, "member_disconnected").await;
    assert!(
        event.state.timeline.latest().playing,
        "the music keeps going"
    );
    // Ticks keep flowing to followers during the grace period.
    a.wait_for(WAIT, |m| matches!(m, ServerMsg::Tick(_)))
        .await
        .expect("ticks continue");
    let (event, change) = event_of_kind(&mut a, "leader_changed").await;
    assert_eq!(
        change,
        Change::LeaderChanged {
            from: Some(lead.member.clone()),
            to: first.member.clone(),
            reason: LeaderReason::Grace
        },
        "the longest-present member leads"
    );
    assert!(event.state.timeline.latest().playing);

    // The old leader returns as a follower…
    let mut back = stack.connect(0, &lead).await;
    assert!(!back.state.is_leader(&lead.member));
    back.send(&Command::Pause, None).await.expect("send");
    let msg = back
        .wait_for(WAIT, |m| matches!(m, ServerMsg::Error(_)))
        .await
        .expect("refused");
    assert!(matches!(msg, ServerMsg::Error(e) if e.code == bandsync_nats::ErrorCode::NotLeader));
    // …and can be handed leadership back.
    a.send(
        &Command::HandLeadership {
            to: lead.member.clone(),
        },
        None,
    )
    .await
    .expect("hand");
    let (event, _) = event_of_kind(&mut back, "leader_changed").await;
    assert!(event.state.is_leader(&lead.member));
    back.send(&Command::Pause, None).await.expect("send");
    event_of_kind(&mut b, "pause").await;
}

/// A follower's leader-only commands are refused by its own gateway, with
/// the owner's words, and never reach the bus; once leadership is handed to
/// it, the same gateway lets its commands through at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followers_leader_only_commands_are_refused_at_its_gateway() {
    let stack = Stack::start(Knobs::default()).await;
    let (mut leader, mut followers) = band(&stack, 0, &[1]).await;
    let follower = &mut followers[0];
    let before = stack.commands_in_stream().await;
    for i in 0..5 {
        let id = format!("steer-{i}");
        follower
            .send(
                &Command::Tempo {
                    bpm: 100.0 + f64::from(i),
                },
                Some(&id),
            )
            .await
            .expect("send");
        let refused = follower
            .wait_for(
                WAIT,
                |m| matches!(m, ServerMsg::Error(e) if e.id.as_deref() == Some(id.as_str())),
            )
            .await
            .expect("an answer");
        let ServerMsg::Error(e) = refused else {
            unreachable!()
        };
        assert_eq!(e.code, bandsync_nats::ErrorCode::NotLeader, "{}", e.message);
    }
    // What may pass does: a message reaches the band.
    follower
        .send(&Command::Message { text: "hi".into() }, None)
        .await
        .expect("send");
    event_of_kind(&mut leader, "message").await;
    assert_eq!(
        stack.commands_in_stream().await,
        before + 1,
        "only the message went over the bus"
    );

    let me = follower.member.clone();
    leader
        .send(&Command::HandLeadership { to: me }, None)
        .await
        .expect("hand over");
    event_of_kind(follower, "leader_changed").await;
    follower
        .send(&Command::Tempo { bpm: 123.0 }, None)
        .await
        .expect("send");
    let (event, _) = event_of_kind(follower, "tempo").await;
    assert_eq!(event.state.timeline.latest().tempo_bpm, 123.0);
}
