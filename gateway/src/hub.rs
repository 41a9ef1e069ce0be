//! Per-session fan-out. The gateway subscribes to `<p>.sess.<id>.>` only while
//! it has at least one member of that session connected, frames each message
//! the owner published once, and writes that frame to every local member's
//! socket through its mailbox: nothing is serialised or framed twice, and a
//! socket that takes the frame at once costs one write, no task wake-up.
//!
//! What a socket cannot take waits in its mailbox: a bounded event queue and a
//! single-slot tick. Ticks coalesce (a slow client skips to the newest one); a
//! client whose event queue is full is kicked with `slow_client` rather than
//! ever stalling the others.

use crate::mailbox::{Mailbox, Outbound, text_frame};
use crate::windows::Windows;
use bandsync_nats::bus::Bus;
use bandsync_nats::wire::BusHeader;
use bandsync_nats::{ConnId, ErrorCode, GatewayId, MemberId, SessionId, now_us};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The hub's handle on one connected client.
struct ClientSlot {
    conn: u64,
    member: MemberId,
    mailbox: Arc<Mailbox>,
}

/// What a connection task holds.
pub struct ClientHandle {
    pub conn: u64,
    pub mailbox: Arc<Mailbox>,
    /// Who leads the member's session, as this gateway last saw it.
    pub leadership: Arc<Leadership>,
}

/// Who leads a session, by the newest state this gateway has seen of it (an
/// event's, or a welcome's read from the sessions bucket): a leader-only
/// command from anyone else is refused at the gateway, where it would
/// otherwise cost the bus and the owner a trip to be refused there. An event
/// updates it before its frames are written, so a member never learns that
/// it leads before its gateway does; a view behind the owner's only lets a
/// command through for the owner to refuse.
#[derive(Default)]
pub struct Leadership(Mutex<(u64, Option<MemberId>)>);

impl Leadership {
    /// The state at `seq` says `leader` leads (older news is ignored).
    pub fn saw(&self, seq: u64, leader: Option<&MemberId>) {
        let mut held = lock(&self.0);
        if seq >= held.0 {
            *held = (seq, leader.cloned());
        }
    }

    pub fn leads(&self, member: &MemberId) -> bool {
        lock(&self.0).1.as_ref() == Some(member)
    }
}

struct LocalSession {
    clients: Mutex<Vec<ClientSlot>>,
    leadership: Arc<Leadership>,
    /// Newest owner epoch seen; anything older comes from a deposed owner.
    epoch: AtomicU64,
    stop: CancellationToken,
}

/// Connections one member may open per `CONNECT_WINDOW` on this gateway; more
/// are refused (`rate_limited`). A reload is one; a client reconnecting in a
/// loop costs its band an event per admitted attempt (the members list, to
/// every device), so the allowance is a reload or two and a dropped link, not
/// more: at 10 per 10 s a reconnect loop sent the band one event a second.
const CONNECTS_PER_WINDOW: u32 = 3;
const CONNECT_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);
/// Members whose connections are counted at once; past it, ended windows are pruned.
const MAX_MEMBERS_COUNTED: usize = 100_000;

pub struct Hub {
    bus: Bus,
    /// This gateway's id: a `replaced` notice names a connection by it.
    gateway: GatewayId,
    /// Each member's connections in the current window.
    connects: Windows<MemberId>,
    sessions: tokio::sync::Mutex<HashMap<SessionId, Arc<LocalSession>>>,
    next_conn: AtomicU64,
    /// The gateway's tasks, where the per-session fan-outs run.
    tasks: TaskTracker,
}

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("subscribing to session {session}")]
    Subscribe {
        session: SessionId,
        #[source]
        source: async_nats::SubscribeError,
    },
}

/// Whether a member's new connection may go ahead, decided before the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// The first attempt past the allowance: upgraded, and told why on the
    /// socket, the one place a browser can read it.
    TellOnSocket,
    /// Every later attempt in the window: refused before the upgrade (an HTTP
    /// 429, answered slowly), so a reconnect loop costs the gateway no
    /// handshake, no socket and no close.
    Refused {
        retry_at: std::time::Instant,
    },
}

impl Hub {
    pub fn new(bus: Bus, gateway: GatewayId, tasks: TaskTracker) -> Self {
        Self {
            bus,
            gateway,
            connects: Windows::new(CONNECT_WINDOW, MAX_MEMBERS_COUNTED),
            sessions: Default::default(),
            next_conn: AtomicU64::new(1),
            tasks,
        }
    }

