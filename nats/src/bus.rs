//! Connecting to NATS and declaring the streams and buckets BandSync uses.
//! Every service calls `Bus::open`, as its own NATS user (`auth`). Tickers
//! declare (create or update) the streams and buckets, idempotently; gateways
//! and the store bind to them and wait while none exists yet, so any process
//! may start first.

use crate::Shard;
use crate::subjects::Subjects;
use async_nats::jetstream::{self, kv, stream};
use async_nats::{Client, HeaderMap, ReconnectToServer, Server, ServerInfo};
use bytes::Bytes;
use futures::TryStreamExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// nats-server 2.11 brought per-message TTLs and KV limit markers.
pub const MIN_SERVER_VERSION: (u32, u32) = (2, 11);
/// How long a JetStream publish may wait for its ack before the caller gives up.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// Commands are kept a day: long enough for any owner to catch up and the store to ingest.
const CMD_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Events are kept a week so a store that was down can catch up.
const EVT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Window within which a re-published message with the same id is dropped.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Gateways announce themselves this often; entries expire after `GATEWAY_TTL`.
pub const GATEWAY_HEARTBEAT: Duration = Duration::from_secs(2);
pub const GATEWAY_TTL: Duration = Duration::from_secs(6);
/// Largest session state, well above a full setlist with charts.
const MAX_STATE_BYTES: i32 = 512 * 1024;

/// How often a client pings its server. async-nats drops a connection with
/// more than two pings unanswered, so a frozen or unreachable node is left for
/// another within about three intervals (0.9 s), under the 1.35 s of silence
/// after which a ticker's shards are taken over and the 2 s a band may go
/// without a tick. A ping costs a few bytes.
const PING_INTERVAL: Duration = Duration::from_millis(300);
/// How long one attempt to (re)connect to a server may take. A frozen node's
/// kernel still accepts the TCP connection and then nothing answers: async-nats's
/// default of 5 s on such a node, picked at random among the cluster's, left a
/// gateway's bands without ticks for 6.3 s. A live server answers in milliseconds.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The leases bucket's max age: past the longest time a holder rides through
/// an unwritable bucket (the ticker's 15 s: a node leading it frozen for 10 s
/// left it unwritable for 11.4 s), so a bucket back from an election does not
/// expire leases their holders still hold.
pub const LEASE_BACKSTOP: Duration = Duration::from_secs(25);
/// Backoff between attempts of a patient publish.
const PUBLISH_RETRY_MIN: Duration = Duration::from_millis(50);
const PUBLISH_RETRY_MAX: Duration = Duration::from_millis(500);
/// How long one attempt waits for a connection before it counts as failed.
const CONNECT_WAIT: Duration = Duration::from_secs(5);
/// Backoff between attempts to open the bus.
const OPEN_BACKOFF_MIN: Duration = Duration::from_millis(100);
const OPEN_BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("not connected to NATS at {url} after {waited:?}")]
    NotConnected { url: String, waited: Duration },
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("{flag} {message}")]
    Config { flag: &'static str, message: String },
    #[error("bad NATS URL {url:?}: {message}")]
    BadUrl { url: String, message: String },
    #[error("nats-server {found} is too old: BandSync needs {}.{} or newer (JetStream KV limit markers)", MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1)]
    ServerTooOld { found: String },
    #[error("declaring {what}: {message}")]
    Declare { what: String, message: String },
    #[error("binding {what} (a ticker creates it): {message}")]
    Bind { what: String, message: String },
    #[error("publishing to {subject}: {message}")]
    Publish { subject: String, message: String },
    #[error("listing {what}: {message}")]
    List { what: String, message: String },
}

impl BusError {
    /// Whether waiting can fix it: the servers may be starting, electing
    /// leaders, or unreachable for a while. A bad URL or an old server cannot.
    pub fn is_transient(&self) -> bool {
        match self {
            BusError::Connect { .. }
            | BusError::NotConnected { .. }
            | BusError::Declare { .. }
            | BusError::Bind { .. }
            | BusError::Publish { .. }
            | BusError::List { .. } => true,
            BusError::Config { .. } | BusError::BadUrl { .. } | BusError::ServerTooOld { .. } => {
                false
            }
        }
    }
}

