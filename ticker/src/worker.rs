//! One owned shard: load its sessions from KV, consume its commands in stream
//! order from the shard's cursor, apply them with the pure state machine, write
//! the state back with compare-and-set, then publish the event.
//!
//! Exactly once: a session's state records the stream sequence of the last
//! command applied to it, in the same CAS write as the change, so a replay
//! (after a failover, from a cursor a little behind) skips what was applied.
//! Events are published with `Nats-Msg-Id = <session>-<seq>`; a new owner
//! re-publishes each session's latest event and the stream drops duplicates.
//!
//! Fencing: a command is applied only while the lease is proven; while it is not
//! (a renewal is late) the worker waits, and once the shard is stopped it leaves
//! the command unhandled, so its cursor never passes a command it did not apply.
//! An owner that took a shard whose lease *expired* first rewrites every session
//! of it once: any write still in flight from the frozen or cut-off previous owner
//! then fails its compare-and-set instead of landing after the takeover.

use crate::Ctx;
use crate::fleet::Vacated;
use crate::owned::OwnedShard;
use async_nats::jetstream::consumer::{DeliverPolicy, push::OrderedConfig};
use async_nats::jetstream::kv::{self, UpdateErrorKind};
use bandsync_nats::state::Cause;
use bandsync_nats::wire::ErrorMsg;
use bandsync_nats::{
    Change, Command, CommandEnvelope, ErrorCode, EventMsg, ServerMsg, SessionId, SessionState,
    Subjects, now_us,
};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How often time-driven rules (leader grace, idle expiry, dead gateways) run.
const HOUSEKEEPING: Duration = Duration::from_millis(250);
/// How often the shard's command cursor is saved; replay after a failover is at most this much.
const CURSOR_SAVE: Duration = Duration::from_millis(500);
/// Attempts to publish an event before giving up (the next owner re-publishes it).
const EVENT_PUBLISH_ATTEMPTS: usize = 3;
/// Attempts to apply a command whose state write keeps conflicting or failing
/// before the worker gives the shard up (the next owner replays from the cursor).
const WRITE_ATTEMPTS: usize = 3;
/// Session states read or rewritten at once while a shard loads.
const LOAD_PARALLEL: usize = 16;

struct Session {
    state: SessionState,
    revision: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("loading shard {shard}: {message}")]
    Load { shard: u16, message: String },
    #[error("consuming commands of shard {shard}: {message}")]
    Consume { shard: u16, message: String },
}

/// What became of a state write.
enum Commit {
    Done,
    /// Someone else wrote first; the session was re-read.
    Conflict,
    /// The shard was stopped: nothing may be written any more.
    Fenced,
    Failed,
}

/// Whether a command is done with (applied, rejected or skipped as a replay).
enum Handled {
    Yes,
    /// The shard stopped first: the command is left for the next owner.
    Fenced,
    Failed,
}

pub struct Worker {
    ctx: Arc<Ctx>,
    owned: Arc<OwnedShard>,
    sessions: HashMap<SessionId, Session>,
    cursor: u64,
    cursor_revision: Option<u64>,
    cursor_saved: u64,
}

impl Worker {
    pub async fn run(ctx: Arc<Ctx>, owned: Arc<OwnedShard>) -> Result<(), WorkerError> {
        let shard = owned.shard;
        let mut worker = Worker {
            ctx,
            owned,
            sessions: HashMap::new(),
            cursor: 0,
            cursor_revision: None,
            cursor_saved: 0,
        };
        worker
            .load()
            .await
            .map_err(|message| WorkerError::Load { shard, message })?;
        worker.owned.mark_loaded();
        worker.ctx.ticks.catch_up(&worker.owned).await;
        if worker.owned.vacated == Vacated::Expired {
            worker.fence().await;
        }
        worker.republish_latest().await;
        let result = worker.consume().await;
        worker.save_cursor().await;
        result.map_err(|message| WorkerError::Consume { shard, message })
    }