    /// Registers a client and its mailbox, subscribing to the session if it is the first one
    /// here. A member has one live connection: one it already had here is
    /// closed (`replaced`), as a reload closes the page's old socket, so however
    /// often a member reconnects the band holds one socket of theirs.
    pub async fn join(
        &self,
        session: &SessionId,
        member: &MemberId,
        mailbox: Arc<Mailbox>,
    ) -> Result<ClientHandle, JoinError> {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let slot = ClientSlot {
            conn,
            member: member.clone(),
            mailbox: mailbox.clone(),
        };
        let mut sessions = self.sessions.lock().await;
        let local = match sessions.get(session) {
            Some(local) => local.clone(),
            None => {
                let subject = self.bus.subjects.session_all(session);
                let sub = self.bus.client.subscribe(subject).await.map_err(|source| {
                    JoinError::Subscribe {
                        session: session.clone(),
                        source,
                    }
                })?;
                let local = Arc::new(LocalSession {
                    clients: Mutex::new(Vec::new()),
                    leadership: Arc::default(),
                    epoch: AtomicU64::new(0),
                    stop: CancellationToken::new(),
                });
                self.tasks.spawn(fan_out(
                    session.clone(),
                    Expected {
                        tick: self.bus.subjects.tick(session),
                        evt: self.bus.subjects.evt(session),
                    },
                    sub,
                    local.clone(),
                    self.gateway.clone(),
                ));
                sessions.insert(session.clone(), local.clone());
                metrics::gauge!("bandsync_gateway_sessions").set(sessions.len() as f64);
                local
            }
        };
        let mut clients = lock(&local.clients);
        for old in clients.iter().filter(|c| c.member == *member) {
            old.mailbox
                .kick(ErrorCode::Replaced, refusal(ErrorCode::Replaced));
        }
        clients.push(slot);
        Ok(ClientHandle {
            conn,
            mailbox,
            leadership: local.leadership.clone(),
        })
    }

    /// Counts a connection of `member` (call before upgrading it); past the
    /// window's allowance it is refused.
    pub fn admit(&self, member: &MemberId, now: std::time::Instant) -> Admission {
        // One attempt past the allowance is counted too: the one told why.
        let admission = match self
            .connects
            .add(member.clone(), CONNECTS_PER_WINDOW + 1, now)
        {
            Ok(n) if n <= CONNECTS_PER_WINDOW => return Admission::Admitted,
            Ok(_) => Admission::TellOnSocket,
            Err(retry_at) => Admission::Refused { retry_at },
        };
        metrics::counter!("bandsync_gateway_rate_limited_total").increment(1);
        admission
    }

    /// Removes a client; unsubscribes from the session when it was the last one here.
    pub async fn leave(&self, session: &SessionId, conn: u64) {
        let mut sessions = self.sessions.lock().await;
        let Some(local) = sessions.get(session).cloned() else {
            return;
        };
        let empty = {
            let mut clients = lock(&local.clients);
            clients.retain(|c| c.conn != conn);
            clients.is_empty()
        };
        if empty {
            local.stop.cancel();
            sessions.remove(session);
            metrics::gauge!("bandsync_gateway_sessions").set(sessions.len() as f64);
        }
    }

    /// Tells every connected client's task that the gateway is stopping.
    pub async fn shut_down_all(&self) {
        for local in self.sessions.lock().await.values() {
            for c in lock(&local.clients).iter() {
                c.mailbox.shut_down();
            }
        }
    }