/// Whether a process creates the streams and buckets or only binds to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provision {
    /// Create what is missing and update settings that changed (tickers: the
    /// only NATS user allowed to).
    Declare,
    /// Use them as they are, waiting while one is missing (gateways, the store).
    Bind,
}

/// A password that never shows in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(password: impl Into<String>) -> Self {
        Self(password.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

impl std::str::FromStr for Password {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// A NATS user and its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: Password,
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct BusSettings {
    pub url: String,
    /// The NATS user to log in as; `None` connects without credentials (which
    /// BandSync's servers refuse).
    pub credentials: Option<Credentials>,
    /// Declare the streams and buckets, or bind to them.
    pub provision: Provision,
    pub prefix: String,
    /// JetStream replicas for streams and buckets (3 in a three-node cluster).
    pub replicas: usize,
    /// Shard lease TTL: the max age of the leases bucket.
    pub lease_ttl: Duration,
    /// Connection name shown by nats-server (e.g. `gateway-a`).
    pub name: String,
}

/// The bus flags every service shares (flattened into each service's `Config`).
#[derive(Debug, Clone, clap::Args)]
pub struct BusArgs {
    /// NATS server URL(s), comma-separated; nats-server 2.11 or newer.
    #[arg(
        long,
        env = "BANDSYNC_NATS_URL",
        default_value = "nats://127.0.0.1:14222"
    )]
    pub nats_url: String,
    /// Prefix of every subject, stream and bucket.
    #[arg(long, env = "BANDSYNC_PREFIX", default_value = crate::subjects::DEFAULT_PREFIX)]
    pub prefix: String,
    /// JetStream replicas for streams and buckets this process declares (3 on a three-node cluster).
    #[arg(long, env = "BANDSYNC_REPLICAS", default_value_t = 1)]
    pub replicas: usize,
    /// Shard lease TTL in milliseconds: the leases bucket's max age; every process must agree.
    #[arg(long, env = "BANDSYNC_LEASE_TTL_MS", default_value_t = 1500)]
    pub lease_ttl_ms: u64,
    /// NATS user this process logs in as: gateway, ticker or store (docs/security.md).
    #[arg(long, env = "BANDSYNC_NATS_USER")]
    pub nats_user: Option<String>,
    /// File holding the NATS user's password (its first line), so it stays out of `ps`.
    #[arg(
        long,
        env = "BANDSYNC_NATS_PASSWORD_FILE",
        conflicts_with = "nats_password"
    )]
    pub nats_password_file: Option<PathBuf>,
    /// The NATS user's password; prefer the environment or --nats-password-file (a flag shows in `ps`).
    #[arg(long, env = "BANDSYNC_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<Password>,
}

impl BusArgs {
    /// Defaults for `url`, as the flags would give them.
    pub fn new(url: &str) -> Self {
        Self {
            nats_url: url.to_owned(),
            prefix: crate::subjects::DEFAULT_PREFIX.to_owned(),
            replicas: 1,
            lease_ttl_ms: 1500,
            nats_user: None,
            nats_password_file: None,
            nats_password: None,
        }
    }

    /// Logs in as `user` with `password`.
    pub fn with_credentials(mut self, user: &str, password: &str) -> Self {
        self.nats_user = Some(user.to_owned());
        self.nats_password = Some(Password::new(password));
        self.nats_password_file = None;
        self
    }

