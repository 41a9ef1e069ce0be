//! A command sent while the bus cannot take it (its stream has no leader, or
//! the server is gone) waits at the gateway and takes effect, once, when the bus
//! is back; meanwhile the member's socket keeps answering.

use crate::common::*;
use bandsync_client::as_error;
use bandsync_nats::{Command, ServerMsg};
use std::time::Duration;

/// How long the bus stays away: past one publish attempt's time-out (2 s), so
/// only a command that waits and retries survives it.
const OUTAGE: Duration = Duration::from_secs(3);

fn tempo_event(bpm: f64) -> impl FnMut(&ServerMsg) -> bool {
    move |m| matches!(m, ServerMsg::Event(e) if e.changes.iter().any(|c| c.kind() == "tempo") && e.state.timeline.latest().tempo_bpm == bpm)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_sent_while_the_bus_is_away_takes_effect_once_when_it_returns() {
    let mut stack = Stack::start(Knobs::default()).await;
    let (mut leader, mut followers) = band(&stack, 0, &[0]).await;

    stack.nats.kill();
    leader
        .send(&Command::Tempo { bpm: 123.0 }, Some("during-outage"))
        .await
        .expect("send");
    // The socket's task queued it and goes on: a ping is answered at once.
    leader
        .sync_clock(1)
        .await
        .expect("a pong while the command waits");
    tokio::time::sleep(OUTAGE).await;
    stack.nats.restart().await;

    let applied = followers[0]
        .wait_for(Duration::from_secs(20), tempo_event(123.0))
        .await
        .expect("the command takes effect once the bus is back");
    let ServerMsg::Event(applied) = applied else {
        unreachable!("matched an event")
    };
    // Exactly once: the next command's event follows it directly.
    leader
        .send(&Command::Tempo { bpm: 124.0 }, Some("after"))
        .await
        .expect("send");
    let next = followers[0]
        .wait_for(WAIT, tempo_event(124.0))
        .await
        .expect("the next command takes effect");
    let ServerMsg::Event(next) = next else {
        unreachable!("matched an event")
    };
    assert_eq!(
        next.seq,
        applied.seq + 1,
        "nothing applied twice in between"
    );
    // And the leader was never told it failed (a refusal would come before
    // the next command's event).
    let mut refusals = Vec::new();
    let mut is_next = tempo_event(124.0);
    leader
        .wait_for(WAIT, |m| {
            if let Some(e) = as_error(m) {
                refusals.push(format!("{}: {}", e.code.as_str(), e.message));
            }
            is_next(m)
        })
        .await
        .expect("the leader sees the next command's event");
    assert!(refusals.is_empty(), "refused: {refusals:?}");
}
