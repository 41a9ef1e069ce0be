//! Gateway configuration: every flag also reads a `BANDSYNC_` environment variable.

use crate::token::{Key, TokenKeys};
use bandsync_nats::bus::BusArgs;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "bandsync-gateway",
    about = "BandSync WebSocket gateway: serves the web client and fans out session traffic"
)]
pub struct Config {
    #[command(flatten)]
    pub bus: BusArgs,
    /// Address to listen on for HTTP and WebSocket (port 0 picks a free port).
    #[arg(
        long,
        env = "BANDSYNC_GATEWAY_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,
    /// Address for the operations endpoints, `/healthz`, `/readyz` and
    /// `/metrics` (port 0 picks a free port). They are not on the public port:
    /// keep this one off the internet (loopback, or a network only Prometheus
    /// and the orchestrator reach).
    #[arg(
        long,
        env = "BANDSYNC_GATEWAY_OPS_LISTEN",
        default_value = "127.0.0.1:9080"
    )]
    pub ops_listen: SocketAddr,
    /// HMAC secret shared by all gateways that signs member tokens (at least 16 bytes).
    #[arg(long, env = "BANDSYNC_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: String,
    /// Id of `--token-secret`, carried in every token it signs (letters, digits,
    /// '-', '_'; at most 16): give a new secret a new id.
    #[arg(long, env = "BANDSYNC_TOKEN_KEY_ID", default_value = "k1")]
    pub token_key_id: String,
    /// Earlier keys that still verify tokens (never sign), comma-separated
    /// `id:secret`: keep one for a token lifetime after a rotation.
    #[arg(
        long,
        env = "BANDSYNC_TOKEN_OLD_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub token_old_keys: Vec<String>,
    /// How long a member token lives, in seconds. A connected member gets a
    /// fresh one on connecting and after half of it; a device away longer
    /// joins again with the code.
    #[arg(long, env = "BANDSYNC_TOKEN_LIFETIME_SECS", default_value_t = 86_400)]
    pub token_lifetime_secs: u64,
    /// This gateway's id (letters, digits, '-', '_'); random if not given.
    #[arg(long, env = "BANDSYNC_GATEWAY_ID")]
    pub gateway_id: Option<String>,
    /// Number of shards; must match the tickers.
    #[arg(long, env = "BANDSYNC_SHARDS", default_value_t = bandsync_nats::shard::DEFAULT_SHARDS)]
    pub shards: u16,
    /// Members per session, checked early on join (the ticker enforces it).
    #[arg(long, env = "BANDSYNC_MAX_MEMBERS", default_value_t = 12)]
    pub max_members: usize,
    /// Largest WebSocket message accepted from a client, in bytes. The default
    /// (`wire::MAX_CLIENT_MESSAGE_BYTES`, 512 KiB) takes the largest setlist the
    /// owner accepts (50 songs with 4 KiB charts, every byte JSON-escaped); at
    /// 256 KiB, 50 charts with ♯ and ♭ were refused.
    #[arg(long, env = "BANDSYNC_MAX_FRAME_BYTES", default_value_t = bandsync_nats::wire::MAX_CLIENT_MESSAGE_BYTES)]
    pub max_frame_bytes: usize,
    /// Events queued per client before it is dropped as too slow.
    #[arg(long, env = "BANDSYNC_CLIENT_QUEUE", default_value_t = 64)]
    pub client_queue: usize,
    /// Kernel send buffer per client socket, in bytes: what a device that stops
    /// reading can hold up before its gateway notices and drops it.
    #[arg(long, env = "BANDSYNC_SOCKET_SEND_BUFFER", default_value_t = 64 * 1024)]
    pub socket_send_buffer: usize,
    /// Messages per second a client may send (sustained); bursts up to twice that.
    #[arg(long, env = "BANDSYNC_RATE_LIMIT", default_value_t = 20)]
    pub rate_limit: u32,
    /// Web origins whose pages may open `/ws`, comma-separated (e.g.
    /// `https://band.example`); by default only the gateway's own (the page's
    /// host is the one the request was sent to). Clients that send no `Origin`
    /// (not browsers) are admitted by their token alone.
    #[arg(long, env = "BANDSYNC_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Addresses of the proxies in front (e.g. nginx), comma-separated: from
    /// them, the client's address is read from `X-Forwarded-For` (for the
    /// per-address limits); from anyone else that header is ignored.
    #[arg(long, env = "BANDSYNC_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// HTTP requests (page, API, upgrades) one client address may make per
    /// minute; 0 for no limit.
    #[arg(long, env = "BANDSYNC_REQUESTS_PER_ADDRESS", default_value_t = 600)]
    pub requests_per_address: u32,
    /// WebSocket connections one client address may open per minute; 0 for no limit.
    #[arg(long, env = "BANDSYNC_CONNECTS_PER_ADDRESS", default_value_t = 120)]
    pub connects_per_address: u32,
    /// Sessions one client address may create per minute; 0 for no limit.
    #[arg(long, env = "BANDSYNC_CREATES_PER_ADDRESS", default_value_t = 10)]
    pub creates_per_address: u32,
    /// WebSockets one client address may hold open at once (a rehearsal
    /// room's Wi-Fi shares one); 0 for no limit.
    #[arg(long, env = "BANDSYNC_SOCKETS_PER_ADDRESS", default_value_t = 200)]
    pub sockets_per_address: u32,
    /// HTTPS on the public port: `off` (plain HTTP; behind nginx that ends
    /// TLS), `self-signed` (a certificate made on first run and kept in
    /// --tls-dir, for a band's LAN: phones need HTTPS for the screen wake
    /// lock), or `files` (--tls-cert and --tls-key).
    #[arg(long, env = "BANDSYNC_TLS", value_enum, default_value = "off")]
    pub tls: crate::tls::TlsMode,
    /// The certificate chain (PEM), with `--tls files`.
    #[arg(long, env = "BANDSYNC_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM), with `--tls files`.
    #[arg(long, env = "BANDSYNC_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Where `--tls self-signed` keeps its key and certificate (created if
    /// missing); by default `$XDG_DATA_HOME/bandsync/tls`, else
    /// `~/.local/share/bandsync/tls`. Keep it: phones accept the certificate
    /// once.
    #[arg(long, env = "BANDSYNC_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// More names for the self-signed certificate, comma-separated (hostnames
    /// or addresses); localhost, this machine's hostname and LAN addresses are
    /// always in it.
    #[arg(long, env = "BANDSYNC_TLS_HOSTNAMES", value_delimiter = ',')]
    pub tls_hostnames: Vec<String>,
    /// How long a client may take to finish its TLS handshake before it is
    /// disconnected, in milliseconds.
    #[arg(
        long,
        env = "BANDSYNC_TLS_HANDSHAKE_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub tls_handshake_timeout_ms: u64,
}

