use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = bandsync_gateway::Config::parse();
    bandsync_nats::service::init_tracing();
    let shutdown = bandsync_nats::service::shutdown_on_signal();
    let gateway = bandsync_gateway::start(config, shutdown).await?;
    println!("bandsync-gateway listening on http://{}", gateway.addr);
    println!(
        "bandsync-gateway operations (/healthz, /readyz, /metrics) on http://{}",
        gateway.ops_addr
    );
    gateway.wait().await
}
