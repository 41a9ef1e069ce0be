//! The one place that knows subject, stream, bucket and key names.
//!
//! - `<p>.cmd.<shard>.<session>`: commands to the shard's owner (stream `<P>_CMD`);
//! - `<p>.sess.<session>.evt`: state events and rejections (stream `<P>_EVT`);
//! - `<p>.sess.<session>.tick`: ticks, core NATS only.

use crate::ids::{InvalidValue, SessionId};
use crate::shard::Shard;

pub const DEFAULT_PREFIX: &str = "bandsync";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    /// `prefix` must be lowercase letters, digits or '_' (it also names streams and buckets).
    pub fn new(prefix: &str) -> Result<Self, InvalidValue> {
        let ok = !prefix.is_empty()
            && prefix.len() <= 32
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !ok {
            return Err(InvalidValue::new(
                "prefix",
                "must be 1..=32 of a-z, 0-9, '_'",
            ));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn cmd(&self, shard: Shard, session: &SessionId) -> String {
        format!("{}.cmd.{shard}.{session}", self.prefix)
    }
    /// Filter for one shard's commands.
    pub fn cmd_shard(&self, shard: Shard) -> String {
        format!("{}.cmd.{shard}.*", self.prefix)
    }
    pub fn cmd_all(&self) -> String {
        format!("{}.cmd.>", self.prefix)
    }
    pub fn evt(&self, session: &SessionId) -> String {
        format!("{}.sess.{session}.evt", self.prefix)
    }
    pub fn evt_all(&self) -> String {
        format!("{}.sess.*.evt", self.prefix)
    }
    /// One shard's beats (`BeatMsg`), from which gateways make its sessions' ticks.
    pub fn beat(&self, shard: Shard) -> String {
        format!("{}.beat.{shard}", self.prefix)
    }
    pub fn beat_all(&self) -> String {
        format!("{}.beat.*", self.prefix)
    }

    pub fn cmd_stream(&self) -> String {
        format!("{}_CMD", self.prefix.to_ascii_uppercase())
    }
    pub fn evt_stream(&self) -> String {
        format!("{}_EVT", self.prefix.to_ascii_uppercase())
    }
    pub fn sessions_bucket(&self) -> String {
        format!("{}_sessions", self.prefix)
    }
    pub fn codes_bucket(&self) -> String {
        format!("{}_codes", self.prefix)
    }
    pub fn leases_bucket(&self) -> String {
        format!("{}_leases", self.prefix)
    }
    pub fn cursors_bucket(&self) -> String {
        format!("{}_cursors", self.prefix)
    }
    pub fn gateways_bucket(&self) -> String {
        format!("{}_gateways", self.prefix)
    }
    pub fn tickers_bucket(&self) -> String {
        format!("{}_tickers", self.prefix)
    }

    /// The stream holding KV bucket `bucket` (JetStream's naming).
    pub fn kv_stream(bucket: &str) -> String {
        format!("KV_{bucket}")
    }
    /// Every stream BandSync uses: the two streams and the buckets' streams.
    pub fn streams(&self) -> [String; 8] {
        [
            self.cmd_stream(),
            self.evt_stream(),
            Self::kv_stream(&self.sessions_bucket()),
            Self::kv_stream(&self.codes_bucket()),
            Self::kv_stream(&self.leases_bucket()),
            Self::kv_stream(&self.cursors_bucket()),
            Self::kv_stream(&self.gateways_bucket()),
            Self::kv_stream(&self.tickers_bucket()),
        ]
    }

    /// Session state key: the shard first, so one shard's sessions share a prefix.
    pub fn session_key(shard: Shard, session: &SessionId) -> String {
        format!("{shard}.{session}")
    }
    /// `Nats-Msg-Id` of the event that brought `session` to `seq`: a new owner
    /// re-publishing a session's latest event is dropped as a duplicate.
    pub fn event_msg_id(session: &SessionId, seq: u64) -> String {
        format!("{session}-{seq}")
    }
    /// `Nats-Msg-Id` of the rejection of command `cmd`.
    pub fn rejection_msg_id(cmd: &crate::CommandId) -> String {
        format!("rej-{cmd}")
    }

    /// The pattern matching every session key of `shard`.
    pub fn shard_session_keys(shard: Shard) -> String {
        format!("{shard}.*")
    }
    pub fn shard_key(shard: Shard) -> String {
        shard.to_string()
    }

    /// The session named by a `<p>.cmd.<shard>.<session>` or `<p>.sess.<session>.*` subject.
    pub fn session_of(&self, subject: &str) -> Option<SessionId> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix('.')?;
        let mut parts = rest.split('.');
        let token = match parts.next()? {
            "cmd" => parts.nth(1)?,
            "sess" => parts.next()?,
            _ => return None,
        };
        SessionId::parse(token).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable() {
        let s = Subjects::new("bandsync").expect("valid");
        let id = SessionId::parse("abc").expect("valid");
        assert_eq!(s.cmd(17, &id), "bandsync.cmd.17.abc");
        assert_eq!(s.cmd_shard(17), "bandsync.cmd.17.*");
        assert_eq!(s.evt(&id), "bandsync.sess.abc.evt");
        assert_eq!(s.beat(7), "bandsync.beat.7");
        assert_eq!(s.beat_all(), "bandsync.beat.*");
        assert_eq!(s.cmd_stream(), "BANDSYNC_CMD");
        assert_eq!(s.sessions_bucket(), "bandsync_sessions");
        assert_eq!(Subjects::session_key(17, &id), "17.abc");
        assert_eq!(s.session_of("bandsync.cmd.17.abc"), Some(id.clone()));
        assert_eq!(s.session_of("bandsync.sess.abc.evt"), Some(id));
        assert_eq!(s.session_of("other.sess.abc.evt"), None);
        assert!(Subjects::new("Band.Sync").is_err());
    }
}
