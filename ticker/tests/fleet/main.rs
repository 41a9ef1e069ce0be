//! Acceptance tests of the ticker fleet (issue "Ticker fleet"), with real
//! processes: a nats-server per test, `bandsync-ticker` binaries signalled with
//! kill(1), two gateways and real WebSocket clients. They assert what band
//! members would see: ticks that keep coming, never two owners' ticks for one
//! period, positions on the session's timeline, no stale owner's messages, and
//! every command applied once.
//!
//! The tests take turns (`common::exclusive`), since they measure timing.

mod commands;
mod common;
mod cursor;
mod ending;
mod failover;
mod freeze;
mod join;
mod renewal;
mod shutdown;
mod waiting;
