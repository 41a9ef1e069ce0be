//! Failed joins per client address: a join code is guessable (31^6 codes, a
//! thousand live sessions: one hit per ~890,000 guesses), so an address may
//! fail `FAILURES_PER_WINDOW` times per `WINDOW` and is then refused with
//! `rate_limited` until the window ends. At 10 a minute one address needs about
//! 60 days to find one session among a thousand. Successful joins do not count.
//!
//! The address is the TCP peer's, or, when that peer is a proxy the operator
//! trusts (`--trusted-proxies`), the client nginx names in `X-Forwarded-For`:
//! any other client could write that header itself.

use crate::windows::Windows;
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub const FAILURES_PER_WINDOW: u32 = 10;
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most; past it the oldest windows are forgotten
/// first (an attacker rotating addresses gains nothing from this: each new
/// address starts with the same allowance anyway).
const MAX_ADDRESSES: usize = 100_000;

pub struct FailedJoins(Windows<IpAddr>);

impl Default for FailedJoins {
    fn default() -> Self {
        Self(Windows::new(WINDOW, MAX_ADDRESSES))
    }
}

impl FailedJoins {
    /// `None` if `addr` may try a join now, else how long until it may.
    pub fn wait_needed(&self, addr: IpAddr, now: Instant) -> Option<Duration> {
        let (failures, ends) = self.0.count(&addr, now)?;
        (failures >= FAILURES_PER_WINDOW).then(|| ends - now)
    }

    /// A join from `addr` named no session.
    pub fn failed(&self, addr: IpAddr, now: Instant) {
        self.0.add_below(addr, u32::MAX, now);
    }
}

/// The client's address: the peer's, or the nearest untrusted hop a trusted
/// proxy recorded in `X-Forwarded-For` (read from the right: each proxy
/// appends the address it saw).
pub fn client_addr(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let Some(chain) = forwarded_for else {
        return peer;
    };
    chain
        .rsplit(',')
        .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
        .find(|hop| !trusted.contains(hop))
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn an_address_that_keeps_failing_waits_for_the_window_to_end() {
        let joins = FailedJoins::default();
        let (a, b) = (ip("203.0.113.7"), ip("198.51.100.1"));
        let t0 = Instant::now();
        for i in 0..FAILURES_PER_WINDOW {
            assert_eq!(joins.wait_needed(a, t0), None, "failure {i} still allowed");
            joins.failed(a, t0);
        }
        assert_eq!(
            joins.wait_needed(a, t0 + Duration::from_secs(20)),
            Some(Duration::from_secs(40))
        );
        assert_eq!(
            joins.wait_needed(b, t0),
            None,
            "another address is not held back"
        );
        assert_eq!(joins.wait_needed(a, t0 + WINDOW), None, "a new window");
        joins.failed(a, t0 + WINDOW);
        assert_eq!(joins.wait_needed(a, t0 + WINDOW), None, "counted afresh");
    }

    #[test]
    fn the_forwarded_address_counts_only_behind_a_trusted_proxy() {
        let proxy = ip("10.0.0.2");
        let trusted = [proxy];
        let header = Some("192.0.2.9, 203.0.113.7");
        assert_eq!(client_addr(proxy, header, &trusted), ip("203.0.113.7"));
        assert_eq!(
            client_addr(ip("203.0.113.7"), Some("10.9.9.9"), &trusted),
            ip("203.0.113.7"),
            "a client cannot name itself someone else"
        );
        assert_eq!(client_addr(proxy, None, &trusted), proxy);
        assert_eq!(
            client_addr(proxy, Some("garbage, 10.0.0.2"), &trusted),
            proxy,
            "nothing usable: the proxy itself"
        );
    }

    /// Codes are sized against the limit: a botnet of 1,000 addresses on 4
    /// gateways, against 1,000 live sessions, needs days, not hours.
    #[test]
    fn guessing_a_code_takes_a_botnet_days() {
        use bandsync_nats::ids::{JOIN_CODE_ALPHABET, JOIN_CODE_LEN};
        let codes = (JOIN_CODE_ALPHABET.len() as f64).powi(JOIN_CODE_LEN as i32);
        let guesses_per_minute =
            1_000.0 * 4.0 * f64::from(FAILURES_PER_WINDOW) * 60.0 / WINDOW.as_secs_f64();
        let minutes = codes / 1_000.0 / guesses_per_minute;
        let days = minutes / 60.0 / 24.0;
        assert!(days > 7.0, "a botnet finds a session in {days:.2} days");
    }
}
