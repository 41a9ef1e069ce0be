//! Ticker fleet benchmark: prints figures, asserts nothing (docs/benchmarks.md).
//!
//! ```text
//! cargo bench -p bandsync-ticker --bench fleet                  # everything
//! cargo bench -p bandsync-ticker --bench fleet -- failover 20   # 20 kill -9 (and 20 SIGTERM)
//! cargo bench -p bandsync-ticker --bench fleet -- capacity 10   # 10 Hz only
//! ```
//!
//! Real processes on loopback: a nats-server (testkit, 2.15.1), `bandsync-ticker`
//! binaries of this build, and this process as the gateways would be: it
//! publishes `create` and `play` commands to the command stream and subscribes
//! to the shards' beats (from which gateways make the sessions' ticks).
//!
//! - failover: 3 tickers, 60 playing sessions at 10 Hz; kill -9 one ticker, time
//!   from each orphaned session's shard's last beat to its first from the new owner,
//!   start a replacement, wait for the fair share, repeat. The same with SIGTERM.
//! - capacity: one ticker; add playing sessions step by step and, at each step,
//!   read the ticker's CPU from /proc/<pid>/stat, the session ticks its beats
//!   cover from /metrics, and how late in the period the beats carry their server time.

use bandsync_nats::bus::Bus;
use bandsync_nats::service::random_id;
use bandsync_nats::{
    BeatMsg, Command, CommandEnvelope, CommandId, DisplayName, GatewayId, JoinCode, MemberId,
    SessionId, Shard, Subjects, now_us, shard_of,
};
use bandsync_testkit::{NatsServer, Role, http_get, percentile, scrape_metric};
use futures::StreamExt;
use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

const SHARDS: u16 = 256;
const FAILOVER_SESSIONS: usize = 60;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let part = args.first().map(String::as_str).unwrap_or("all");
    let number = args.get(1).and_then(|n| n.parse::<u64>().ok());
    println!(
        "machine: {} cores, {}; nats-server 2.15.1 (testkit)",
        std::thread::available_parallelism().map_or(0, usize::from),
        cpu_model(),
    );
    if part == "all" || part == "failover" {
        failover(number.unwrap_or(20) as usize).await;
    }
    if part == "all" || part == "capacity" {
        match number {
            Some(hz) => capacity(hz).await,
            None => {
                capacity(10).await;
                capacity(1).await;
            }
        }
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// A `bandsync-ticker` process, killed on drop.
struct Proc {
    child: tokio::process::Child,
    addr: String,
}

impl Proc {
    async fn spawn(nats: &NatsServer, id: &str, tick_ms: u64) -> Proc {
        // BANDSYNC_BENCH_LOGS=<dir> keeps each ticker's log as <dir>/<id>.log.
        let logs = std::env::var_os("BANDSYNC_BENCH_LOGS").map(std::path::PathBuf::from);
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_bandsync-ticker"))
            .args(nats.bus_flags(Role::Ticker))
            .args([
                "--listen=127.0.0.1:0".into(),
                format!("--ticker-id={id}"),
                format!("--shards={SHARDS}"),
                format!("--tick-ms={tick_ms}"),
            ])
            .env("RUST_LOG", if logs.is_some() { "info" } else { "warn" })
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawning bandsync-ticker");
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let mut addr = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(a) = line
                .strip_prefix("bandsync-ticker ")
                .and_then(|l| l.rsplit("http://").next())
            {
                addr = a.trim().to_owned();
                break;
            }
        }
        assert!(!addr.is_empty(), "ticker {id} did not start");
        let mut sink = match logs {
            Some(dir) => std::fs::File::create(dir.join(format!("{id}.log"))).ok(),
            None => None,
        };
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(file) = sink.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(file, "{line}");
                }
            }
        });
        Proc { child, addr }
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    fn signal(&self, sig: &str) {
        let _ = std::process::Command::new("kill")
            .args(["-s", sig, &self.pid().to_string()])
            .status();
    }

    /// The shards it owns; `None` while it does not answer (killed, starting).
    async fn shards(&self) -> Option<Vec<u16>> {
        let body = http_get(&format!("{}/readyz", self.addr)).await.ok()?.body;
        let line = body.lines().find_map(|l| l.strip_prefix("shards:"))?;
        Some(
            line.split_whitespace()
                .filter_map(|p| p.split_once('@')?.0.parse().ok())
                .collect(),
        )
    }

    /// One series of its `/metrics`; a figure read from an absent series would
    /// be a made-up 0, so that stops the benchmark.
    async fn metric(&self, series: &str) -> f64 {
        scrape_metric(&format!("{}/metrics", self.addr), series)
            .await
            .unwrap_or_else(|e| panic!("ticker at {}: {e}", self.addr))
    }

    /// Resident memory, from /proc/<pid>/status.
    fn rss_mb(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    /// User + system CPU seconds so far, from /proc/<pid>/stat.
    fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the command name, which is in parentheses.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
        (ticks(11) + ticks(12)) / clock_ticks_per_second()
    }
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The bench's own connection, as the operator (it sends commands as gateways would).
async fn open_bus(nats: &NatsServer) -> Bus {
    let settings = nats
        .bus_args(Role::Admin)
        .settings("bench-fleet".into())
        .expect("settings");
    Bus::open(&settings, Subjects::new("bandsync").expect("prefix"))
        .await
        .expect("opening the bus")
}

