//! `bandsync-chaos`: the full chaos suite, run by hand. Starts the clustered
//! topology (three JetStream nodes, R3, two tickers, two gateways, the store with
//! a PostgreSQL of its own), then for each fault sets up fresh playing bands,
//! injects it, and prints what the bands and PostgreSQL saw.

use anyhow::Context;
use bandsync_load::chaos::{self, Fault, FaultReport, Timing, band::BandSpec};
use bandsync_load::stack::{Stack, StackArgs, StackSpec, StoreDb};
use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "bandsync-chaos",
    about = "BandSync's chaos suite on local processes"
)]
struct Args {
    /// Faults to inject, in order (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = Fault::ALL)]
    faults: Vec<String>,
    #[arg(long, default_value_t = 20)]
    sessions: usize,
    /// Members per band, the leader included.
    #[arg(long, default_value_t = 4)]
    members: usize,
    /// Each leader changes the tempo this often.
    #[arg(long, default_value_t = 500)]
    command_ms: u64,
    /// How long to watch after each fault.
    #[arg(long, default_value_t = 15)]
    window_secs: u64,
    #[arg(long, default_value_t = 5)]
    settle_secs: u64,
    #[arg(long, default_value_t = 3)]
    nats_nodes: usize,
    #[command(flatten)]
    stack: StackArgs,
    /// Also write the reports as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    bandsync_nats::service::init_tracing_at("warn");
    let faults: Vec<Fault> = args
        .faults
        .iter()
        .map(|f| Fault::parse(f))
        .collect::<anyhow::Result<_>>()?;
    let bin_dir = args.stack.bin_dir();
    let mut stack = Stack::start(StackSpec {
        nats_server: &args.stack.nats_server,
        bin_dir: &bin_dir,
        gateway_bin: None,
        nats_nodes: args.nats_nodes,
        gateways: 2,
        tickers: 2,
        tick_ms: 100,
        max_members: args.members,
        token_secret: bandsync_nats::service::random_id(32),
        run_dir: args.stack.run_dir.as_deref(),
        nginx_port: None,
        store: Some(StoreDb::Own),
        address_limits: false,
    })
    .await?;
    eprintln!("stack in {}", stack.dir.display());
    let gateways = stack.gateways.clone();
    let bands = BandSpec {
        sessions: args.sessions,
        members: args.members,
        command_every: Duration::from_millis(args.command_ms),
    };
    let timing = Timing {
        window: Duration::from_secs(args.window_secs),
        settle: Duration::from_secs(args.settle_secs),
    };
    let mut reports: Vec<FaultReport> = Vec::new();
    for fault in faults {
        eprintln!("fault: {}", fault.name());
        let report = chaos::inject(&mut stack, &gateways, &bands, fault, &timing)
            .await
            .with_context(|| format!("during {}", fault.name()))?;
        eprintln!("{}\n{}", FaultReport::TABLE_HEAD, report.table_row());
        for note in &report.notes {
            eprintln!("  note: {note}");
        }
        reports.push(report);
    }
    println!("{}", FaultReport::TABLE_HEAD);
    for r in &reports {
        println!("{}", r.table_row());
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&reports)?)?;
    }
    stack.stop().await;
    Ok(())
}
