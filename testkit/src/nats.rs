//! Real nats-server processes for tests.
//!
//! Every [`NatsServer`] is one `nats-server` child with JetStream, listening on a
//! free loopback port, with its store and log in a temporary directory. Dropping it
//! kills the process (SIGKILL) and removes the directory, so a test never leaks a
//! server, even when it panics. [`NatsServer::kill`] and [`NatsServer::restart`]
//! let failure tests stop a server hard and bring it back on the same port with the
//! same JetStream store, as a crashed and restarted node would come back.
//!
//! Every server runs with BandSync's users and permissions
//! (`bandsync_nats::auth`, the block deploy/nats-auth.conf holds), with random
//! passwords of its own ([`Logins`]); a cluster's routes log in too. So every
//! test that starts services shows the permissions are wide enough for them;
//! tests connect as a role with [`NatsServer::connect`], [`NatsServer::bus_args`]
//! or a service's flags from [`NatsServer::bus_flags`], and as `Role::Admin` to
//! look at or change the bus as an operator would.
//!
//! The binary is nats-server 2.15.1 from `scripts/install-nats-server` (or
//! `$BANDSYNC_NATS_SERVER`), never the one on `$PATH`: Debian's 2.9 lacks the
//! JetStream features BandSync relies on.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bandsync_nats::Subjects;
use bandsync_nats::auth::{self, Role};
use bandsync_nats::bus::BusArgs;

use tempfile::TempDir;
use tokio::time::{Instant, sleep};

/// How long a server may take to accept connections before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a cluster may take to elect a JetStream meta leader.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(20);
/// The version `scripts/install-nats-server` installs.
const NATS_SERVER_VERSION: &str = "2.15.1";
const LOG_FILE: &str = "nats-server.log";

/// The nats-server binary tests use: `$BANDSYNC_NATS_SERVER` if set, else the
/// path `scripts/install-nats-server` installs to. Panics, naming the script, when
/// the binary is missing.
pub fn nats_server_bin() -> PathBuf {
    let path = match std::env::var_os("BANDSYNC_NATS_SERVER").filter(|v| !v.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => install_path(),
    };
    assert!(
        path.is_file(),
        "nats-server not found at {}: run scripts/install-nats-server \
         (installs nats-server {NATS_SERVER_VERSION}), or set BANDSYNC_NATS_SERVER \
         to a nats-server 2.11+ binary",
        path.display()
    );
    path
}

fn install_path() -> PathBuf {
    let tools = match std::env::var_os("BANDSYNC_TOOLS").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME")
                .expect("HOME or BANDSYNC_TOOLS must be set to find nats-server");
            PathBuf::from(home).join(".cache/bandsync")
        }
    };
    tools
        .join(format!("nats-server-{NATS_SERVER_VERSION}"))
        .join("nats-server")
}

/// The random passwords of one server or cluster (every role's and the
/// routes'), also written to one file per role for `--nats-password-file`.
#[derive(Clone)]
pub struct Logins {
    passwords: Arc<Vec<(Role, String)>>,
    route: String,
    dir: Arc<TempDir>,
}

impl Logins {
    fn generate() -> Logins {
        let dir = tempfile::Builder::new()
            .prefix("bandsync-logins-")
            .tempdir()
            .expect("creating a temp dir for NATS passwords");
        let passwords: Vec<(Role, String)> =
            Role::ALL.iter().map(|&r| (r, random_password())).collect();
        for (role, password) in &passwords {
            fs::write(dir.path().join(role.user()), format!("{password}\n"))
                .expect("writing a password file");
        }
        Logins {
            passwords: Arc::new(passwords),
            route: random_password(),
            dir: Arc::new(dir),
        }
    }

