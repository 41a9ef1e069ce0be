//! Limits per client address: what one address may ask of a gateway, so that
//! one machine (a script, a tab gone wild) cannot crowd out the others. Four
//! limits, each configurable and 0 for none: HTTP requests and WebSocket
//! upgrades per minute, sessions created per minute, and sockets open at once.
//! A refusal is a `429 rate_limited` with a retry time (for sockets: when one
//! closes, so a few seconds), counted in
//! `bandsync_gateway_address_limited_total{limit}`.
//!
//! A band behind one NAT (a rehearsal room's Wi-Fi) shares one address: the
//! defaults hold a dozen bands there. The address is the one
//! `guesses::client_addr` finds (a trusted proxy's `X-Forwarded-For`).

use crate::windows::Windows;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered per limit at most (ended windows are pruned first).
const MAX_ADDRESSES: usize = 100_000;
/// What a client refused for too many open sockets is told to wait.
const SOCKET_RETRY: Duration = Duration::from_secs(5);

/// The limits, per address; 0 is no limit.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub requests_per_minute: u32,
    pub connects_per_minute: u32,
    pub creates_per_minute: u32,
    pub sockets: u32,
}

/// Which limit refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Requests,
    Connects,
    Creates,
    Sockets,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Requests => "requests",
            Limit::Connects => "connects",
            Limit::Creates => "creates",
            Limit::Sockets => "sockets",
        }
    }

    /// The sentence the client gets.
    pub fn message(self) -> &'static str {
        match self {
            Limit::Requests => "too many requests from your address",
            Limit::Connects => "too many connections from your address",
            Limit::Creates => "too many new sessions from your address",
            Limit::Sockets => "too many open connections from your address",
        }
    }
}

/// A refusal: which limit, and how long until the address may try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub limit: Limit,
    pub retry_after: Duration,
}

pub struct AddressLimits {
    limits: Limits,
    requests: Windows<IpAddr>,
    connects: Windows<IpAddr>,
    creates: Windows<IpAddr>,
    open: Arc<Mutex<HashMap<IpAddr, u32>>>,
}

/// One open socket of an address, given back when dropped.
pub struct SocketSlot {
    addr: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, u32>>>,
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.open);
        if let Some(n) = open.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.addr);
            }
        }
    }
}

impl AddressLimits {
    pub fn new(limits: Limits) -> Self {
        let windows = || Windows::new(WINDOW, MAX_ADDRESSES);
        Self {
            limits,
            requests: windows(),
            connects: windows(),
            creates: windows(),
            open: Arc::default(),
        }
    }

    /// Any HTTP request, an upgrade included.
    pub fn request(&self, addr: IpAddr, now: Instant) -> Result<(), Refused> {
        within(
            &self.requests,
            addr,
            self.limits.requests_per_minute,
            Limit::Requests,
            now,
        )
    }

    /// A WebSocket upgrade: counted against the rate, and holding one of the
    /// address's sockets for as long as the slot lives.
    pub fn connect(&self, addr: IpAddr, now: Instant) -> Result<SocketSlot, Refused> {
        within(
            &self.connects,
            addr,
            self.limits.connects_per_minute,
            Limit::Connects,
            now,
        )?;
        let mut open = lock(&self.open);
        let n = open.entry(addr).or_insert(0);
        if self.limits.sockets != 0 && *n >= self.limits.sockets {
            return Err(Refused {
                limit: Limit::Sockets,
                retry_after: SOCKET_RETRY,
            });
        }
        *n += 1;
        Ok(SocketSlot {
            addr,
            open: self.open.clone(),
        })
    }

    /// A new session.
    pub fn create(&self, addr: IpAddr, now: Instant) -> Result<(), Refused> {
        within(
            &self.creates,
            addr,
            self.limits.creates_per_minute,
            Limit::Creates,
            now,
        )
    }
}

fn within(
    windows: &Windows<IpAddr>,
    addr: IpAddr,
    limit: u32,
    which: Limit,
    now: Instant,
) -> Result<(), Refused> {
    if limit == 0 || windows.add_below(addr, limit, now) {
        return Ok(());
    }
    let ends = windows.count(&addr, now).map_or(now, |(_, ends)| ends);
    Err(Refused {
        limit: which,
        retry_after: ends - now,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A count is never left half-updated while the lock is held.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    fn limits() -> AddressLimits {
        AddressLimits::new(Limits {
            requests_per_minute: 3,
            connects_per_minute: 10,
            creates_per_minute: 1,
            sockets: 2,
        })
    }

    #[test]
    fn each_address_has_its_own_allowance_per_minute() {
        let l = limits();
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.request(a, t0), Ok(()));
        }
        let refused = l
            .request(a, t0 + Duration::from_secs(20))
            .expect_err("refused");
        assert_eq!(refused.limit, Limit::Requests);
        assert_eq!(refused.retry_after, Duration::from_secs(40));
        assert_eq!(l.request(b, t0), Ok(()), "another address");
        assert_eq!(l.request(a, t0 + WINDOW), Ok(()), "a new minute");
        assert_eq!(l.create(a, t0), Ok(()));
        assert_eq!(l.create(a, t0).expect_err("refused").limit, Limit::Creates);
    }

    #[test]
    fn sockets_are_given_back_when_they_close() {
        let l = limits();
        let a = ip("10.0.0.1");
        let t0 = Instant::now();
        let first = l.connect(a, t0).expect("one");
        let _second = l.connect(a, t0).expect("two");
        assert_eq!(
            l.connect(a, t0).err().map(|r| r.limit),
            Some(Limit::Sockets)
        );
        drop(first);
        assert!(l.connect(a, t0).is_ok(), "a closed socket's place is free");
    }

    #[test]
    fn zero_is_no_limit() {
        let l = AddressLimits::new(Limits {
            requests_per_minute: 0,
            connects_per_minute: 0,
            creates_per_minute: 0,
            sockets: 0,
        });
        let a = ip("10.0.0.1");
        let now = Instant::now();
        let slots: Vec<_> = (0..1_000)
            .map(|_| l.connect(a, now).expect("unlimited"))
            .collect();
        assert_eq!(slots.len(), 1_000);
        assert!((0..1_000).all(|_| l.request(a, now).is_ok()));
    }
}
