//! Applying one command: decode it, wait while the lease is unproven, run the
//! pure state machine, write the new state with compare-and-set and publish its
//! event (or publish the rejection to the member who sent it).

use super::ending::is_ended;
use super::{Session, Worker, chain};
use async_nats::jetstream::kv::{self, UpdateErrorKind};
use bandsync_nats::state::Cause;
use bandsync_nats::{
    Command, CommandEnvelope, DisplayName, ErrorCode, JoinCode, SessionId, SessionState, Subjects,
    now_us,
};

/// Attempts to apply a command whose state write keeps conflicting before the
/// worker gives the shard up (the next owner replays from the cursor).
const WRITE_ATTEMPTS: usize = 3;
/// How long a command waits for a sessions bucket that takes no writes (its
/// Raft leader died and another is being elected: 5–7 s measured) before the
/// worker gives the shard up. Ticks go on meanwhile: they come from the
/// timelines the shard already holds.
const WRITE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(20);
const WRITE_RETRY_MIN: std::time::Duration = std::time::Duration::from_millis(50);
const WRITE_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// Why a command could not be applied (the worker then gives its shard up, and
/// the next owner replays the command from the cursor).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("creating session {session}")]
    Create {
        session: SessionId,
        #[source]
        source: kv::CreateError,
    },
    #[error("reading join code {code} of replayed create of session {session}")]
    ReadCode {
        session: SessionId,
        code: JoinCode,
        #[source]
        source: kv::EntryError,
    },
    #[error("writing the state of session {session} ({conflicts} conflicts)")]
    Write {
        session: SessionId,
        conflicts: usize,
        #[source]
        source: WriteError,
    },
}

/// Why one compare-and-set write of a session's state did not land.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Someone else wrote first (or our copy was gone); the session was re-read.
    #[error("another write got there first")]
    Conflict,
    #[error("the sessions bucket refused it")]
    Store(#[source] kv::UpdateError),
}

impl WriteError {
    /// The bucket took no write (no leader, no answer): a wait can fix it.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, WriteError::Store(e) if bandsync_nats::bus::not_written(e))
    }
}

/// Whether a command is done with (applied, rejected or skipped as a replay).
#[derive(Debug)]
pub enum Handled {
    Yes,
    /// The shard stopped first: the command is left for the next owner.
    Fenced,
    Failed(ApplyError),
}

/// What became of a state write.
#[derive(Debug)]
pub enum Commit {
    Done,
    /// The shard was stopped: nothing may be written any more.
    Fenced,
    Failed(WriteError),
}

/// What the consume loop does after a command.
#[derive(Debug)]
pub enum Next {
    /// Go on to the next command; the cursor has passed this one.
    Continue,
    /// Stop cleanly: the command is left (cursor unmoved) for the next owner.
    Stop,
    /// Give the shard up: the command could not be applied.
    Fail(ApplyError),
}

/// Decides what the consume loop does with a command's outcome: only a handled
/// command moves the cursor, so the cursor never passes a command not applied.
pub fn next_step(handled: Handled) -> Next {
    match handled {
        Handled::Yes => Next::Continue,
        Handled::Fenced => Next::Stop,
        Handled::Failed(e) => Next::Fail(e),
    }
}

/// What an apply attempt does after its state write.
#[derive(Debug)]
pub enum Attempt {
    Over(Handled),
    /// Apply again to the re-read state (up to `WRITE_ATTEMPTS`).
    Again(WriteError),
}

/// Decides what an apply attempt does with its state write: a conflict or a
/// refused write is attempted again on the re-read state; a fenced one is not.
pub fn after_write(commit: Commit) -> Attempt {
    match commit {
        Commit::Done => Attempt::Over(Handled::Yes),
        Commit::Fenced => Attempt::Over(Handled::Fenced),
        Commit::Failed(e) => Attempt::Again(e),
    }
}

