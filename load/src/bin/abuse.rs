//! `bandsync-abuse`: the abusive-client measurement (docs/security.md). Starts
//! a stack of its own (one nats-server, one ticker, one gateway with its
//! per-address limits on), then runs `bandsync_load::abuse` (quiet and abused
//! windows in turn, `--rounds` times) and prints the tables. `bandsync-abuse
//! abusers …` is the abusers' own process, which the measurement starts at
//! the lowest CPU priority for each abused window.

use bandsync_load::abuse::{self, Spec};
use bandsync_load::stack::{Stack, StackArgs, StackSpec};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// The stack's tick period: 10 Hz, as a band plays.
const TICK_MS: u64 = 100;

#[derive(Debug, Parser)]
#[command(
    name = "bandsync-abuse",
    about = "Two bands play, quietly and while abusers hit one of them, in turn; prints what the bands saw"
)]
struct Args {
    /// Length of each window, quiet or abused (the abusers' process: its whole run).
    #[arg(long, default_value_t = 20)]
    window_secs: u64,
    /// Rounds of a quiet then an abused window; each phase is pooled over
    /// its windows, and two rounds or more give the quiet windows' own spread
    /// (the run's noise floor).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
    rounds: u64,
    /// Sockets the first abuser tries to open with one member's token (at most 300).
    #[arg(long, default_value_t = 300)]
    sockets: usize,
    #[command(flatten)]
    stack: StackArgs,
    /// Pin the abusers to this CPU (`taskset`), as if they ran on another
    /// machine; pin the measurement to the others, e.g.
    /// `taskset -c 0 bandsync-abuse --abusers-cpu 1`.
    #[arg(long)]
    abusers_cpu: Option<usize>,
    /// Only these abusers, to tell what each costs: open (300 sockets with one
    /// token), flood, stuck (never reads), guess (join codes); all by default.
    #[arg(long, value_delimiter = ',', value_parser = ["open", "flood", "stuck", "guess"])]
    only: Vec<String>,
    /// Also write the report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(subcommand)]
    abusers: Option<Abusers>,
}

#[derive(Debug, Subcommand)]
enum Abusers {
    /// Only the abusers, against a running gateway; prints what they got as JSON.
    Abusers {
        #[arg(long)]
        base: String,
        /// The three abusing members' tokens, comma-separated.
        #[arg(long, value_delimiter = ',')]
        tokens: Vec<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    bandsync_nats::service::init_tracing_at("warn");
    let window = Duration::from_secs(args.window_secs);
    if let Some(Abusers::Abusers { base, tokens }) = &args.abusers {
        let got = abuse::abuse_for(base, tokens, window, args.sockets, &args.only).await?;
        println!("{}", serde_json::to_string(&got)?);
        return Ok(());
    }
    let bin_dir = args.stack.bin_dir();
    let stack = Stack::start(StackSpec {
        nats_server: &args.stack.nats_server,
        bin_dir: &bin_dir,
        gateway_bin: None,
        nats_nodes: 1,
        gateways: 1,
        tickers: 1,
        tick_ms: TICK_MS,
        max_members: 12,
        token_secret: bandsync_nats::service::random_id(32),
        run_dir: args.stack.run_dir.as_deref(),
        nginx_port: None,
        store: None,
        address_limits: true,
    })
    .await?;
    eprintln!("stack in {}", stack.dir.display());
    let spec = Spec {
        window,
        rounds: usize::try_from(args.rounds)?,
        sockets: args.sockets,
        abusers_exe: std::env::current_exe()?,
        abusers_cpu: args.abusers_cpu,
        only: args.only.clone(),
        tick_period: Duration::from_millis(TICK_MS),
        // The stack, and this process, whose members measure.
        processes: [stack.pids(), vec![("members".into(), std::process::id())]].concat(),
    };
    let report = abuse::run(&stack.gateways[0], spec).await;
    stack.stop().await;
    let report = report?;
    println!("{}", report.table());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}
