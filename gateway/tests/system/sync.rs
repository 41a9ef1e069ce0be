//! Acceptance 1: one timeline across two gateways.

use crate::common::*;
use bandsync_nats::{Change, Command, Micros, now_us};

/// The largest gap, in µs of music, between two views of the position at the same instants.
fn max_divergence_us(
    a: &bandsync_client::Connection,
    b: &bandsync_client::Connection,
    from: Micros,
    bpm: f64,
) -> f64 {
    (0..50)
        .map(|i| from + i * 20_000)
        .map(|t| (a.position_at(t) - b.position_at(t)).abs() * 60e6 / bpm)
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
        for f in followers.iter_mut() {
            let (event, _) = event_of_kind(f, kind).await;
            let received = now_us();
            assert_eq!(event.seq, leader_event.seq, "everyone sees the same change");
            assert!(
                received < effective,
                "{kind}: follower heard of it {} µs after it took effect",
                received - effective
            );
            let bpm = f.timeline.at(effective).tempo_bpm;
            let gap = max_divergence_us(&leader, f, effective - 100_000, bpm);
            assert!(
                gap <= 1_000.0,
                "{kind}: follower is {gap} µs away from the leader"
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
    match *change {
        Change::Tempo { at, .. }
        | Change::Meter { at, .. }
        | Change::Play { at, .. }
        | Change::Pause { at, .. }
        | Change::Stop { at }
        | Change::Seek { at, .. } => at,
        ref other => panic!("not a timeline change: {other:?}"),
    }
}

/// Measures what the issue asks for: command → all followers latency across
/// two gateways, and the clock-sync error on loopback (the true offset is 0,
/// every process shares this machine's clock). Prints the figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_and_clock_sync_figures() {
    let stack = Stack::start(Knobs::default()).await;
    let (mut leader, mut followers) = band(&stack, 0, &[0, 1, 1, 1, 0]).await;
    let mut latencies = Vec::new();
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
        let mut slowest = 0;
        for f in followers.iter_mut() {
            event_of_kind(f, "tempo").await;
            slowest = slowest.max(now_us() - sent);
        }
        event_of_kind(&mut leader, "tempo").await;
        latencies.push(slowest);
    }
    latencies.sort_unstable();
    let mut offsets: Vec<i64> = Vec::new();
    for f in followers.iter_mut() {
        f.sync_clock(16).await.expect("sync");
        offsets.push(f.clock.offset().abs());
    }
    offsets.sort_unstable();
    println!(
        "command→all followers (5 followers, 2 gateways, 40 commands): p50 {} µs, p99 {} µs, max {} µs",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0)
    );
    println!(
        "clock-sync |offset error| on loopback: max {} µs over {} clients",
        offsets.last().copied().unwrap_or(0),
        offsets.len()
    );
    assert!(latencies.iter().all(|&l| l > 0));
    // A loopback estimate off by more than a millisecond means the sync is broken.
    assert!(
        offsets.iter().all(|&o| o < 1_000),
        "clock offsets {offsets:?}"
    );
}