    pub fn password(&self, role: Role) -> &str {
        self.passwords
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, p)| p.as_str())
            .expect("every role has a password")
    }

    /// The file holding `role`'s password.
    pub fn password_file(&self, role: Role) -> PathBuf {
        self.dir.path().join(role.user())
    }

    /// What nats-server reads the passwords from.
    fn env(&self) -> Vec<(&'static str, String)> {
        let mut env: Vec<(&'static str, String)> = self
            .passwords
            .iter()
            .map(|(r, p)| (r.password_var(), p.clone()))
            .collect();
        env.push((auth::ROUTE_PASSWORD_VAR, self.route.clone()));
        env
    }

    /// The bus flags of a service logging in as `role` at `urls`.
    pub fn bus_flags(&self, urls: &str, role: Role) -> Vec<String> {
        vec![
            format!("--nats-url={urls}"),
            format!("--nats-user={}", role.user()),
            format!(
                "--nats-password-file={}",
                self.password_file(role).display()
            ),
        ]
    }

    /// `BusArgs` (defaults otherwise) logging in as `role` at `urls`.
    pub fn bus_args(&self, urls: &str, role: Role) -> BusArgs {
        BusArgs::new(urls).with_credentials(role.user(), self.password(role))
    }

    /// Connect options logging in as `role`.
    pub fn options(&self, role: Role) -> async_nats::ConnectOptions {
        async_nats::ConnectOptions::new()
            .user_and_password(role.user().into(), self.password(role).into())
    }
}

/// 24 random letters: nats-server parses the variable it reads a password
/// from as a value, so digits could make it a number (`12345`) or a size.
fn random_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = rand::rng();
    (0..24)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The configuration every test server runs with: BandSync's authorization
/// block for the default prefix, and `cluster` (a cluster block) if given.
fn server_config(cluster: Option<&str>) -> String {
    let subjects = Subjects::new(bandsync_nats::subjects::DEFAULT_PREFIX)
        .expect("the default prefix is valid");
    let mut config = auth::server_authorization(&subjects);
    if let Some(cluster) = cluster {
        config.push_str(cluster);
    }
    config
}

/// One nats-server process with JetStream, killed on drop.
pub struct NatsServer {
    child: Option<Child>,
    /// Client port; chosen by the server on first start, reused on restart.
    port: u16,
    /// Arguments beyond the client listener (the server name).
    extra_args: Vec<String>,
    /// Its configuration file's text: users and permissions, cluster settings.
    config: String,
    logins: Logins,
    /// Holds the store (`store/`), the log and the ports files; removed on drop.
    dir: TempDir,
}

impl NatsServer {
    /// Starts a standalone server on a free port of 127.0.0.1 and waits until it
    /// accepts connections.
    pub async fn start() -> NatsServer {
        let mut server = Self::spawn_with(Vec::new(), server_config(None), Logins::generate());
        server.wait_ready().await;
        server
    }

    /// Spawns without waiting, so cluster nodes can start side by side.
    fn spawn_with(extra_args: Vec<String>, config: String, logins: Logins) -> NatsServer {
        let dir = tempfile::Builder::new()
            .prefix("bandsync-nats-")
            .tempdir()
            .expect("creating a temp dir for nats-server");
        let mut server = NatsServer {
            child: None,
            port: 0,
            extra_args,
            config,
            logins,
            dir,
        };
        server.spawn();
        server
    }

    /// `nats://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its users' passwords.
    pub fn logins(&self) -> &Logins {
        &self.logins
    }

    /// `--nats-url`, `--nats-user` and `--nats-password-file` for a service logging in as `role`.
    pub fn bus_flags(&self, role: Role) -> Vec<String> {
        self.logins.bus_flags(&self.url(), role)
    }

    /// `BusArgs` logging in as `role`.
    pub fn bus_args(&self, role: Role) -> BusArgs {
        self.logins.bus_args(&self.url(), role)
    }

    /// A client logged in as `role`; panics if the server refuses it.
    pub async fn connect(&self, role: Role) -> async_nats::Client {
        self.logins
            .options(role)
            .connect(self.url())
            .await
            .unwrap_or_else(|e| panic!("connecting to {} as {}: {e}", self.url(), role.user()))
    }

