//! Shared helpers: a nats-server per test, `bandsync-ticker` processes, two
//! gateways in this process, bands of real clients, and recorders of what each
//! client receives.

use bandsync_client::{Api, Connection};
use bandsync_gateway::Gateway;
use bandsync_nats::bus::Bus;
use bandsync_nats::{Command, ServerMsg, SessionId, Shard, Timeline, shard_of};
use bandsync_testkit::{HttpError, MetricError, NatsServer, Role, http_get, scrape_metric};
use clap::Parser;
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const SHARDS: u16 = 64;
pub const TICK_MS: u64 = 100;
pub const TTL_MS: u64 = 1500;
pub const PERIOD: Duration = Duration::from_millis(TICK_MS);
const SECRET: &str = "fleet-test-secret-0123456789";
pub const WAIT: Duration = Duration::from_secs(20);
/// Bands set up at once (each is a few HTTP calls and two sockets).
const SETUP_PARALLEL: usize = 16;

/// Fleet tests measure timing: they run one at a time so they do not compete
/// for the machine's cores.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let guard = LOCK.lock().await;
    bandsync_nats::service::init_tracing_at("warn");
    guard
}

/// One `bandsync-ticker` process, killed on drop.
pub struct TickerProc {
    pub id: String,
    /// `host:port` of its health server.
    pub addr: String,
    child: tokio::process::Child,
    log: PathBuf,
}

/// What `/readyz` says.
#[derive(Debug, Clone)]
pub struct Ready {
    pub ready: bool,
    /// Owned shards and their epochs.
    pub shards: BTreeMap<Shard, u64>,
}

