//! Taking a shard on: read its cursor and its sessions from KV, fence out a
//! previous owner whose lease expired, re-publish each session's latest event;
//! and re-reading one session when our copy is missing or stale.

use super::cursor::{Cursor, CursorError, resume_after};
use super::ending::is_ended;
use super::{LOAD_PARALLEL, Session, Worker, chain};
use async_nats::jetstream::kv;
use bandsync_nats::bus::BusError;
use bandsync_nats::{SessionId, SessionState, Subjects};
use futures::StreamExt;

/// Why a shard could not be taken on yet (retried while the shard is held).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Cursor(#[from] CursorError),
    #[error("listing the sessions")]
    ListSessions(#[source] BusError),
    #[error("reading the state at {key}")]
    ReadSession {
        key: String,
        #[source]
        source: kv::EntryError,
    },
}

impl Worker {
    pub(super) async fn load(&mut self) -> Result<(), LoadError> {
        let shard = self.owned.shard;
        // A corrupt cursor is rebuilt from the sessions, once they are read.
        let corrupt = match self.read_cursor().await {
            Ok(cursor) => {
                self.cursor = cursor;
                None
            }
            Err(e @ CursorError::Corrupt { .. }) => Some(e),
            Err(e) => return Err(e.into()),
        };
        let bus = &self.ctx.bus;
        let keys = bus
            .session_keys(shard)
            .await
            .map_err(LoadError::ListSessions)?;
        let sessions = &bus.sessions;
        let reads = keys.into_iter().map(|key| async move {
            let entry = sessions.entry(&key).await;
            (key, entry)
        });
        let entries: Vec<_> = futures::stream::iter(reads)
            .buffer_unordered(LOAD_PARALLEL)
            .collect()
            .await;
        for (key, entry) in entries {
            let entry = entry.map_err(|source| LoadError::ReadSession {
                key: key.clone(),
                source,
            })?;
            let Some(entry) = entry else {
                continue;
            };
            if entry.operation != kv::Operation::Put {
                continue;
            }
            match serde_json::from_slice::<SessionState>(&entry.value) {
                // Its previous owner did not finish deleting it: we do.
                Ok(state) if is_ended(&state) => self.pending_end(state),
                Ok(state) => {
                    self.track_timeline(&state);
                    self.sessions.insert(
                        state.id.clone(),
                        Session {
                            state,
                            revision: entry.revision,
                        },
                    );
                }
                Err(e) => tracing::error!(key, error = %e, "undecodable session state left alone"),
            }
        }
        if let Some(corrupt) = corrupt {
            self.rebuild_cursor(corrupt);
        }
        tracing::info!(
            shard,
            epoch = self.owned.epoch,
            sessions = self.sessions.len(),
            ending = self.endings.len(),
            cursor = self.cursor.handled(),
            "shard loaded"
        );
        Ok(())
    }

    /// Loud, never silent: the shard resumes after the last command its
    /// sessions (ended ones too) record; see `cursor::resume_after` for why.
    fn rebuild_cursor(&mut self, corrupt: CursorError) {
        let CursorError::Corrupt {
            ref value,
            revision,
            ..
        } = corrupt
        else {
            return;
        };
        let recorded = self.sessions.values().map(|s| &s.state);
        let seqs = recorded
            .chain(self.endings.states())
            .map(|s| s.last_cmd_seq);
        let resume = resume_after(seqs);
        tracing::error!(
            shard = self.owned.shard,
            value = %value,
            resume_after = resume,
            error = %chain(&corrupt),
            "corrupt command cursor: replaying the shard's commands after the last one its sessions record"
        );
        // Counted once logged, so whoever sees the count finds the line.
        metrics::counter!("bandsync_ticker_corrupt_cursors_total").increment(1);
        self.cursor = Cursor::rebuilt(revision, resume);
    }

    /// Rewrites every session once (same state, new revision), so that a write
    /// the previous owner still had in flight fails its compare-and-set.
    pub(super) async fn fence(&mut self) {
        let sessions = &self.ctx.bus.sessions;
        let shard = self.owned.shard;
        let current: Vec<(SessionId, String, Vec<u8>, u64)> = self
            .sessions
            .values()
            .map(|s| {
                let key = Subjects::session_key(shard, &s.state.id);
                let bytes = serde_json::to_vec(&s.state).expect("state serialises");
                (s.state.id.clone(), key, bytes, s.revision)
            })
            .collect();
        let writes = current
            .into_iter()
            .map(|(id, key, bytes, revision)| async move {
                (id, sessions.update(&key, bytes.into(), revision).await)
            });
        let results: Vec<_> = futures::stream::iter(writes)
            .buffer_unordered(LOAD_PARALLEL)
            .collect()
            .await;
        for (id, result) in results {
            match result {
                Ok(revision) => {
                    if let Some(s) = self.sessions.get_mut(&id) {
                        s.revision = revision;
                    }
                }
                Err(e) => {
                    // The previous owner's last write landed after our read: take it.
                    tracing::warn!(session = %id, error = %chain(&e), "fencing write failed; reloading");
                    self.reload(&id).await;
                }
            }
        }
    }

    /// Re-publishes every session's latest event (an ended one's `ended` too);
    /// the stream drops those it already has.
    pub(super) async fn republish_latest(&self) {
        let states = self.sessions.values().map(|s| &s.state);
        for state in states.chain(self.endings.states()) {
            self.publish_event(state).await;
        }
    }

    /// Re-reads one session: our copy is missing or stale.
    pub(super) async fn reload(&mut self, id: &SessionId) {
        let key = Subjects::session_key(self.owned.shard, id);
        let entry = match self.ctx.bus.sessions.entry(&key).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => entry,
            Ok(_) => {
                self.sessions.remove(id);
                return;
            }
            Err(e) => {
                tracing::warn!(session = %id, error = %chain(&e), "reload failed");
                return;
            }
        };
        match serde_json::from_slice::<SessionState>(&entry.value) {
            // Ended, its deletion pending: no command applies to it any more.
            Ok(state) if is_ended(&state) => {
                self.sessions.remove(id);
                self.pending_end(state);
            }
            Ok(state) => {
                self.track_timeline(&state);
                self.sessions.insert(
                    id.clone(),
                    Session {
                        state,
                        revision: entry.revision,
                    },
                );
            }
            Err(e) => {
                tracing::warn!(session = %id, error = %e, "undecodable session state left alone")
            }
        }
    }
}