    /// The JetStream store directory, kept across [`kill`](Self::kill) and
    /// [`restart`](Self::restart).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Everything the server has logged so far (all its runs), for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join(LOG_FILE)).unwrap_or_default()
    }

    /// The process id while running, for benchmarks that read its CPU time.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running (not killed, not exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills the server at once with SIGKILL, as a crash would, and reaps it. The
    /// store directory and the port number are kept for [`restart`](Self::restart).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Fails only if the process already exited; reaping it is all that is left.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same store directory (and
    /// the same cluster settings), killing it first if it is still running.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready().await;
    }

    fn spawn(&mut self) {
        let bin = nats_server_bin();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(LOG_FILE))
            .expect("opening the nats-server log file");
        let log_err = log
            .try_clone()
            .expect("duplicating the nats-server log file handle");
        // -1 asks the server for a free port; the ports file tells us which it got.
        let port = if self.port == 0 {
            "-1".to_string()
        } else {
            self.port.to_string()
        };
        let config = self.dir.path().join("nats.conf");
        fs::write(&config, &self.config).expect("writing the nats-server config");
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&config)
            .args(["-a", "127.0.0.1", "-p", &port, "-js", "-sd"])
            .arg(self.store_dir())
            .arg("--ports_file_dir")
            .arg(self.dir.path())
            .args(&self.extra_args)
            .envs(self.logins.env())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
        self.child = Some(child);
    }

    /// Waits until the ports file appears and the client port accepts a TCP
    /// connection; panics with the server's log if that takes too long or the
    /// process exits.
    async fn wait_ready(&mut self) {
        if let Err(e) = self.try_wait_ready().await {
            panic!("{e}");
        }
    }

    /// As `wait_ready`, but says why the server did not come up.
    async fn try_wait_ready(&mut self) -> Result<(), NotReady> {
        let deadline = Instant::now() + START_TIMEOUT;
        let pid = self.child.as_ref().expect("wait_ready after spawn").id();
        let ports_file = self
            .dir
            .path()
            .join(format!("{}_{pid}.ports", bin_file_name()));
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(NotReady::Exited {
                    status: status.to_string(),
                    log: self.log(),
                });
            }
            if let Some(port) = read_client_port(&ports_file)
                && tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            {
                self.port = port;
                return Ok(());
            }
            if Instant::now() >= deadline {
                let log = self.log();
                self.kill();
                return Err(NotReady::TimedOut { log });
            }
            sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Why a nats-server did not come up.
#[derive(Debug)]
enum NotReady {
    Exited { status: String, log: String },
    TimedOut { log: String },
}

impl NotReady {
    /// Another process took a port between `free_port` and the server's bind.
    fn lost_a_port(&self) -> bool {
        matches!(self, NotReady::Exited { log, .. } if log.contains("address already in use"))
    }
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::Exited { status, log } => {
                write!(
                    f,
                    "nats-server exited during start-up ({status}); its log:\n{log}"
                )
            }
            NotReady::TimedOut { log } => write!(
                f,
                "nats-server did not accept connections within {START_TIMEOUT:?}; its log:\n{log}"
            ),
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        // A service refused something it needs fails its test in some other
        // way (a timeout, a missing tick): say what the server refused.
        let refused: Vec<String> = self
            .log()
            .lines()
            .filter(|l| l.contains("Violation"))
            .map(str::to_owned)
            .collect();
        if !refused.is_empty() {
            eprintln!(
                "nats-server on port {} refused {} request(s):\n{}",
                self.port,
                refused.len(),
                refused.join("\n")
            );
        }
    }
}

fn bin_file_name() -> String {
    nats_server_bin()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "nats-server".into())
}

/// Reads the client port from a ports file (`{"nats":["nats://127.0.0.1:PORT"],...}`);
/// `None` while the file is missing or half-written.
fn read_client_port(path: &Path) -> Option<u16> {
    let mut text = String::new();
    File::open(path).ok()?.read_to_string(&mut text).ok()?;
    let ports: serde_json::Value = serde_json::from_str(&text).ok()?;
    let url = ports.get("nats")?.get(0)?.as_str()?;
    url.rsplit(':').next()?.parse().ok()
}

/// A free TCP port on 127.0.0.1 (bind, read, release). Another process could
/// take it before the server binds it, but the window is short and the kernel
/// hands out ephemeral ports in rotation.
fn free_port() -> u16 {
    let listener =
        TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("a bound listener has an address")
        .port()
}