impl TickerProc {
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the ticker is running")
    }

    /// Sends a signal (`KILL`, `TERM`, `STOP`, `CONT`) with kill(1).
    pub fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .args(["-s", sig, &self.pid().to_string()])
            .status()
            .expect("running kill(1)");
        assert!(status.success(), "kill -s {sig} {} failed", self.pid());
    }

    /// Waits for the process to exit (after SIGTERM or SIGKILL).
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .expect("the ticker exits in time")
            .expect("waiting for the ticker")
    }

    /// What `/readyz` says; an error when the ticker does not answer.
    pub async fn readyz(&self) -> Result<Ready, HttpError> {
        let response = http_get(&format!("{}/readyz", self.addr)).await?;
        let shards = response
            .body
            .lines()
            .find_map(|l| l.strip_prefix("shards:"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|pair| {
                let (s, e) = pair.split_once('@')?;
                Some((s.parse().ok()?, e.parse().ok()?))
            })
            .collect();
        Ok(Ready {
            ready: response.status == 200,
            shards,
        })
    }

    /// The whole `/metrics` text; an error when the ticker does not answer.
    pub async fn metrics(&self) -> Result<String, HttpError> {
        Ok(http_get(&format!("{}/metrics", self.addr)).await?.body)
    }

    /// One series of `/metrics`, read strictly: an unreachable endpoint or an
    /// absent series is an error naming it, never a 0.
    pub async fn metric(&self, series: &str) -> Result<f64, MetricError> {
        scrape_metric(&format!("{}/metrics", self.addr), series).await
    }

    /// Everything the ticker has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).expect("reading the ticker's log")
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// nats-server, ticker processes and two in-process gateways.
pub struct Fleet {
    pub nats: NatsServer,
    pub tickers: Vec<TickerProc>,
    pub gateways: Vec<(Gateway, CancellationToken)>,
    /// Flags every ticker gets beyond the fleet's own (`--idle-expiry-secs=3`).
    ticker_args: Vec<String>,
    dir: tempfile::TempDir,
}

impl Fleet {
    /// Starts `tickers` tickers and two gateways, and waits until the shards are spread.
    pub async fn start(tickers: usize) -> Fleet {
        Self::start_with(tickers, &[]).await
    }

    /// As `start`, with more flags for every ticker.
    pub async fn start_with(tickers: usize, ticker_args: &[&str]) -> Fleet {
        let nats = NatsServer::start().await;
        let dir = tempfile::Builder::new()
            .prefix("bandsync-fleet-")
            .tempdir()
            .expect("temp dir for ticker logs");
        let mut fleet = Fleet {
            nats,
            tickers: Vec::new(),
            gateways: Vec::new(),
            ticker_args: ticker_args.iter().map(|a| a.to_string()).collect(),
            dir,
        };
        for _ in 0..tickers {
            fleet.add_ticker().await;
        }
        for i in 0..2 {
            fleet.add_gateway(&format!("gw-{i}")).await;
        }
        let all: Vec<usize> = (0..tickers).collect();
        fleet.wait_balanced(&all, WAIT).await;
        fleet
    }

    /// Spawns one more ticker process; returns its index.
    pub async fn add_ticker(&mut self) -> usize {
        let index = self.tickers.len();
        let id = format!("t-{index}");
        let log = self.dir.path().join(format!("{id}.log"));
        let stderr = std::fs::File::create(&log).expect("creating the ticker log");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_bandsync-ticker"))
            .args(self.nats.bus_flags(Role::Ticker))
            .args([
                "--listen=127.0.0.1:0".into(),
                format!("--ticker-id={id}"),
                format!("--shards={SHARDS}"),
                format!("--tick-ms={TICK_MS}"),
                format!("--lease-ttl-ms={TTL_MS}"),
            ])
            .args(&self.ticker_args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .expect("spawning bandsync-ticker");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        // Logs go to stdout too: copy them to the log file, and find the start line.
        let mut sink = tokio::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .await
            .expect("opening the ticker log");
        let started = async {
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = sink.write_all(format!("{line}\n").as_bytes()).await;
                if line.starts_with("bandsync-ticker ") {
                    return Some(line);
                }
            }
            None
        };
        let first = tokio::time::timeout(WAIT, started)
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| {
                panic!(
                    "ticker {id} did not start; its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = sink.write_all(format!("{line}\n").as_bytes()).await;
            }
        });
        let addr = first
            .rsplit("http://")
            .next()
            .expect("the start line names the health address")
            .trim()
            .to_owned();
        self.tickers.push(TickerProc {
            id,
            addr,
            child,
            log,
        });
        index
    }

    async fn add_gateway(&mut self, id: &str) {
        let config = bandsync_gateway::Config::parse_from(
            ["bandsync-gateway".to_string()]
                .into_iter()
                .chain(self.nats.bus_flags(Role::Gateway))
                .chain([
                    "--listen=127.0.0.1:0".into(),
                    "--ops-listen=127.0.0.1:0".into(),
                    format!("--token-secret={SECRET}"),
                    format!("--gateway-id={id}"),
                    format!("--shards={SHARDS}"),
                    format!("--lease-ttl-ms={TTL_MS}"),
                ])
                // Many devices from one address: no per-address limits.
                .chain(bandsync_testkit::NO_ADDRESS_LIMITS.map(String::from)),
        );
        let token = CancellationToken::new();
        let gateway = bandsync_gateway::start(config, token.clone())
            .await
            .expect("gateway starts");
        self.gateways.push((gateway, token));
    }

    /// A connection of the test's own to the fleet's buckets and streams, as the operator.
    pub async fn bus(&self, name: &str) -> Bus {
        self.nats
            .bus_args(Role::Admin)
            .open(name.into())
            .await
            .expect("the test opens the bus")
    }

    pub fn base(&self, gateway: usize) -> String {
        format!("http://{}", self.gateways[gateway].0.addr)
    }

    /// `/readyz` of the tickers `which` (`None` for one that does not answer).
    pub async fn ownership(&self, which: &[usize]) -> Vec<Option<Ready>> {
        futures::future::join_all(
            which
                .iter()
                .map(|&i| async move { self.tickers[i].readyz().await.ok() }),
        )
        .await
    }

    /// Waits until every shard is owned by exactly one of `live`, each owning
    /// its fair share ±1; returns how long that took and each one's shards.
    pub async fn wait_balanced(
        &self,
        live: &[usize],
        within: Duration,
    ) -> (Duration, Vec<BTreeMap<Shard, u64>>) {
        let started = Instant::now();
        let fair = f64::from(SHARDS) / live.len() as f64;
        let mut last = Vec::new();
        while started.elapsed() < within {
            let views = self.ownership(live).await;
            let owned: Vec<BTreeMap<Shard, u64>> = views
                .iter()
                .map(|view| {
                    view.as_ref()
                        .filter(|r| r.ready)
                        .map(|r| r.shards.clone())
                        .unwrap_or_default()
                })
                .collect();
            let mut seen: Vec<Shard> = owned.iter().flat_map(|o| o.keys().copied()).collect();
            seen.sort_unstable();
            seen.dedup();
            let total: usize = owned.iter().map(BTreeMap::len).sum();
            let fair_enough = owned.iter().all(|o| (o.len() as f64 - fair).abs() <= 1.0);
            if seen.len() == usize::from(SHARDS) && total == usize::from(SHARDS) && fair_enough {
                return (started.elapsed(), owned);
            }
            last = owned.iter().map(BTreeMap::len).collect();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("shards not spread over tickers {live:?} within {within:?}: counts {last:?}");
    }

    /// The bands whose session's shard ticker `ticker` owns now.
    pub async fn sessions_of(&self, ticker: usize, bands: &[Band]) -> Vec<SessionId> {
        let owned = self.tickers[ticker]
            .readyz()
            .await
            .unwrap_or_else(|e| panic!("ticker {ticker} answers /readyz: {e}"))
            .shards;
        bands
            .iter()
            .filter(|b| owned.contains_key(&shard_of(&b.session, SHARDS)))
            .map(|b| b.session.clone())
            .collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for t in &self.tickers {
                eprintln!("--- last lines of {} ---\n{}", t.id, t.log_tail(40));
            }
        }
    }
}

