//! The bus side of BandSync's shared language: subject, stream, bucket and key
//! names (`subjects`, the only place that spells them), who may do what on the
//! bus (`auth`), connecting, declaring and binding (`bus`), and process set-up
//! (`service`). It re-exports the pure protocol (`bandsync-protocol`) so a
//! service names one crate; a client needs only that one.

pub mod auth;
pub mod bus;
pub mod service;
pub mod subjects;

pub use bandsync_protocol::{
    BeatMsg, Change, ClientMsg, Command, CommandEnvelope, CommandId, ConnId, DisplayName,
    ErrorCode, ErrorMsg, EventMsg, GatewayId, InvalidValue, JoinCode, MemberId, Micros, Rules,
    ServerMsg, SessionId, SessionState, Shard, Song, TickMsg, Timeline, now_us, shard_of,
};
pub use bandsync_protocol::{command, error_code, ids, shard, state, timeline, wire};
pub use subjects::Subjects;
