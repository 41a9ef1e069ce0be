//! Round trips of the JetStream operations on the command path, measured
//! from outside while a load run is going: core NATS (flush), a KV update on
//! the leases bucket (what the ticker's lease renewal does), a KV update of a
//! 2 KB value on the sessions bucket (the ticker's state compare-and-set) and
//! an event publish with a message id to the events stream (no subscriber).
//! Bounded: `--count` rounds, one every 30 ms.
//!
//! cargo run --release -p bandsync-load --example js_probe -- nats://127.0.0.1:PORT [--count 300]

use bandsync_nats::bus::BusArgs;
use bandsync_nats::{SessionId, Subjects};
use std::time::{Duration, Instant};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    anyhow::ensure!(
        url.contains("127.0.0.1") || url.contains("localhost"),
        "loopback only"
    );
    let count: usize = args
        .iter()
        .position(|a| a == "--count")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(300)
        .min(2_000);
    // Logs in as BANDSYNC_NATS_USER with BANDSYNC_NATS_PASSWORD when set
    // (a ticker's or the operator's: it writes leases, state and events).
    let mut args = BusArgs::new(&url);
    if let (Ok(user), Ok(password)) = (
        std::env::var("BANDSYNC_NATS_USER"),
        std::env::var("BANDSYNC_NATS_PASSWORD"),
    ) {
        args = args.with_credentials(&user, &password);
    }
    let bus = args.open("js-probe".into()).await?;
    let session = SessionId::parse("jsprobe")?;
    let evt = bus.subjects.evt(&session);
    let key = Subjects::session_key(9_999, &session);
    let mut lease_rev = bus.leases.put("jsprobe", "x".into()).await?;
    let mut state_rev = bus.sessions.put(&key, vec![b'x'; 2048].into()).await?;
    let mut t: [Vec<f64>; 4] = Default::default();
    for n in 0..count {
        let s = Instant::now();
        bus.client.flush().await?;
        t[0].push(s.elapsed().as_secs_f64() * 1e3);
        let s = Instant::now();
        lease_rev = bus.leases.update("jsprobe", "x".into(), lease_rev).await?;
        t[1].push(s.elapsed().as_secs_f64() * 1e3);
        let s = Instant::now();
        state_rev = bus
            .sessions
            .update(&key, vec![b'x'; 2048].into(), state_rev)
            .await?;
        t[2].push(s.elapsed().as_secs_f64() * 1e3);
        let s = Instant::now();
        bus.publish_durable(
            evt.clone(),
            &format!("jsprobe-{n}"),
            vec![b'x'; 2048].into(),
        )
        .await?;
        t[3].push(s.elapsed().as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let _ = bus.leases.purge("jsprobe").await;
    let _ = bus.sessions.purge(&key).await;
    for (name, v) in [
        "core flush",
        "lease KV update",
        "sessions KV update 2 KB",
        "event publish 2 KB",
    ]
    .iter()
    .zip(t.iter_mut())
    {
        println!(
            "{name:<26} p50 {:6.2} ms  p99 {:6.2} ms  max {:6.2} ms",
            pct(v, 0.5),
            pct(v, 0.99),
            pct(v, 1.0)
        );
    }
    Ok(())
}