/// A session with its leader on gateway 0 and one follower on gateway 1.
pub struct Band {
    pub session: SessionId,
    pub leader: Connection,
    pub follower: Connection,
    /// The session's timeline once playing (from the play event).
    pub timeline: Timeline,
}

/// Sets up `n` bands, each playing (count-in none) once this returns.
pub async fn bands(fleet: &Fleet, n: usize) -> Vec<Band> {
    let (lead_base, follow_base) = (fleet.base(0), fleet.base(1));
    futures::stream::iter(0..n)
        .map(|i| band(lead_base.clone(), follow_base.clone(), i))
        .buffer_unordered(SETUP_PARALLEL)
        .collect()
        .await
}

async fn band(lead_base: String, follow_base: String, i: usize) -> Band {
    let lead = Api::new(&lead_base)
        .create(&format!("Leader {i}"))
        .await
        .expect("create");
    let joined = Api::new(&follow_base)
        .join(lead.code.as_str(), &format!("Follower {i}"))
        .await
        .expect("join");
    let mut leader = Connection::connect(&lead_base, &lead.token)
        .await
        .expect("leader connects");
    let mut follower = Connection::connect(&follow_base, &joined.token)
        .await
        .expect("follower connects");
    let member = joined.member.clone();
    leader
        .wait_until(WAIT, |s| s.member(&member).is_some_and(|m| m.connected))
        .await
        .expect("the follower joins");
    leader
        .send(&Command::Play { count_in_bars: 0 }, None)
        .await
        .expect("play");
    let playing = |m: &ServerMsg| matches!(m, ServerMsg::Event(e) if e.changes.iter().any(|c| c.kind() == "play"));
    leader.wait_for(WAIT, playing).await.expect("play event");
    follower
        .wait_for(WAIT, playing)
        .await
        .expect("play event at the follower");
    let timeline = leader.state.timeline.clone();
    Band {
        session: lead.session,
        leader,
        follower,
        timeline,
    }
}

/// One tick as a client received it.
#[derive(Debug, Clone)]
pub struct TickSeen {
    pub at: Instant,
    pub seq: u64,
    pub epoch: u64,
    /// Tick position minus the session timeline's at the tick's server time, in ms.
    pub error_ms: f64,
}

/// What one client received while recording.
pub struct Log {
    pub session: SessionId,
    pub ticks: Vec<TickSeen>,
    /// Ticks and events whose epoch was below one the client had already seen.
    pub stale: Vec<String>,
    /// Events received (epoch, seq).
    pub events: Vec<(u64, u64)>,
}

/// Records every message each client receives until `stop`.
pub struct Recorder {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<Log>>,
}

impl Recorder {
    pub fn start(bands: Vec<Band>) -> Recorder {
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        for band in bands {
            for conn in [band.leader, band.follower] {
                let (stop, session, timeline) =
                    (stop.clone(), band.session.clone(), band.timeline.clone());
                tasks.push(tokio::spawn(record(conn, session, timeline, stop)));
            }
        }
        Recorder { stop, tasks }
    }

