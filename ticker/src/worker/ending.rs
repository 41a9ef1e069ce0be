//! Ending a session: once its `ended` state is written and its event published,
//! its join code is released (`<p>_codes`) and its state deleted (`<p>_sessions`),
//! in that order. Either deletion can fail (NATS away, the bucket unavailable);
//! a failure is logged, counted (`bandsync_ticker_session_deletion_failures_total`)
//! and retried at every housekeeping until it succeeds, so a transient failure
//! never leaves a code reserved for a session that is gone.
//!
//! The stored `ended` state is the durable record of a deletion still to do: it
//! is deleted last, so a new owner that loads an ended state (its previous owner
//! died or handed the shard over mid-way) takes the deletion up.
//!
//! A code is released only while it still names the session, and with
//! compare-and-set on the revision read: once released, the gateway may give the
//! code to a new session, and a retried (or late, from a frozen previous owner)
//! deletion must not take it from that one.

use super::{Worker, chain};
use async_nats::jetstream::kv;
use bandsync_nats::{Change, JoinCode, SessionId, SessionState, Subjects};
use std::collections::HashMap;

/// Why an ended session is not gone yet.
#[derive(Debug, thiserror::Error)]
pub enum EndError {
    #[error("reading join code {code} of ended session {session}")]
    ReadCode {
        session: SessionId,
        code: JoinCode,
        #[source]
        source: kv::EntryError,
    },
    #[error("releasing join code {code} of ended session {session}")]
    ReleaseCode {
        session: SessionId,
        code: JoinCode,
        #[source]
        source: kv::DeleteError,
    },
    #[error("deleting the state of ended session {session} at {key}")]
    DeleteState {
        session: SessionId,
        key: String,
        #[source]
        source: kv::DeleteError,
    },
}

/// Whether the state is that of an ended session (its latest change set ended it).
pub fn is_ended(state: &SessionState) -> bool {
    state
        .last_changes
        .iter()
        .any(|c| matches!(c, Change::Ended { .. }))
}

/// What releasing a session's join code takes, from what `<p>_codes` holds for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The code still names the session: delete it on this revision.
    Delete { revision: u64 },
    /// The code is gone, or already names another session: leave it.
    Nothing,
}

/// `held`: the code's current value and revision (`None` when it has none).
pub fn release(held: Option<(&[u8], u64)>, session: &SessionId) -> Release {
    match held {
        Some((value, revision)) if names(value, session) => Release::Delete { revision },
        _ => Release::Nothing,
    }
}

/// Whether a code's value (what the gateway reserved it with) names the session.
pub fn names(value: &[u8], session: &SessionId) -> bool {
    value == session.as_str().as_bytes()
}

/// An ended session whose deletion is not done.
#[derive(Debug, Clone)]
pub struct Ending {
    /// The ended state (its event is re-published by a new owner).
    pub state: SessionState,
    code_released: bool,
    /// Failed attempts so far.
    failures: u32,
}

/// The shard's ended sessions still to delete.
#[derive(Debug, Default)]
pub struct Endings {
    pending: HashMap<SessionId, Ending>,
}

impl Endings {
    /// Adds an ended session; true if it was not pending yet.
    pub fn add(&mut self, state: SessionState) -> bool {
        if self.pending.contains_key(&state.id) {
            return false;
        }
        let ending = Ending {
            state,
            code_released: false,
            failures: 0,
        };
        self.pending.insert(ending.state.id.clone(), ending);
        true
    }

    pub fn contains(&self, id: &SessionId) -> bool {
        self.pending.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Every pending session, to try (again).
    pub fn due(&self) -> Vec<SessionId> {
        self.pending.keys().cloned().collect()
    }

    pub fn states(&self) -> impl Iterator<Item = &SessionState> {
        self.pending.values().map(|e| &e.state)
    }

    fn get(&self, id: &SessionId) -> Option<&Ending> {
        self.pending.get(id)
    }

    /// The code is released: a retry goes straight to the state.
    fn code_released(&mut self, id: &SessionId) {
        if let Some(e) = self.pending.get_mut(id) {
            e.code_released = true;
        }
    }

    /// An attempt failed; returns how many have.
    fn failed(&mut self, id: &SessionId) -> u32 {
        self.pending.get_mut(id).map_or(0, |e| {
            e.failures += 1;
            e.failures
        })
    }

    /// Both deletions are done.
    fn done(&mut self, id: &SessionId) -> bool {
        self.pending.remove(id).is_some()
    }
}

impl Worker {
    /// Takes an ended session out of play and deletes it (or leaves that to the
    /// next housekeeping when a deletion fails).
    pub(super) async fn end(&mut self, state: SessionState) {
        let id = state.id.clone();
        self.owned.set_timeline(&id, None);
        self.sessions.remove(&id);
        self.pending_end(state);
        self.finish_ending(&id).await;
    }

