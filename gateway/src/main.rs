use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = bandsync_gateway::Config::parse();
    bandsync_nats::service::init_tracing();
    let shutdown = bandsync_nats::service::shutdown_on_signal();
    let gateway = bandsync_gateway::start(config, shutdown).await?;
    let scheme = if gateway.https.is_some() {
        "https"
    } else {
        "http"
    };
    println!("bandsync-gateway listening on {scheme}://{}", gateway.addr);
    println!(
        "bandsync-gateway operations (/healthz, /readyz, /metrics) on http://{}",
        gateway.ops_addr
    );
    if let Some(https) = &gateway.https {
        print!("{}", https.banner);
    }
    gateway.wait().await
}
