//! Store configuration: every flag also reads a `BANDSYNC_` environment variable.

use bandsync_nats::bus::BusArgs;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "bandsync-store",
    about = "BandSync store: every command and event into PostgreSQL exactly once, and an HTTP API for analysts"
)]
pub struct Config {
    #[command(flatten)]
    pub bus: BusArgs,
    /// PostgreSQL URL; the database is created if missing (also read from DATABASE_URL).
    #[arg(
        long,
        env = "BANDSYNC_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/bandsync",
        hide_env_values = true
    )]
    pub database_url: String,
    /// Address of the HTTP API, health and metrics (port 0 picks a free port).
    #[arg(long, env = "BANDSYNC_STORE_LISTEN", default_value = "127.0.0.1:9200")]
    pub listen: SocketAddr,
    /// Durable consumer name; store workers sharing it split the work.
    #[arg(long, env = "BANDSYNC_STORE_DURABLE", default_value = "store")]
    pub durable: String,
    /// Most messages written in one transaction.
    #[arg(long, env = "BANDSYNC_STORE_BATCH", default_value_t = 1000)]
    pub batch_max: usize,
    /// Longest wait, in milliseconds, for a batch to fill before it is written.
    #[arg(long, env = "BANDSYNC_STORE_BATCH_WAIT_MS", default_value_t = 50)]
    pub batch_wait_ms: u64,
    /// Batches of one stream written at once: while one waits on PostgreSQL
    /// (its commit's fsync, a round trip) the next is decoded and sent.
    #[arg(long, env = "BANDSYNC_STORE_WRITERS", default_value_t = 3)]
    pub writers: usize,
    /// PostgreSQL connections in the pool (ingest uses up to `writers` per stream, the API the rest).
    #[arg(long, env = "BANDSYNC_STORE_POOL", default_value_t = 8)]
    pub pool_size: usize,
    /// Seconds with messages pending and no batch committed after which a
    /// stream's ingest counts as stalled and `/readyz` answers 503. Keep it
    /// above the ack wait (10 s) when several workers share the durable: a
    /// dead worker's messages return to the others only after it.
    #[arg(long, env = "BANDSYNC_STORE_STALL_AFTER_SECS", default_value_t = 30)]
    pub stall_after_secs: u64,
    /// Tokens of the analysts who may read the log through the API
    /// (`Authorization: Bearer <token>`), comma-separated, each at least 16
    /// characters: one per analyst, so one can be withdrawn alone. None: the
    /// API answers nobody (health, readiness and metrics stay open).
    #[arg(
        long,
        env = "BANDSYNC_ANALYST_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub analyst_tokens: Vec<String>,
}

/// Largest batch accepted: bounds memory held while PostgreSQL is down and
/// keeps each transaction short.
pub const MAX_BATCH: usize = 10_000;

impl Config {
    /// `DATABASE_URL` is honoured when neither the flag nor `BANDSYNC_DATABASE_URL` is set.
    pub fn from_args() -> Self {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Self::command().get_matches();
        let mut config = match Self::from_arg_matches(&matches) {
            Ok(c) => c,
            Err(e) => e.exit(),
        };
        let defaulted =
            matches.value_source("database_url") == Some(clap::parser::ValueSource::DefaultValue);
        if let (true, Ok(url)) = (defaulted, std::env::var("DATABASE_URL")) {
            config.database_url = url;
        }
        config
    }

    /// Checks everything before anything is bound or connected.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.bus.validate()?;
        anyhow::ensure!(
            self.analyst_tokens
                .iter()
                .all(|t| t.len() >= crate::api::auth::MIN_TOKEN_LEN),
            "--analyst-tokens: each token must be at least {} characters",
            crate::api::auth::MIN_TOKEN_LEN
        );
        anyhow::ensure!(
            (1..=MAX_BATCH).contains(&self.batch_max),
            "--batch-max must be 1..={MAX_BATCH}"
        );
        anyhow::ensure!(
            (1..=10_000).contains(&self.batch_wait_ms),
            "--batch-wait-ms must be 1..=10000"
        );
        anyhow::ensure!((1..=16).contains(&self.writers), "--writers must be 1..=16");
        anyhow::ensure!(
            (1..=3600).contains(&self.stall_after_secs),
            "--stall-after-secs must be 1..=3600"
        );
        anyhow::ensure!(
            (5..=64).contains(&self.pool_size),
            "--pool-size must be 5..=64"
        );
        anyhow::ensure!(
            self.pool_size > 2 * self.writers,
            "--pool-size must exceed twice --writers (each stream writes on up to --writers connections)"
        );
        let durable_ok = !self.durable.is_empty()
            && self.durable.len() <= 64
            && self
                .durable
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        anyhow::ensure!(
            durable_ok,
            "--durable must be 1..=64 of letters, digits, '_' or '-'"
        );
        let pg: tokio_postgres::Config = self
            .database_url
            .parse()
            .map_err(|e| anyhow::anyhow!("--database-url is not a PostgreSQL URL: {e}"))?;
        anyhow::ensure!(
            pg.get_dbname().is_some(),
            "--database-url must name a database"
        );
        Ok(())
    }

    pub fn batch_wait(&self) -> Duration {
        Duration::from_millis(self.batch_wait_ms)
    }

    pub fn stall_after(&self) -> Duration {
        Duration::from_secs(self.stall_after_secs)
    }

    /// Settings for tests and embedding: everything defaulted except the three addresses.
    pub fn new(nats_url: &str, database_url: &str, listen: SocketAddr) -> Self {
        Self {
            bus: BusArgs::new(nats_url),
            database_url: database_url.to_owned(),
            listen,
            durable: "store".to_owned(),
            batch_max: 1000,
            batch_wait_ms: 50,
            writers: 3,
            pool_size: 8,
            stall_after_secs: 30,
            analyst_tokens: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_are_named() {
        let ok = Config::new(
            "nats://x",
            "postgres://postgres@127.0.0.1/db",
            "127.0.0.1:0".parse().expect("addr"),
        );
        assert!(ok.validate().is_ok());
        let bad = Config {
            batch_max: 0,
            ..ok.clone()
        };
        assert!(
            bad.validate()
                .expect_err("refused")
                .to_string()
                .contains("--batch-max")
        );
        let bad = Config {
            database_url: "postgres://postgres@127.0.0.1".into(),
            ..ok.clone()
        };
        assert!(
            bad.validate()
                .expect_err("refused")
                .to_string()
                .contains("name a database")
        );
        let mut bad = ok.clone();
        bad.bus.prefix = "Bad.Prefix".into();
        assert!(
            bad.validate()
                .expect_err("refused")
                .to_string()
                .contains("--prefix")
        );
        let mut bad = ok;
        bad.bus.replicas = 0;
        assert!(
            bad.validate()
                .expect_err("refused")
                .to_string()
                .contains("--replicas")
        );
    }
}
