//! Starts a BandSync topology of its own as child processes on free loopback
//! ports: one nats-server or a JetStream cluster of several, tickers, gateways,
//! optionally nginx in front of the gateways (deploy/nginx.conf's placement) and
//! the store with a PostgreSQL of its own. The load generator measures every
//! process's CPU and memory; `bandsync-cluster` (scripts/cluster) and the chaos
//! suite stop, freeze and restart single processes by name. Children are killed
//! when the stack drops.
//!
//! NATS runs with BandSync's users and permissions (`bandsync_nats::auth`, as
//! deployed): each service logs in as its own user with a password read from
//! `<run dir>/nats-auth/<user>` (generated once), cluster routes log in too,
//! and the chaos suite inspects the bus as `admin` ([`Stack::admin_client`]).

use anyhow::Context;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

use crate::topology;
use bandsync_nats::auth::{self, Role as NatsUser};

/// How long a started process may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a JetStream cluster may take to elect its meta leader.
const JETSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Stack {
    procs: Vec<Proc>,
    /// Each gateway's own base URL (`http://127.0.0.1:port`).
    pub gateways: Vec<String>,
    /// nginx in front of the gateways, when started: what a browser opens.
    pub entry: Option<String>,
    /// Every NATS node's client URL, comma-separated (a `--nats-url` value).
    pub nats_urls: String,
    /// The first NATS node's monitoring endpoint (http://127.0.0.1:port).
    pub nats_monitor: String,
    /// The store's health, metrics and analyst API, when started.
    pub store: Option<String>,
    pub database_url: Option<String>,
    pub dir: PathBuf,
    /// One file per NATS user (and `route`) holding its password.
    pub nats_auth: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

/// Where the store keeps its rows.
pub enum StoreDb {
    /// A PostgreSQL of the stack's own (initdb in the run directory, own port),
    /// so a chaos run can stop and restart it without touching the machine's.
    Own,
    /// A running PostgreSQL (the database is created by the store if missing).
    Url(String),
}

/// The flags of a tool that starts a stack of its own (`bandsync-chaos`,
/// `bandsync-abuse`).
#[derive(Debug, Clone, clap::Args)]
pub struct StackArgs {
    /// Where the services' binaries are (default: next to this one).
    #[arg(long, env = "BANDSYNC_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
    #[arg(long, env = "BANDSYNC_NATS_SERVER", default_value = "nats-server")]
    pub nats_server: PathBuf,
    /// Keep data and logs here (default: a temporary directory).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
}

impl StackArgs {
    pub fn bin_dir(&self) -> PathBuf {
        self.bin_dir.clone().unwrap_or_else(default_bin_dir)
    }
}

pub struct StackSpec<'a> {
    pub nats_server: &'a Path,
    pub bin_dir: &'a Path,
    /// The gateway executable, if not `bin_dir`'s `bandsync-gateway` (another
    /// build's, to compare two in one session).
    pub gateway_bin: Option<&'a Path>,
    /// 1: a single server, streams and buckets R1; 3 or more: a cluster, R3.
    pub nats_nodes: usize,
    pub gateways: usize,
    pub tickers: usize,
    pub tick_ms: u64,
    pub max_members: usize,
    pub token_secret: String,
    pub run_dir: Option<&'a Path>,
    /// nginx in front of the gateways on this port (0: a free one).
    pub nginx_port: Option<u16>,
    pub store: Option<StoreDb>,
    /// Keep the gateways' per-address limits (the abuse measurement); off, as
    /// a load run needs, its thousands of members coming from a few addresses.
    pub address_limits: bool,
}

/// What was started, as `bandsync-cluster` writes it for tools and people.
#[derive(Debug, Clone, Serialize)]
pub struct ProcInfo {
    pub name: String,
    pub role: Role,
    pub pid: Option<u32>,
    pub ports: BTreeMap<&'static str, u16>,
    pub data_dir: Option<PathBuf>,
    pub log: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Nats,
    Postgres,
    Ticker,
    Gateway,
    Store,
    Nginx,
}