impl Worker {
    /// `stored_us`: when the command stream stored it (for the stage histograms).
    pub(super) async fn handle(
        &mut self,
        stream_seq: u64,
        stored_us: Option<i64>,
        payload: &[u8],
    ) -> Handled {
        let envelope: CommandEnvelope = match serde_json::from_slice(payload) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(shard = self.owned.shard, stream_seq, error = %e, "skipping undecodable command");
                return Handled::Yes;
            }
        };
        if !self.owned.wait_valid().await {
            return Handled::Fenced;
        }
        let now = now_us();
        stage("queued", (now - envelope.sent_at).max(0) as f64 / 1e6);
        if let Some(stored) = stored_us {
            stage("to_stream", (stored - envelope.sent_at).max(0) as f64 / 1e6);
            stage("delivered", (now - stored).max(0) as f64 / 1e6);
        }
        let started = std::time::Instant::now();
        let handled = if let Command::Create { code, name } = &envelope.command {
            self.create(&envelope, code, name, stream_seq).await
        } else {
            self.apply(&envelope, stream_seq).await
        };
        metrics::histogram!("bandsync_ticker_command_seconds")
            .record(started.elapsed().as_secs_f64());
        handled
    }

    async fn create(
        &mut self,
        env: &CommandEnvelope,
        code: &JoinCode,
        name: &DisplayName,
        stream_seq: u64,
    ) -> Handled {
        if !self.sessions.contains_key(&env.session) {
            self.reload(&env.session).await;
        }
        if self.sessions.contains_key(&env.session) || self.endings.contains(&env.session) {
            return Handled::Yes; // a replay of the create that made it
        }
        if self.cursor.is_replay(stream_seq) {
            // Past what the shard's state proves was handled (a rebuilt cursor):
            // the code's reservation is the only record of whether the session
            // should exist. Gone, or another session's: it ended since, or the
            // gateway gave its creation up.
            match self.code_names(code, &env.session).await {
                Ok(true) => {}
                Ok(false) => {
                    metrics::counter!("bandsync_ticker_stale_creates_total").increment(1);
                    tracing::warn!(session = %env.session, %code, stream_seq, "replayed create skipped: its join code no longer names the session");
                    return Handled::Yes;
                }
                Err(source) => {
                    return Handled::Failed(ApplyError::ReadCode {
                        session: env.session.clone(),
                        code: code.clone(),
                        source,
                    });
                }
            }
        }
        let mut state = SessionState::create(
            env.session.clone(),
            code.clone(),
            env.actor.clone(),
            name.clone(),
            now_us(),
        );
        state.last_cmd_seq = stream_seq;
        state.last_cause = Cause {
            cmd: Some(env.id.clone()),
            by: Some(env.actor.clone()),
        };
        let key = Subjects::session_key(self.owned.shard, &env.session);
        let bytes = serde_json::to_vec(&state).expect("state serialises");
        match self.ctx.bus.sessions.create(&key, bytes.into()).await {
            Ok(revision) => {
                metrics::counter!("bandsync_ticker_commands_applied_total").increment(1);
                self.publish_event(&state).await;
                self.sessions
                    .insert(env.session.clone(), Session { state, revision });
                Handled::Yes
            }
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                self.reload(&env.session).await;
                Handled::Yes
            }
            Err(source) => Handled::Failed(ApplyError::Create {
                session: env.session.clone(),
                source,
            }),
        }
    }

    async fn apply(&mut self, env: &CommandEnvelope, stream_seq: u64) -> Handled {
        let mut last;
        let mut conflicts = 0;
        // A write that failed without an answer may have landed all the same.
        let mut unsure = false;
        let give_up = tokio::time::Instant::now() + WRITE_PATIENCE;
        let mut delay = WRITE_RETRY_MIN;
        loop {
            if !self.sessions.contains_key(&env.session) {
                self.reload(&env.session).await;
            }
            let Some(current) = self.sessions.get(&env.session) else {
                self.reject(
                    env,
                    ErrorCode::UnknownSession,
                    "this session has ended or never existed",
                )
                .await;
                return Handled::Yes;
            };
            if stream_seq <= current.state.last_cmd_seq {
                if unsure {
                    // Our own write landed unanswered: its event is still due
                    // (its msg id makes a second copy harmless).
                    let state = current.state.clone();
                    self.publish_event(&state).await;
                    return Handled::Yes;
                }
                metrics::counter!("bandsync_ticker_commands_replayed_total").increment(1);
                return Handled::Yes; // applied before a failover
            }
            // A member's hello from a new connection while an older one is
            // live (another tab or device, maybe on another gateway).
            let replaced = match (&env.command, current.state.member(&env.actor)) {
                (Command::Hello { conn, .. }, Some(m)) if m.connected => {
                    m.conn.clone().filter(|old| old != conn)
                }
                _ => None,
            };
            let mut next = current.state.clone();
            match next.apply(
                &env.command,
                &env.actor,
                Some(&env.id),
                now_us(),
                &self.ctx.rules,
            ) {
                Ok(changes) if changes.is_empty() => return Handled::Yes,
                Ok(_) => {
                    next.last_cmd_seq = stream_seq;
                    let commit = self.commit(next).await;
                    if matches!(commit, Commit::Done) {
                        metrics::counter!("bandsync_ticker_commands_applied_total").increment(1);
                        if let Some(old) = replaced {
                            self.replaced(env, old).await;
                        }
                    }
                    match after_write(commit) {
                        Attempt::Over(handled) => return handled,
                        Attempt::Again(e) if e.is_unavailable() => {
                            // The bucket is electing a leader: wait it out.
                            unsure = true;
                            last = e;
                            if tokio::time::Instant::now() + delay >= give_up {
                                break;
                            }
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(WRITE_RETRY_MAX);
                        }
                        Attempt::Again(e) => {
                            last = e;
                            conflicts += 1;
                            if conflicts >= WRITE_ATTEMPTS {
                                break;
                            }
                        }
                    }
                }
                Err(rejection) => {
                    self.reject(env, rejection.code, &rejection.message).await;
                    return Handled::Yes;
                }
            }
        }
        Handled::Failed(ApplyError::Write {
            session: env.session.clone(),
            conflicts,
            source: last,
        })
    }

    /// Writes `next` with compare-and-set and publishes its event.
    pub(super) async fn commit(&mut self, next: SessionState) -> Commit {
        let id = next.id.clone();
        let Some(current) = self.sessions.get(&id) else {
            return Commit::Failed(WriteError::Conflict);
        };
        let expected = current.revision;
        if !self.owned.wait_valid().await {
            return Commit::Fenced;
        }
        let key = Subjects::session_key(self.owned.shard, &id);
        let ended = is_ended(&next);
        let bytes = serde_json::to_vec(&next).expect("state serialises");
        let started = std::time::Instant::now();
        let written = self
            .ctx
            .bus
            .sessions
            .update(&key, bytes.into(), expected)
            .await;
        stage("state_write", started.elapsed().as_secs_f64());
        match written {
            Ok(revision) => {
                let started = std::time::Instant::now();
                self.publish_event(&next).await;
                stage("event_publish", started.elapsed().as_secs_f64());
                if ended {
                    self.end(next).await;
                } else {
                    self.track_timeline(&next);
                    self.sessions.insert(
                        id,
                        Session {
                            state: next,
                            revision,
                        },
                    );
                }
                Commit::Done
            }
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                // Someone else wrote: we are no longer the owner, or our copy is stale.
                tracing::warn!(session = %id, "state changed under us; reloading");
                metrics::counter!("bandsync_ticker_cas_conflicts_total").increment(1);
                self.reload(&id).await;
                Commit::Failed(WriteError::Conflict)
            }
            Err(e) => {
                let e = WriteError::Store(e);
                tracing::warn!(session = %id, error = %chain(&e), "state write failed");
                Commit::Failed(e)
            }
        }
    }
}

