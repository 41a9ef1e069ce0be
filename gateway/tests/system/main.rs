//! System tests: real nats-server processes, real tickers and gateways (in
//! this process, each with its own shutdown token), clients speaking the real
//! WebSocket protocol through bandsync-client.

mod common;
mod errors;
mod forged;
mod hardening;
mod large;
mod leadership;
mod limits;
mod ops;
mod outage;
mod quality;
mod removal;
mod replaced;
mod shutdown;
mod slow;
mod sync;
mod texts;
mod ticks;
mod tls;
mod tokens;