    /// The user and password (read from the password file if given); `None`
    /// without a user. A user without a password, a password without a user,
    /// or a password file that cannot be read or is empty is an error.
    pub fn credentials(&self) -> Result<Option<Credentials>, BusError> {
        let bad = |flag: &'static str, message: String| BusError::Config { flag, message };
        let password = match (&self.nats_password, &self.nats_password_file) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| bad("--nats-password-file", format!("{}: {e}", path.display())))?;
                let line = text.lines().next().unwrap_or("").trim();
                if line.is_empty() {
                    return Err(bad(
                        "--nats-password-file",
                        format!("{} is empty", path.display()),
                    ));
                }
                Some(Password::new(line))
            }
            (None, None) => None,
        };
        match (&self.nats_user, password) {
            (Some(user), Some(password)) if !user.is_empty() => Ok(Some(Credentials {
                user: user.clone(),
                password,
            })),
            (Some(_), Some(_)) => Err(bad("--nats-user", "must not be empty".into())),
            (Some(_), None) => Err(bad(
                "--nats-user",
                "needs a password (BANDSYNC_NATS_PASSWORD_FILE or BANDSYNC_NATS_PASSWORD)".into(),
            )),
            (None, Some(_)) => Err(bad(
                "--nats-password",
                "needs a user (BANDSYNC_NATS_USER)".into(),
            )),
            (None, None) => Ok(None),
        }
    }

    /// Checks the values (the URL list is parsed too) before anything connects.
    pub fn validate(&self) -> Result<Subjects, BusError> {
        let bad = |flag: &'static str, message: &str| BusError::Config {
            flag,
            message: message.to_owned(),
        };
        server_addrs(&self.nats_url)?;
        self.credentials()?;
        if !(1..=5).contains(&self.replicas) {
            return Err(bad("--replicas", "must be 1..=5"));
        }
        if self.lease_ttl_ms < 1000 {
            return Err(bad(
                "--lease-ttl-ms",
                "must be at least 1000 (KV ages are coarse)",
            ));
        }
        Subjects::new(&self.prefix).map_err(|e| bad("--prefix", &e.to_string()))
    }

    pub fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.lease_ttl_ms)
    }

    /// Connection settings for a process named `name` (shown by nats-server),
    /// declaring the streams and buckets; fails if the password file cannot be read.
    pub fn settings(&self, name: String) -> Result<BusSettings, BusError> {
        Ok(BusSettings {
            url: self.nats_url.clone(),
            credentials: self.credentials()?,
            provision: Provision::Declare,
            prefix: self.prefix.clone(),
            replicas: self.replicas,
            lease_ttl: self.lease_ttl(),
            name,
        })
    }

    /// Validates, connects and declares everything.
    pub async fn open(&self, name: String) -> Result<Bus, BusError> {
        let subjects = self.validate()?;
        Bus::open(&self.settings(name)?, subjects).await
    }

    /// [`Bus::open_patiently`] with these settings, declaring the streams and
    /// buckets: `Ok(None)` if `shutdown` came first.
    pub async fn open_patiently(
        &self,
        name: String,
        shutdown: &CancellationToken,
    ) -> Result<Option<Bus>, BusError> {
        let subjects = self.validate()?;
        Bus::open_patiently(&self.settings(name)?, subjects, shutdown).await
    }

    /// As [`open_patiently`](Self::open_patiently), binding to the streams and
    /// buckets a ticker declares (waiting for them while they are missing).
    pub async fn bind_patiently(
        &self,
        name: String,
        shutdown: &CancellationToken,
    ) -> Result<Option<Bus>, BusError> {
        let subjects = self.validate()?;
        let settings = BusSettings {
            provision: Provision::Bind,
            ..self.settings(name)?
        };
        Bus::open_patiently(&settings, subjects, shutdown).await
    }
}

/// A connected client with every stream and bucket declared.
#[derive(Clone)]
pub struct Bus {
    pub client: Client,
    pub js: jetstream::Context,
    pub subjects: Subjects,
    pub sessions: kv::Store,
    pub codes: kv::Store,
    pub leases: kv::Store,
    pub cursors: kv::Store,
    pub gateways: kv::Store,
    pub tickers: kv::Store,
    /// Counts the client's connections: changes each time it (re)connects, so a
    /// service can act at once on a new server (a ticker renews its leases).
    pub connects: watch::Receiver<u64>,
}

impl Bus {
    /// Connects and declares (or binds to) every stream and bucket; fails if the
    /// bus is not there within a few seconds. Services use [`Bus::open_patiently`].
    pub async fn open(settings: &BusSettings, subjects: Subjects) -> Result<Self, BusError> {
        let (client, connects) = connect(settings).await?;
        wait_connected(&client, &settings.url, CONNECT_WAIT).await?;
        Self::declare(client, connects, settings, subjects).await
    }