/// An N-node JetStream cluster on loopback. Nodes are named `n0`, `n1`, ... in the
/// cluster `bandsync-test`; each can be killed and restarted on its own.
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `size` nodes with full-mesh routes and waits until JetStream has a
    /// meta leader and can place a stream with `size` replicas.
    pub async fn start(size: usize) -> NatsCluster {
        assert!(size >= 1, "a cluster needs at least one node");
        // The route ports are found free, then bound by the servers: another
        // test can take one in between. Then the whole cluster starts again
        // on new ports.
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            match Self::try_start(size).await {
                Ok(cluster) => return cluster,
                Err(e) if e.lost_a_port() && attempt < ATTEMPTS => {
                    eprintln!(
                        "testkit: a route port was taken before nats-server bound it; starting the cluster again"
                    );
                }
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    async fn try_start(size: usize) -> Result<NatsCluster, NotReady> {
        let route_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let logins = Logins::generate();
        let mut nodes: Vec<NatsServer> = route_ports
            .iter()
            .enumerate()
            .map(|(i, &own)| {
                // Routes log in as the route user, whose password the URLs carry.
                let routes: Vec<String> = route_ports
                    .iter()
                    .filter(|&&p| p != own)
                    .map(|p| format!("\"nats://{}:{}@127.0.0.1:{p}\"", auth::ROUTE_USER, logins.route))
                    .collect();
                let cluster = format!(
                    "cluster {{\n  name: bandsync-test\n  listen: \"127.0.0.1:{own}\"\n  {}\n  routes: [{}]\n}}\n",
                    auth::route_authorization(),
                    routes.join(", ")
                );
                let args = vec!["--server_name".to_string(), format!("n{i}")];
                NatsServer::spawn_with(args, server_config(Some(&cluster)), logins.clone())
            })
            .collect();
        for node in &mut nodes {
            node.try_wait_ready().await?;
        }
        let cluster = NatsCluster { nodes };
        cluster.wait_jetstream(size).await;
        Ok(cluster)
    }

    /// Every node's client URL, comma-separated (the form a `--nats-url` flag takes).
    pub fn urls(&self) -> String {
        self.url_list().join(",")
    }

    /// Every node's client URL, for `async_nats::connect(cluster.url_list())`.
    pub fn url_list(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// Its users' passwords (the same on every node).
    pub fn logins(&self) -> &Logins {
        self.nodes[0].logins()
    }

    /// A service's bus flags for every node, logging in as `role`.
    pub fn bus_flags(&self, role: Role) -> Vec<String> {
        self.logins().bus_flags(&self.urls(), role)
    }

    /// `BusArgs` for every node, logging in as `role`.
    pub fn bus_args(&self, role: Role) -> BusArgs {
        self.logins().bus_args(&self.urls(), role)
    }

    /// A client of the cluster logged in as `role`.
    pub async fn connect(&self, role: Role) -> async_nats::Client {
        self.logins()
            .options(role)
            .connect(self.url_list())
            .await
            .unwrap_or_else(|e| panic!("connecting to {} as {}: {e}", self.urls(), role.user()))
    }

    /// Retries creating (then deleting) an R`size` stream until the meta leader is
    /// elected and every peer has joined.
    async fn wait_jetstream(&self, size: usize) {
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        let client = self
            .logins()
            .options(Role::Admin)
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(Duration::from_secs(2)))
            .connect(self.url_list())
            .await
            .unwrap_or_else(|e| panic!("connecting to the test cluster {}: {e}", self.urls()));
        let js = async_nats::jetstream::new(client);
        let config = async_nats::jetstream::stream::Config {
            name: "TESTKIT_READY".to_string(),
            subjects: vec!["testkit.ready".to_string()],
            num_replicas: size,
            storage: async_nats::jetstream::stream::StorageType::Memory,
            ..Default::default()
        };
        let mut last_error = String::new();
        while Instant::now() < deadline {
            match js.create_stream(config.clone()).await {
                Ok(_) => match js.delete_stream("TESTKIT_READY").await {
                    Ok(_) => return,
                    Err(e) => last_error = format!("deleting the probe stream: {e}"),
                },
                Err(e) => last_error = format!("creating an R{size} probe stream: {e}"),
            }
            sleep(Duration::from_millis(100)).await;
        }
        let logs: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("--- node n{i} log ---\n{}", n.log()))
            .collect();
        panic!(
            "JetStream cluster not ready within {CLUSTER_TIMEOUT:?} (last error: {last_error})\n{}",
            logs.join("\n")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream;
    use bytes::Bytes;

    /// What makes `NatsCluster::start` try again: a route port another
    /// process holds makes the server exit, and says so.
    #[tokio::test]
    async fn a_route_port_taken_is_told_apart_from_other_failures() {
        let taken = TcpListener::bind("127.0.0.1:0").expect("a port");
        let port = taken.local_addr().expect("an address").port();
        // JetStream clustering wants a route; one to a port nobody answers on.
        let cluster = format!(
            "cluster {{\n  name: bandsync-test\n  listen: \"127.0.0.1:{port}\"\n  {}\n  routes: [\"nats://127.0.0.1:{}\"]\n}}\n",
            auth::route_authorization(),
            free_port()
        );
        let mut node = NatsServer::spawn_with(
            vec!["--server_name".into(), "n0".into()],
            server_config(Some(&cluster)),
            Logins::generate(),
        );
        let e = node.try_wait_ready().await.expect_err("the port is taken");
        assert!(e.lost_a_port(), "{e}");
        let timed_out = NotReady::TimedOut { log: String::new() };
        assert!(!timed_out.lost_a_port());
    }

    #[tokio::test]
    async fn server_keeps_kv_value_across_kill_and_restart() {
        let mut server = NatsServer::start().await;
        assert!(server.port() > 0);
        assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));

        let client = server.connect(Role::Admin).await;
        assert!(
            client.server_info().version.starts_with("2.15"),
            "testkit must run the pinned nats-server, got {}",
            client.server_info().version
        );
        let js = jetstream::new(client);
        let kv = js
            .create_key_value(jetstream::kv::Config {
                bucket: "testkit".into(),
                history: 1,
                ..Default::default()
            })
            .await
            .expect("creating a KV bucket");
        kv.put("tempo", Bytes::from_static(b"120"))
            .await
            .expect("putting a value");
        drop(kv);
        drop(js);

        let port = server.port();
        server.kill();
        assert!(!server.is_running());
        assert!(
            server
                .logins()
                .options(Role::Admin)
                .connect(server.url())
                .await
                .is_err(),
            "a killed server must refuse connections"
        );

        server.restart().await;
        assert_eq!(server.port(), port, "restart keeps the port");
        let client = server.connect(Role::Admin).await;
        let kv = jetstream::new(client)
            .get_key_value("testkit")
            .await
            .expect("the bucket survives the restart");
        let value = kv.get("tempo").await.expect("reading the value");
        assert_eq!(value.as_deref(), Some(&b"120"[..]));
    }

    #[tokio::test]
    async fn drop_kills_the_process() {
        let server = NatsServer::start().await;
        let pid = server
            .child
            .as_ref()
            .expect("a started server has a child")
            .id();
        let dir = server.dir.path().to_path_buf();
        drop(server);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "nats-server {pid} outlived its NatsServer"
        );
        assert!(!dir.exists(), "the temp dir is removed on drop");
    }

    #[tokio::test]
    async fn cluster_of_three_creates_a_replicated_stream() {
        let cluster = NatsCluster::start(3).await;
        assert_eq!(cluster.nodes.len(), 3);
        assert_eq!(cluster.urls().split(',').count(), 3);

        let client = cluster.connect(Role::Admin).await;
        let js = jetstream::new(client);
        let mut stream = js
            .create_stream(jetstream::stream::Config {
                name: "TESTKIT_R3".into(),
                subjects: vec!["testkit.r3".into()],
                num_replicas: 3,
                ..Default::default()
            })
            .await
            .expect("creating an R3 stream");
        // A node learns of the new stream's subject by gossip: until it has, a
        // publish through it finds no responder (async-nats: StreamNotFound).
        // The services' publishes retry for the same reason.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let ack = js
                .publish("testkit.r3", Bytes::from_static(b"hi"))
                .await
                .expect("publishing");
            match ack.await {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("the new R3 stream does not answer yet ({e}); retrying");
                    sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("the stream never acknowledged within 5 s: {e}"),
            }
        }
        let info = stream.info().await.expect("stream info");
        assert_eq!(info.config.num_replicas, 3);
        let cluster_info = info
            .cluster
            .as_ref()
            .expect("a clustered stream reports its cluster");
        assert_eq!(cluster_info.replicas.len(), 2, "a leader and two replicas");
    }
}
