//! A shard's command cursor: the stream sequence of the last command handled
//! (applied, rejected or skipped), saved in `<p>_cursors` under the shard's key
//! every `CURSOR_SAVE` and when the worker stops. A new owner consumes from the
//! command after it, so a failover replays at most what was handled since the
//! last save (and each session's `last_cmd_seq` skips what was applied).

use super::{Worker, chain};
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::kv;
use bandsync_nats::{Shard, Subjects};

#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    #[error("reading the cursor of shard {shard}")]
    Read {
        shard: Shard,
        #[source]
        source: kv::EntryError,
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

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cursor {
    /// Stream sequence of the last command handled.
    handled: u64,
    /// What `<p>_cursors` holds (as far as we know).
    saved: u64,
    /// Revision of the shard's entry; `None` while the shard never had one.
    revision: Option<u64>,
}

impl Cursor {
    /// The cursor as the shard's entry in `<p>_cursors` has it (`None`: no entry).
    pub fn from_entry(entry: Option<&kv::Entry>) -> Cursor {
        let Some(entry) = entry else {
            return Cursor::default();
        };
        let handled = if entry.operation == kv::Operation::Put {
            String::from_utf8_lossy(&entry.value).parse().unwrap_or(0)
        } else {
            0
        };
        Cursor {
            handled,
            saved: handled,
            revision: Some(entry.revision),
        }
    }

    pub fn handled(&self) -> u64 {
        self.handled
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
        self.handled != self.saved
    }

    fn saved_at(&mut self, revision: u64) {
        self.revision = Some(revision);
        self.saved = self.handled;
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
        Ok(Cursor::from_entry(entry.as_ref()))
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