/// One child: how to start it again, and the running process.
struct Proc {
    info: ProcInfo,
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// The port that answers once the process is up: with `/readyz` 200 for
    /// the services (which bind it while they still wait for the bus), by
    /// accepting a connection for the others.
    ready_port: u16,
    child: Option<Child>,
}

/// A signal sent with kill(1), as an operator would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    /// PostgreSQL: fast shutdown (SIGTERM waits for every client to leave).
    Int,
    Kill,
    Stop,
    Cont,
    /// nats-server: lame-duck mode (leaders move, then it exits).
    Usr2,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Term => "TERM",
            Signal::Int => "INT",
            Signal::Kill => "KILL",
            Signal::Stop => "STOP",
            Signal::Cont => "CONT",
            Signal::Usr2 => "USR2",
        }
    }
}

impl Stack {
    pub async fn start(spec: StackSpec<'_>) -> anyhow::Result<Stack> {
        anyhow::ensure!(spec.nats_nodes >= 1, "a stack needs a NATS node");
        let (dir, tmp) = match spec.run_dir {
            Some(d) => {
                std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
                // Absolute: nginx and PostgreSQL resolve paths against their own prefix.
                let d = std::fs::canonicalize(d)
                    .with_context(|| format!("resolving {}", d.display()))?;
                (d, None)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("bandsync-load-")
                    .tempdir()
                    .context("creating a temporary run directory")?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let mut stack = Stack {
            procs: Vec::new(),
            gateways: Vec::new(),
            entry: None,
            nats_urls: String::new(),
            nats_monitor: String::new(),
            store: None,
            database_url: None,
            nats_auth: dir.join("nats-auth"),
            dir,
            _tmp: tmp,
        };
        stack.write_passwords()?;
        let bin = |name: &str| -> anyhow::Result<PathBuf> {
            let path = spec.bin_dir.join(name);
            anyhow::ensure!(
                path.is_file(),
                "{} not found: build with `cargo build --release --workspace --bins`, or set --bin-dir / BANDSYNC_BIN_DIR",
                path.display()
            );
            Ok(path)
        };
        let gateway_bin = match spec.gateway_bin {
            Some(path) => {
                anyhow::ensure!(
                    path.is_file(),
                    "gateway binary {} not found",
                    path.display()
                );
                path.to_path_buf()
            }
            None => bin("bandsync-gateway")?,
        };
        let ticker_bin = bin("bandsync-ticker")?;
        let store_bin = spec
            .store
            .as_ref()
            .map(|_| bin("bandsync-store"))
            .transpose()?;

        stack.start_nats(spec.nats_server, spec.nats_nodes).await?;
        let replicas = if spec.nats_nodes >= 3 { 3 } else { 1 };
        let nats_urls = stack.nats_urls.clone();
        let nats_auth = stack.nats_auth.clone();
        let common = |user: NatsUser, listen: u16| {
            vec![
                format!("--nats-url={nats_urls}"),
                format!("--nats-user={}", user.user()),
                format!(
                    "--nats-password-file={}",
                    nats_auth.join(user.user()).display()
                ),
                format!("--replicas={replicas}"),
                format!("--listen=127.0.0.1:{listen}"),
            ]
        };
        for i in 0..spec.tickers {
            let port = free_port()?;
            let mut args = common(NatsUser::Ticker, port);
            args.push(format!("--tick-ms={}", spec.tick_ms));
            args.push(format!("--ticker-id=ticker-{i}"));
            args.push(format!("--max-members={}", spec.max_members.max(12)));
            let name = format!("ticker-{i}");
            stack
                .spawn(
                    &name,
                    Role::Ticker,
                    &ticker_bin,
                    args,
                    Vec::new(),
                    port,
                    None,
                )
                .await?;
        }
        // After the tickers: only a ticker creates the streams the store binds to,
        // and the store is not ready until it has bound them.
        if let (Some(db), Some(store_bin)) = (&spec.store, store_bin) {
            let url = match db {
                StoreDb::Own => stack.start_postgres().await?,
                StoreDb::Url(url) => url.clone(),
            };
            let port = free_port()?;
            let mut args = common(NatsUser::Store, port);
            args.push(format!("--database-url={url}"));
            stack
                .spawn(
                    "store",
                    Role::Store,
                    &store_bin,
                    args,
                    Vec::new(),
                    port,
                    None,
                )
                .await?;
            stack.store = Some(format!("http://127.0.0.1:{port}"));
            stack.database_url = Some(url);
        }
        let env = vec![(
            "BANDSYNC_TOKEN_SECRET".to_owned(),
            spec.token_secret.clone(),
        )];
        for i in 0..spec.gateways {
            let (port, ops_port) = (free_port()?, free_port()?);
            let mut args = common(NatsUser::Gateway, port);
            args.push(format!("--ops-listen=127.0.0.1:{ops_port}"));
            args.push(format!("--gateway-id=gw-{i}"));
            args.push(format!("--max-members={}", spec.max_members.max(12)));
            // A load run stands in for thousands of devices from a handful of
            // addresses: the per-address limits would refuse it.
            if !spec.address_limits {
                args.extend(bandsync_testkit::NO_ADDRESS_LIMITS.map(String::from));
            }
            if spec.nginx_port.is_some() {
                // nginx on loopback is the proxy in front: its X-Forwarded-For
                // names the client (deploy/nginx.conf).
                args.push("--trusted-proxies=127.0.0.1".into());
            }
            let name = format!("gateway-{i}");
            stack
                .spawn(
                    &name,
                    Role::Gateway,
                    &gateway_bin,
                    args,
                    env.clone(),
                    ops_port,
                    None,
                )
                .await?;
            // Ready (`/readyz` 200) on its operations port; clients use this one.
            if let Some(p) = stack.procs.last_mut() {
                p.info.ports.insert("http", port);
            }
            stack.gateways.push(format!("http://127.0.0.1:{port}"));
        }
        if let Some(port) = spec.nginx_port {
            stack.start_nginx(port).await?;
        }
        Ok(stack)
    }

    /// A password per NATS user and one for the routes, generated on the
    /// first run into `nats_auth` (letters only: nats-server parses the
    /// variable it reads a password from, so `12345` would be a number).
    fn write_passwords(&self) -> anyhow::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.nats_auth)
            .with_context(|| format!("creating {}", self.nats_auth.display()))?;
        let users = NatsUser::ALL.iter().map(|u| u.user());
        for user in users.chain([auth::ROUTE_USER]) {
            let path = self.nats_auth.join(user);
            if path.is_file() {
                continue;
            }
            let password: String = (0..32)
                .map(|_| {
                    let i = rand::random_range(0..52u8);
                    char::from(if i < 26 { b'a' + i } else { b'A' + i - 26 })
                })
                .collect();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            std::io::Write::write_all(&mut file, format!("{password}\n").as_bytes())?;
        }
        Ok(())
    }

