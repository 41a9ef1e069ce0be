//! Acceptance 2: ticks at the configured rate, strictly increasing.

use crate::common::*;
use bandsync_client::ClientError;
use bandsync_nats::{Change, Command, ServerMsg};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_arrive_at_the_configured_rate_with_increasing_seq() {
    let stack = Stack::start(Knobs {
        tick_ms: 50,
        ..Knobs::default()
    })
    .await;
    let (mut leader, mut followers) = band(&stack, 0, &[1]).await;
    leader
        .send(&Command::Play { count_in_bars: 0 }, None)
        .await
        .expect("play");
    event_of_kind(&mut leader, "play").await;
    let follower = &mut followers[0];
    let mut ticks = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        match follower.next_within(Duration::from_millis(500)).await {
            Ok(ServerMsg::Tick(t)) => ticks.push(t),
            Ok(_) | Err(ClientError::Timeout) => {}
            Err(e) => panic!("the follower's socket while playing: {e}"),
        }
    }
    assert!(ticks.len() >= 2, "no ticks");
    for w in ticks.windows(2) {
        assert!(
            w[1].seq > w[0].seq,
            "tick seq must increase strictly: {} then {}",
            w[0].seq,
            w[1].seq
        );
    }
    // 2 s at 50 ms = 40 ticks (the first 150 ms are the lead time).
    let span_us = ticks[ticks.len() - 1].server_time - ticks[0].server_time;
    let rate = (ticks.len() - 1) as f64 / (span_us as f64 / 1e6);
    println!(
        "ticks: {} in {:.2} s = {rate:.1}/s (configured 20/s)",
        ticks.len(),
        span_us as f64 / 1e6
    );
    assert!(
        (14.0..=26.0).contains(&rate),
        "tick rate {rate:.1}/s is far from 20/s"
    );
    let skipped: u64 = ticks.windows(2).map(|w| w[1].seq - w[0].seq - 1).sum();
    assert!(skipped <= 4, "{skipped} tick periods missed on loopback");
    for t in &ticks {
        let pos = t.timeline.position(t.server_time);
        assert!(
            (pos - leader.timeline.position(t.server_time)).abs() < 1e-6,
            "tick timeline matches the session's"
        );
    }
}

/// Ticks are sent while a session plays or is about to (docs/protocol.md):
/// once a pause lands, none is built, and the paused member's socket stays
/// open (a closed one fails here rather than reading as "no ticks").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ticks_while_paused() {
    const TICK_MS: u64 = 50;
    let stack = Stack::start(Knobs {
        tick_ms: TICK_MS,
        gateways: 1,
        ..Knobs::default()
    })
    .await;
    let (mut leader, mut followers) = band(&stack, 0, &[0]).await;
    let f = &mut followers[0];
    leader
        .send(&Command::Play { count_in_bars: 0 }, None)
        .await
        .expect("play");
    f.wait_for(
        WAIT,
        |m| matches!(m, ServerMsg::Tick(t) if t.timeline.at(t.server_time).playing),
    )
    .await
    .expect("ticks while playing");

    leader.send(&Command::Pause, None).await.expect("pause");
    let (_, change) = event_of_kind(f, "pause").await;
    let Change::Pause { at: landed, .. } = change else {
        unreachable!("a pause change")
    };
    // Until the pause landed (the lead time) and ten tick periods more.
    let watch_until = landed + 10 * TICK_MS as i64 * 1_000;
    let mut in_lead = 0;
    loop {
        let left_us = watch_until - f.server_now();
        if left_us <= 0 {
            break;
        }
        match f.next_within(Duration::from_micros(left_us as u64)).await {
            Ok(ServerMsg::Tick(t)) => {
                // Ticks of the lead time, built before the pause took effect,
                // may still be on their way.
                assert!(
                    t.server_time < landed,
                    "a tick built {} µs after the pause landed: {t:?}",
                    t.server_time - landed
                );
                in_lead += 1;
            }
            Ok(_) | Err(ClientError::Timeout) => {}
            Err(e) => panic!("the paused member's socket failed: {e}"),
        }
    }
    println!("{in_lead} ticks after the pause event, all built before it landed");
    f.sync_clock(1)
        .await
        .expect("the paused member's socket is open: a ping gets its pong");
}
