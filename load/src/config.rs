//! Load generator configuration: every flag also reads a `BANDSYNC_LOAD_`
//! environment variable (or the stack's own `BANDSYNC_` one where shared).

use bandsync_nats::command::{MAX_CHART_BYTES, MAX_SONGS};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

/// The largest setlist a session takes: every song's chart at its limit.
pub const MAX_SETLIST_KB: usize = MAX_SONGS * MAX_CHART_BYTES / 1000;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "bandsync-load",
    about = "BandSync load generator: S sessions x M members over G gateways, speaking the real protocol"
)]
pub struct Config {
    /// Sessions to hold (the first step's size in ramp mode).
    #[arg(long, env = "BANDSYNC_LOAD_SESSIONS", default_value_t = 100)]
    pub sessions: usize,
    /// Members per session, the leader included.
    #[arg(long, env = "BANDSYNC_LOAD_MEMBERS", default_value_t = 6)]
    pub members: usize,
    /// Gateway base URLs (http://host:port) of a running stack; when none is
    /// given the tool starts its own stack (nats-server, tickers, gateways).
    #[arg(
        long = "gateway",
        env = "BANDSYNC_LOAD_GATEWAYS",
        value_delimiter = ','
    )]
    pub gateway_urls: Vec<String>,
    /// Processes of a running stack to measure, as NAME=PID (repeatable).
    #[arg(long = "pid", value_parser = parse_pid)]
    pub pids: Vec<(String, u32)>,
    /// Gateways to start (own stack only).
    #[arg(long, env = "BANDSYNC_LOAD_START_GATEWAYS", default_value_t = 2)]
    pub gateways: usize,
    /// Tickers to start (own stack only).
    #[arg(long, env = "BANDSYNC_LOAD_START_TICKERS", default_value_t = 1)]
    pub tickers: usize,
    /// NATS nodes to start (own stack only): 1 runs streams and buckets with one
    /// replica; 3 runs a JetStream cluster with three (what the Raft writes cost).
    #[arg(long, env = "BANDSYNC_LOAD_NATS_NODES", default_value_t = 1)]
    pub nats_nodes: usize,
    /// Tick period of the started tickers, in ms (own stack only; with
    /// --gateway, say what the running tickers use, for the expected tick count).
    #[arg(long, env = "BANDSYNC_TICK_MS", default_value_t = 100)]
    pub tick_ms: u64,
    /// Directory holding bandsync-gateway and bandsync-ticker (default: the
    /// release, then debug, build in CARGO_TARGET_DIR or ./target).
    #[arg(long, env = "BANDSYNC_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
    /// The gateway executable to start instead of `<bin dir>/bandsync-gateway`
    /// (own stack only): another build's gateway against this one's, in one session.
    #[arg(long, env = "BANDSYNC_GATEWAY_BIN")]
    pub gateway_bin: Option<PathBuf>,
    /// Which gateway each member uses: `spread` puts member m of session s on
    /// gateway (s + m) mod G, so every band spans the gateways; `band` puts a
    /// whole session on gateway s mod G, as production's nginx keeps a band
    /// on one gateway.
    #[arg(long, env = "BANDSYNC_LOAD_PLACEMENT", value_enum, default_value_t = Placement::Spread)]
    pub placement: Placement,
    /// nats-server 2.11+ binary (own stack only).
    #[arg(long, env = "BANDSYNC_NATS_SERVER", default_value = "nats-server")]
    pub nats_server: PathBuf,
    /// Token secret of a running stack's gateways (own stack: generated).
    #[arg(long, env = "BANDSYNC_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,
    /// Seconds of measurement (per step in ramp mode).
    #[arg(long, env = "BANDSYNC_LOAD_DURATION_SECS", default_value_t = 10)]
    pub duration_secs: u64,
    /// Seconds between starting playback and measuring (clock sync settles, count-in passes).
    #[arg(long, env = "BANDSYNC_LOAD_WARMUP_SECS", default_value_t = 3)]
    pub warmup_secs: u64,
    /// Each leader sends a tempo change this often, in ms (0: none).
    #[arg(long, env = "BANDSYNC_LOAD_COMMAND_MS", default_value_t = 2000)]
    pub command_ms: u64,
    /// Each leader sets a setlist with this many KB of charts when it connects
    /// (0: none), so every member's socket carries it once, in its welcome or in
    /// the event that set it: what a band's charts cost the gateways.
    #[arg(long, env = "BANDSYNC_LOAD_SETLIST_KB", default_value_t = 0)]
    pub setlist_kb: usize,
    /// Each member samples its beat-position estimate this often, in ms.
    #[arg(long, env = "BANDSYNC_LOAD_SAMPLE_MS", default_value_t = 500)]
    pub sample_ms: u64,
    /// Each member sends a clock-sync ping this often, in ms.
    #[arg(long, env = "BANDSYNC_LOAD_PING_MS", default_value_t = 1000)]
    pub ping_ms: u64,
    /// After connecting, each member pings every 250 ms until its clock has
    /// this many samples (the SDK's recommendation, 40), then every --ping-ms.
    /// 0: steady pings only (cheaper for the stack at large sizes).
    #[arg(long, env = "BANDSYNC_LOAD_SETTLE_PINGS", default_value_t = bandsync_client::SETTLE_PINGS)]
    pub settle_pings: u64,
    /// Connections being opened at once.
    #[arg(long, env = "BANDSYNC_LOAD_CONNECT_CONCURRENCY", default_value_t = 128)]
    pub connect_concurrency: usize,
    /// Spread client sockets over this many loopback source addresses
    /// 127.0.100.1, 127.0.100.2, …; 0 lets the kernel choose (about 28k
    /// sockets per gateway at most).
    #[arg(long, env = "BANDSYNC_LOAD_SOURCE_ADDRS", default_value_t = 0)]
    pub source_addrs: u8,
    /// Load-generator processes: the tool re-executes itself this many times,
    /// each with a share of the sessions, and merges their reports (one
    /// process holds at most its open-file limit of sockets, 20,000 here).
    #[arg(long, env = "BANDSYNC_LOAD_PROCS", default_value_t = 1)]
    pub procs: usize,
    /// Open-file limit to raise this process (and the stack it starts) to.
    #[arg(long, env = "BANDSYNC_LOAD_NOFILE", default_value_t = 250_000)]
    pub nofile: u64,
    /// Ramp mode: session counts to step through (comma-separated), stopping
    /// at the first step that breaks the service level.
    #[arg(long, env = "BANDSYNC_LOAD_RAMP", value_delimiter = ',')]
    pub ramp: Vec<usize>,
    /// Service level, ramp mode: p99 command → all followers at most this, in ms.
    #[arg(long, default_value_t = 50.0)]
    pub slo_command_p99_ms: f64,
    /// Service level, ramp mode: delivered ticks at least this fraction of the rate.
    #[arg(long, default_value_t = 0.95)]
    pub slo_tick_ratio: f64,
    #[command(flatten)]
    pub impair: Impairment,
    /// Write the JSON report here (it is also printed after the table with --json-stdout).
    #[arg(long, env = "BANDSYNC_LOAD_JSON")]
    pub json: Option<PathBuf>,
    /// Print the JSON report to stdout after the table.
    #[arg(long)]
    pub json_stdout: bool,
    /// Where the started stack writes its logs and JetStream store (default: a temporary directory).
    #[arg(long, env = "BANDSYNC_LOAD_RUN_DIR")]
    pub run_dir: Option<PathBuf>,
}

