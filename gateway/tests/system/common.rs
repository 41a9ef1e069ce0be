use bandsync_client::{Api, Connection, Joined};
use bandsync_gateway::Gateway;
use bandsync_nats::state::Change;
use bandsync_testkit::{NatsServer, Role, eventually};
use bandsync_ticker::Ticker;
use clap::Parser;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite;
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "system-test-secret-0123456789";
pub const WAIT: Duration = Duration::from_secs(10);
/// Shards of the test stack (the ticker and the gateways agree on it).
pub const SHARDS: u16 = 16;

/// Knobs the tests turn; everything else is the services' defaults.
#[derive(Clone, Copy)]
pub struct Knobs {
    pub gateways: usize,
    pub tick_ms: u64,
    pub leader_grace_ms: u64,
    pub max_members: usize,
    pub client_queue: usize,
    /// Gateways as `bandsync-gateway` processes rather than in this one: each
    /// then has its own `/metrics` (in one process they share the global
    /// recorder, and a counter sums every gateway's).
    pub gateway_processes: bool,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            gateways: 2,
            tick_ms: 100,
            leader_grace_ms: 1_000,
            max_members: 12,
            client_queue: 64,
            gateway_processes: false,
        }
    }
}

pub struct Stack {
    pub nats: NatsServer,
    /// In-process gateways, or none with `Knobs::gateway_processes`.
    pub gateways: Vec<(Gateway, CancellationToken)>,
    pub gateway_processes: Vec<GatewayProcess>,
    pub tickers: Vec<(Ticker, CancellationToken)>,
    pub knobs: Knobs,
}

impl Stack {
    pub async fn start(knobs: Knobs) -> Stack {
        bandsync_nats::service::init_tracing_at("warn");
        let nats = NatsServer::start().await;
        let mut stack = Stack {
            nats,
            gateways: Vec::new(),
            gateway_processes: Vec::new(),
            tickers: Vec::new(),
            knobs,
        };
        stack.add_ticker().await;
        for i in 0..knobs.gateways {
            let id = format!("gw-{i}");
            if knobs.gateway_processes {
                let process = GatewayProcess::spawn(&stack.gateway_args(&id)).await;
                stack.gateway_processes.push(process);
            } else {
                stack.add_gateway(&id).await;
            }
        }
        stack.wait_for_shards().await;
        stack
    }

    pub async fn add_ticker(&mut self) {
        let k = self.knobs;
        let config = bandsync_ticker::Config::parse_from(
            ["bandsync-ticker".to_string()]
                .into_iter()
                .chain(self.nats.bus_flags(Role::Ticker))
                .chain([
                    "--listen=127.0.0.1:0".into(),
                    format!("--tick-ms={}", k.tick_ms),
                    format!("--leader-grace-ms={}", k.leader_grace_ms),
                    format!("--max-members={}", k.max_members),
                    format!("--shards={SHARDS}"),
                ]),
        );
        let token = CancellationToken::new();
        let ticker = bandsync_ticker::start(config, token.clone())
            .await
            .expect("ticker starts");
        self.tickers.push((ticker, token));
    }

    pub fn gateway_args(&self, id: &str) -> Vec<String> {
        self.gateway_args_with(id, &[])
    }

    /// The gateway's flags, with `overrides` (`--flag=value`) in place of the
    /// defaults' flags of the same name.
    fn gateway_args_with(&self, id: &str, overrides: &[String]) -> Vec<String> {
        let flag = |arg: &str| arg.split('=').next().unwrap_or_default().to_owned();
        let mut args = self.nats.bus_flags(Role::Gateway);
        args.extend([
            "--listen=127.0.0.1:0".into(),
            "--ops-listen=127.0.0.1:0".into(),
            format!("--token-secret={SECRET}"),
            format!("--gateway-id={id}"),
            format!("--max-members={}", self.knobs.max_members),
            "--max-frame-bytes=4096".into(),
            format!("--client-queue={}", self.knobs.client_queue),
            format!("--shards={SHARDS}"),
            // Tests stand in for a proxy: their X-Forwarded-For is believed.
            "--trusted-proxies=127.0.0.1".into(),
        ]);
        // And for many devices from one address: limits.rs sets its own.
        args.extend(bandsync_testkit::NO_ADDRESS_LIMITS.map(String::from));
        args.retain(|a| overrides.iter().all(|o| flag(o) != flag(a)));
        args.extend(overrides.iter().cloned());
        args
    }

