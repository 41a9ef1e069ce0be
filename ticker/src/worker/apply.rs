//! Applying one command: decode it, wait while the lease is unproven, run the
//! pure state machine, write the new state with compare-and-set and publish its
//! event (or publish the rejection to the member who sent it).

use super::{Session, Worker};
use async_nats::jetstream::kv::{self, UpdateErrorKind};
use bandsync_nats::state::Cause;
use bandsync_nats::wire::ErrorMsg;
use bandsync_nats::{
    Change, Command, CommandEnvelope, DisplayName, ErrorCode, EventMsg, JoinCode, ServerMsg,
    SessionState, Subjects, now_us,
};

/// Attempts to publish an event before giving up (the next owner re-publishes it).
const EVENT_PUBLISH_ATTEMPTS: usize = 3;
/// Attempts to apply a command whose state write keeps conflicting or failing
/// before the worker gives the shard up (the next owner replays from the cursor).
const WRITE_ATTEMPTS: usize = 3;

/// Whether a command is done with (applied, rejected or skipped as a replay).
#[derive(Debug, PartialEq, Eq)]
pub enum Handled {
    Yes,
    /// The shard stopped first: the command is left for the next owner.
    Fenced,
    Failed,
}

/// What became of a state write.
#[derive(Debug, PartialEq, Eq)]
pub enum Commit {
    Done,
    /// Someone else wrote first; the session was re-read.
    Conflict,
    /// The shard was stopped: nothing may be written any more.
    Fenced,
    Failed,
}

/// What the consume loop does after a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Go on to the next command; the cursor has passed this one.
    Continue,
    /// Stop cleanly: the command is left (cursor unmoved) for the next owner.
    Stop,
    /// Give the shard up: the command could not be applied.
    Fail,
}

/// Decides what the consume loop does with a command's outcome: only a handled
/// command moves the cursor, so the cursor never passes a command not applied.
pub fn next_step(handled: Handled) -> Next {
    match handled {
        Handled::Yes => Next::Continue,
        Handled::Fenced => Next::Stop,
        Handled::Failed => Next::Fail,
    }
}

/// Decides what an apply attempt does with its state write: done, stopped, or
/// (`None`) another attempt on the re-read state.
pub fn after_write(commit: Commit) -> Option<Handled> {
    match commit {
        Commit::Done => Some(Handled::Yes),
        Commit::Fenced => Some(Handled::Fenced),
        Commit::Conflict | Commit::Failed => None,
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
        if self.sessions.contains_key(&env.session) {
            return Handled::Yes; // a replay of the create that made it
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
            Err(e) => {
                tracing::warn!(session = %env.session, error = %e, "create failed");
                Handled::Failed
            }
        }
    }

    async fn apply(&mut self, env: &CommandEnvelope, stream_seq: u64) -> Handled {
        for _ in 0..WRITE_ATTEMPTS {
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
                metrics::counter!("bandsync_ticker_commands_replayed_total").increment(1);
                return Handled::Yes; // applied before a failover
            }
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
                    if commit == Commit::Done {
                        metrics::counter!("bandsync_ticker_commands_applied_total").increment(1);
                    }
                    if let Some(handled) = after_write(commit) {
                        return handled;
                    }
                }
                Err(rejection) => {
                    self.reject(env, rejection.code, &rejection.message).await;
                    return Handled::Yes;
                }
            }
        }
        Handled::Failed
    }

    /// Writes `next` with compare-and-set and publishes its event.
    pub(super) async fn commit(&mut self, next: SessionState) -> Commit {
        let id = next.id.clone();
        let Some(current) = self.sessions.get(&id) else {
            return Commit::Conflict;
        };
        let expected = current.revision;
        if !self.owned.wait_valid().await {
            return Commit::Fenced;
        }
        let key = Subjects::session_key(self.owned.shard, &id);
        let ended = next
            .last_changes
            .iter()
            .any(|c| matches!(c, Change::Ended { .. }));
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
                    self.end(&next).await;
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
                Commit::Conflict
            }
            Err(e) => {
                tracing::warn!(session = %id, error = %e, "state write failed");
                Commit::Failed
            }
        }
    }

    async fn end(&mut self, state: &SessionState) {
        let key = Subjects::session_key(self.owned.shard, &state.id);
        let _ = self.ctx.bus.sessions.delete(&key).await;
        let _ = self.ctx.bus.codes.delete(state.code.as_str()).await;
        self.owned.set_timeline(&state.id, None);
        self.sessions.remove(&state.id);
        tracing::info!(session = %state.id, "session ended");
    }

    pub(super) async fn publish_event(&self, state: &SessionState) {
        let msg = ServerMsg::Event(Box::new(EventMsg::latest(state, self.owned.epoch)));
        let msg_id = Subjects::event_msg_id(&state.id, state.seq);
        self.publish_durable(
            self.ctx.bus.subjects.evt(&state.id),
            &msg_id,
            msg.to_bytes(),
        )
        .await;
    }

    async fn reject(&self, env: &CommandEnvelope, code: ErrorCode, message: &str) {
        let mut err = ErrorMsg::new(code, message, env.client_ref.clone());
        err.session = Some(env.session.clone());
        err.to = Some(env.actor.clone());
        err.cmd = Some(env.id.clone());
        err.epoch = Some(self.owned.epoch);
        metrics::counter!("bandsync_ticker_commands_rejected_total").increment(1);
        let msg_id = Subjects::rejection_msg_id(&env.id);
        self.publish_durable(
            self.ctx.bus.subjects.evt(&env.session),
            &msg_id,
            ServerMsg::Error(err).to_bytes(),
        )
        .await;
    }

    async fn publish_durable(&self, subject: String, msg_id: &str, payload: bytes::Bytes) {
        for attempt in 1..=EVENT_PUBLISH_ATTEMPTS {
            if !self.owned.is_valid() {
                return;
            }
            match self
                .ctx
                .bus
                .publish_durable(subject.clone(), msg_id, payload.clone())
                .await
            {
                Ok(_) => return,
                Err(e) => tracing::warn!(subject, attempt, error = %e, "event publish failed"),
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

    #[test]
    fn only_a_handled_command_lets_the_loop_go_on() {
        assert_eq!(next_step(Handled::Yes), Next::Continue);
        assert_eq!(next_step(Handled::Fenced), Next::Stop);
        assert_eq!(next_step(Handled::Failed), Next::Fail);
    }

    #[test]
    fn a_conflicting_or_failed_write_is_attempted_again_a_fenced_one_is_not() {
        assert_eq!(after_write(Commit::Done), Some(Handled::Yes));
        assert_eq!(after_write(Commit::Fenced), Some(Handled::Fenced));
        assert_eq!(after_write(Commit::Conflict), None);
        assert_eq!(after_write(Commit::Failed), None);
    }
}
