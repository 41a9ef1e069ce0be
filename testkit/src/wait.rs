//! Waiting for a condition with a deadline: a test waits for the thing itself,
//! never for a fixed sleep.

use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// How often [`eventually`] checks.
const POLL: Duration = Duration::from_millis(50);

/// Polls `check` until it returns true; panics naming `what` after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}