    /// Opens the bus, waiting for it as long as it takes: the servers may still
    /// be starting, JetStream electing its leaders, or the network away. Retries
    /// with backoff (doubling to `OPEN_BACKOFF_MAX`, jittered) and logs each wait;
    /// returns `Ok(None)` if `shutdown` comes first. Errors no wait can fix (a bad
    /// URL, a server too old) return at once. So the start order of a cluster
    /// and its services does not matter.
    pub async fn open_patiently(
        settings: &BusSettings,
        subjects: Subjects,
        shutdown: &CancellationToken,
    ) -> Result<Option<Self>, BusError> {
        let (client, connects) = connect(settings).await?;
        let mut delay = OPEN_BACKOFF_MIN;
        loop {
            let attempt = async {
                wait_connected(&client, &settings.url, CONNECT_WAIT).await?;
                Self::declare(client.clone(), connects.clone(), settings, subjects.clone()).await
            };
            let error = tokio::select! {
                () = shutdown.cancelled() => return Ok(None),
                result = attempt => match result {
                    Ok(bus) => return Ok(Some(bus)),
                    Err(e) if e.is_transient() => e,
                    Err(e) => return Err(e),
                },
            };
            let wait = jittered(delay);
            tracing::warn!(error = %error, retry_in_ms = wait.as_millis() as u64, "waiting for the bus");
            tokio::select! {
                () = shutdown.cancelled() => return Ok(None),
                () = tokio::time::sleep(wait) => {}
            }
            delay = (delay * 2).min(OPEN_BACKOFF_MAX);
        }
    }

    async fn declare(
        client: Client,
        connects: watch::Receiver<u64>,
        settings: &BusSettings,
        subjects: Subjects,
    ) -> Result<Self, BusError> {
        check_version(&client.server_info().version)?;
        let js = jetstream::new(client.clone());
        let replicas = settings.replicas;
        let provision = settings.provision;
        declare_stream(
            &js,
            provision,
            &subjects.cmd_stream(),
            vec![subjects.cmd_all()],
            CMD_MAX_AGE,
            replicas,
        )
        .await?;
        declare_stream(
            &js,
            provision,
            &subjects.evt_stream(),
            vec![subjects.evt_all()],
            EVT_MAX_AGE,
            replicas,
        )
        .await?;
        let bucket = |name: String, max_age: Duration| kv::Config {
            bucket: name,
            history: 1,
            max_age,
            num_replicas: replicas,
            max_value_size: MAX_STATE_BYTES,
            ..Default::default()
        };
        let kv = |config| declare_kv(&js, provision, config);
        let sessions = kv(bucket(subjects.sessions_bucket(), Duration::ZERO)).await?;
        let codes = kv(bucket(subjects.codes_bucket(), Duration::ZERO)).await?;
        let cursors = kv(bucket(subjects.cursors_bucket(), Duration::ZERO)).await?;
        let gateways = kv(bucket(subjects.gateways_bucket(), GATEWAY_TTL)).await?;
        // Limit markers make an expired lease visible to watchers, so standbys campaign at once.
        let with_markers = |c: kv::Config| kv::Config {
            limit_markers: Some(Duration::from_secs(1)),
            ..c
        };
        // Expiry is judged by the tickers (silence, counted only while the bucket
        // takes writes); the max age is the backstop for a fleet that died whole.
        // It must outlast a Raft election, or the bucket's new leader would expire
        // every lease at once and move every shard.
        let leases_max_age = settings.lease_ttl.max(LEASE_BACKSTOP);
        let leases = kv(with_markers(bucket(
            subjects.leases_bucket(),
            leases_max_age,
        )))
        .await?;
        let tickers = kv(with_markers(bucket(
            subjects.tickers_bucket(),
            settings.lease_ttl * 2,
        )))
        .await?;
        Ok(Self {
            client,
            js,
            subjects,
            sessions,
            codes,
            leases,
            cursors,
            gateways,
            tickers,
            connects,
        })
    }

    /// Publishes to a JetStream-captured subject and waits for the ack. `msg_id`
    /// makes a retry within the duplicate window harmless.
    pub async fn publish_durable(
        &self,
        subject: String,
        msg_id: &str,
        payload: Bytes,
    ) -> Result<u64, BusError> {
        let fail = |message: String| BusError::Publish {
            subject: subject.clone(),
            message,
        };
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
        let ack = tokio::time::timeout(PUBLISH_TIMEOUT, async {
            self.js
                .publish_with_headers(subject.clone(), headers, payload)
                .await
                .map_err(|e| fail(e.to_string()))?
                .await
                .map_err(|e| fail(e.to_string()))
        })
        .await
        .map_err(|_| fail("timed out waiting for JetStream".into()))??;
        Ok(ack.sequence)
    }

