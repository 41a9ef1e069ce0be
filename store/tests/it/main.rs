//! Integration tests against a real nats-server (testkit) and the local PostgreSQL,
//! with a fresh database per test.

mod api;
mod bus_wait;
mod crash;
mod dead_letter;
mod pg_outage;
mod replay;
mod stall;
mod support;
mod through_services;
