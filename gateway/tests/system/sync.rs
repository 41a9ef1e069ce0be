//! Acceptance 1: one timeline across two gateways, held to the protocol's
//! promises: every member hears of a change before it takes effect (the lead
//! time), and computes the same position as the session's owner within the
//! loopback sync-error bound.

use crate::common::*;
use bandsync_client::Connection;
use bandsync_nats::{Change, Command, Micros, Timeline, now_us};
use bandsync_testkit::percentile;

/// Sync error allowed on loopback, where every process reads the same clock
/// (docs/benchmarks.md: "sync error p99 ≤ 1 ms on loopback"); two members
/// then agree within twice this.
const SYNC_ERROR_US: f64 = 1_000.0;

/// The worst gap, in µs of music, between the position `member` computes (its
/// timeline at its own estimate of server time) and the owner's timeline at
/// the true server time, over a second from `from`. On loopback the local clock
/// is the server's. Instants within 10 ms of a segment's start are skipped, so
/// an estimate a little early or late never straddles a stop's or a seek's jump.
fn sync_error_us(member: &Connection, owner: &Timeline, from: Micros) -> f64 {
    (0..50)
        .map(|i| from + i * 20_000)
        .filter(|&t| {
            owner
                .segments()
                .iter()
                .all(|s| (s.anchor_time - t).abs() > 10_000)
        })
        .map(|t| {
            let bpm = owner.at(t).tempo_bpm;
            let computed = member.position_at(member.clock.to_server(t));
            (computed - owner.position(t)).abs() * 60e6 / bpm
        })
        .fold(0.0, f64::max)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_and_followers_on_two_gateways_share_one_timeline() {
    let stack = Stack::start(Knobs::default()).await;
    // Leader on gateway 0; followers on 0, 1 and 1.
    let (mut leader, mut followers) = band(&stack, 0, &[0, 1, 1]).await;

    let script: Vec<(Command, &str)> = vec![
        (Command::Tempo { bpm: 96.0 }, "tempo"),
        (
            Command::Meter {
                beats_per_bar: 3,
                beat_unit: 4,
            },
            "meter",
        ),
        (Command::Play { count_in_bars: 1 }, "play"),
        (Command::Tempo { bpm: 132.0 }, "tempo"),
        (Command::Pause, "pause"),
        (Command::Seek { beat: 24.0 }, "seek"),
        (Command::Play { count_in_bars: 0 }, "play"),
        (Command::Stop, "stop"),
    ];
    for (command, kind) in script {
        leader.send(&command, None).await.expect("send");
        let (leader_event, change) = event_of_kind(&mut leader, kind).await;
        let effective = effective_time(&change);
        let owner = &leader_event.state.timeline;
        for f in followers.iter_mut() {
            let (event, _) = event_of_kind(f, kind).await;
            let received = now_us();
            assert_eq!(event.seq, leader_event.seq, "everyone sees the same change");
            assert!(
                received < effective,
                "{kind}: follower heard of it {} µs after it took effect",
                received - effective
            );
        }
        for (who, member) in std::iter::once(&leader).chain(&followers).enumerate() {
            let error = sync_error_us(member, owner, effective - 100_000);
            assert!(
                error <= SYNC_ERROR_US,
                "{kind}: member {who} is {error:.0} µs of music away from the owner's position"
            );
        }
        // Let the change land (and music play a little) before the next one.
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    }
    let last = leader.timeline.latest();
    assert!(
        !last.playing && last.anchor_beat == 0.0,
        "stopped at the top"
    );
}

fn effective_time(change: &Change) -> Micros {
    change
        .effective_at()
        .filter(|_| !matches!(change, Change::Song { .. }))
        .unwrap_or_else(|| panic!("not a timeline change: {change:?}"))
}

/// Forty tempo changes while playing, to five followers across two gateways
/// (those within one beat land together, on its start): each follower
/// has each change before it takes effect, and every member's computed
/// position stays within the sync-error bound of the owner's. Prints the
/// command → all followers latency and the clock-sync error (figures, not
/// assertions: the promise is the lead time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_every_follower_before_they_take_effect() {
    let stack = Stack::start(Knobs::default()).await;
    let (mut leader, mut followers) = band(&stack, 0, &[0, 1, 1, 1, 0]).await;
    // Playing, so a member's clock error shows in its position.
    leader
        .send(&Command::Play { count_in_bars: 0 }, None)
        .await
        .expect("play");
    for c in std::iter::once(&mut leader).chain(followers.iter_mut()) {
        event_of_kind(c, "play").await;
    }
    let mut latencies = Vec::new();
    let mut worst_error: f64 = 0.0;
    for i in 0..40 {
        // Stay under the gateway's rate limit (20 messages/s).
        tokio::time::sleep(std::time::Duration::from_millis(60)).await;
        let sent = now_us();
        leader
            .send(
                &Command::Tempo {
                    bpm: 100.0 + f64::from(i),
                },
                None,
            )
            .await
            .expect("send");
        let (leader_event, change) = event_of_kind(&mut leader, "tempo").await;
        let effective = effective_time(&change);
        let mut slowest = 0;
        for (n, f) in followers.iter_mut().enumerate() {
            let (event, _) = event_of_kind(f, "tempo").await;
            let received = now_us();
            assert_eq!(event.seq, leader_event.seq, "everyone sees the same change");
            assert!(
                received < effective,
                "tempo #{i}: follower {n} heard of it {} µs after it took effect",
                received - effective
            );
            slowest = slowest.max(received - sent);
        }
        latencies.push(slowest);
        let owner = &leader_event.state.timeline;
        for (who, member) in std::iter::once(&leader).chain(&followers).enumerate() {
            let error = sync_error_us(member, owner, effective - 100_000);
            assert!(
                error <= SYNC_ERROR_US,
                "tempo #{i}: member {who} is {error:.0} µs of music away from the owner's position"
            );
            worst_error = worst_error.max(error);
        }
    }
    latencies.sort_unstable();
    let figure = |p| percentile(&latencies, p).expect("forty commands measured");
    println!(
        "command→all followers (5 followers, 2 gateways, 40 commands): p50 {} µs, p99 {} µs, max {} µs; \
         worst position error {worst_error:.0} µs",
        figure(0.5),
        figure(0.99),
        figure(1.0),
    );
}
