use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = bandsync_ticker::Config::parse();
    bandsync_nats::service::init_tracing();
    let shutdown = bandsync_nats::service::shutdown_on_signal();
    let ticker = bandsync_ticker::start(config, shutdown).await?;
    println!(
        "bandsync-ticker {} health on http://{}",
        ticker.id, ticker.addr
    );
    ticker.wait().await
}