    /// [`publish_durable`](Self::publish_durable), retried under the same msg id
    /// (so a publish that landed unanswered is not stored twice) until it is
    /// acked or `patience` has passed: long enough to ride out a stream whose
    /// leader died while Raft elects another (5–7 s measured on three nodes).
    pub async fn publish_durable_patiently(
        &self,
        subject: String,
        msg_id: &str,
        payload: Bytes,
        patience: Duration,
    ) -> Result<u64, BusError> {
        let give_up = tokio::time::Instant::now() + patience;
        let mut delay = PUBLISH_RETRY_MIN;
        loop {
            match self
                .publish_durable(subject.clone(), msg_id, payload.clone())
                .await
            {
                Ok(seq) => return Ok(seq),
                Err(e) if tokio::time::Instant::now() + delay >= give_up => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, retry_in_ms = delay.as_millis() as u64, "publish failed; retrying");
                    tokio::time::sleep(jittered(delay)).await;
                    delay = (delay * 2).min(PUBLISH_RETRY_MAX);
                }
            }
        }
    }

    /// The keys in `<p>_sessions` of one shard's sessions (keys start with their
    /// shard, `Subjects::session_key`), read from the bucket's stream subjects.
    pub async fn session_keys(&self, shard: Shard) -> Result<Vec<String>, BusError> {
        let fail = |message: String| BusError::List {
            what: format!("the session keys of shard {shard}"),
            message,
        };
        let kv_prefix = &self.sessions.prefix;
        let stream = self
            .js
            .get_stream(&self.sessions.stream_name)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let filter = format!("{kv_prefix}{}", Subjects::shard_session_keys(shard));
        let subjects: Vec<(String, usize)> = stream
            .info_with_subjects(filter)
            .await
            .map_err(|e| fail(e.to_string()))?
            .try_collect()
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(subjects
            .into_iter()
            .filter_map(|(subject, _)| Some(subject.strip_prefix(kv_prefix.as_str())?.to_owned()))
            .collect())
    }
}

/// Whether a failed KV update says the bucket took no write at all (no leader,
/// no answer: its Raft group is electing, which a wait fixes), as opposed to a
/// refusal (another revision got there first).
pub fn not_written(e: &kv::UpdateError) -> bool {
    matches!(
        e.kind(),
        kv::UpdateErrorKind::TimedOut | kv::UpdateErrorKind::Other
    )
}

/// A client that keeps (re)connecting to any of the servers in the background,
/// and the count of its connections.
async fn connect(settings: &BusSettings) -> Result<(Client, watch::Receiver<u64>), BusError> {
    let (connected, connects) = watch::channel(0u64);
    let connected = Arc::new(connected);
    let mut options = async_nats::ConnectOptions::new();
    if let Some(c) = &settings.credentials {
        options = options.user_and_password(c.user.clone(), c.password.expose().to_owned());
    }
    let client = options
        .name(&settings.name)
        // Ticks fan out from one subscription per session; a deep buffer rides out bursts.
        .subscription_capacity(65_536)
        .ping_interval(PING_INTERVAL)
        .connection_timeout(CONNECT_TIMEOUT)
        .reconnect_to_server_callback(|servers, lost| async move { next_server(servers, &lost) })
        .event_callback(move |event| {
            let connected = connected.clone();
            async move {
                if matches!(event, async_nats::Event::Connected) {
                    connected.send_modify(|n| *n += 1);
                }
                log_event(&event);
            }
        })
        .retry_on_initial_connect()
        .connect(server_addrs(&settings.url)?)
        .await
        .map_err(|source| BusError::Connect {
            url: settings.url.clone(),
            source,
        })?;
    Ok((client, connects))
}