    pub async fn finish(self) -> Vec<Log> {
        self.stop.cancel();
        let logs = futures::future::join_all(self.tasks).await;
        logs.into_iter()
            .map(|l| l.expect("recorder task"))
            .collect()
    }
}

async fn record(
    mut conn: Connection,
    session: SessionId,
    timeline: Timeline,
    stop: CancellationToken,
) -> Log {
    let mut log = Log {
        session,
        ticks: Vec::new(),
        stale: Vec::new(),
        events: Vec::new(),
    };
    let mut newest_epoch = 0u64;
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => break,
            r = conn.next_unfiltered() => r,
        };
        let Ok((msg, _)) = received else { break };
        let at = Instant::now();
        match msg {
            ServerMsg::Tick(t) => {
                if t.epoch < newest_epoch {
                    log.stale.push(format!(
                        "tick seq {} epoch {} < {newest_epoch}",
                        t.seq, t.epoch
                    ));
                }
                newest_epoch = newest_epoch.max(t.epoch);
                let beats = t.timeline.position(t.server_time) - timeline.position(t.server_time);
                let bpm = timeline.at(t.server_time).tempo_bpm;
                log.ticks.push(TickSeen {
                    at,
                    seq: t.seq,
                    epoch: t.epoch,
                    error_ms: beats * 60_000.0 / bpm,
                });
            }
            ServerMsg::Event(e) => {
                if e.epoch < newest_epoch {
                    log.stale.push(format!(
                        "event seq {} epoch {} < {newest_epoch}",
                        e.seq, e.epoch
                    ));
                }
                newest_epoch = newest_epoch.max(e.epoch);
                log.events.push((e.epoch, e.seq));
            }
            _ => {}
        }
    }
    conn.close().await;
    log
}

/// Longest silence each session's clients saw after `from` (from `from` itself
/// to the first tick, then between ticks), the worst of its two clients.
pub fn longest_gaps(logs: &[Log], from: Instant, until: Instant) -> HashMap<SessionId, Duration> {
    let mut gaps: HashMap<SessionId, Duration> = HashMap::new();
    for log in logs {
        let mut last = from;
        let mut worst = Duration::ZERO;
        for t in log.ticks.iter().filter(|t| t.at >= from && t.at <= until) {
            worst = worst.max(t.at - last);
            last = t.at;
        }
        worst = worst.max(until - last);
        let entry = gaps.entry(log.session.clone()).or_default();
        *entry = (*entry).max(worst);
    }
    gaps
}

/// Tick sequences a client received from two different epochs.
pub fn doubled_periods(logs: &[Log]) -> Vec<String> {
    let mut doubled = Vec::new();
    for log in logs {
        let mut by_seq: HashMap<u64, Vec<u64>> = HashMap::new();
        for t in &log.ticks {
            by_seq.entry(t.seq).or_default().push(t.epoch);
        }
        for (seq, epochs) in by_seq {
            if epochs.len() > 1 {
                doubled.push(format!("{} seq {seq} epochs {epochs:?}", log.session));
            }
        }
    }
    doubled
}

/// Worst |tick position − session timeline| over all ticks, in ms.
pub fn worst_position_error_ms(logs: &[Log]) -> f64 {
    logs.iter()
        .flat_map(|l| l.ticks.iter())
        .map(|t| t.error_ms.abs())
        .fold(0.0, f64::max)
}

/// Tick periods missed between consecutive ticks after `from`, the worst client.
pub fn most_missed_periods(logs: &[Log], from: Instant) -> u64 {
    logs.iter()
        .map(|l| {
            let seqs: Vec<u64> = l
                .ticks
                .iter()
                .filter(|t| t.at >= from)
                .map(|t| t.seq)
                .collect();
            seqs.windows(2)
                .map(|w| w[1].saturating_sub(w[0]).saturating_sub(1))
                .max()
                .unwrap_or(0)
        })
        .max()
        .unwrap_or(0)
}

pub fn worst(gaps: &HashMap<SessionId, Duration>) -> (Duration, Option<SessionId>) {
    gaps.iter()
        .max_by_key(|(_, g)| **g)
        .map(|(s, g)| (*g, Some(s.clone())))
        .unwrap_or((Duration::ZERO, None))
}