    pub async fn add_gateway(&mut self, id: &str) {
        self.add_gateway_with(id, &[]).await;
    }

    /// An in-process gateway with some flags of its own (`--flag=value`).
    pub async fn add_gateway_with(&mut self, id: &str, overrides: &[String]) {
        let args = std::iter::once("bandsync-gateway".to_string())
            .chain(self.gateway_args_with(id, overrides));
        let config = bandsync_gateway::Config::parse_from(args);
        let token = CancellationToken::new();
        let gateway = bandsync_gateway::start(config, token.clone())
            .await
            .expect("gateway starts");
        self.gateways.push((gateway, token));
    }

    /// Until the ticker owns every shard, commands would only queue.
    async fn wait_for_shards(&self) {
        eventually(WAIT, "the ticker to own all its shards", || async {
            self.tickers
                .iter()
                .map(|(t, _)| t.shards_owned())
                .sum::<usize>()
                >= usize::from(SHARDS)
        })
        .await;
    }

    /// Gateway `gateway`'s address, in process or not.
    pub fn addr(&self, gateway: usize) -> SocketAddr {
        match self.gateways.get(gateway) {
            Some((g, _)) => g.addr,
            None => self.gateway_processes[gateway - self.gateways.len()].addr,
        }
    }

    pub fn base(&self, gateway: usize) -> String {
        format!("http://{}", self.addr(gateway))
    }

    /// Gateway `gateway`'s operations endpoints (`/healthz`, `/readyz`, `/metrics`).
    pub fn ops_base(&self, gateway: usize) -> String {
        let addr = match self.gateways.get(gateway) {
            Some((g, _)) => g.ops_addr,
            None => self.gateway_processes[gateway - self.gateways.len()].ops_addr,
        };
        format!("http://{addr}")
    }

    pub fn api(&self, gateway: usize) -> Api {
        Api::new(self.base(gateway))
    }

    /// The command stream, read as the admin user.
    pub async fn command_stream(&self) -> async_nats::jetstream::stream::Stream {
        let bus = self
            .nats
            .bus_args(Role::Admin)
            .open("system-test".into())
            .await
            .expect("bus");
        bus.js
            .get_stream(bus.subjects.cmd_stream())
            .await
            .expect("command stream")
    }

    /// Connects with a token and waits until the member shows as connected.
    /// Commands in the command stream so far.
    pub async fn commands_in_stream(&self) -> u64 {
        let mut stream = self.command_stream().await;
        stream.info().await.expect("stream info").state.messages
    }

    pub async fn connect(&self, gateway: usize, joined: &Joined) -> Connection {
        let mut c = Connection::connect(&self.base(gateway), &joined.token)
            .await
            .expect("connects");
        let me = joined.member.clone();
        c.wait_until(WAIT, |s| s.member(&me).is_some_and(|m| m.connected))
            .await
            .expect("own connection announced");
        c
    }
}

/// One `bandsync-gateway` process (this package's binary), killed on drop. Its
/// log goes to this test's output.
pub struct GatewayProcess {
    pub addr: SocketAddr,
    pub ops_addr: SocketAddr,
    /// What it printed after its two address lines (e.g. the HTTPS banner).
    pub output: Arc<Mutex<Vec<String>>>,
    _child: tokio::process::Child,
}