    async fn load(&mut self) -> Result<(), String> {
        let shard = self.owned.shard;
        let bus = &self.ctx.bus;
        if let Some(entry) = bus
            .cursors
            .entry(Subjects::shard_key(shard))
            .await
            .map_err(|e| e.to_string())?
        {
            if entry.operation == kv::Operation::Put {
                self.cursor = String::from_utf8_lossy(&entry.value).parse().unwrap_or(0);
                self.cursor_saved = self.cursor;
            }
            self.cursor_revision = Some(entry.revision);
        }
        let keys = bus.session_keys(shard).await.map_err(|e| e.to_string())?;
        let sessions = &bus.sessions;
        let reads = keys.into_iter().map(|key| async move {
            let entry = sessions.entry(&key).await.map_err(|e| e.to_string());
            (key, entry)
        });
        let entries: Vec<_> = futures::stream::iter(reads)
            .buffer_unordered(LOAD_PARALLEL)
            .collect()
            .await;
        for (key, entry) in entries {
            let Some(entry) = entry? else {
                continue;
            };
            if entry.operation != kv::Operation::Put {
                continue;
            }
            match serde_json::from_slice::<SessionState>(&entry.value) {
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
        tracing::info!(
            shard,
            epoch = self.owned.epoch,
            sessions = self.sessions.len(),
            cursor = self.cursor,
            "shard loaded"
        );
        Ok(())
    }

    /// Rewrites every session once (same state, new revision), so that a write
    /// the previous owner still had in flight fails its compare-and-set.
    async fn fence(&mut self) {
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
                    tracing::warn!(session = %id, error = %e, "fencing write failed; reloading");
                    self.reload(&id).await;
                }
            }
        }
    }

    /// Re-publishes every session's latest event; the stream drops those it already has.
    async fn republish_latest(&self) {
        for s in self.sessions.values() {
            self.publish_event(&s.state).await;
        }
    }

    async fn consume(&mut self) -> Result<(), String> {
        let bus = &self.ctx.bus;
        let stream = bus
            .js
            .get_stream(bus.subjects.cmd_stream())
            .await
            .map_err(|e| e.to_string())?;
        let deliver_policy = if self.cursor_revision.is_some() {
            DeliverPolicy::ByStartSequence {
                start_sequence: self.cursor + 1,
            }
        } else {
            DeliverPolicy::All // the shard never had an owner: everything is new
        };
        let config = OrderedConfig {
            deliver_subject: bus.client.new_inbox(),
            filter_subject: bus.subjects.cmd_shard(self.owned.shard),
            deliver_policy,
            ..Default::default()
        };
        let consumer = stream
            .create_consumer(config)
            .await
            .map_err(|e| e.to_string())?;
        let name = consumer.cached_info().name.clone();
        let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        let mut cursor_save = tokio::time::interval(CURSOR_SAVE);
        let stop = self.owned.stop.clone();
        let result = loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break Ok(()),
                msg = messages.next() => match msg {
                    Some(Ok(msg)) => {
                        let (seq, stored_us) = msg.info().map_or((0, None), |i| {
                            (i.stream_sequence, i64::try_from(i.published.unix_timestamp_nanos() / 1_000).ok())
                        });
                        if let Some(stored) = stored_us {
                            stage("received", (now_us() - stored).max(0) as f64 / 1e6);
                        }
                        match self.handle(seq, stored_us, &msg.payload).await {
                            Handled::Yes => self.cursor = self.cursor.max(seq),
                            // Left for the next owner, which replays from the cursor.
                            Handled::Fenced => break Ok(()),
                            Handled::Failed => break Err(format!("cannot apply command {seq}")),
                        }
                    }
                    Some(Err(e)) => break Err(e.to_string()),
                    None => break Err("command consumer ended".into()),
                },
                _ = housekeeping.tick() => self.housekeep().await,
                _ = cursor_save.tick() => self.save_cursor().await,
            }
        };
        drop(messages);
        // Ordered consumers linger 30 s after their subscriber goes; with many
        // hand-overs that would pile up against the server's consumer limit.
        if let Err(e) = stream.delete_consumer(&name).await {
            tracing::debug!(shard = self.owned.shard, error = %e, "cannot delete the command consumer");
        }
        result
    }

    /// `stored_us`: when the command stream stored it (for the stage histograms).
    async fn handle(&mut self, stream_seq: u64, stored_us: Option<i64>, payload: &[u8]) -> Handled {
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
        code: &bandsync_nats::JoinCode,
        name: &bandsync_nats::DisplayName,
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
                    match self.commit(next).await {
                        Commit::Done => {
                            metrics::counter!("bandsync_ticker_commands_applied_total")
                                .increment(1);
                            return Handled::Yes;
                        }
                        Commit::Fenced => return Handled::Fenced,
                        Commit::Conflict | Commit::Failed => continue,
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
    async fn commit(&mut self, next: SessionState) -> Commit {
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

    async fn reload(&mut self, id: &SessionId) {
        let key = Subjects::session_key(self.owned.shard, id);
        match self.ctx.bus.sessions.entry(&key).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                if let Ok(state) = serde_json::from_slice::<SessionState>(&entry.value) {
                    self.track_timeline(&state);
                    self.sessions.insert(
                        id.clone(),
                        Session {
                            state,
                            revision: entry.revision,
                        },
                    );
                }
            }
            Ok(_) => {
                self.sessions.remove(id);
            }
            Err(e) => tracing::warn!(session = %id, error = %e, "reload failed"),
        }
    }

    async fn housekeep(&mut self) {
        if !self.owned.is_valid() {
            return;
        }
        let now = now_us();
        let live = self.ctx.live_gateways.borrow().clone();
        let rules = self.ctx.rules;
        let mut due = Vec::new();
        for s in self.sessions.values() {
            // Members whose gateway died without saying goodbye.
            let dead: Vec<_> = match &live {
                None => Vec::new(),
                Some(live) => s
                    .state
                    .members
                    .iter()
                    .filter(|m| m.connected)
                    .filter_map(|m| {
                        let conn = m.conn.as_ref()?;
                        live.is_gone(conn.gateway(), now)
                            .then(|| (m.id.clone(), conn.clone()))
                    })
                    .collect(),
            };
            if dead.is_empty() && !s.state.needs_housekeeping(now, &rules) {
                continue;
            }
            let mut next = s.state.clone();
            let mut changed = false;
            for (member, conn) in dead {
                changed |= next
                    .apply(&Command::Bye { conn }, &member, None, now, &rules)
                    .is_ok_and(|c| !c.is_empty());
            }
            changed |= !next.housekeep(now, &rules).is_empty();
            if changed {
                due.push(next);
            }
        }
        for next in due {
            // A conflict or failure is retried at the next housekeeping.
            let _ = self.commit(next).await;
        }
    }

    async fn save_cursor(&mut self) {
        // `lease_proven`, not `is_valid`: a shard being handed over saves its cursor.
        if self.cursor == self.cursor_saved || !self.owned.lease_proven() {
            return;
        }
        let key = Subjects::shard_key(self.owned.shard);
        let value = self.cursor.to_string();
        let cursors = &self.ctx.bus.cursors;
        let result = match self.cursor_revision {
            Some(rev) => cursors
                .update(&key, value.into(), rev)
                .await
                .map_err(|e| e.to_string()),
            None => cursors
                .create(&key, value.into())
                .await
                .map_err(|e| e.to_string()),
        };
        match result {
            Ok(rev) => {
                self.cursor_revision = Some(rev);
                self.cursor_saved = self.cursor;
            }
            Err(e) => {
                tracing::warn!(shard = self.owned.shard, error = %e, "cursor save failed");
                // Re-read the revision so the next save can succeed if we still own the shard.
                if let Ok(Some(entry)) = cursors.entry(&key).await {
                    self.cursor_revision = Some(entry.revision);
                }
            }
        }
    }

    fn track_timeline(&self, state: &SessionState) {
        let active = state.timeline.is_active(now_us());
        self.owned
            .set_timeline(&state.id, active.then_some(&state.timeline));
    }

    async fn publish_event(&self, state: &SessionState) {
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

fn stage(name: &'static str, seconds: f64) {
    metrics::histogram!("bandsync_ticker_command_stage_seconds", "stage" => name).record(seconds);
}
