//! A shard's command cursor: the stream sequence of the last command handled
//! (applied, rejected or skipped), saved in `<p>_cursors` under the shard's key
//! every `CURSOR_SAVE` and when the worker stops. A new owner consumes from the
//! command after it, so a failover replays at most what was handled since the
//! last save (and each session's `last_cmd_seq` skips what was applied).
//!
//! A saved cursor that is not a number is lost, loudly (`CursorError::Corrupt`,
//! an error log naming the value, `bandsync_ticker_corrupt_cursors_total`), and
//! rebuilt from the shard's own state: see [`resume_after`].

use super::{Worker, chain};
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::kv;
use bandsync_nats::{Shard, Subjects};
use std::num::ParseIntError;

#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    #[error("reading the cursor of shard {shard}")]
    Read {
        shard: Shard,
        #[source]
        source: kv::EntryError,
    },
    #[error("the cursor of shard {shard} is not a stream sequence: {value:?}")]
    Corrupt {
        shard: Shard,
        value: String,
        /// Revision of the corrupt entry (the next save overwrites it).
        revision: u64,
        #[source]
        source: ParseIntError,
    },
    /// The first save of a shard's cursor (`create`).
    #[error("saving the first cursor of shard {shard} ({handled})")]
    Create {
        shard: Shard,
        handled: u64,
        #[source]
        source: kv::CreateError,
    },
    /// A later save, on the revision we last wrote or read (`update`).
    #[error("saving the cursor of shard {shard} ({handled})")]
    Update {
        shard: Shard,
        handled: u64,
        #[source]
        source: kv::UpdateError,
    },
}

/// A saved cursor's value: a stream sequence in decimal.
pub fn parse(value: &[u8]) -> Result<u64, ParseIntError> {
    String::from_utf8_lossy(value).parse()
}

/// Where to resume a shard whose saved cursor is lost: after the highest
/// `last_cmd_seq` among its stored sessions (0, the stream's start, when it
/// has none).
///
/// Why this is safe: a shard's commands are handled strictly in stream order,
/// and an owner applies command N only after every earlier command of the shard
/// was handled (the cursor passes only handled commands, and a command that
/// cannot be applied stops the worker), so everything up to the highest
/// `last_cmd_seq` was handled. Beyond it, the replay is the one any failover
/// does: `apply` skips a command at or below its session's `last_cmd_seq`, and
/// a replayed `create` is applied only while its join code still names the
/// session (`Cursor::is_replay`), so a session that ended since is not revived.
/// Rejections do not record a sequence, so a command rejected in that stretch
/// is evaluated (and its rejection sent) again, as after any failover.
///
/// Not chosen: resuming at the stream's end (silently drops commands sent but
/// not applied) and refusing the shard (every owner would, and its sessions
/// would stop).
pub fn resume_after(last_cmd_seqs: impl IntoIterator<Item = u64>) -> u64 {
    last_cmd_seqs.into_iter().max().unwrap_or(0)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Stream sequence of the last command handled.
    handled: u64,
    /// What `<p>_cursors` holds; `None` when that is not a cursor (corrupt).
    saved: Option<u64>,
    /// Revision of the shard's entry; `None` while the shard never had one.
    revision: Option<u64>,
    /// Set when the cursor was rebuilt: commands up to the stream's last
    /// sequence when consuming started are a replay past what is proven.
    replay_until: Option<u64>,
    rebuilt: bool,
}

impl Default for Cursor {
    fn default() -> Self {
        Self {
            handled: 0,
            saved: Some(0),
            revision: None,
            replay_until: None,
            rebuilt: false,
        }
    }
}

impl Cursor {
    /// The cursor as the shard's entry in `<p>_cursors` has it (`None`: no entry).
    pub fn from_entry(shard: Shard, entry: Option<&kv::Entry>) -> Result<Cursor, CursorError> {
        let Some(entry) = entry else {
            return Ok(Cursor::default());
        };
        let handled = if entry.operation == kv::Operation::Put {
            parse(&entry.value).map_err(|source| CursorError::Corrupt {
                shard,
                value: String::from_utf8_lossy(&entry.value).into_owned(),
                revision: entry.revision,
                source,
            })?
        } else {
            0
        };
        Ok(Cursor {
            handled,
            saved: Some(handled),
            revision: Some(entry.revision),
            ..Cursor::default()
        })
    }

    /// A cursor rebuilt after the saved one (at `revision`) was found corrupt:
    /// resumes after `handled` (see [`resume_after`]) and overwrites the entry
    /// at the first save.
    pub fn rebuilt(revision: u64, handled: u64) -> Cursor {
        Cursor {
            handled,
            saved: None,
            revision: Some(revision),
            replay_until: None,
            rebuilt: true,
        }
    }

    pub fn handled(&self) -> u64 {
        self.handled
    }

    /// Consuming starts while the stream's last sequence is `last`: commands up
    /// to it are a replay when the cursor was rebuilt.
    pub fn consuming_from(&mut self, last: u64) {
        if self.rebuilt {
            self.replay_until = Some(last);
        }
    }

