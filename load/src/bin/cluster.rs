//! `bandsync-cluster`: the multi-machine topology as local processes on
//! loopback (scripts/cluster): a JetStream cluster, nginx in front of the
//! gateways, tickers, the store with a PostgreSQL of its own. Writes what it
//! started to `<run dir>/cluster.json`, prints the URLs, and runs until Ctrl-C
//! or SIGTERM, then stops everything it started.

use anyhow::Context;
use bandsync_load::stack::{Stack, StackSpec, StoreDb};
use clap::Parser;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "bandsync-cluster",
    about = "BandSync's clustered topology as local processes"
)]
struct Args {
    /// Where data, logs and cluster.json go.
    #[arg(long, env = "BANDSYNC_RUN_DIR", default_value = ".run/cluster")]
    run_dir: PathBuf,
    /// NATS nodes (3: streams and buckets replicated 3x).
    #[arg(long, default_value_t = 3)]
    nats_nodes: usize,
    #[arg(long, default_value_t = 2)]
    gateways: usize,
    #[arg(long, default_value_t = 2)]
    tickers: usize,
    /// nginx's port: what a browser opens.
    #[arg(long, env = "BANDSYNC_WEB_PORT", default_value_t = 8080)]
    web_port: u16,
    /// Run without the store and its PostgreSQL.
    #[arg(long)]
    no_store: bool,
    #[arg(long, env = "BANDSYNC_TICK_MS", default_value_t = 100)]
    tick_ms: u64,
    /// Directory holding the service binaries.
    #[arg(long, env = "BANDSYNC_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// nats-server 2.11+ binary.
    #[arg(long, env = "BANDSYNC_NATS_SERVER", default_value = "nats-server")]
    nats_server: PathBuf,
    /// HMAC secret shared by the gateways (default: generated).
    #[arg(long, env = "BANDSYNC_TOKEN_SECRET", hide_env_values = true)]
    token_secret: Option<String>,
}

#[derive(Serialize)]
struct Manifest {
    web: Option<String>,
    gateways: Vec<String>,
    store: Option<String>,
    database_url: Option<String>,
    nats_urls: String,
    /// One file per NATS user holding its password (`admin` is the operator's).
    nats_auth: PathBuf,
    processes: Vec<bandsync_load::stack::ProcInfo>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    bandsync_nats::service::init_tracing_at("warn");
    let shutdown = bandsync_nats::service::shutdown_on_signal();
    let bin_dir = args
        .bin_dir
        .clone()
        .unwrap_or_else(bandsync_load::stack::default_bin_dir);
    let secret = args
        .token_secret
        .clone()
        .unwrap_or_else(|| bandsync_nats::service::random_id(32));
    let mut stack = Stack::start(StackSpec {
        nats_server: &args.nats_server,
        bin_dir: &bin_dir,
        gateway_bin: None,
        nats_nodes: args.nats_nodes,
        gateways: args.gateways,
        tickers: args.tickers,
        tick_ms: args.tick_ms,
        max_members: 12,
        token_secret: secret,
        run_dir: Some(&args.run_dir),
        nginx_port: Some(args.web_port),
        store: (!args.no_store).then_some(StoreDb::Own),
        address_limits: false,
    })
    .await?;
    let manifest = Manifest {
        web: stack.entry.clone(),
        gateways: stack.gateways.clone(),
        store: stack.store.clone(),
        database_url: stack.database_url.clone(),
        nats_urls: stack.nats_urls.clone(),
        nats_auth: stack.nats_auth.clone(),
        processes: stack.processes(),
    };
    let path = args.run_dir.join("cluster.json");
    std::fs::write(&path, serde_json::to_string_pretty(&manifest)?)
        .with_context(|| format!("writing {}", path.display()))?;
    for p in &manifest.processes {
        let ports: Vec<String> = p.ports.iter().map(|(k, v)| format!("{k} {v}")).collect();
        eprintln!(
            "  {:<10} pid {:<8} {}",
            p.name,
            p.pid.map_or_else(|| "-".to_owned(), |pid| pid.to_string()),
            ports.join(", ")
        );
    }
    if let Some(web) = &manifest.web {
        eprintln!("\nBandSync is running: open {web}/");
    }
    if let Some(store) = &manifest.store {
        eprintln!(
            "store (analyst API): {store}   PostgreSQL: {}",
            manifest.database_url.as_deref().unwrap_or("-")
        );
    }
    eprintln!(
        "NATS: {} (users' passwords in {}/; the operator logs in as admin)\nprocesses: {} (Ctrl-C stops everything)",
        manifest.nats_urls,
        manifest.nats_auth.display(),
        path.display()
    );

    // A process that dies (or that someone kills to see what happens) is
    // reported, not fatal: the rest of the topology is what is being tried.
    let mut reported = std::collections::BTreeSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(Duration::from_millis(500)) => {
                for name in stack.dead() {
                    if reported.insert(name.clone()) {
                        eprintln!("{name} exited (log: {}/{name}.log)", args.run_dir.display());
                    }
                }
            }
        }
    }
    eprintln!("stopping");
    stack.stop().await;
    Ok(())
}
