//! One slow client never hurts another: a member whose device stops reading is
//! dropped by its gateway, told why (`slow_client`), while the rest of the band
//! keeps its ticks.

use crate::common::*;
use bandsync_client::ws_request;
use bandsync_nats::{Command, ErrorCode, ServerMsg};
use bandsync_testkit::{eventually, scrape_metric};
use futures::StreamExt;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const SLOW_CLIENTS: &str = "bandsync_gateway_slow_clients_total";

/// What the stuck device found once it read again.
struct Drained {
    /// When its gateway counted it as too slow, from the start of the music.
    dropped_after: Duration,
    /// Data frames read before the close.
    frames: u32,
    /// The last error message before the close, if any.
    error: Option<ErrorCode>,
    close: Option<CloseFrame>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_and_hurts_nobody() {
    // A gateway process of its own: its /metrics counts its clients only.
    let stack = Stack::start(Knobs {
        gateways: 1,
        gateway_processes: true,
        tick_ms: 10,
        client_queue: 4,
        ..Knobs::default()
    })
    .await;
    let metrics_url = format!("{}/metrics", stack.ops_base(0));
    let before = scrape_metric(&metrics_url, SLOW_CLIENTS)
        .await
        .expect("the gateway exports its slow-client counter");
    assert_eq!(before, 0.0, "no slow client yet");
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
    let stream = socket.connect(stack.addr(0)).await.expect("tcp");
    let (mut stuck, _) = tokio_tungstenite::client_async(
        ws_request(&stack.base(0), &joined.token).expect("request"),
        stream,
    )
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
    let started = Instant::now();
    // The device reads again as soon as its gateway has given up on it, within
    // the second the gateway waits on a closing socket, and reads to the end.
    let device = tokio::spawn(async move {
        let counted = || async {
            let slow = scrape_metric(&metrics_url, SLOW_CLIENTS).await;
            slow.expect("the gateway's metrics") > before
        };
        let limit = Duration::from_secs(20);
        eventually(limit, "the gateway to drop the stuck client", counted).await;
        let dropped_after = started.elapsed();
        let mut drained = Drained {
            dropped_after,
            frames: 0,
            error: None,
            close: None,
        };
        let read_all = async {
            while let Some(Ok(msg)) = stuck.next().await {
                match msg {
                    Message::Close(frame) => {
                        drained.close = frame;
                        break;
                    }
                    Message::Text(text) => {
                        drained.frames += 1;
                        if let Ok(ServerMsg::Error(e)) = ServerMsg::parse(&text) {
                            drained.error = Some(e.code);
                        }
                    }
                    _ => drained.frames += 1,
                }
            }
        };
        tokio::time::timeout(WAIT, read_all)
            .await
            .expect("the gateway closed the stuck connection");
        drained
    });

    let follower = &mut followers[0];
    let (mut last_tick, mut longest_gap, mut ticks) = (Instant::now(), Duration::ZERO, 0u32);
    let mut next_command = Instant::now();
    let mut dropped_at = None;
    // Until the device has read its end, then 2 s more (bounded at 30 s).
    while dropped_at.is_none_or(|d: Instant| d.elapsed() < Duration::from_secs(2))
        && started.elapsed() < Duration::from_secs(30)
    {
        if dropped_at.is_none() && device.is_finished() {
            dropped_at = Some(Instant::now());
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
    let elapsed = started.elapsed();
    let drained = device.await.expect("the stuck device's task");
    println!(
        "stuck client dropped after {:?}, then read {} frames and its close {:?}; \
         follower meanwhile: {ticks} ticks in {elapsed:?}, longest gap {longest_gap:?}",
        drained.dropped_after, drained.frames, drained.close
    );
    assert_eq!(
        drained.error,
        Some(ErrorCode::SlowClient),
        "the stuck client is told why in an error"
    );
    let close = drained.close.expect("the stuck client gets a close frame");
    assert_eq!(
        (close.code, close.reason.as_str()),
        (CloseCode::Policy, "slow_client"),
        "the close frame's reason is the error code"
    );
    // A fan-out that waited on the stuck socket would stall the follower for
    // seconds (the gateway's write timeout is 10 s); this loop's own pacing
    // (commands, draining the leader) accounts for gaps of a few 100 ms.
    assert!(
        f64::from(ticks) > elapsed.as_secs_f64() * 30.0,
        "the follower kept receiving ticks ({ticks})"
    );
    assert!(
        longest_gap < Duration::from_secs(1),
        "the follower stalled for {longest_gap:?}"
    );
}
