//! The BandSync protocol, pure: identifiers, commands, the session state machine,
//! the timeline math, shard hashing and the messages a client and the bus carry.
//! No I/O and no runtime: a client embedding the SDK gets only what it speaks
//! (serde, serde_json, thiserror, bytes). The bus names (subjects, streams,
//! buckets, keys) live in `bandsync-nats`, which re-exports this crate.

pub mod chordpro;
pub mod command;
pub mod error_code;
pub mod ids;
pub mod shard;
pub mod state;
pub mod text;
pub mod timeline;
pub mod wire;

pub use command::{Command, CommandEnvelope, Song};
pub use error_code::ErrorCode;
pub use ids::{
    CommandId, ConnId, DisplayName, GatewayId, InvalidValue, JoinCode, MemberId, SessionId,
};
pub use shard::{Shard, shard_of};
pub use state::{Change, Rules, SessionState};
pub use timeline::{Micros, Timeline, now_us};
pub use wire::{BeatMsg, ClientMsg, ErrorMsg, EventMsg, ServerMsg, TickMsg};
