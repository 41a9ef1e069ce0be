//! Store benchmark: sustained ingest (events/s) and stream→table lag at a steady
//! 10,000 events/s, against a real nats-server (testkit) and the local PostgreSQL.
//!
//!     scripts/install-nats-server
//!     cargo run --release -p bandsync-store --example ingest_bench [-- EVENTS RATE SECONDS [small]]
//!
//! Prints one line per figure; docs/benchmarks.md records the results.

use async_nats::HeaderMap;
use async_nats::jetstream;
use bandsync_load::procstat;
use bandsync_nats::bus::Bus;
use bandsync_nats::state::Rules;
use bandsync_nats::{
    Command, DisplayName, EventMsg, JoinCode, MemberId, Micros, ServerMsg, SessionId, SessionState,
    Song, Subjects, now_us,
};
use bandsync_store::decode::StreamKind;
use bandsync_store::{Config, Store};
use bandsync_testkit::{NatsServer, Role};
use bytes::Bytes;
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

const SESSIONS: usize = 500;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::var_os("RUST_LOG").is_some() {
        bandsync_nats::service::init_tracing();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bulk: usize = args.first().map_or(Ok(200_000), |a| a.parse())?;
    let rate: usize = args.get(1).map_or(Ok(10_000), |a| a.parse())?;
    let seconds: usize = args.get(2).map_or(Ok(20), |a| a.parse())?;
    // "small": one member and no setlist instead of five and ten songs.
    let small = args.get(3).is_some_and(|a| a == "small");
    let pg = std::env::var("BANDSYNC_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let db_name = format!("bandsync_bench_{:08x}", rand::random::<u32>());
    let db_url = format!("{pg}/{db_name}");

    let nats = NatsServer::start().await;
    let subjects = Subjects::new("bandsync")?;
    // As the operator: it publishes what gateways and tickers would.
    let settings = nats.bus_args(Role::Admin).settings("bench".into())?;
    let bus = Bus::open(&settings, subjects.clone()).await?;
    let mut events = Generator::new(&subjects, small);
    if std::env::var_os("BANDSYNC_BENCH_SHOW_EVENT").is_some() {
        let (_, sample) = events.next_event();
        println!("a benchmark event: {}", String::from_utf8_lossy(&sample));
    }

    // 1. Sustained ingest: a backlog of `bulk` events, then the store drains it.
    let backlog: Vec<_> = (0..bulk).map(|_| events.next_event()).collect();
    let bytes: usize = backlog.iter().map(|(_, b)| b.len()).sum();
    let t = Instant::now();
    publish(&bus.js, backlog).await?;
    println!(
        "published {bulk} events ({} bytes avg) in {:.2} s",
        bytes / bulk.max(1),
        t.elapsed().as_secs_f64()
    );
    let token = CancellationToken::new();
    let mut config = Config::new(&nats.url(), &db_url, "127.0.0.1:0".parse()?);
    config.bus = nats.bus_args(Role::Store);
    // The store's own settings, from the environment as the service reads them.
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
    config.writers = env("BANDSYNC_STORE_WRITERS").unwrap_or(config.writers);
    config.batch_max = env("BANDSYNC_STORE_BATCH").unwrap_or(config.batch_max);
    config.pool_size = env("BANDSYNC_STORE_POOL").unwrap_or(config.pool_size);
    println!(
        "store: {} writers per stream, batches of up to {} messages, {} connections",
        config.writers, config.batch_max, config.pool_size
    );
    let (admin, conn) = tokio_postgres::connect(&format!("{pg}/postgres"), NoTls).await?;
    tokio::spawn(conn);
    let mut cpu = CpuWatch::new(nats.pid());
    cpu.sample(&admin, &db_name).await?;
    let store = Store::start(config, token.clone()).await?;
    let t = Instant::now();
    while store.metrics().rows_inserted(StreamKind::Events) < bulk as u64 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        cpu.sample(&admin, &db_name).await?;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "ingest: {bulk} events in {secs:.2} s = {:.0} events/s",
        bulk as f64 / secs
    );
    cpu.sample(&admin, &db_name).await?;
    cpu.report(bulk);

    // 2. Lag at a steady rate: publish `rate` events/s for `seconds` s.
    let (client, conn) = tokio_postgres::connect(&db_url, NoTls).await?;
    tokio::spawn(conn);
    let first_seq: i64 = client
        .query_one("SELECT coalesce(max(stream_seq), 0) FROM events", &[])
        .await?
        .get(0);
    let tick = Duration::from_millis(10);
    let per_tick = rate / 100;
    let mut interval = tokio::time::interval(tick);
    let total = per_tick * 100 * seconds;
    for _ in 0..(100 * seconds) {
        interval.tick().await;
        let chunk: Vec<_> = (0..per_tick).map(|_| events.next_event()).collect();
        publish(&bus.js, chunk).await?;
    }
    let target = bulk + total;
    while store.metrics().rows_inserted(StreamKind::Events) < target as u64 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let row = client
        .query_one(
            "SELECT count(*),
                    percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - published_at)),
                    percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - published_at)),
                    max(extract(epoch FROM stored_at - published_at))::float8
             FROM events WHERE stream_seq > $1",
            &[&first_seq],
        )
        .await?;
    let (n, p50, p99, max): (i64, f64, f64, f64) = (row.get(0), row.get(1), row.get(2), row.get(3));
    println!(
        "lag at {rate} events/s for {seconds} s ({n} events): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        p50 * 1e3,
        p99 * 1e3,
        max * 1e3
    );
    let row = client
        .query_one(
            "SELECT pg_table_size('events')::float8 / count(*), pg_indexes_size('events')::float8 / count(*)
             FROM events",
            &[],
        )
        .await?;
    let (table, indexes): (f64, f64) = (row.get(0), row.get(1));
    println!("on disk: {table:.0} bytes per event in the table, {indexes:.0} in its indexes");
    token.cancel();
    store.wait().await;
    drop(client);
    admin
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS \"{db_name}\" WITH (FORCE)"
        ))
        .await?;
    Ok(())
}