/// Where a session's members connect (`--placement`).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Member m of session s on gateway (s + m) mod G.
    #[default]
    Spread,
    /// Every member of session s on gateway s mod G.
    Band,
}

impl Placement {
    /// The gateway (an index below `gateways`) member `member` of session
    /// `session` creates or joins through, connects to and reconnects to first.
    pub fn gateway(self, session: usize, member: usize, gateways: usize) -> usize {
        let g = gateways.max(1);
        match self {
            Placement::Spread => (session + member) % g,
            Placement::Band => session % g,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Placement::Spread => "spread",
            Placement::Band => "band",
        }
    }
}

/// Network impairment added by a user-space TCP proxy in front of each gateway
/// (WebSocket traffic only; the HTTP API goes direct). Off when all are zero.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, clap::Args, serde::Serialize, serde::Deserialize,
)]
pub struct Impairment {
    /// One-way delay client → gateway, in ms.
    #[arg(long, default_value_t = 0.0)]
    pub up_delay_ms: f64,
    /// Uniform jitter ± this, client → gateway, in ms.
    #[arg(long, default_value_t = 0.0)]
    pub up_jitter_ms: f64,
    /// One-way delay gateway → client, in ms.
    #[arg(long, default_value_t = 0.0)]
    pub down_delay_ms: f64,
    /// Uniform jitter ± this, gateway → client, in ms.
    #[arg(long, default_value_t = 0.0)]
    pub down_jitter_ms: f64,
    /// Mean time between stalls of a direction (a lost segment's retransmit wait), in ms (0: none).
    #[arg(long, default_value_t = 0.0)]
    pub stall_every_ms: f64,
    /// Length of a stall, in ms.
    #[arg(long, default_value_t = 200.0)]
    pub stall_ms: f64,
    /// Bandwidth cap per connection and direction, in kbit/s (0: none).
    #[arg(long, default_value_t = 0.0)]
    pub bandwidth_kbps: f64,
}