/// One part of a command's way (`bandsync_ticker_command_stage_seconds{stage}`).
pub fn stage(name: &'static str, seconds: f64) {
    metrics::histogram!("bandsync_ticker_command_stage_seconds", "stage" => name).record(seconds);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure() -> ApplyError {
        ApplyError::Write {
            session: SessionId::parse("s1").expect("valid"),
            conflicts: WRITE_ATTEMPTS,
            source: WriteError::Conflict,
        }
    }

    #[test]
    fn only_a_handled_command_lets_the_loop_go_on() {
        assert!(matches!(next_step(Handled::Yes), Next::Continue));
        assert!(matches!(next_step(Handled::Fenced), Next::Stop));
        assert!(matches!(
            next_step(Handled::Failed(failure())),
            Next::Fail(ApplyError::Write { conflicts: 3, .. })
        ));
    }

    #[test]
    fn a_conflicting_or_refused_write_is_attempted_again_a_fenced_one_is_not() {
        assert!(matches!(
            after_write(Commit::Done),
            Attempt::Over(Handled::Yes)
        ));
        assert!(matches!(
            after_write(Commit::Fenced),
            Attempt::Over(Handled::Fenced)
        ));
        assert!(matches!(
            after_write(Commit::Failed(WriteError::Conflict)),
            Attempt::Again(WriteError::Conflict)
        ));
    }

    #[test]
    fn a_failure_names_the_operation_and_keeps_its_cause() {
        let e = failure();
        assert_eq!(
            e.to_string(),
            "writing the state of session s1 (3 conflicts)"
        );
        assert_eq!(
            super::super::chain(&e),
            "writing the state of session s1 (3 conflicts): another write got there first"
        );
    }
}