    /// The password of `user` (a role's user name, or `route`).
    pub fn nats_password(&self, user: &str) -> anyhow::Result<String> {
        let path = self.nats_auth.join(user);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(text.trim().to_owned())
    }

    /// A client of the stack's NATS logged in as the operator (`admin`).
    pub async fn admin_client(&self) -> anyhow::Result<async_nats::Client> {
        let password = self.nats_password(NatsUser::Admin.user())?;
        async_nats::ConnectOptions::new()
            .user_and_password(NatsUser::Admin.user().into(), password)
            .connect(bandsync_nats::bus::server_addrs(&self.nats_urls)?)
            .await
            .context("connecting to NATS as admin")
    }

    async fn start_nats(&mut self, nats_server: &Path, nodes: usize) -> anyhow::Result<()> {
        let ports: Vec<(u16, u16, u16)> = (0..nodes)
            .map(|_| Ok((free_port()?, free_port()?, free_port()?)))
            .collect::<anyhow::Result<_>>()?;
        let routes: Vec<u16> = if nodes > 1 {
            ports.iter().map(|p| p.1).collect()
        } else {
            Vec::new()
        };
        // The users' passwords reach nats-server through its environment.
        let mut env = Vec::new();
        for user in NatsUser::ALL {
            env.push((
                user.password_var().to_owned(),
                self.nats_password(user.user())?,
            ));
        }
        let route_password = self.nats_password(auth::ROUTE_USER)?;
        env.push((auth::ROUTE_PASSWORD_VAR.to_owned(), route_password.clone()));
        for (i, &(client, cluster, monitor)) in ports.iter().enumerate() {
            let name = format!("nats-{i}");
            let data = self.dir.join(&name);
            std::fs::create_dir_all(&data)
                .with_context(|| format!("creating {}", data.display()))?;
            let conf = data.join("nats.conf");
            let text = topology::nats_conf(&topology::NatsNode {
                name: &name,
                client,
                cluster: (nodes > 1).then_some(cluster),
                monitor,
                store_dir: &data.join("jetstream"),
                routes: &routes,
                route_password: &route_password,
            });
            std::fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))?;
            let args = vec!["-c".to_owned(), conf.display().to_string()];
            self.spawn(
                &name,
                Role::Nats,
                nats_server,
                args,
                env.clone(),
                client,
                Some(data),
            )
            .await?;
            let p = self.procs.last_mut().expect("just spawned");
            p.info.ports.insert("cluster", cluster);
            p.info.ports.insert("monitor", monitor);
        }
        self.nats_urls = ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{}", p.0))
            .collect::<Vec<_>>()
            .join(",");
        self.nats_monitor = format!("http://127.0.0.1:{}", ports[0].2);
        // Services wait for the bus themselves, but a stack that returns before
        // JetStream can place a stream would time the election, not the service.
        let monitors: Vec<u16> = ports.iter().map(|p| p.2).collect();
        wait_jetstream(&monitors).await
    }

    /// initdb into the run directory and a postmaster on a free port, as the
    /// postgres user when run as root (PostgreSQL refuses to run as root).
    async fn start_postgres(&mut self) -> anyhow::Result<String> {
        let bin_dir = topology::postgres_bin_dir()?;
        let data = self.dir.join("postgres");
        let as_postgres = topology::running_as_root();
        if !data.join("PG_VERSION").is_file() {
            std::fs::create_dir_all(&data)?;
            if as_postgres {
                topology::chown_postgres(&data)?;
            }
            let initdb = bin_dir.join("initdb");
            let mut cmd = topology::maybe_as_postgres(&initdb, as_postgres);
            cmd.args([
                "-D",
                &data.display().to_string(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ]);
            let out = cmd.output().await.context("running initdb")?;
            anyhow::ensure!(
                out.status.success(),
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let port = free_port()?;
        let postgres = bin_dir.join("postgres");
        let (bin, mut args) = topology::as_postgres_argv(&postgres, as_postgres);
        args.extend([
            "-D".to_owned(),
            data.display().to_string(),
            "-p".to_owned(),
            port.to_string(),
            "-k".to_owned(),
            data.display().to_string(),
            "-c".to_owned(),
            "listen_addresses=127.0.0.1".to_owned(),
            "-c".to_owned(),
            "fsync=off".to_owned(),
        ]);
        self.spawn(
            "postgres",
            Role::Postgres,
            &bin,
            args,
            Vec::new(),
            port,
            Some(data),
        )
        .await?;
        Ok(format!("postgres://postgres@127.0.0.1:{port}/bandsync"))
    }

    async fn start_nginx(&mut self, port: u16) -> anyhow::Result<()> {
        let port = if port == 0 { free_port()? } else { port };
        let data = self.dir.join("nginx");
        std::fs::create_dir_all(&data)?;
        let upstreams: Vec<String> = self
            .gateways
            .iter()
            .map(|g| g.trim_start_matches("http://").to_owned())
            .collect();
        let conf = data.join("nginx.conf");
        std::fs::write(&conf, topology::nginx_conf(&data, port, &upstreams)?)?;
        let args = vec![
            "-p".to_owned(),
            data.display().to_string(),
            "-c".to_owned(),
            conf.display().to_string(),
        ];
        let nginx = topology::nginx_bin()?;
        self.spawn(
            "nginx",
            Role::Nginx,
            &nginx,
            args,
            Vec::new(),
            port,
            Some(data),
        )
        .await?;
        self.entry = Some(format!("http://127.0.0.1:{port}"));
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn spawn(
        &mut self,
        name: &str,
        role: Role,
        bin: &Path,
        args: Vec<String>,
        env: Vec<(String, String)>,
        port: u16,
        data_dir: Option<PathBuf>,
    ) -> anyhow::Result<()> {
        let log = self.dir.join(format!("{name}.log"));
        let mut proc = Proc {
            info: ProcInfo {
                name: name.to_owned(),
                role,
                pid: None,
                ports: BTreeMap::from([(role.port_name(), port)]),
                data_dir,
                log,
            },
            bin: bin.to_path_buf(),
            args,
            env,
            ready_port: port,
            child: None,
        };
        proc.launch().await?;
        self.procs.push(proc);
        Ok(())
    }

    fn find(&mut self, name: &str) -> anyhow::Result<&mut Proc> {
        self.procs
            .iter_mut()
            .find(|p| p.info.name == name)
            .with_context(|| format!("no process named {name} in this stack"))
    }

    /// Every process as started (the `bandsync-cluster` manifest).
    pub fn processes(&self) -> Vec<ProcInfo> {
        self.procs.iter().map(|p| p.info.clone()).collect()
    }

    /// Names of the processes in a role, in start order.
    pub fn names(&self, role: Role) -> Vec<String> {
        self.procs
            .iter()
            .filter(|p| p.info.role == role)
            .map(|p| p.info.name.clone())
            .collect()
    }

    /// (name, pid) of every running process, for /proc readings.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.procs
            .iter()
            .filter_map(|p| Some((p.info.name.clone(), p.child.as_ref()?.id()?)))
            .collect()
    }

    /// Names of processes that have exited (and were not stopped on purpose).
    pub fn dead(&mut self) -> Vec<String> {
        let mut dead = Vec::new();
        for p in &mut self.procs {
            if let Some(child) = p.child.as_mut()
                && !matches!(child.try_wait(), Ok(None))
            {
                dead.push(p.info.name.clone());
            }
        }
        dead
    }

    /// Sends `signal` to a process by name (kill(1), as an operator would).
    pub async fn signal(&mut self, name: &str, signal: Signal) -> anyhow::Result<()> {
        let proc = self.find(name)?;
        let pid = proc
            .child
            .as_ref()
            .and_then(Child::id)
            .with_context(|| format!("{name} is not running"))?;
        let status = Command::new("kill")
            .args(["-s", signal.name(), &pid.to_string()])
            .status()
            .await
            .context("running kill")?;
        anyhow::ensure!(status.success(), "kill -s {} {name} failed", signal.name());
        Ok(())
    }

    /// Waits for a process to exit (after a signal), up to `limit`.
    pub async fn wait_exit(&mut self, name: &str, limit: Duration) -> anyhow::Result<()> {
        let proc = self.find(name)?;
        let child = proc
            .child
            .as_mut()
            .with_context(|| format!("{name} is not running"))?;
        tokio::time::timeout(limit, child.wait())
            .await
            .with_context(|| format!("{name} still running after {limit:?}"))??;
        proc.child = None;
        proc.info.pid = None;
        Ok(())
    }

    /// kill -9, and reaped.
    pub async fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        self.signal(name, Signal::Kill).await?;
        self.wait_exit(name, Duration::from_secs(5)).await
    }

    /// Starts a stopped process again with the same arguments, ports and data.
    pub async fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        let proc = self.find(name)?;
        anyhow::ensure!(proc.child.is_none(), "{name} is still running");
        proc.launch().await
    }

    /// Waits until JetStream answers healthy on every NATS node: a node back
    /// from a restart has caught up on every stream and bucket. A rolling restart
    /// must wait for it before stopping the next node, or a Raft group is left
    /// without a quorum.
    pub async fn wait_nats_healthy(&self) -> anyhow::Result<()> {
        let monitors: Vec<u16> = self
            .procs
            .iter()
            .filter(|p| p.info.role == Role::Nats)
            .filter_map(|p| p.info.ports.get("monitor").copied())
            .collect();
        wait_jetstream(&monitors).await
    }

    /// Stops everything: services first (SIGTERM, so tickers hand over and the
    /// store commits), NATS and PostgreSQL last.
    pub async fn stop(mut self) {
        while let Some(mut proc) = self.procs.pop() {
            let Some(mut child) = proc.child.take() else {
                continue;
            };
            // PostgreSQL's SIGTERM waits for its clients; SIGINT is its fast shutdown.
            let signal = if proc.info.role == Role::Postgres {
                "INT"
            } else {
                "TERM"
            };
            if let Some(pid) = child.id() {
                let _ = Command::new("kill")
                    .args(["-s", signal, &pid.to_string()])
                    .status()
                    .await;
            }
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
    }
}

impl Role {
    /// The name of the port that shows the process is up.
    fn port_name(self) -> &'static str {
        match self {
            Role::Nats => "client",
            Role::Postgres => "postgres",
            // A gateway's `/readyz` is on its operations port; "http" is added.
            Role::Gateway => "ops",
            Role::Ticker | Role::Store | Role::Nginx => "http",
        }
    }
}