impl Impairment {
    pub fn is_active(&self) -> bool {
        [
            self.up_delay_ms,
            self.up_jitter_ms,
            self.down_delay_ms,
            self.down_jitter_ms,
            self.stall_every_ms,
            self.bandwidth_kbps,
        ]
        .iter()
        .any(|&v| v > 0.0)
    }
}

fn parse_pid(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=PID, got {s:?}"))?;
    let pid = pid.parse().map_err(|e| format!("bad pid in {s:?}: {e}"))?;
    Ok((name.to_owned(), pid))
}

impl Config {
    /// Checks everything before anything is started or connected.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.members >= 1, "--members must be at least 1");
        anyhow::ensure!(
            self.sessions >= 1 || !self.ramp.is_empty(),
            "--sessions must be at least 1"
        );
        anyhow::ensure!(
            self.ramp.windows(2).all(|w| w[0] < w[1]) && !self.ramp.contains(&0),
            "--ramp must be increasing positive session counts"
        );
        anyhow::ensure!(
            !self.gateway_urls.is_empty() || self.gateways >= 1,
            "--gateways must be at least 1"
        );
        anyhow::ensure!(
            !self.gateway_urls.is_empty() || self.tickers >= 1,
            "--tickers must be at least 1"
        );
        anyhow::ensure!(
            self.gateway_bin.is_none() || self.gateway_urls.is_empty(),
            "--gateway-bin starts the gateways of the tool's own stack; with --gateway there are none to start"
        );
        for url in &self.gateway_urls {
            anyhow::ensure!(
                url.starts_with("http://"),
                "--gateway {url:?} must be http://host:port"
            );
        }
        anyhow::ensure!(
            (10..=60_000).contains(&self.tick_ms),
            "--tick-ms must be 10..=60000"
        );
        anyhow::ensure!(
            self.duration_secs >= 1,
            "--duration-secs must be at least 1"
        );
        anyhow::ensure!(self.sample_ms >= 10, "--sample-ms must be at least 10");
        anyhow::ensure!(self.ping_ms >= 50, "--ping-ms must be at least 50");
        anyhow::ensure!(
            self.command_ms == 0 || self.command_ms >= 200,
            "--command-ms must be 0 or at least 200 (the gateway rate-limits clients)"
        );
        anyhow::ensure!((1..=64).contains(&self.procs), "--procs must be 1..=64");
        anyhow::ensure!(
            self.setlist_kb <= MAX_SETLIST_KB,
            "--setlist-kb must be at most {MAX_SETLIST_KB} (the setlist's own limits)"
        );
        anyhow::ensure!(
            self.connect_concurrency >= 1,
            "--connect-concurrency must be at least 1"
        );
        let i = &self.impair;
        for (name, v) in [
            ("--up-delay-ms", i.up_delay_ms),
            ("--up-jitter-ms", i.up_jitter_ms),
            ("--down-delay-ms", i.down_delay_ms),
            ("--down-jitter-ms", i.down_jitter_ms),
            ("--stall-every-ms", i.stall_every_ms),
            ("--stall-ms", i.stall_ms),
            ("--bandwidth-kbps", i.bandwidth_kbps),
        ] {
            anyhow::ensure!(
                v.is_finite() && v >= 0.0,
                "{name} must be a non-negative number"
            );
        }
        Ok(())
    }

    /// The session counts to run: the ramp's steps, or just `--sessions`.
    pub fn steps(&self) -> Vec<usize> {
        if self.ramp.is_empty() {
            vec![self.sessions]
        } else {
            self.ramp.clone()
        }
    }

    /// Source address for client number `n`, if spreading.
    pub fn source_ip(&self, n: usize) -> Option<IpAddr> {
        (self.source_addrs > 0).then(|| {
            let last = (n % usize::from(self.source_addrs)) as u8 + 1;
            IpAddr::V4(Ipv4Addr::new(127, 0, 100, last))
        })
    }

    pub fn tick_period(&self) -> Duration {
        Duration::from_millis(self.tick_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults_validate_and_steps_follow_the_ramp() {
        let c = Config::parse_from(["bandsync-load"]);
        c.validate().expect("defaults are valid");
        assert_eq!(c.steps(), vec![100]);
        assert_eq!(c.source_ip(5), None);
        let c = Config::parse_from([
            "bandsync-load",
            "--ramp=100,200,400",
            "--source-addrs=4",
            "--pid=gw=12",
        ]);
        c.validate().expect("valid");
        assert_eq!(c.steps(), vec![100, 200, 400]);
        assert_eq!(c.source_ip(5), Some("127.0.100.2".parse().expect("ip")));
        assert_eq!(c.pids, vec![("gw".to_owned(), 12)]);
    }

    #[test]
    fn placement_picks_each_members_gateway() {
        let gateways_of = |p: Placement, session: usize| -> Vec<usize> {
            (0..6).map(|m| p.gateway(session, m, 2)).collect()
        };
        // Spread: today's behaviour, every band over both gateways.
        assert_eq!(gateways_of(Placement::Spread, 0), [0, 1, 0, 1, 0, 1]);
        assert_eq!(gateways_of(Placement::Spread, 1), [1, 0, 1, 0, 1, 0]);
        // Band: a whole session on one gateway, sessions alternating.
        assert_eq!(gateways_of(Placement::Band, 0), [0; 6]);
        assert_eq!(gateways_of(Placement::Band, 1), [1; 6]);
        assert_eq!(gateways_of(Placement::Band, 4), [0; 6]);
        assert_eq!(Placement::Band.gateway(7, 3, 3), 1);
        assert_eq!(Placement::Spread.gateway(7, 3, 3), 1);
        assert_eq!(Placement::Spread.gateway(7, 4, 3), 2);
        // One gateway (or none given yet): always the first.
        assert_eq!(Placement::Band.gateway(5, 2, 1), 0);
        assert_eq!(Placement::Spread.gateway(5, 2, 0), 0);
        let c = Config::parse_from(["bandsync-load"]);
        assert_eq!(c.placement, Placement::Spread, "the default keeps today's");
        let c = Config::parse_from(["bandsync-load", "--placement=band"]);
        assert_eq!(c.placement, Placement::Band);
    }

    #[test]
    fn bad_values_are_refused() {
        for args in [
            &["bandsync-load", "--ramp=200,100"][..],
            &["bandsync-load", "--members=0"],
            &["bandsync-load", "--command-ms=10"],
            &["bandsync-load", "--gateway=ws://x:1"],
            &["bandsync-load", "--up-delay-ms=-1"],
            &[
                "bandsync-load",
                "--gateway=http://x:1",
                "--gateway-bin=/bin/true",
            ],
        ] {
            let c = Config::parse_from(args);
            assert!(c.validate().is_err(), "{args:?}");
        }
    }
}