/// Creates `n` sessions and starts them playing, as gateways would.
async fn playing_sessions(bus: &Bus, n: usize) -> Vec<SessionId> {
    let gateway = GatewayId::parse("bench").expect("id");
    let sessions: Vec<(SessionId, MemberId)> = (0..n)
        .map(|_| {
            (
                SessionId::parse(random_id(12)).expect("id"),
                MemberId::parse(random_id(12)).expect("id"),
            )
        })
        .collect();
    let create = Command::Create {
        code: JoinCode::parse("ABCDEF").expect("code"),
        name: DisplayName::parse("Bench").expect("name"),
    };
    for command in [create, Command::Play { count_in_bars: 0 }] {
        futures::stream::iter(sessions.iter())
            .map(|(session, actor)| {
                let envelope = CommandEnvelope {
                    id: CommandId::parse(random_id(16)).expect("id"),
                    session: session.clone(),
                    actor: actor.clone(),
                    gateway: gateway.clone(),
                    client_ref: None,
                    sent_at: now_us(),
                    command: command.clone(),
                };
                let subject = bus.subjects.cmd(shard_of(session, SHARDS), session);
                let payload = serde_json::to_vec(&envelope).expect("serialises");
                async move {
                    bus.publish_durable(subject, envelope.id.as_str(), payload.into())
                        .await
                        .expect("publishing a command");
                }
            })
            .buffer_unordered(256)
            .collect::<Vec<()>>()
            .await;
        // Creates first: a play for a session not created yet would be refused.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    sessions.into_iter().map(|(s, _)| s).collect()
}

type Arrivals = Arc<Mutex<HashMap<Shard, Vec<(Instant, u64)>>>>;

/// Records (arrival, epoch) of every shard's beats.
async fn record_beats(bus: &Bus) -> Arrivals {
    let arrivals: Arrivals = Arc::default();
    let mut sub = bus
        .client
        .subscribe(bus.subjects.beat_all())
        .await
        .expect("subscribing to beats");
    let log = arrivals.clone();
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let at = Instant::now();
            if let Ok(b) = serde_json::from_slice::<BeatMsg>(&msg.payload) {
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                log.entry(b.shard).or_default().push((at, b.epoch));
            }
        }
    });
    arrivals
}