/// Where to reconnect: a server with the fewest failed attempts, the one just
/// lost last among equals, at random otherwise. A frozen server's kernel still
/// accepts connections, so trying it again first costs a whole
/// `CONNECT_TIMEOUT`; once the others have failed, it is tried again.
fn next_server(servers: Vec<Server>, lost: &ServerInfo) -> Option<ReconnectToServer> {
    let was_lost = |s: &Server| s.addr.host() == lost.host && s.addr.port() == lost.port;
    let rank = |s: &Server| (s.failed_attempts, was_lost(s));
    let best = servers.iter().map(rank).min()?;
    let candidates: Vec<&Server> = servers.iter().filter(|s| rank(s) == best).collect();
    let pick = candidates[rand::random_range(0..candidates.len())];
    Some(ReconnectToServer {
        addr: pick.addr.clone(),
        delay: None,
    })
}

/// What the connection went through, for whoever reads the logs during a fault.
fn log_event(event: &async_nats::Event) {
    use async_nats::Event;
    match event {
        Event::Connected => tracing::info!("connected to NATS"),
        Event::Disconnected => tracing::warn!("disconnected from NATS; reconnecting"),
        Event::LameDuckMode => {
            tracing::info!("the NATS server is going away (lame duck); moving to another")
        }
        Event::SlowConsumer(sid) => {
            tracing::warn!(
                subscription = sid,
                "NATS dropped messages: a subscription fell behind"
            )
        }
        // Our own client closing, at shutdown.
        Event::Closed => tracing::debug!("NATS connection closed"),
        other => tracing::warn!(event = %other, "NATS connection event"),
    }
}