    /// Whether command `seq` is replayed past what the shard's state proves
    /// was handled (only after a rebuilt cursor).
    pub fn is_replay(&self, seq: u64) -> bool {
        self.replay_until.is_some_and(|until| seq <= until)
    }

    /// Command `seq` is done with; the cursor never moves back.
    pub fn advance(&mut self, seq: u64) {
        self.handled = self.handled.max(seq);
    }

    /// Where the shard's command consumer starts.
    pub fn deliver_policy(&self) -> DeliverPolicy {
        if self.revision.is_some() {
            DeliverPolicy::ByStartSequence {
                start_sequence: self.handled + 1,
            }
        } else {
            DeliverPolicy::All // the shard never had an owner: everything is new
        }
    }

    fn needs_save(&self) -> bool {
        self.saved != Some(self.handled)
    }

    fn saved_at(&mut self, revision: u64) {
        self.revision = Some(revision);
        self.saved = Some(self.handled);
    }
}

impl Worker {
    /// The shard's cursor as `<p>_cursors` has it.
    pub(super) async fn read_cursor(&self) -> Result<Cursor, CursorError> {
        let shard = self.owned.shard;
        let entry = self
            .ctx
            .bus
            .cursors
            .entry(Subjects::shard_key(shard))
            .await
            .map_err(|source| CursorError::Read { shard, source })?;
        Cursor::from_entry(shard, entry.as_ref())
    }

    /// Saves the cursor if it moved; a failure is logged and the next save
    /// (every `CURSOR_SAVE`) tries again.
    pub(super) async fn save_cursor(&mut self) {
        // `lease_proven`, not `is_valid`: a shard being handed over saves its cursor.
        if !self.cursor.needs_save() || !self.owned.lease_proven() {
            return;
        }
        if let Err(e) = self.write_cursor().await {
            tracing::warn!(error = %chain(&e), "cursor save failed");
            // Re-read the revision so the next save can succeed if we still own the shard.
            let key = Subjects::shard_key(self.owned.shard);
            if let Ok(Some(entry)) = self.ctx.bus.cursors.entry(&key).await {
                self.cursor.revision = Some(entry.revision);
            }
        }
    }

    async fn write_cursor(&mut self) -> Result<(), CursorError> {
        let shard = self.owned.shard;
        let handled = self.cursor.handled;
        let key = Subjects::shard_key(shard);
        let value = handled.to_string();
        let cursors = &self.ctx.bus.cursors;
        let revision =
            match self.cursor.revision {
                Some(rev) => cursors
                    .update(&key, value.into(), rev)
                    .await
                    .map_err(|source| CursorError::Update {
                        shard,
                        handled,
                        source,
                    })?,
                None => cursors.create(&key, value.into()).await.map_err(|source| {
                    CursorError::Create {
                        shard,
                        handled,
                        source,
                    }
                })?,
            };
        self.cursor.saved_at(revision);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_cursor_is_a_decimal_sequence_and_nothing_else() {
        assert_eq!(parse(b"1042").expect("a number"), 1042);
        for corrupt in [&b""[..], b"garbage", b"-3", b"12 ", b"\xff\xfe"] {
            assert!(parse(corrupt).is_err(), "{corrupt:?} is not a cursor");
        }
    }

    #[test]
    fn a_lost_cursor_resumes_after_the_last_command_the_sessions_record() {
        assert_eq!(resume_after([17, 230, 4]), 230);
        assert_eq!(resume_after([]), 0, "no sessions: from the stream's start");
    }

    #[test]
    fn a_rebuilt_cursor_overwrites_the_corrupt_entry_and_marks_the_replay() {
        let mut cursor = Cursor::rebuilt(9, 230);
        assert!(cursor.needs_save(), "saved even if no command moves it");
        assert!(matches!(
            cursor.deliver_policy(),
            DeliverPolicy::ByStartSequence {
                start_sequence: 231
            }
        ));
        assert!(!cursor.is_replay(231), "not before consuming starts");
        cursor.consuming_from(500);
        assert!(cursor.is_replay(231) && cursor.is_replay(500));
        assert!(!cursor.is_replay(501), "sent after consuming started");
        cursor.saved_at(10);
        assert!(!cursor.needs_save());
    }

    #[test]
    fn only_a_rebuilt_cursor_has_a_replay() {
        let mut cursor = Cursor::default();
        cursor.consuming_from(500);
        assert!(!cursor.is_replay(1));
    }

    #[test]
    fn a_shard_without_an_entry_consumes_everything() {
        let cursor = Cursor::default();
        assert!(matches!(cursor.deliver_policy(), DeliverPolicy::All));
    }

    #[test]
    fn the_cursor_only_moves_forward_and_is_saved_when_it_moved() {
        let mut cursor = Cursor::default();
        assert!(!cursor.needs_save());
        cursor.advance(7);
        cursor.advance(5);
        assert_eq!(cursor.handled(), 7, "never back");
        assert!(cursor.needs_save());
        cursor.saved_at(3);
        assert!(!cursor.needs_save());
        assert!(matches!(
            cursor.deliver_policy(),
            DeliverPolicy::ByStartSequence { start_sequence: 8 }
        ));
    }
}