impl GatewayProcess {
    /// The first line it printed (after its addresses) that `pick` maps to
    /// something, waiting up to `WAIT` for it.
    pub async fn printed<T>(&self, what: &str, pick: impl Fn(&str) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let found = self
                .output
                .lock()
                .expect("not poisoned")
                .iter()
                .find_map(|l| pick(l));
            if let Some(found) = found {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the gateway never printed {what}: {:?}",
                self.output.lock().expect("not poisoned")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn spawn(args: &[String]) -> GatewayProcess {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_bandsync-gateway"))
            .args(args)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawning bandsync-gateway");
        let mut stderr = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                eprintln!("[gateway] {line}");
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        // main.rs: "bandsync-gateway listening on http://ADDR", then
        // "bandsync-gateway operations (...) on http://OPS"
        let mut address = async || {
            let line = tokio::time::timeout(WAIT, stdout.next_line())
                .await
                .expect("the gateway starts in time")
                .expect("reading the gateway's output")
                .expect("the gateway prints its addresses");
            line.rsplit("://")
                .next()
                .and_then(|a| a.trim().parse::<SocketAddr>().ok())
                .unwrap_or_else(|| panic!("no address in the gateway's line: {line}"))
        };
        let addr = address().await;
        let ops_addr = address().await;
        // Kept open: a write to a closed pipe would fail in the gateway.
        let output = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn({
            let output = output.clone();
            async move {
                while let Ok(Some(line)) = stdout.next_line().await {
                    output.lock().expect("not poisoned").push(line);
                }
            }
        });
        GatewayProcess {
            addr,
            ops_addr,
            output,
            _child: child,
        }
    }
}

/// A leader plus followers at the gateways given, all connected and clock-synced.
pub async fn band(
    stack: &Stack,
    leader_gw: usize,
    follower_gws: &[usize],
) -> (Connection, Vec<Connection>) {
    let api = stack.api(leader_gw);
    let lead = api.create("Leader").await.expect("create");
    let mut leader = stack.connect(leader_gw, &lead).await;
    let mut followers = Vec::new();
    for (i, &gw) in follower_gws.iter().enumerate() {
        let joined = stack
            .api(gw)
            .join(lead.code.as_str(), &format!("Follower {i}"))
            .await
            .expect("join");
        let mut f = stack.connect(gw, &joined).await;
        f.sync_clock(8).await.expect("clock sync");
        followers.push(f);
    }
    leader.sync_clock(8).await.expect("clock sync");
    // Everyone has seen everyone join.
    let n = follower_gws.len() + 1;
    for c in std::iter::once(&mut leader).chain(followers.iter_mut()) {
        c.wait_until(WAIT, |s| {
            s.members.iter().filter(|m| m.connected).count() == n
        })
        .await
        .expect("all members visible");
    }
    (leader, followers)
}

/// Waits for the next event whose changes include one of `kind`.
pub async fn event_of_kind(c: &mut Connection, kind: &str) -> (bandsync_nats::EventMsg, Change) {
    c.wait_for_change(WAIT, kind)
        .await
        .unwrap_or_else(|e| panic!("no {kind} event: {e}"))
}

/// `POST path` with a JSON body as a client behind a proxy at `from` (the test
/// stack trusts 127.0.0.1's `X-Forwarded-For`): (status, lower-cased head, body).
pub async fn post_from(
    base: &str,
    path: &str,
    from: &str,
    body: &serde_json::Value,
) -> (u16, String, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = base.strip_prefix("http://").expect("an http base");
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nX-Forwarded-For: {from}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut tcp = tokio::net::TcpStream::connect(authority)
        .await
        .expect("connects");
    tcp.write_all(request.as_bytes()).await.expect("sends");
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.expect("reads");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let json = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    (status, head.to_ascii_lowercase(), json)
}

/// A member's socket opened by a test.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket upgrade offering `token`, with extra request headers: the
/// socket, or the refusal's status and (JSON) body.
pub async fn upgrade_with(
    base: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> Result<Socket, (u16, serde_json::Value)> {
    let mut request = bandsync_client::ws_request(base, token).expect("a request");
    for (name, value) in headers {
        request.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
            value.parse().expect("a header value"),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::Error::Http(r)) => {
            let body = serde_json::from_slice(r.body().as_deref().unwrap_or_default())
                .unwrap_or(serde_json::Value::Null);
            Err((r.status().as_u16(), body))
        }
        Err(e) => panic!("the upgrade failed otherwise: {e}"),
    }
}