/// Waits until the client has met a server (its INFO names the version).
async fn wait_connected(client: &Client, url: &str, limit: Duration) -> Result<(), BusError> {
    let connected = tokio::time::timeout(limit, async {
        while client.connection_state() != async_nats::connection::State::Connected
            || client.server_info().version.is_empty()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    connected.map_err(|_| BusError::NotConnected {
        url: url.to_owned(),
        waited: limit,
    })
}

/// `d` ± 25%, so processes started together do not retry in step.
pub fn jittered(d: Duration) -> Duration {
    d.mul_f64(rand::random_range(0.75..1.25))
}

/// `nats://a:4222,nats://b:4222` → the list async-nats connects to (any of them).
pub fn server_addrs(urls: &str) -> Result<Vec<async_nats::ServerAddr>, BusError> {
    let invalid = |url: &str, e: std::io::Error| BusError::BadUrl {
        url: url.to_owned(),
        message: e.to_string(),
    };
    let addrs = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.parse::<async_nats::ServerAddr>()
                .map_err(|e| invalid(u, e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if addrs.is_empty() {
        return Err(BusError::BadUrl {
            url: urls.to_owned(),
            message: "no server URL given".into(),
        });
    }
    Ok(addrs)
}

/// Refuses servers older than `MIN_SERVER_VERSION`.
pub fn check_version(version: &str) -> Result<(), BusError> {
    let mut parts = version
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if found < MIN_SERVER_VERSION {
        return Err(BusError::ServerTooOld {
            found: version.to_owned(),
        });
    }
    Ok(())
}

async fn declare_stream(
    js: &jetstream::Context,
    provision: Provision,
    name: &str,
    subjects: Vec<String>,
    max_age: Duration,
    replicas: usize,
) -> Result<(), BusError> {
    let config = stream::Config {
        name: name.to_owned(),
        subjects,
        max_age,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    if provision == Provision::Bind {
        return js
            .get_stream(name)
            .await
            .map(|_| ())
            .map_err(|e| BusError::Bind {
                what: format!("stream {name}"),
                message: e.to_string(),
            });
    }
    js.get_or_create_stream(config)
        .await
        .map(|_| ())
        .map_err(|e| BusError::Declare {
            what: format!("stream {name}"),
            message: e.to_string(),
        })
}

async fn declare_kv(
    js: &jetstream::Context,
    provision: Provision,
    config: kv::Config,
) -> Result<kv::Store, BusError> {
    let name = config.bucket.clone();
    if provision == Provision::Bind {
        return js.get_key_value(&name).await.map_err(|e| BusError::Bind {
            what: format!("bucket {name}"),
            message: e.to_string(),
        });
    }
    if let Ok(store) = js.get_key_value(&name).await {
        return Ok(keep_max_age(js, store, config).await);
    }
    match js.create_key_value(config).await {
        Ok(store) => Ok(store),
        // Another process may have created it between our look-up and create.
        Err(create_err) => js
            .get_key_value(&name)
            .await
            .map_err(|_| BusError::Declare {
                what: format!("bucket {name}"),
                message: create_err.to_string(),
            }),
    }
}

/// An existing bucket whose max age this version wants changed (the leases'
/// backstop, the tickers' heartbeats) is updated in place: creating it again
/// would keep the old one. A refusal is logged, not fatal: the old age still works.
async fn keep_max_age(js: &jetstream::Context, store: kv::Store, config: kv::Config) -> kv::Store {
    let current = store.stream.cached_info().config.max_age;
    if current == config.max_age {
        return store;
    }
    let name = config.bucket.clone();
    let wanted = config.max_age;
    let mut update = config;
    // Only the age changes: keep how the bucket was made otherwise.
    update.num_replicas = store.stream.cached_info().config.num_replicas;
    match js.update_key_value(update).await {
        Ok(updated) => {
            tracing::info!(bucket = name, from = ?current, to = ?wanted, "bucket max age updated");
            updated
        }
        Err(e) => {
            tracing::warn!(bucket = name, error = %e, "cannot update the bucket's max age; keeping {current:?}");
            store
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnecting_tries_the_other_servers_before_the_one_lost() {
        let server = |port: u16, failed_attempts| Server {
            addr: format!("nats://127.0.0.1:{port}").parse().expect("address"),
            failed_attempts,
            did_connect: true,
            is_discovered: false,
            last_error: None,
        };
        let lost = ServerInfo {
            host: "127.0.0.1".into(),
            port: 4001,
            ..Default::default()
        };
        let mut picked = std::collections::HashSet::new();
        for _ in 0..64 {
            let all = vec![server(4001, 0), server(4002, 0), server(4003, 0)];
            let pick = next_server(all, &lost).expect("a server");
            assert_ne!(pick.addr.port(), 4001, "not the server just lost");
            picked.insert(pick.addr.port());
        }
        assert_eq!(picked.len(), 2, "either of the others, at random");
        let others_failed = vec![server(4001, 0), server(4002, 1), server(4003, 1)];
        let pick = next_server(others_failed, &lost).expect("a server");
        assert_eq!(
            pick.addr.port(),
            4001,
            "the lost one again once the others failed"
        );
    }

    #[test]
    fn cluster_urls_split_on_commas() {
        assert_eq!(
            server_addrs("nats://127.0.0.1:1, nats://127.0.0.1:2")
                .map(|a| a.len())
                .ok(),
            Some(2)
        );
        assert!(server_addrs("").is_err());
        assert!(server_addrs("nats://bad host:x").is_err());
    }

    #[test]
    fn credentials_come_in_pairs_and_from_a_file() {
        let args = BusArgs::new("nats://127.0.0.1:1");
        assert_eq!(args.credentials().ok(), Some(None));
        let with = args.clone().with_credentials("gateway", "s3cret");
        let c = with.credentials().ok().flatten().expect("credentials");
        assert_eq!(
            (c.user.as_str(), c.password.expose()),
            ("gateway", "s3cret")
        );
        assert!(
            !format!("{with:?}").contains("s3cret"),
            "Debug hides the password"
        );

        let mut user_only = args.clone();
        user_only.nats_user = Some("gateway".into());
        assert!(user_only.validate().is_err());
        let mut password_only = args.clone();
        password_only.nats_password = Some(Password::new("x"));
        assert!(password_only.validate().is_err());

        let dir = std::env::temp_dir().join(format!("bandsync-bus-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("password");
        std::fs::write(&file, "from-file\n").expect("writing");
        let mut from_file = user_only.clone();
        from_file.nats_password_file = Some(file.clone());
        let c = from_file.credentials().ok().flatten().expect("credentials");
        assert_eq!(c.password.expose(), "from-file");
        std::fs::write(&file, "\n").expect("writing");
        assert!(
            from_file.credentials().is_err(),
            "an empty file is an error"
        );
        from_file.nats_password_file = Some(dir.join("missing"));
        assert!(from_file.validate().is_err(), "a missing file is an error");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn version_gate() {
        assert!(check_version("2.9.10").is_err());
        assert!(check_version("2.10.22").is_err());
        assert!(check_version("2.11.0").is_ok());
        assert!(check_version("2.15.1").is_ok());
        assert!(check_version("3.0.0-beta").is_ok());
        assert!(check_version("").is_err());
    }
}
