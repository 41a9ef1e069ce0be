//! Starts a BandSync stack of its own as child processes (nats-server with
//! JetStream, tickers, gateways) on free loopback ports, so the figures include
//! every process's CPU and memory. Children are killed when the stack drops.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// How long a started process may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Stack {
    /// (name, child) in start order.
    children: Vec<(String, Child)>,
    pub gateways: Vec<String>,
    /// nats-server's monitoring endpoint (http://127.0.0.1:port).
    pub nats_monitor: String,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

pub struct StackSpec<'a> {
    pub nats_server: &'a Path,
    pub bin_dir: &'a Path,
    pub gateways: usize,
    pub tickers: usize,
    pub tick_ms: u64,
    pub max_members: usize,
    pub token_secret: String,
    pub run_dir: Option<&'a Path>,
}

impl Stack {
    pub async fn start(spec: StackSpec<'_>) -> anyhow::Result<Stack> {
        let (dir, tmp) = match spec.run_dir {
            Some(d) => {
                std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
                (d.to_path_buf(), None)
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
            children: Vec::new(),
            gateways: Vec::new(),
            nats_monitor: String::new(),
            dir,
            _tmp: tmp,
        };
        let gateway_bin = spec.bin_dir.join("bandsync-gateway");
        let ticker_bin = spec.bin_dir.join("bandsync-ticker");
        for bin in [&gateway_bin, &ticker_bin] {
            anyhow::ensure!(
                bin.is_file(),
                "{} not found: build with `cargo build --release -p bandsync-gateway -p bandsync-ticker`, or set --bin-dir / BANDSYNC_BIN_DIR",
                bin.display()
            );
        }
        let nats_port = free_port()?;
        let monitor_port = free_port()?;
        let store = stack.dir.join("nats");
        let nats_url = format!("nats://127.0.0.1:{nats_port}");
        stack.nats_monitor = format!("http://127.0.0.1:{monitor_port}");
        stack
            .spawn(
                "nats-server",
                spec.nats_server,
                &[
                    "-a".into(),
                    "127.0.0.1".into(),
                    "-p".into(),
                    nats_port.to_string(),
                    "-js".into(),
                    "-sd".into(),
                    store.display().to_string(),
                    // /varz and /connz (slow consumers, pending bytes) during a run.
                    "-m".into(),
                    monitor_port.to_string(),
                ],
                &[],
                nats_port,
            )
            .await?;
        let common = |listen: u16| {
            vec![
                format!("--nats-url={nats_url}"),
                format!("--listen=127.0.0.1:{listen}"),
                format!("--max-members={}", spec.max_members.max(12)),
            ]
        };
        for i in 0..spec.tickers {
            let port = free_port()?;
            let mut args = common(port);
            args.push(format!("--tick-ms={}", spec.tick_ms));
            args.push(format!("--ticker-id=load-ticker-{i}"));
            stack
                .spawn(&format!("ticker-{i}"), &ticker_bin, &args, &[], port)
                .await?;
        }
        for i in 0..spec.gateways {
            let port = free_port()?;
            let mut args = common(port);
            args.push(format!("--gateway-id=load-gw-{i}"));
            let env = [("BANDSYNC_TOKEN_SECRET", spec.token_secret.as_str())];
            stack
                .spawn(&format!("gateway-{i}"), &gateway_bin, &args, &env, port)
                .await?;
            stack.gateways.push(format!("http://127.0.0.1:{port}"));
        }
        Ok(stack)
    }

    async fn spawn(
        &mut self,
        name: &str,
        bin: &Path,
        args: &[String],
        env: &[(&str, &str)],
        port: u16,
    ) -> anyhow::Result<()> {
        let log_path = self.dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .envs(env.iter().copied())
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
            .with_context(|| format!("starting {name} ({})", bin.display()))?;
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            if let Some(status) = child.try_wait()? {
                anyhow::bail!(
                    "{name} exited during start-up ({status}); see {}",
                    log_path.display()
                );
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{name} did not listen on port {port} within {START_TIMEOUT:?}; see {}",
                log_path.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.children.push((name.to_owned(), child));
        Ok(())
    }

    /// (name, pid) of every process, for /proc readings.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.children
            .iter()
            .filter_map(|(n, c)| Some((n.clone(), c.id()?)))
            .collect()
    }

    /// Names of processes that have exited.
    pub fn dead(&mut self) -> Vec<String> {
        self.children
            .iter_mut()
            .filter_map(|(n, c)| (!matches!(c.try_wait(), Ok(None))).then(|| n.clone()))
            .collect()
    }

    /// Stops services first, NATS last.
    pub async fn stop(mut self) {
        while let Some((_, mut child)) = self.children.pop() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
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
