//! Ticker configuration: every flag also reads a `BANDSYNC_` environment variable.

use bandsync_nats::Rules;
use bandsync_nats::bus::BusArgs;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "bandsync-ticker",
    about = "BandSync ticker: owns session timing for the shards it leases"
)]
pub struct Config {
    #[command(flatten)]
    pub bus: BusArgs,
    /// Address for /healthz, /readyz and /metrics (port 0 picks a free port).
    #[arg(long, env = "BANDSYNC_TICKER_LISTEN", default_value = "127.0.0.1:9100")]
    pub listen: SocketAddr,
    /// This ticker's id; random if not given.
    #[arg(long, env = "BANDSYNC_TICKER_ID")]
    pub ticker_id: Option<String>,
    /// Number of shards; must match the gateways.
    #[arg(long, env = "BANDSYNC_SHARDS", default_value_t = bandsync_nats::shard::DEFAULT_SHARDS)]
    pub shards: u16,
    /// Tick period in milliseconds while a session plays.
    #[arg(long, env = "BANDSYNC_TICK_MS", default_value_t = 100)]
    pub tick_ms: u64,
    /// How far ahead changes are scheduled, in milliseconds, at least: a band
    /// whose slowest connected member reports a longer round trip gets that
    /// plus 50 ms, up to 1 s (`state::quality::adaptive_lead`).
    #[arg(long, env = "BANDSYNC_LEAD_MS", default_value_t = 150)]
    pub lead_ms: u64,
    /// Members per session.
    #[arg(long, env = "BANDSYNC_MAX_MEMBERS", default_value_t = 12)]
    pub max_members: usize,
    /// How long a disconnected leader keeps leadership, in milliseconds.
    #[arg(long, env = "BANDSYNC_LEADER_GRACE_MS", default_value_t = 5000)]
    pub leader_grace_ms: u64,
    /// A session with nobody connected and no command for this long ends, in seconds.
    #[arg(long, env = "BANDSYNC_IDLE_EXPIRY_SECS", default_value_t = 3600)]
    pub idle_expiry_secs: u64,
}

impl Config {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.shards > 0, "--shards must be positive");
        anyhow::ensure!(
            (10..=60_000).contains(&self.tick_ms),
            "--tick-ms must be 10..=60000"
        );
        anyhow::ensure!(
            (10..=5_000).contains(&self.lead_ms),
            "--lead-ms must be 10..=5000"
        );
        anyhow::ensure!(self.max_members >= 1, "--max-members must be at least 1");
        anyhow::ensure!(
            self.idle_expiry_secs >= 1,
            "--idle-expiry-secs must be at least 1"
        );
        self.bus.validate()?;
        if let Some(id) = &self.ticker_id {
            bandsync_nats::GatewayId::parse(id.clone())?;
        }
        Ok(())
    }

    pub fn rules(&self) -> Rules {
        Rules {
            lead_us: ms_to_us(self.lead_ms),
            max_members: self.max_members,
            leader_grace_us: ms_to_us(self.leader_grace_ms),
            idle_expiry_us: ms_to_us(self.idle_expiry_secs.saturating_mul(1000)),
        }
    }

    pub fn lease_ttl(&self) -> Duration {
        self.bus.lease_ttl()
    }

    pub fn tick_period(&self) -> Duration {
        Duration::from_millis(self.tick_ms)
    }
}

fn ms_to_us(ms: u64) -> i64 {
    i64::try_from(ms.saturating_mul(1000)).unwrap_or(i64::MAX)
}
