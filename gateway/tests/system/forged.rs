//! Issue 12, "The bus trusts everyone": one forged event with a higher `seq`
//! (or epoch), published to a session's subject by any NATS client, made both
//! gateways stop forwarding that session. A gateway's credentials, the most a
//! compromised gateway holds, cannot publish one: the band goes on hearing its
//! owner.

use crate::common::*;
use bandsync_nats::{Command, ServerMsg, Subjects, now_us, shard_of};
use bandsync_testkit::Role;

fn subjects() -> Subjects {
    Subjects::new(bandsync_nats::subjects::DEFAULT_PREFIX).expect("prefix")
}

/// Publishes `forged` on each of `to` as `role`, and returns once the server
/// has taken it all: it handles a connection's messages in order, so once a
/// later request on it is answered, what it took is on its way to the
/// gateways, ahead of any real event a command sent after this brings.
async fn forge(stack: &Stack, role: Role, to: &[String], forged: &str) {
    let forger = stack.nats.connect(role).await;
    for subject in to {
        forger
            .publish(subject.clone(), forged.to_owned().into())
            .await
            .expect("the forger sends it");
    }
    async_nats::jetstream::new(forger)
        .get_stream(subjects().evt_stream())
        .await
        .expect("stream info is allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_forged_with_a_gateways_credentials_reaches_nobody() {
    let stack = Stack::start(Knobs::default()).await;
    // The leader on one gateway, a follower on the other: both gateways carry the band.
    let (mut leader, mut followers) = band(&stack, 0, &[1]).await;
    let session = leader.state.id.clone();
    let subjects = subjects();
    // What stopped the gateways: an owner "newer" than the real one.
    let forged =
        format!(r#"{{"type":"event","session":"{session}","seq":999999999,"epoch":999999999}}"#);
    forge(&stack, Role::Gateway, &[subjects.evt(&session)], &forged).await;
    // Nor a beat from a "newer" owner, which would fence the real one's ticks.
    let shard = shard_of(&session, SHARDS);
    let beat = format!(
        r#"{{"shard":{shard},"seq":{},"epoch":999999999,"server_time":{}}}"#,
        u64::MAX / 2,
        now_us()
    );
    forge(&stack, Role::Gateway, &[subjects.beat(shard)], &beat).await;

    leader
        .send(&Command::Play { count_in_bars: 0 }, None)
        .await
        .expect("send");
    let (event, _) = event_of_kind(&mut leader, "play").await;
    let (heard, _) = event_of_kind(&mut followers[0], "play").await;
    assert_eq!(heard.seq, event.seq, "the follower hears the real change");
    assert!(event.seq < 999_999_999);
    for member in std::iter::once(&mut leader).chain(followers.iter_mut()) {
        member
            .wait_for(WAIT, |m| matches!(m, ServerMsg::Tick(_)))
            .await
            .expect("the owner's ticks still reach every member");
    }
}

/// An event on the beat subject (as a push consumer of the events stream
/// pointed at it would deliver one) is dropped by the gateway, even with the
/// owner's epoch and from a user allowed to publish there: had it been
/// forwarded, its `seq` would have made every member ignore the real events
/// after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_on_the_beat_subject_reaches_nobody() {
    let stack = Stack::start(Knobs::default()).await;
    let (mut leader, mut followers) = band(&stack, 0, &[1]).await;
    let session = leader.state.id.clone();
    // A first change, so that the client knows the owner's epoch.
    leader
        .send(&Command::Tempo { bpm: 100.0 }, None)
        .await
        .expect("send");
    let (tempo, _) = event_of_kind(&mut followers[0], "tempo").await;
    let forged = format!(
        r#"{{"type":"event","session":"{session}","seq":999999999,"epoch":{},"at":0,"changes":[]}}"#,
        tempo.epoch
    );
    let beat = subjects().beat(shard_of(&session, SHARDS));
    forge(&stack, Role::Ticker, &[beat], &forged).await;

    leader
        .send(&Command::Play { count_in_bars: 0 }, None)
        .await
        .expect("send");
    let follower = &mut followers[0];
    loop {
        match follower.next_unfiltered().await {
            Ok((ServerMsg::Event(e), _)) if e.seq == 999_999_999 => {
                panic!("the event sent on the beat subject reached a member")
            }
            Ok((ServerMsg::Event(e), taken)) if e.changes.iter().any(|c| c.kind() == "play") => {
                assert!(taken, "the real play is applied");
                break;
            }
            Ok(_) => {}
            // The forgery is not a whole event: a client handed it cannot read it.
            Err(e) => panic!("the follower got what it cannot read (the forgery?): {e}"),
        }
    }
}