/// CPU time spent by each part of the pipeline during the ingest: this process
/// (the store; the publisher is idle then), the PostgreSQL processes serving
/// the store's database and the server's own (WAL writer, checkpointer), and
/// nats-server. Per event, it holds where a rate does not: on a busy machine.
struct CpuWatch {
    nats: Option<u32>,
    /// CPU time of each process when first seen, and when last seen.
    seen: std::collections::HashMap<(&'static str, u32), (Duration, Duration)>,
}

impl CpuWatch {
    fn new(nats: Option<u32>) -> Self {
        Self {
            nats,
            seen: Default::default(),
        }
    }

    /// Reads every watched process (PostgreSQL backends come and go with the pool).
    async fn sample(&mut self, admin: &tokio_postgres::Client, db: &str) -> anyhow::Result<()> {
        let rows = admin
            .query(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 OR datname IS NULL",
                &[&db],
            )
            .await?;
        let mut pids: Vec<(&'static str, u32)> = rows
            .iter()
            .map(|r| ("postgres", r.get::<_, i32>(0) as u32))
            .collect();
        pids.push(("store", std::process::id()));
        pids.extend(self.nats.map(|p| ("nats-server", p)));
        for key in pids {
            if let Some(t) = procstat::read(key.1).map(|r| r.cpu()) {
                self.seen.entry(key).or_insert((t, t)).1 = t;
            }
        }
        Ok(())
    }

    fn report(&self, events: usize) {
        let mut per: std::collections::BTreeMap<&str, Duration> = Default::default();
        for ((name, _), (first, last)) in &self.seen {
            *per.entry(name).or_default() += *last - *first;
        }
        let us = |d: Duration| d.as_secs_f64() * 1e6 / events.max(1) as f64;
        let total: Duration = per.values().sum();
        let parts: Vec<String> = per
            .iter()
            .map(|(name, d)| format!("{name} {:.1}", us(*d)))
            .collect();
        println!(
            "CPU per event: {} = {:.1} us in all (2 cores at 100% would ingest {:.0} events/s)",
            parts.join(" + "),
            us(total),
            2e6 / us(total).max(f64::MIN_POSITIVE)
        );
    }
}

/// Publishes with a window of outstanding acks.
async fn publish(js: &jetstream::Context, msgs: Vec<(String, Bytes)>) -> anyhow::Result<()> {
    let mut inflight = Vec::with_capacity(1024);
    for (subject, payload) in msgs {
        inflight.push(
            js.publish_with_headers(subject, HeaderMap::new(), payload)
                .await?,
        );
        if inflight.len() == 1024 {
            for ack in inflight.drain(..) {
                ack.await?;
            }
        }
    }
    for ack in inflight {
        ack.await?;
    }
    Ok(())
}

/// Realistic events: sessions of five members with a ten-song setlist (charts
/// of about 1 kB), the leader changing tempo once a second; round-robin across
/// sessions. Time is simulated (starting an hour ago) so a session's changes are
/// a second apart, as a band's are, however fast the benchmark publishes them:
/// at wall-clock pace every session would hold hundreds of changes still pending
/// in its timeline, which no real session does.
struct Generator {
    states: Vec<SessionState>,
    subjects: Subjects,
    rules: Rules,
    leader: MemberId,
    t0: Micros,
    i: usize,
}

impl Generator {
    fn new(subjects: &Subjects, small: bool) -> Self {
        let (members, songs) = if small { (1, 0) } else { (5, 10) };
        let rules = Rules::default();
        let leader = MemberId::parse("m0").expect("valid");
        let now = now_us() - 3_600_000_000;
        let states = (0..SESSIONS)
            .map(|s| {
                let id = SessionId::parse(format!("bench{s}")).expect("valid");
                let name = |i: usize| DisplayName::parse(&format!("Player {i}")).expect("valid");
                let mut st = SessionState::create(
                    id,
                    JoinCode::parse("K7MQ2X").expect("valid"),
                    leader.clone(),
                    name(0),
                    now,
                );
                for i in 0..members {
                    let m = MemberId::parse(format!("m{i}")).expect("valid");
                    let hello = Command::Hello {
                        name: name(i),
                        conn: bandsync_nats::ConnId::parse(format!("g1-{s}/{i}")).expect("conn"),
                    };
                    st.apply(&hello, &m, None, now, &rules).expect("joins");
                }
                let songs = (0..songs)
                    .map(|i| Song {
                        title: format!("Song number {i}"),
                        tempo_bpm: Some(90.0 + i as f64),
                        beats_per_bar: Some(4),
                        beat_unit: None,
                        chart: "| C    | Am   | F    | G7   |\n".repeat(30),
                    })
                    .collect();
                st.apply(&Command::Setlist { songs }, &leader, None, now, &rules)
                    .expect("setlist");
                st
            })
            .collect();
        Self {
            states,
            subjects: subjects.clone(),
            rules,
            leader,
            t0: now,
            i: 0,
        }
    }

    fn next_event(&mut self) -> (String, Bytes) {
        let n = self.i;
        self.i += 1;
        let st = &mut self.states[n % SESSIONS];
        let bpm = 60.0 + (n % 140) as f64;
        let at = self.t0 + 1_000_000 * (1 + (n / SESSIONS) as Micros);
        st.apply(&Command::Tempo { bpm }, &self.leader, None, at, &self.rules)
            .expect("tempo");
        let bytes = ServerMsg::Event(Box::new(EventMsg::latest(st, 1))).to_bytes();
        (self.subjects.evt(&st.id), bytes)
    }
}
