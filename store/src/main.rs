use anyhow::Context;
use bandsync_store::{Config, run};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_args();
    if let Err(e) = config.validate() {
        eprintln!("bandsync-store: {e:#}");
        std::process::exit(2);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let shutdown = CancellationToken::new();
    tokio::spawn(signal(shutdown.clone()));
    run(config, shutdown).await.context("bandsync-store")
}

/// SIGINT or SIGTERM cancel the root token; the store then commits and acks its batch in flight.
async fn signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}
