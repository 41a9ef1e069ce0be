//! Gateway configuration: every flag also reads a `BANDSYNC_` environment variable.

use bandsync_nats::bus::BusArgs;
use std::net::SocketAddr;

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
    /// HMAC secret shared by all gateways for member tokens (at least 16 bytes).
    #[arg(long, env = "BANDSYNC_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: String,
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
}

impl Config {
    /// Checks everything before anything is bound or connected.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.token_secret.len() >= 16,
            "--token-secret must be at least 16 bytes"
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
        if let Some(id) = &self.gateway_id {
            bandsync_nats::GatewayId::parse(id.clone())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bandsync_nats::command::{MAX_CHART_BYTES, MAX_SONGS, MAX_TITLE_CHARS};
    use bandsync_nats::{Command, Song};
    use clap::Parser;

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