impl Config {
    /// The per-address limits.
    pub fn address_limits(&self) -> crate::addresses::Limits {
        crate::addresses::Limits {
            requests_per_minute: self.requests_per_address,
            connects_per_minute: self.connects_per_address,
            creates_per_minute: self.creates_per_address,
            sockets: self.sockets_per_address,
        }
    }

    /// The token keys: `--token-secret` signs, the old keys verify too.
    pub fn token_keys(&self) -> anyhow::Result<TokenKeys> {
        let signing = Key::new(&self.token_key_id, self.token_secret.as_bytes())
            .map_err(|e| e.context("--token-secret/--token-key-id"))?;
        let old = self
            .token_old_keys
            .iter()
            .map(|spec| Key::parse(spec).map_err(|e| e.context("--token-old-keys")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(
            old.iter().all(|k| k.id() != signing.id()),
            "--token-old-keys repeats the signing key's id"
        );
        Ok(TokenKeys::new(
            signing,
            old,
            std::time::Duration::from_secs(self.token_lifetime_secs),
        ))
    }

    /// Checks everything before anything is bound or connected.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.token_keys()?;
        anyhow::ensure!(
            (10..=30 * 86_400).contains(&self.token_lifetime_secs),
            "--token-lifetime-secs must be 10..=2592000 (30 days)"
        );
        anyhow::ensure!(
            self.listen.port() == 0 || self.listen != self.ops_listen,
            "--ops-listen must not be the public --listen address"
        );
        anyhow::ensure!(self.shards > 0, "--shards must be positive");
        anyhow::ensure!(self.max_members >= 1, "--max-members must be at least 1");
        anyhow::ensure!(
            (1024..=1 << 20).contains(&self.max_frame_bytes),
            "--max-frame-bytes must be 1 KiB..=1 MiB"
        );
        anyhow::ensure!(self.client_queue >= 4, "--client-queue must be at least 4");
        anyhow::ensure!(
            (4096..=16 << 20).contains(&self.socket_send_buffer),
            "--socket-send-buffer must be 4 KiB..=16 MiB"
        );
        anyhow::ensure!(self.rate_limit >= 1, "--rate-limit must be at least 1");
        self.bus.validate()?;
        anyhow::ensure!(
            (100..=60_000).contains(&self.tls_handshake_timeout_ms),
            "--tls-handshake-timeout-ms must be 100..=60000"
        );
        if self.tls == crate::tls::TlsMode::Files {
            anyhow::ensure!(
                self.tls_cert.is_some() && self.tls_key.is_some(),
                "--tls files needs --tls-cert and --tls-key"
            );
        }
        if let Some(id) = &self.gateway_id {
            bandsync_nats::GatewayId::parse(id.clone())?;
        }
        Ok(())
    }
}

impl Config {
    /// Where the self-signed certificate is kept.
    pub fn tls_dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(dir) = &self.tls_dir {
            return Ok(dir.clone());
        }
        let data = std::env::var_os("XDG_DATA_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")));
        match data {
            Some(data) => Ok(data.join("bandsync").join("tls")),
            None => anyhow::bail!("--tls self-signed needs --tls-dir (no HOME to default to)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bandsync_nats::command::{MAX_CHART_BYTES, MAX_SONGS, MAX_TITLE_CHARS};
    use bandsync_nats::{Command, Song};
    use clap::Parser;

    #[test]
    fn tls_files_needs_both_files() {
        let base = ["bandsync-gateway", "--token-secret=0123456789abcdef"];
        let parse = |extra: &[&str]| Config::parse_from(base.iter().chain(extra));
        assert!(
            parse(&["--tls=files", "--tls-cert=c.pem"])
                .validate()
                .is_err()
        );
        assert!(
            parse(&["--tls=files", "--tls-cert=c.pem", "--tls-key=k.pem"])
                .validate()
                .is_ok()
        );
        assert!(parse(&["--tls=self-signed"]).validate().is_ok());
        assert!(Config::try_parse_from(base.iter().chain(&["--tls=sometimes"])).is_err());
    }

    #[test]
    fn the_default_message_limit_takes_the_largest_setlist() {
        let config = Config::parse_from(["bandsync-gateway", "--token-secret=0123456789abcdef"]);
        // Every song at every limit; `"` is what JSON escapes, ♯ takes 3 bytes.
        for chart_char in ['"', '♯'] {
            let chart = chart_char
                .to_string()
                .repeat(MAX_CHART_BYTES / chart_char.len_utf8());
            let songs: Vec<Song> = (0..MAX_SONGS)
                .map(|_| Song {
                    title: "𝄞".repeat(MAX_TITLE_CHARS),
                    tempo_bpm: Some(399.99999999999994),
                    beats_per_bar: Some(32),
                    beat_unit: Some(32),
                    chart: chart.clone(),
                })
                .collect();
            let command = Command::Setlist { songs };
            assert!(command.validate().is_ok());
            let message = serde_json::to_string(&command).expect("serialises");
            assert!(
                message.len() <= config.max_frame_bytes,
                "{} bytes over the {} limit",
                message.len(),
                config.max_frame_bytes
            );
        }
    }
}
