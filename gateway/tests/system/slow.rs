//! One slow client never hurts another: a member whose device stops reading is
//! dropped by its gateway while the rest of the band keeps its ticks.

use crate::common::*;
use bandsync_client::ws_url;
use bandsync_nats::{Command, ServerMsg};
use futures::StreamExt;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The gateway's Prometheus text.
async fn metrics(stack: &Stack) -> String {
    let mut s = tokio::net::TcpStream::connect(stack.gateways[0].0.addr)
        .await
        .expect("connect");
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .await
        .expect("request");
    let mut body = String::new();
    s.read_to_string(&mut body).await.expect("response");
    body
}

fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_and_hurts_nobody() {
    let stack = Stack::start(Knobs {
        gateways: 1,
        tick_ms: 10,
        client_queue: 4,
        ..Knobs::default()
    })
    .await;
    let (mut leader, mut followers) = band(&stack, 0, &[0]).await;

    // A member on a device that reads its welcome and then nothing more: a tiny
    // receive buffer, so the gateway's writes back up within a few hundred frames.
    let joined = stack
        .api(0)
        .join(leader.state.code.as_str(), "Stuck")
        .await
        .expect("join");
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(2048).expect("small buffer");
    let stream = socket.connect(stack.gateways[0].0.addr).await.expect("tcp");
    let (mut stuck, _) =
        tokio_tungstenite::client_async(ws_url(&stack.base(0), &joined.token), stream)
            .await
            .expect("upgrade");
    let welcome = tokio::time::timeout(WAIT, stuck.next())
        .await
        .expect("welcome in time");
    assert!(matches!(welcome, Some(Ok(_))), "welcome received");

    leader
        .send(&Command::Play { count_in_bars: 0 }, None)
        .await
        .expect("play");
    let before = counter(
        &metrics(&stack).await,
        "bandsync_gateway_slow_clients_total",
    );
    let follower = &mut followers[0];
    let started = Instant::now();
    let (mut last_tick, mut longest_gap, mut ticks) = (Instant::now(), Duration::ZERO, 0u32);
    let mut next_command = Instant::now();
    let mut next_check = Instant::now();
    let mut dropped_after = None;
    // Until the gateway gives up on the stuck client, then 2 s more (bounded at 20 s).
    while dropped_after.is_none_or(|d: Duration| started.elapsed() < d + Duration::from_secs(2))
        && started.elapsed() < Duration::from_secs(20)
    {
        if dropped_after.is_none() && Instant::now() >= next_check {
            next_check += Duration::from_millis(250);
            if counter(
                &metrics(&stack).await,
                "bandsync_gateway_slow_clients_total",
            ) > before
            {
                dropped_after = Some(started.elapsed());
            }
        }
        if Instant::now() >= next_command {
            // Events (about 1 kB each) at half the rate limit fill the stuck socket.
            let bpm = 100.0 + f64::from(ticks % 50);
            leader
                .send(&Command::Tempo { bpm }, None)
                .await
                .expect("send");
            next_command += Duration::from_millis(100);
        }
        if let Ok(ServerMsg::Tick(_)) = follower.next_within(Duration::from_millis(50)).await {
            let now = Instant::now();
            if ticks > 0 {
                longest_gap = longest_gap.max(now - last_tick);
            }
            last_tick = now;
            ticks += 1;
        }
        // Keep the leader's socket drained too; it is a well-behaved client.
        while let Ok(_msg) = leader.next_within(Duration::from_millis(1)).await {}
    }
    // A fan-out that waited on the stuck socket would stall the follower for
    // seconds (the gateway's write timeout is 10 s); this loop's own pacing
    // (metrics requests, draining the leader) accounts for gaps of a few 100 ms.
    let elapsed = started.elapsed();
    println!(
        "stuck client dropped after {dropped_after:?}; follower meanwhile: {ticks} ticks in {elapsed:?}, longest gap {longest_gap:?}"
    );
    assert!(
        dropped_after.is_some(),
        "the gateway dropped the stuck client as too slow"
    );
    assert!(
        f64::from(ticks) > elapsed.as_secs_f64() * 30.0,
        "the follower kept receiving ticks ({ticks})"
    );
    assert!(
        longest_gap < Duration::from_secs(1),
        "the follower stalled for {longest_gap:?}"
    );
    // What the stuck device finds when it reads again: the data already sent, then the end.
    let drained = tokio::time::timeout(WAIT, async {
        let mut frames = 0u32;
        while let Some(Ok(_)) = stuck.next().await {
            frames += 1;
        }
        frames
    })
    .await
    .expect("the gateway closed the stuck connection");
    println!("stuck client: {drained} frames left in its buffers, then the connection ended");
}
