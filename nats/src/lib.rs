//! The language every BandSync process speaks: identifiers, subject and bucket
//! names, wire messages, shard hashing, the timeline math and the pure session
//! state machine. It has no HTTP or SQL in it; `bus` is the only module that
//! talks to NATS, and `testkit` (feature) spawns real nats-servers for tests.

pub mod bus;
pub mod command;
pub mod ids;
pub mod service;
pub mod shard;
pub mod state;
pub mod subjects;
pub mod timeline;
pub mod wire;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use command::{Command, CommandEnvelope, Song};
pub use ids::{CommandId, DisplayName, GatewayId, InvalidValue, JoinCode, MemberId, SessionId};
pub use shard::{Shard, shard_of};
pub use state::{Change, Rules, SessionState};
pub use subjects::Subjects;
pub use timeline::{Micros, Timeline, now_us};
pub use wire::{ClientMsg, ErrorCode, ErrorMsg, EventMsg, ServerMsg, TickMsg};