impl Proc {
    /// Spawns the process and waits until it listens on its ready port.
    async fn launch(&mut self) -> anyhow::Result<()> {
        let name = &self.info.name;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.info.log)
            .with_context(|| format!("opening {}", self.info.log.display()))?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({})", self.bin.display()))?;
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let service = matches!(self.info.role, Role::Gateway | Role::Ticker | Role::Store);
        let readyz = format!("http://127.0.0.1:{}/readyz", self.ready_port);
        loop {
            let up = if service {
                bandsync_testkit::http_get(&readyz)
                    .await
                    .is_ok_and(|r| r.status == 200)
            } else {
                tokio::net::TcpStream::connect(("127.0.0.1", self.ready_port))
                    .await
                    .is_ok()
            };
            if up {
                break;
            }
            if let Some(status) = child.try_wait()? {
                anyhow::bail!(
                    "{name} exited during start-up ({status}); see {}",
                    self.info.log.display()
                );
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{name} was not ready on port {} within {START_TIMEOUT:?}; see {}",
                self.ready_port,
                self.info.log.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.info.pid = child.id();
        self.child = Some(child);
        Ok(())
    }
}

/// Polls every node's `/healthz` until JetStream answers healthy on all.
async fn wait_jetstream(monitor_ports: &[u16]) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + JETSTREAM_TIMEOUT;
    for &port in monitor_ports {
        loop {
            let healthz = format!("http://127.0.0.1:{port}/healthz");
            if bandsync_testkit::http_get(&healthz)
                .await
                .is_ok_and(|r| r.status == 200)
            {
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "JetStream on the node with monitoring port {port} not healthy within {JETSTREAM_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// A port the kernel says is free now (a tiny race before the child binds it).
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// The directory with the service binaries: the release build if present,
/// else the debug build, under CARGO_TARGET_DIR or ./target.
pub fn default_bin_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    let release = target.join("release");
    if release.join("bandsync-gateway").is_file() {
        release
    } else {
        target.join("debug")
    }
}
