use anyhow::Context;
use bandsync_store::{Config, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_args();
    if let Err(e) = config.validate() {
        eprintln!("bandsync-store: {e:#}");
        std::process::exit(2);
    }
    bandsync_nats::service::init_tracing();
    // SIGINT or SIGTERM: the store then commits and acks its batch in flight.
    let shutdown = bandsync_nats::service::shutdown_on_signal();
    run(config, shutdown).await.context("bandsync-store")
}
