//! `bandsync-load`: parse the config, run the steps, print the table (and JSON).

use anyhow::Context;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = bandsync_load::Config::parse();
    bandsync_nats::service::init_tracing_at("warn");
    let shutdown = bandsync_nats::service::shutdown_on_signal();
    let json_path = config.json.clone();
    let json_stdout = config.json_stdout;
    let report = bandsync_load::run(config, shutdown).await?;
    print!("{}", report.table());
    let json = serde_json::to_string_pretty(&report).context("encoding the report")?;
    if let Some(path) = json_path {
        std::fs::write(&path, &json).with_context(|| format!("writing {}", path.display()))?;
    }
    if json_stdout {
        println!("{json}");
    }
    Ok(())
}
