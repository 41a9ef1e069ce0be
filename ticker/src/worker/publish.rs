//! Publishing what a shard's worker produces: each session's latest event and
//! the rejections of commands, both durable (JetStream, acknowledged) and
//! de-duplicated by their `Nats-Msg-Id`, so a retry or a new owner's
//! re-publication is harmless. Nothing goes out once the lease is not proven.

use super::{Worker, chain};
use bandsync_nats::bus::BusError;
use bandsync_nats::wire::ErrorMsg;
use bandsync_nats::{
    CommandEnvelope, ConnId, ErrorCode, EventMsg, ServerMsg, SessionState, Subjects,
};
use std::time::Duration;

/// How long an event or rejection is retried while the events stream takes no
/// writes (its Raft leader died, or froze, and another is being elected): as long
/// as a state write waits, so an event whose state was written is not left out
/// of the log. The command behind it waits meanwhile; ticks go on.
const PUBLISH_PATIENCE: Duration = Duration::from_secs(20);
const PUBLISH_RETRY_MIN: Duration = Duration::from_millis(50);
const PUBLISH_RETRY_MAX: Duration = Duration::from_secs(1);

/// An event or rejection that could not be published in time; the next owner
/// re-publishes each session's latest event.
#[derive(Debug, thiserror::Error)]
#[error("publishing to {subject} ({attempts} attempts)")]
pub struct PublishError {
    subject: String,
    attempts: usize,
    #[source]
    source: BusError,
}

impl Worker {
    /// Publishes the session's latest event; a failure is logged (the state is
    /// written, and the next owner re-publishes the latest event).
    pub(super) async fn publish_event(&self, state: &SessionState) {
        let msg = ServerMsg::Event(Box::new(EventMsg::latest(state, self.owned.epoch)));
        let msg_id = Subjects::event_msg_id(&state.id, state.seq);
        let subject = self.ctx.bus.subjects.evt(&state.id);
        if let Err(e) = self.publish_durable(subject, &msg_id, msg.to_bytes()).await {
            tracing::warn!(session = %state.id, seq = state.seq, error = %chain(&e), "event not published");
        }
    }

    pub(super) async fn reject(&self, env: &CommandEnvelope, code: ErrorCode, message: &str) {
        let mut err = ErrorMsg::new(code, message, env.client_ref.clone());
        err.session = Some(env.session.clone());
        err.to = Some(env.actor.clone());
        err.cmd = Some(env.id.clone());
        err.epoch = Some(self.owned.epoch);
        metrics::counter!("bandsync_ticker_commands_rejected_total").increment(1);
        let msg_id = Subjects::rejection_msg_id(&env.id);
        let subject = self.ctx.bus.subjects.evt(&env.session);
        let payload = ServerMsg::Error(err).to_bytes();
        if let Err(e) = self.publish_durable(subject, &msg_id, payload).await {
            tracing::warn!(session = %env.session, cmd = %env.id, error = %chain(&e), "rejection not published");
        }
    }

    /// Tells the gateways that `old`, a connection of the member who just
    /// said hello on another one, is replaced: whichever gateway holds it
    /// closes it, as a gateway closes an older socket of its own.
    pub(super) async fn replaced(&self, env: &CommandEnvelope, old: ConnId) {
        let mut err = ErrorMsg::new(
            ErrorCode::Replaced,
            "you connected again elsewhere; this connection is closed",
            None,
        );
        err.session = Some(env.session.clone());
        err.to = Some(env.actor.clone());
        err.epoch = Some(self.owned.epoch);
        err.conn = Some(old);
        let msg_id = format!("replaced-{}", env.id);
        let subject = self.ctx.bus.subjects.evt(&env.session);
        let payload = ServerMsg::Error(err).to_bytes();
        if let Err(e) = self.publish_durable(subject, &msg_id, payload).await {
            tracing::warn!(session = %env.session, error = %chain(&e), "replacement not published");
        }
    }

    /// Publishes with a few attempts. Nothing goes out once the lease is not
    /// proven: that is fencing, not a failure (`Ok`).
    async fn publish_durable(
        &self,
        subject: String,
        msg_id: &str,
        payload: bytes::Bytes,
    ) -> Result<(), PublishError> {
        let give_up = tokio::time::Instant::now() + PUBLISH_PATIENCE;
        let mut delay = PUBLISH_RETRY_MIN;
        let mut attempt = 1;
        loop {
            if !self.owned.is_valid() {
                return Ok(());
            }
            match self
                .ctx
                .bus
                .publish_durable(subject.clone(), msg_id, payload.clone())
                .await
            {
                Ok(_) => return Ok(()),
                Err(source) if tokio::time::Instant::now() + delay >= give_up => {
                    return Err(PublishError {
                        subject,
                        attempts: attempt,
                        source,
                    });
                }
                Err(e) => {
                    tracing::debug!(subject, attempt, error = %e, "publish failed; trying again")
                }
            }
            tokio::time::sleep(bandsync_nats::bus::jittered(delay)).await;
            delay = (delay * 2).min(PUBLISH_RETRY_MAX);
            attempt += 1;
        }
    }
}
