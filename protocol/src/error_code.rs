//! The error codes of the protocol: what a rejected command or a closed socket
//! tells the client, shared by the state machine (rejections) and the wire.

use serde::{Deserialize, Serialize};

/// Stable error codes clients can branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Unauthorized,
    NotLeader,
    Invalid,
    BadJson,
    UnknownType,
    TooLarge,
    SessionFull,
    UnknownSession,
    RateLimited,
    Unavailable,
    SlowClient,
    /// The member connected again (another tab or device): this connection is
    /// closed, and should not reconnect by itself.
    Replaced,
    /// The leader removed this member: the token no longer works.
    Removed,
    /// The leader closed the session to new members.
    JoiningClosed,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotLeader => "not_leader",
            ErrorCode::Invalid => "invalid",
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::SessionFull => "session_full",
            ErrorCode::UnknownSession => "unknown_session",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::SlowClient => "slow_client",
            ErrorCode::Replaced => "replaced",
            ErrorCode::Removed => "removed",
            ErrorCode::JoiningClosed => "joining_closed",
            ErrorCode::Internal => "internal",
        }
    }
}