    /// Records an ended session whose deletion is to be done.
    pub(super) fn pending_end(&mut self, state: SessionState) {
        if self.endings.add(state) {
            metrics::gauge!("bandsync_ticker_sessions_ending").increment(1.0);
        }
    }

    /// Tries every pending deletion again (housekeeping).
    pub(super) async fn retry_endings(&mut self) {
        for id in self.endings.due() {
            self.finish_ending(&id).await;
        }
    }

    async fn finish_ending(&mut self, id: &SessionId) {
        match self.delete_ended(id).await {
            Ok(()) => {
                if self.endings.done(id) {
                    metrics::gauge!("bandsync_ticker_sessions_ending").decrement(1.0);
                    tracing::info!(session = %id, "session ended");
                }
            }
            Err(e) => {
                let failures = self.endings.failed(id);
                tracing::warn!(
                    shard = self.owned.shard,
                    session = %id,
                    failures,
                    error = %chain(&e),
                    "ended session not deleted yet; retrying at the next housekeeping"
                );
                // Counted once logged, so whoever sees the count finds the line.
                metrics::counter!("bandsync_ticker_session_deletion_failures_total").increment(1);
            }
        }
    }

    /// Releases the code, then deletes the state.
    async fn delete_ended(&mut self, id: &SessionId) -> Result<(), EndError> {
        let Some(ending) = self.endings.get(id) else {
            return Ok(());
        };
        let code = ending.state.code.clone();
        if !ending.code_released {
            self.release_code(id, &code).await?;
            self.endings.code_released(id);
        }
        let key = Subjects::session_key(self.owned.shard, id);
        self.ctx
            .bus
            .sessions
            .delete(&key)
            .await
            .map_err(|source| EndError::DeleteState {
                session: id.clone(),
                key,
                source,
            })
    }

    /// What `<p>_codes` holds for `code` now: its value and revision.
    async fn code_holder(&self, code: &JoinCode) -> Result<Option<kv::Entry>, kv::EntryError> {
        let entry = self.ctx.bus.codes.entry(code.as_str()).await?;
        Ok(entry.filter(|e| e.operation == kv::Operation::Put))
    }

    /// Whether `code` is reserved for `session` (a replayed create checks it).
    pub(super) async fn code_names(
        &self,
        code: &JoinCode,
        session: &SessionId,
    ) -> Result<bool, kv::EntryError> {
        let held = self.code_holder(code).await?;
        Ok(held.is_some_and(|e| names(&e.value, session)))
    }

    async fn release_code(&self, session: &SessionId, code: &JoinCode) -> Result<(), EndError> {
        let entry = self
            .code_holder(code)
            .await
            .map_err(|source| EndError::ReadCode {
                session: session.clone(),
                code: code.clone(),
                source,
            })?;
        let held = entry.as_ref().map(|e| (e.value.as_ref(), e.revision));
        match release(held, session) {
            Release::Nothing => Ok(()),
            Release::Delete { revision } => self
                .ctx
                .bus
                .codes
                .delete_expect_revision(code.as_str(), Some(revision))
                .await
                .map_err(|source| EndError::ReleaseCode {
                    session: session.clone(),
                    code: code.clone(),
                    source,
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateways::tests::{T0, session_on_two_gateways};
    use bandsync_nats::Rules;

    fn session(id: &str) -> SessionId {
        SessionId::parse(id).expect("valid")
    }

    #[test]
    fn a_code_is_released_only_while_it_names_the_session() {
        let s1 = session("s1");
        assert_eq!(
            release(Some((b"s1", 42)), &s1),
            Release::Delete { revision: 42 }
        );
        assert_eq!(
            release(Some((b"s2", 43)), &s1),
            Release::Nothing,
            "given to another session since"
        );
        assert_eq!(release(None, &s1), Release::Nothing, "already released");
    }

    #[test]
    fn an_ending_stays_pending_until_done_and_remembers_its_released_code() {
        let rules = Rules::default();
        let state = session_on_two_gateways(&rules);
        let id = state.id.clone();
        let mut endings = Endings::default();
        assert!(endings.add(state.clone()));
        assert!(!endings.add(state), "added once");
        assert_eq!(endings.due(), vec![id.clone()]);
        assert_eq!(endings.failed(&id), 1);
        assert_eq!(endings.failed(&id), 2);
        assert_eq!(endings.due(), vec![id.clone()], "a failure is retried");
        endings.code_released(&id);
        assert!(endings.get(&id).is_some_and(|e| e.code_released));
        assert!(endings.done(&id));
        assert!(endings.due().is_empty() && !endings.contains(&id));
    }

    #[test]
    fn only_a_state_whose_latest_changes_ended_it_is_ended() {
        let rules = Rules {
            idle_expiry_us: 1,
            ..Rules::default()
        };
        let mut state = session_on_two_gateways(&rules);
        assert!(!is_ended(&state));
        for m in &mut state.members {
            m.connected = false;
        }
        assert!(!state.housekeep(T0 + 10, &rules).is_empty());
        assert!(is_ended(&state));
    }
}
