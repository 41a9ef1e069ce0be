//! The heartbeat: at every tick boundary (wall-clock aligned, so every ticker
//! agrees on them) publish the timeline of every playing session we own.
//! Ticks go over core NATS only; they are cheap to lose.

use crate::owned::Registry;
use bandsync_nats::timeline::tick_seq;
use bandsync_nats::{Micros, ServerMsg, Subjects, TickMsg, now_us};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub async fn run(
    client: async_nats::Client,
    subjects: Subjects,
    registry: Registry,
    period: Duration,
    shutdown: CancellationToken,
) {
    let period_us = Micros::try_from(period.as_micros()).unwrap_or(100_000);
    loop {
        let now = now_us();
        let next = (now / period_us + 1) * period_us;
        let wait = Duration::from_micros(u64::try_from(next - now).unwrap_or(0));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let seq = tick_seq(next, period_us);
        let mut sent = 0u64;
        for owned in registry.snapshot() {
            if !owned.is_valid() {
                continue;
            }
            let server_time = now_us();
            let ticks: Vec<(String, bytes::Bytes)> = {
                let mut playing = owned.playing.lock().unwrap_or_else(|e| e.into_inner());
                playing.retain(|_, tl| tl.is_active(server_time));
                playing
                    .iter()
                    .map(|(session, timeline)| {
                        let msg = ServerMsg::Tick(TickMsg {
                            session: session.clone(),
                            seq,
                            epoch: owned.epoch,
                            server_time,
                            timeline: timeline.clone(),
                        });
                        (subjects.tick(session), msg.to_bytes())
                    })
                    .collect()
            };
            for (subject, payload) in ticks {
                if client.publish(subject, payload).await.is_err() {
                    metrics::counter!("bandsync_ticker_tick_publish_failures_total").increment(1);
                } else {
                    sent += 1;
                }
            }
        }
        metrics::counter!("bandsync_ticker_ticks_total").increment(sent);
    }
}