async fn wait_balanced(tickers: &[Proc]) -> Duration {
    let started = Instant::now();
    let fair = f64::from(SHARDS) / tickers.len() as f64;
    while started.elapsed() < Duration::from_secs(30) {
        let views = futures::future::join_all(tickers.iter().map(Proc::shards)).await;
        let counts: Vec<usize> = views
            .iter()
            .map(|v| v.as_ref().map_or(0, Vec::len))
            .collect();
        if counts.iter().sum::<usize>() == usize::from(SHARDS)
            && counts.iter().all(|&c| (c as f64 - fair).abs() <= 1.0)
        {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// Kill (or terminate) one of three tickers `rounds` times; returns the worst
/// orphan gap of each round (last tick of the old owner to first of the new).
async fn failover_rounds(
    nats: &NatsServer,
    sessions: &[SessionId],
    arrivals: &Arrivals,
    signal: &str,
    rounds: usize,
    next_id: &mut usize,
) -> Vec<Duration> {
    let mut tickers = Vec::new();
    for _ in 0..3 {
        tickers.push(Proc::spawn(nats, &format!("b-{next_id}"), 100).await);
        *next_id += 1;
    }
    wait_balanced(&tickers).await;
    let mut gaps = Vec::new();
    for round in 0..rounds {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let victim = round % tickers.len();
        let owned = tickers[victim].shards().await.unwrap_or_default();
        let orphans: Vec<&SessionId> = sessions
            .iter()
            .filter(|s| owned.contains(&shard_of(s, SHARDS)))
            .collect();
        if orphans.is_empty() {
            continue; // nothing of ours on it: nothing to measure
        }
        let signalled = Instant::now();
        tickers[victim].signal(signal);
        if std::env::var_os("BANDSYNC_BENCH_LOGS").is_some() {
            println!(
                "  round {round}: SIG{signal} to ticker #{victim} at {} µs",
                now_us()
            );
        }
        let old = tickers.remove(victim);
        // Every orphan hears from a new owner (or 5 s pass).
        let deadline = signalled + Duration::from_secs(5);
        let mut worst = Duration::ZERO;
        loop {
            let log = arrivals.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let per_session: Vec<Option<Duration>> = orphans
                .iter()
                .map(|s| {
                    let ticks = log.get(&shard_of(s, SHARDS))?;
                    let last_old = ticks.iter().rfind(|(at, _)| *at < signalled)?;
                    let first_new = ticks
                        .iter()
                        .find(|(at, e)| *at > signalled && *e > last_old.1)?;
                    Some(first_new.0 - last_old.0)
                })
                .collect();
            if per_session.iter().all(Option::is_some) || Instant::now() > deadline {
                worst = per_session
                    .iter()
                    .map(|g| g.unwrap_or(Duration::from_secs(5)))
                    .max()
                    .unwrap_or(worst);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if std::env::var_os("BANDSYNC_BENCH_LOGS").is_some() {
            println!("  round {round}: worst orphan gap {worst:?}");
        }
        gaps.push(worst);
        drop(old);
        tickers.push(Proc::spawn(nats, &format!("b-{next_id}"), 100).await);
        *next_id += 1;
        wait_balanced(&tickers).await;
    }
    gaps
}

async fn failover(kills: usize) {
    let nats = NatsServer::start().await;
    let bus = open_bus(&nats).await;
    let mut next_id = 0;
    // One ticker creates the sessions; the rounds bring their own.
    let creator = Proc::spawn(&nats, "b-creator", 100).await;
    wait_balanced(std::slice::from_ref(&creator)).await;
    let sessions = playing_sessions(&bus, FAILOVER_SESSIONS).await;
    let arrivals = record_beats(&bus).await;
    drop(creator);
    for (i, signal) in ["KILL", "TERM"].into_iter().enumerate() {
        if i > 0 {
            // A killed ticker's command consumers linger 30 s on the server (its
            // default limit is 1000 per stream): let those of the kill rounds go.
            tokio::time::sleep(Duration::from_secs(31)).await;
        }
        let mut gaps =
            failover_rounds(&nats, &sessions, &arrivals, signal, kills, &mut next_id).await;
        gaps.sort_unstable();
        // "none" rather than 0 s when no round measured a gap.
        let figure = |p: f64| percentile(&gaps, p).map_or("none".to_owned(), |d| format!("{d:?}"));
        println!(
            "failover (SIG{signal}, 3 tickers, {FAILOVER_SESSIONS} sessions at 10 Hz, {} rounds): \
             worst orphan tick gap per round p50 {}, p90 {}, max {}",
            gaps.len(),
            figure(0.5),
            figure(0.9),
            figure(1.0)
        );
    }
}

async fn capacity(hz: u64) {
    let tick_ms = 1000 / hz;
    let nats = NatsServer::start().await;
    let bus = open_bus(&nats).await;
    let ticker = Proc::spawn(&nats, "cap", tick_ms).await;
    wait_balanced(std::slice::from_ref(&ticker)).await;
    let steps: &[usize] = if hz >= 10 {
        &[1_000, 2_000, 5_000, 10_000, 20_000, 30_000, 40_000, 50_000]
    } else {
        &[10_000, 20_000, 50_000, 100_000, 150_000]
    };
    let mut sessions: Vec<SessionId> = Vec::new();
    println!("capacity at {hz} Hz (one ticker, {SHARDS} shards, release build):");
    println!(
        "  sessions  ticks/s sent (expected)  ticker CPU  ticker RSS  lateness p50 / p99 / max"
    );
    for &n in steps {
        let more = playing_sessions(&bus, n - sessions.len()).await;
        sessions.extend(more);
        let ready = Instant::now();
        while ticker.metric("bandsync_ticker_playing_sessions").await < n as f64 * 0.999
            && ready.elapsed() < Duration::from_secs(60)
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Lateness of every beat: server_time − the period's boundary.
        let late: Arc<Mutex<Vec<i64>>> = Arc::default();
        let mut subs = Vec::new();
        {
            let mut sub = bus
                .client
                .subscribe(bus.subjects.beat_all())
                .await
                .expect("subscribing");
            let late = late.clone();
            let period_us = i64::try_from(tick_ms * 1000).unwrap_or(100_000);
            subs.push(tokio::spawn(async move {
                while let Some(msg) = sub.next().await {
                    // A beat that is not one, or whose seq no i64 holds, is
                    // not counted (a zero boundary would print as hours late).
                    let Ok(b) = serde_json::from_slice::<BeatMsg>(&msg.payload) else {
                        continue;
                    };
                    let Some(boundary) = i64::try_from(b.seq)
                        .ok()
                        .and_then(|seq| seq.checked_mul(period_us))
                    else {
                        continue;
                    };
                    late.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(b.server_time - boundary);
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        late.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let window = Duration::from_secs(10);
        let (cpu0, ticks0, t0) = (
            ticker.cpu_seconds(),
            ticker.metric("bandsync_ticker_ticks_total").await,
            Instant::now(),
        );
        tokio::time::sleep(window).await;
        let elapsed = t0.elapsed().as_secs_f64();
        let cpu = (ticker.cpu_seconds() - cpu0) / elapsed * 100.0;
        let rate = (ticker.metric("bandsync_ticker_ticks_total").await - ticks0) / elapsed;
        for s in subs {
            s.abort();
        }
        let mut late = late.lock().unwrap_or_else(|e| e.into_inner()).clone();
        late.sort_unstable();
        // NaN (printed as such) when no tick of the sample arrived.
        let ms = |p: f64| percentile(&late, p).map_or(f64::NAN, |us| us as f64 / 1000.0);
        println!(
            "  {n:>8}  {rate:>10.0} ({:>8})  {cpu:>8.1} %  {:>7.0} MB  {:.1} / {:.1} / {:.1} ms",
            n as u64 * hz,
            ticker.rss_mb(),
            ms(0.5),
            ms(0.99),
            ms(1.0)
        );
        let sustained = rate >= 0.98 * (n as u64 * hz) as f64 && ms(0.99) < tick_ms as f64 / 2.0;
        if !sustained {
            println!(
                "  (not sustained at {n}: fewer ticks than due, or late by over half a period)"
            );
            break;
        }
    }
}
