//! Connection quality through the real stack: a member's report on one
//! gateway shows in the member list on the other; a report that did not move
//! enough makes no event, and goes no further than its gateway.

use crate::common::*;
use bandsync_client::Connection;
use bandsync_nats::Command;
use bandsync_nats::state::Change;

/// A message from `from` that takes the same way to the owner as the reports
/// before it: its event, once `to` has it, comes after whatever they caused.
async fn barrier(from: &mut Connection, to: &mut Connection) -> bandsync_nats::EventMsg {
    let text = Command::Message {
        text: "barrier".into(),
    };
    from.send(&text, None).await.expect("send");
    event_of_kind(to, "message").await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_shows_in_every_member_list_and_a_steady_one_makes_no_event() {
    let stack = Stack::start(Knobs::default()).await;
    let (mut leader, mut followers) = band(&stack, 0, &[1]).await;
    let f = &mut followers[0];
    let me = f.member.clone();
    let report = |rtt_ms, clock_error_ms| Command::Report {
        rtt_ms,
        clock_error_ms,
    };
    f.send(&report(42.5, 1.2), None).await.expect("send");
    let (event, change) = event_of_kind(&mut leader, "member_quality").await;
    assert_eq!(change, Change::MemberQuality { member: me.clone() });
    let shown = event
        .members
        .as_ref()
        .and_then(|ms| ms.iter().find(|m| m.id == me))
        .expect("the event carries the members");
    assert_eq!(
        (shown.rtt_ms, shown.clock_error_ms),
        (Some(42.5), Some(1.2))
    );
    let seq = event.seq;

    // Steady (and too soon): nothing. The message after it, which takes the
    // same way to the owner, is the very next event.
    f.send(&report(44.0, 1.5), None).await.expect("send");
    let next = barrier(f, &mut leader).await;
    assert_eq!(next.seq, seq + 1, "the steady report made no event");
    assert_eq!(
        leader.state.member(&me).and_then(|m| m.rtt_ms),
        Some(42.5),
        "the shown value stays"
    );
}

/// A browser reports every 5 s; a steady member's reports are held at its
/// gateway and never cost the bus or the store a command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_members_reports_stop_at_its_gateway() {
    let stack = Stack::start(Knobs::default()).await;
    let (mut leader, mut followers) = band(&stack, 0, &[1]).await;
    let f = &mut followers[0];
    let before = stack.commands_in_stream().await;
    let report = |rtt_ms| Command::Report {
        rtt_ms,
        clock_error_ms: 1.0,
    };
    f.send(&report(40.0), None).await.expect("send");
    event_of_kind(&mut leader, "member_quality").await;
    for rtt in [41.0, 39.5, 40.5, 42.0] {
        f.send(&report(rtt), None).await.expect("send");
    }
    // Once the barrier's event is out, whatever of the reports went on is in
    // the stream.
    barrier(f, &mut leader).await;
    assert_eq!(
        stack.commands_in_stream().await - before,
        2,
        "the first report and the message"
    );
}