    /// Number of sessions this gateway is subscribed to.
    pub async fn session_count(&self) -> usize {
        self.sessions.lock().await.len()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the client list inconsistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where each kind of a session's bus messages comes from: ticks on its tick
/// subject, events and rejections on its event subject (the events stream's).
struct Expected {
    tick: String,
    evt: String,
}

impl Expected {
    /// Whether a message of `kind` may arrive on `subject`. Anything else on
    /// the session's subjects (a push consumer's redelivery pointed at the
    /// tick subject, a publisher writing one kind where the other goes) is
    /// dropped before it can move the epoch or reach a member.
    fn allows(&self, kind: &str, subject: &str) -> bool {
        match kind {
            "tick" => subject == self.tick,
            "event" | "error" => subject == self.evt,
            _ => false,
        }
    }
}

async fn fan_out(
    session: SessionId,
    expected: Expected,
    mut sub: async_nats::Subscriber,
    local: Arc<LocalSession>,
    gateway: GatewayId,
) {
    loop {
        let msg = tokio::select! {
            _ = local.stop.cancelled() => break,
            msg = sub.next() => match msg {
                Some(m) => m,
                None => break,
            },
        };
        let Ok(head) = serde_json::from_slice::<BusHeader>(&msg.payload) else {
            tracing::warn!(session = %session, subject = %msg.subject, "dropping undecodable bus message");
            continue;
        };
        if !expected.allows(&head.kind, &msg.subject) {
            metrics::counter!("bandsync_gateway_wrong_subject_dropped_total").increment(1);
            tracing::warn!(session = %session, subject = %msg.subject, kind = %head.kind, "dropping a bus message on the wrong subject for its kind");
            continue;
        }
        if let Some(t) = head.sent_at() {
            metrics::histogram!("bandsync_gateway_bus_delay_seconds", "kind" => kind_label(&head.kind))
                .record((now_us() - t).max(0) as f64 / 1e6);
        }
        let newest = local
            .epoch
            .fetch_max(head.epoch, Ordering::AcqRel)
            .max(head.epoch);
        if head.epoch < newest {
            metrics::counter!("bandsync_gateway_stale_epoch_dropped_total").increment(1);
            continue;
        }
        if std::str::from_utf8(&msg.payload).is_err() {
            tracing::warn!(session = %session, "dropping non-UTF-8 bus message");
            continue;
        }
        let frame = text_frame(&msg.payload);
        let clients = lock(&local.clients);
        match head.kind.as_str() {
            "tick" => {
                for c in clients.iter() {
                    c.mailbox.put_tick(&frame);
                }
                metrics::counter!("bandsync_gateway_ticks_forwarded_total")
                    .increment(clients.len() as u64);
            }
            "event" => {
                if let Some(state) = &head.state {
                    local.leadership.saw(head.seq, state.leader.as_ref());
                }
                for c in clients.iter() {
                    if head.removed.as_ref() == Some(&c.member) {
                        c.mailbox
                            .kick(ErrorCode::Removed, refusal(ErrorCode::Removed));
                        continue;
                    }
                    let out = Outbound::Event {
                        seq: head.seq,
                        frame: frame.clone(),
                    };
                    if !push_or_kick(c, out) {
                        metrics::counter!("bandsync_gateway_slow_clients_total").increment(1);
                    }
                }
            }
            "error" => {
                for c in clients
                    .iter()
                    .filter(|c| head.to.as_ref() == Some(&c.member))
                {
                    // The member connected again elsewhere: this one socket goes.
                    if head.code == Some(ErrorCode::Replaced) {
                        if head.conn.as_ref() == Some(&ConnId::new(&gateway, c.conn)) {
                            c.mailbox
                                .kick(ErrorCode::Replaced, refusal(ErrorCode::Replaced));
                        }
                        continue;
                    }
                    // A refused hello: the member cannot be in the session.
                    if let Some(
                        code @ (ErrorCode::SessionFull
                        | ErrorCode::Removed
                        | ErrorCode::JoiningClosed),
                    ) = head.code
                    {
                        c.mailbox.kick(code, refusal(code));
                    } else {
                        push_or_kick(
                            c,
                            Outbound::Error {
                                frame: frame.clone(),
                            },
                        );
                    }
                }
            }
            // `Expected::allows` lets no other kind through.
            _ => {}
        }
    }
}

/// Queues `out` for the client, or kicks it as too slow when its queue is full
/// (false).
fn push_or_kick(c: &ClientSlot, out: Outbound) -> bool {
    let queued = c.mailbox.push_event(out);
    if !queued {
        c.mailbox.kick(
            ErrorCode::SlowClient,
            "your device fell too far behind; reconnecting",
        );
    }
    queued
}

/// What a member is told as the gateway closes their socket for the owner's reasons
/// (a refused hello, a removal) or for a newer connection of theirs.
pub(crate) fn refusal(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Replaced => "you connected again from another tab or device",
        ErrorCode::Removed => "the leader removed you from this session",
        ErrorCode::JoiningClosed => "the leader has closed this session to new members",
        _ => "this session is full",
    }
}

/// A bounded label for the delay histogram, whatever the message says its kind is.
fn kind_label(kind: &str) -> &'static str {
    match kind {
        "tick" => "tick",
        "event" => "event",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::Expected;

    #[test]
    fn each_kind_comes_only_on_its_own_subject() {
        let expected = Expected {
            tick: "bs.sess.s1.tick".into(),
            evt: "bs.sess.s1.evt".into(),
        };
        let subjects = ["bs.sess.s1.tick", "bs.sess.s1.evt", "bs.sess.s1.x"];
        let allowed: Vec<(&str, &str)> = ["tick", "event", "error", "pong"]
            .into_iter()
            .flat_map(|kind| subjects.map(|subject| (kind, subject)))
            .filter(|(kind, subject)| expected.allows(kind, subject))
            .collect();
        assert_eq!(
            allowed,
            [
                ("tick", "bs.sess.s1.tick"),
                ("event", "bs.sess.s1.evt"),
                ("error", "bs.sess.s1.evt"),
            ]
        );
    }
}
