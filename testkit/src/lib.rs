//! What BandSync's tests, benchmarks and examples share, in one home: real
//! nats-server processes and clusters (`nats`), a plain HTTP GET (`http`),
//! Prometheus text read strictly (`metrics`: an absent series is an error, never
//! a 0), waiting for a condition with a deadline (`wait`) and percentiles;
//! with the `stack` feature, a ticker and gateways started in the test's own
//! process (`stack`, whose doc says why it is behind a feature).
//!
//! No service links it: tests, benchmarks and the load and chaos tools do.

pub mod http;
pub mod metrics;
pub mod nats;
#[cfg(feature = "stack")]
pub mod stack;
pub mod wait;

pub use bandsync_nats::auth::Role;
pub use http::{HttpError, Response, http_get, http_get_with};
pub use metrics::{MetricError, metric, scrape_metric};
pub use nats::{Logins, NatsCluster, NatsServer, nats_server_bin};
#[cfg(feature = "stack")]
pub use stack::{InProcessStack, StackOptions};
pub use wait::eventually;

/// The gateway flags that turn its per-address limits off (gateway/src/config.rs):
/// for a test or a load run standing in for many devices from one address.
pub const NO_ADDRESS_LIMITS: [&str; 4] = [
    "--requests-per-address=0",
    "--connects-per-address=0",
    "--creates-per-address=0",
    "--sockets-per-address=0",
];

/// The value at fraction `p` (0..=1) of an ascending slice, by nearest rank;
/// `None` for an empty slice, so a run that measured nothing cannot read as 0.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    let last = sorted.len().checked_sub(1)?;
    let idx = (last as f64 * p.clamp(0.0, 1.0)).round() as usize;
    Some(sorted[idx])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_by_nearest_rank() {
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), Some(51));
        assert_eq!(percentile(&v, 0.99), Some(99));
        assert_eq!(percentile(&v, 1.0), Some(100));
        assert_eq!(percentile::<i64>(&[], 0.5), None);
    }
}
