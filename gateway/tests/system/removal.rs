//! The leader decides who is in the band: closing joining keeps newcomers out,
//! and a removed member is disconnected at once, wherever they are connected,
//! and their token stops working.

use crate::common::*;
use bandsync_client::{ApiError, ClientError, Connection};
use bandsync_nats::{Command, ServerMsg};

fn refused_with(result: Result<Connection, ClientError>, code: &str) {
    match result {
        Err(ClientError::NoWelcome(why)) => assert!(why.contains(code), "refused otherwise: {why}"),
        Err(e) => panic!("expected {code}, got {e}"),
        Ok(_) => panic!("expected {code}, got a welcome"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_joining_turns_newcomers_away_and_lets_members_back() {
    let stack = Stack::start(Knobs::default()).await;
    let lead = stack.api(0).create("Leader").await.expect("create");
    let mut leader = stack.connect(0, &lead).await;
    let early = stack
        .api(1)
        .join(lead.code.as_str(), "Early")
        .await
        .expect("join");
    let member = stack
        .api(1)
        .join(lead.code.as_str(), "Member")
        .await
        .expect("join");
    drop(stack.connect(1, &member).await);

    leader
        .send(&Command::Joining { open: false }, None)
        .await
        .expect("close joining");
    leader
        .wait_until(WAIT, |s| s.joining_closed)
        .await
        .expect("joining closed");
    match stack.api(1).join(lead.code.as_str(), "Late").await {
        Err(ApiError::Refused { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (403, "joining_closed"));
        }
        other => panic!("a join went through a closed door: {other:?}"),
    }
    // A token handed out before the door closed, never used: turned away too.
    refused_with(
        Connection::connect(&stack.base(1), &early.token).await,
        "joining_closed",
    );
    // A member already in the band comes back as ever.
    stack.connect(1, &member).await;

    leader
        .send(&Command::Joining { open: true }, None)
        .await
        .expect("open joining");
    leader
        .wait_until(WAIT, |s| !s.joining_closed)
        .await
        .expect("joining open");
    stack
        .api(1)
        .join(lead.code.as_str(), "Late")
        .await
        .expect("joins once open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_is_disconnected_everywhere_and_stays_out() {
    let stack = Stack::start(Knobs::default()).await;
    let lead = stack.api(0).create("Leader").await.expect("create");
    let mut leader = stack.connect(0, &lead).await;
    // The member to remove is on the other gateway; a bystander on each.
    let gone = stack
        .api(1)
        .join(lead.code.as_str(), "Gone")
        .await
        .expect("join");
    let mut removed = stack.connect(1, &gone).await;
    let stays = stack
        .api(1)
        .join(lead.code.as_str(), "Stays")
        .await
        .expect("join");
    let mut bystander = stack.connect(1, &stays).await;
    let n = 3;
    leader
        .wait_until(WAIT, |s| {
            s.members.iter().filter(|m| m.connected).count() == n
        })
        .await
        .expect("all three connected");

    let who = gone.member.clone();
    leader
        .send(
            &Command::RemoveMember {
                member: who.clone(),
            },
            None,
        )
        .await
        .expect("remove");
    // The removed member's socket: an error `removed`, then the close.
    let told = removed
        .wait_for(
            WAIT,
            |m| matches!(m, ServerMsg::Error(e) if e.code.as_str() == "removed"),
        )
        .await;
    assert!(told.is_ok(), "the removed member was not told: {told:?}");
    match removed.next_within(WAIT).await {
        Err(ClientError::Closed(Some(frame))) => assert_eq!(frame.reason.as_str(), "removed"),
        other => panic!("the removed member's socket stayed open: {other:?}"),
    }
    // Everyone else sees them gone, and stays connected.
    for c in [&mut leader, &mut bystander] {
        c.wait_until(WAIT, |s| {
            s.member(&who).is_none() && s.removed.contains(&who)
        })
        .await
        .expect("the member is gone from the list");
    }
    assert!(
        bystander
            .state
            .member(&stays.member)
            .is_some_and(|m| m.connected)
    );

    // Their token is refused from now on, on either gateway.
    for gw in [0, 1] {
        refused_with(
            Connection::connect(&stack.base(gw), &gone.token).await,
            "removed",
        );
    }
}
