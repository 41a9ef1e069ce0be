//! The command path's JetStream work alone, on a nats-server of its own: a
//! "gateway" connection publishes commands (with ack) spread over the shards;
//! a "ticker" connection holds one ordered push consumer per shard, as the
//! ticker does, and per delivery does the worker's writes (`--work 1`: a 2 KB
//! KV update and an event publish with ack; `--work 2`: also a cursor put per
//! shard every 500 ms), while publishing core-NATS ticks that the gateway
//! connection takes on one subscription per session. Prints publish → ack and
//! publish → delivered, p50 / p99 / max: how much of a command's latency the
//! server itself accounts for at a given rate (docs/benchmarks-history.md, "The
//! command path, found (27 November)").
//!
//! cargo run --release -p bandsync-ticker --example cmd_probe -- \
//!     [--shards 256] [--rate 500] [--secs 10] [--sessions 1000] [--noise-hz 1] [--work 2]

use async_nats::jetstream::{self, consumer::push::OrderedConfig, stream};
use bandsync_testkit::{NatsServer, Role, percentile};
use futures::StreamExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(default)
}

type Samples = Arc<Mutex<Vec<f64>>>;

fn record(samples: &Samples, ms: f64) {
    samples.lock().unwrap_or_else(|e| e.into_inner()).push(ms);
}

fn summary(name: &str, v: &mut [f64]) {
    if v.is_empty() {
        println!("{name:<22} none");
        return;
    }
    v.sort_by(f64::total_cmp);
    let p = |q: f64| percentile(&*v, q).unwrap_or(f64::NAN);
    println!(
        "{name:<22} n {:6}  p50 {:7.2} ms  p99 {:7.2} ms  max {:7.2} ms",
        v.len(),
        p(0.5),
        p(0.99),
        v[v.len() - 1]
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let shards = arg("--shards", 256);
    let rate = arg("--rate", 500).clamp(1, 5_000);
    let secs = arg("--secs", 10).clamp(1, 60);
    let sessions = arg("--sessions", 1_000).clamp(1, 10_000);
    let noise_hz = arg("--noise-hz", 1).min(20);
    // 1: each delivery is followed, in its shard's task, by what the worker
    // does: a 2 KB KV update and an event publish with ack. 2: also a cursor
    // KV put per shard every 500 ms.
    let work = arg("--work", 0);
    let server = NatsServer::start().await;
    // Its own streams and subjects, outside BandSync's permissions: as the operator.
    let gateway = server.connect(Role::Admin).await;
    let ticker = server.connect(Role::Admin).await;
    let js = jetstream::new(gateway.clone());
    let cmd = js
        .create_stream(stream::Config {
            name: "CMD".into(),
            subjects: vec!["p.cmd.>".into()],
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await?;
    js.create_stream(stream::Config {
        name: "EVT".into(),
        subjects: vec!["p.sess.*.evt".into()],
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await?;
    let kv_config = |bucket: &str| jetstream::kv::Config {
        bucket: bucket.into(),
        history: 1,
        ..Default::default()
    };
    let tjs_kv = jetstream::new(ticker.clone());
    let sessions_kv = tjs_kv.create_key_value(kv_config("SESS")).await?;
    let cursors_kv = tjs_kv.create_key_value(kv_config("CURS")).await?;
    let epoch = Instant::now();
    let delivered: Samples = Default::default();
    let tjs = jetstream::new(ticker.clone());
    let tstream = tjs.get_stream("CMD").await?;
    for shard in 0..shards {
        let consumer = tstream
            .create_consumer(OrderedConfig {
                deliver_subject: ticker.new_inbox(),
                filter_subject: format!("p.cmd.{shard}.>"),
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        let delivered = delivered.clone();
        let sessions_kv = sessions_kv.clone();
        let cursors_kv = cursors_kv.clone();
        let tjs = tjs.clone();
        tokio::spawn(async move {
            let key = format!("s{shard}");
            let mut rev = sessions_kv
                .put(&key, vec![b'x'; 2048].into())
                .await
                .unwrap_or(0);
            let mut save = tokio::time::interval(Duration::from_millis(500));
            let mut n = 0u64;
            loop {
                let msg = tokio::select! {
                    m = messages.next() => m,
                    _ = save.tick(), if work >= 2 => {
                        let _ = cursors_kv.put(&key, format!("{n}").into()).await;
                        continue;
                    }
                };
                let Some(Ok(msg)) = msg else { break };
                n += 1;
                let sent: f64 = std::str::from_utf8(&msg.payload)
                    .ok()
                    .and_then(|s| s.split(' ').next()?.parse().ok())
                    .unwrap_or(f64::NAN);
                let now = epoch.elapsed().as_secs_f64() * 1e3;
                record(&delivered, now - sent);
                if work >= 1 {
                    if let Ok(r) = sessions_kv.update(&key, vec![b'x'; 2048].into(), rev).await {
                        rev = r;
                    }
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert(
                        async_nats::header::NATS_MESSAGE_ID,
                        format!("{key}-{n}").as_str(),
                    );
                    if let Ok(ack) = tjs
                        .publish_with_headers(
                            format!("p.sess.{shard}.evt"),
                            headers,
                            vec![b'e'; 850].into(),
                        )
                        .await
                    {
                        let _ = ack.await;
                    }
                }
            }
        });
    }
    drop(cmd);
    // Noise: one core subscription per session on the gateway connection, and
    // the ticker publishing a tick to each session noise_hz times a second.
    let mut noise_subs = Vec::new();
    if noise_hz > 0 {
        for s in 0..sessions {
            let mut sub = gateway.subscribe(format!("p.sess.{s}.>")).await?;
            noise_subs.push(tokio::spawn(
                async move { while sub.next().await.is_some() {} },
            ));
        }
        let ticker = ticker.clone();
        tokio::spawn(async move {
            let mut every =
                tokio::time::interval(Duration::from_micros(1_000_000 / (sessions * noise_hz)));
            let tick = bytes::Bytes::from(vec![b'x'; 300]);
            for n in 0..sessions * noise_hz * secs {
                every.tick().await;
                let _ = ticker
                    .publish(format!("p.sess.{}.tick", n % sessions), tick.clone())
                    .await;
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let acked: Samples = Default::default();
    let mut every = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let total = rate * secs;
    for n in 0..total {
        every.tick().await;
        let shard = n % shards;
        let session = (n * 7919) % sessions;
        let sent = epoch.elapsed().as_secs_f64() * 1e3;
        let payload = format!("{sent} {}", "x".repeat(250));
        let js = js.clone();
        let acked = acked.clone();
        tokio::spawn(async move {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                format!("m{n}").as_str(),
            );
            let subject = format!("p.cmd.{shard}.s{session}");
            let published = js.publish_with_headers(subject, headers, payload.into());
            if let Ok(ack) = published.await
                && ack.await.is_ok()
            {
                record(&acked, epoch.elapsed().as_secs_f64() * 1e3 - sent);
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!(
        "shards {shards}, {rate} commands/s for {secs} s, {} noise subscriptions at {noise_hz} Hz, work {work}",
        if noise_hz > 0 { sessions } else { 0 }
    );
    summary(
        "publish → ack",
        &mut acked.lock().unwrap_or_else(|e| e.into_inner()),
    );
    summary(
        "publish → delivered",
        &mut delivered.lock().unwrap_or_else(|e| e.into_inner()),
    );
    for s in noise_subs {
        s.abort();
    }
    Ok(())
}
