//! Per-session fan-out. The gateway subscribes to `<p>.sess.<id>.evt` only
//! while it has at least one member of that session connected, frames each
//! event the owner published once, and writes that frame to every local
//! member's socket through its mailbox: nothing is serialised or framed twice,
//! and a socket that takes the frame at once costs one write, no task wake-up.
//!
//! Ticks are made here: one task reads every shard's beat (`<p>.beat.*`, one
//! message per shard per period from its owner) and, for each playing session
//! of that shard with members here, frames one tick from the newest timeline
//! seen (in an event or a welcome's state), the beat's `seq`, epoch and time.
//! A session's timeline and its clients sit behind one lock, so an event's
//! frames and a tick made from the timeline before it never cross.
//!
//! What a socket cannot take waits in its mailbox: a bounded event queue and a
//! single-slot tick. Ticks coalesce (a slow client skips to the newest one); a
//! client whose event queue is full is kicked with `slow_client` rather than
//! ever stalling the others.

use crate::mailbox::{Mailbox, Outbound, text_frame};
use crate::windows::Windows;
use bandsync_nats::bus::Bus;
use bandsync_nats::wire::BusHeader;
use bandsync_nats::{
    BeatMsg, ConnId, ErrorCode, GatewayId, MemberId, ServerMsg, SessionId, SessionState, Shard,
    TickMsg, Timeline, now_us, shard_of,
};
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
    local: Arc<LocalSession>,
}

impl ClientHandle {
    /// The state a welcome was read from: who leads, and the timeline this
    /// gateway makes the session's ticks from until an event brings a newer one.
    pub fn saw_state(&self, state: &SessionState) {
        self.leadership.saw(state.seq, state.leader.as_ref());
        lock(&self.local.inner).saw_timeline(state.seq, &state.timeline);
    }
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
    id: SessionId,
    inner: Mutex<Local>,
    leadership: Arc<Leadership>,
    /// Newest owner epoch seen; anything older comes from a deposed owner.
    epoch: AtomicU64,
    stop: CancellationToken,
}

/// A session's clients and what its ticks are made of, under one lock: an
/// event updates the timeline and writes its frames in one go.
#[derive(Default)]
struct Local {
    clients: Vec<ClientSlot>,
    /// The timeline of the newest state seen, and that state's `seq`.
    timeline: Option<(u64, Timeline)>,
    /// The last tick's `seq` (a beat heard twice makes one tick).
    tick_seq: u64,
}

impl Local {
    fn saw_timeline(&mut self, seq: u64, timeline: &Timeline) {
        if self.timeline.as_ref().is_none_or(|(held, _)| seq >= *held) {
            self.timeline = Some((seq, timeline.clone()));
        }
    }
}

impl LocalSession {
    /// Whether a message of `epoch` comes from the newest owner seen (it may
    /// be newer); anything older comes from a deposed owner and is counted.
    fn is_current(&self, epoch: u64) -> bool {
        let newest = self.epoch.fetch_max(epoch, Ordering::AcqRel).max(epoch);
        if epoch < newest {
            metrics::counter!("bandsync_gateway_stale_epoch_dropped_total").increment(1);
        }
        epoch >= newest
    }

    /// The session's tick for `beat`, to every client here, if the session
    /// plays and the beat is from its current owner and a new period.
    fn tick(&self, beat: &BeatMsg) {
        if !self.is_current(beat.epoch) {
            return;
        }
        let mut local = lock(&self.inner);
        let Some((_, timeline)) = &local.timeline else {
            return;
        };
        if beat.seq <= local.tick_seq || !timeline.is_active(beat.server_time) {
            return;
        }
        let tick = ServerMsg::Tick(TickMsg {
            session: self.id.clone(),
            seq: beat.seq,
            epoch: beat.epoch,
            server_time: beat.server_time,
            timeline: timeline.clone(),
        });
        let frame = text_frame(&tick.to_bytes());
        local.tick_seq = beat.seq;
        for c in &local.clients {
            c.mailbox.put_tick(&frame);
        }
        metrics::counter!("bandsync_gateway_ticks_forwarded_total")
            .increment(local.clients.len() as u64);
    }
}

/// The sessions with members here, by shard: whom a shard's beat ticks.
type ByShard = Arc<Mutex<HashMap<Shard, Vec<Arc<LocalSession>>>>>;

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
    by_shard: ByShard,
    shards: u16,
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
    pub fn new(bus: Bus, gateway: GatewayId, shards: u16, tasks: TaskTracker) -> Self {
        Self {
            bus,
            gateway,
            connects: Windows::new(CONNECT_WINDOW, MAX_MEMBERS_COUNTED),
            sessions: Default::default(),
            by_shard: Default::default(),
            shards,
            next_conn: AtomicU64::new(1),
            tasks,
        }
    }

    /// Starts making ticks from the owners' beats, until `stop`.
    pub async fn start_beats(
        &self,
        stop: CancellationToken,
    ) -> Result<(), async_nats::SubscribeError> {
        let sub = self
            .bus
            .client
            .subscribe(self.bus.subjects.beat_all())
            .await?;
        let subjects = self.bus.subjects.clone();
        self.tasks
            .spawn(beats(sub, subjects, self.by_shard.clone(), stop));
        Ok(())
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
                let subject = self.bus.subjects.evt(session);
                let sub = self.bus.client.subscribe(subject).await.map_err(|source| {
                    JoinError::Subscribe {
                        session: session.clone(),
                        source,
                    }
                })?;
                let local = Arc::new(LocalSession {
                    id: session.clone(),
                    inner: Mutex::default(),
                    leadership: Arc::default(),
                    epoch: AtomicU64::new(0),
                    stop: CancellationToken::new(),
                });
                self.tasks.spawn(fan_out(
                    session.clone(),
                    Expected {
                        evt: self.bus.subjects.evt(session),
                    },
                    sub,
                    local.clone(),
                    self.gateway.clone(),
                ));
                sessions.insert(session.clone(), local.clone());
                lock(&self.by_shard)
                    .entry(shard_of(session, self.shards))
                    .or_default()
                    .push(local.clone());
                metrics::gauge!("bandsync_gateway_sessions").set(sessions.len() as f64);
                local
            }
        };
        let mut inner = lock(&local.inner);
        for old in inner.clients.iter().filter(|c| c.member == *member) {
            old.mailbox
                .kick(ErrorCode::Replaced, refusal(ErrorCode::Replaced));
        }
        inner.clients.push(slot);
        drop(inner);
        Ok(ClientHandle {
            conn,
            mailbox,
            leadership: local.leadership.clone(),
            local,
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
            let mut inner = lock(&local.inner);
            inner.clients.retain(|c| c.conn != conn);
            inner.clients.is_empty()
        };
        if empty {
            local.stop.cancel();
            sessions.remove(session);
            let shard = shard_of(session, self.shards);
            let mut by_shard = lock(&self.by_shard);
            if let Some(locals) = by_shard.get_mut(&shard) {
                locals.retain(|l| !Arc::ptr_eq(l, &local));
                if locals.is_empty() {
                    by_shard.remove(&shard);
                }
            }
            metrics::gauge!("bandsync_gateway_sessions").set(sessions.len() as f64);
        }
    }

    /// Tells every connected client's task that the gateway is stopping.
    pub async fn shut_down_all(&self) {
        for local in self.sessions.lock().await.values() {
            for c in lock(&local.inner).clients.iter() {
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

/// Where a session's bus messages come from: events and rejections on its
/// event subject (the events stream's); its ticks are made here from beats.
struct Expected {
    evt: String,
}

impl Expected {
    /// Whether a message of `kind` may arrive on `subject`. Anything else (a
    /// tick from the bus, a push consumer's redelivery pointed elsewhere) is
    /// dropped before it can move the epoch or reach a member.
    fn allows(&self, kind: &str, subject: &str) -> bool {
        matches!(kind, "event" | "error") && subject == self.evt
    }
}

/// Reads every shard's beat and ticks the shard's sessions with members here.
async fn beats(
    mut sub: async_nats::Subscriber,
    subjects: bandsync_nats::Subjects,
    by_shard: ByShard,
    stop: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => break,
            msg = sub.next() => match msg {
                Some(m) => m,
                None => break,
            },
        };
        let beat = match serde_json::from_slice::<BeatMsg>(&msg.payload) {
            Ok(b) if msg.subject.as_str() == subjects.beat(b.shard) => b,
            _ => {
                metrics::counter!("bandsync_gateway_wrong_subject_dropped_total").increment(1);
                tracing::warn!(subject = %msg.subject, "dropping a beat that is not one, or not its shard's");
                continue;
            }
        };
        metrics::histogram!("bandsync_gateway_bus_delay_seconds", "kind" => "beat")
            .record((now_us() - beat.server_time).max(0) as f64 / 1e6);
        let locals = lock(&by_shard).get(&beat.shard).cloned();
        for local in locals.iter().flatten() {
            local.tick(&beat);
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
        if !local.is_current(head.epoch) {
            continue;
        }
        if std::str::from_utf8(&msg.payload).is_err() {
            tracing::warn!(session = %session, "dropping non-UTF-8 bus message");
            continue;
        }
        let frame = text_frame(&msg.payload);
        let mut inner = lock(&local.inner);
        match head.kind.as_str() {
            "event" => {
                if let Some(state) = &head.state {
                    local.leadership.saw(head.seq, state.leader.as_ref());
                    if let Some(timeline) = &state.timeline {
                        inner.saw_timeline(head.seq, timeline);
                    }
                }
                for c in inner.clients.iter() {
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
                for c in inner
                    .clients
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
        "event" => "event",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::tests::read_frames;
    use tokio::io::DuplexStream;

    #[test]
    fn only_events_and_rejections_come_from_the_bus_on_the_event_subject() {
        let expected = Expected {
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
            [("event", "bs.sess.s1.evt"), ("error", "bs.sess.s1.evt")]
        );
    }

    /// A member joining mid-song is ticked from the state its welcome was read
    /// from, before any event reaches this gateway (the hello's may be held
    /// up for seconds while the command stream elects a leader).
    #[tokio::test]
    async fn the_welcomes_state_is_enough_to_tick() {
        let (local, mut client) = session();
        let local = Arc::new(local);
        let handle = ClientHandle {
            conn: 1,
            mailbox: lock(&local.inner).clients[0].mailbox.clone(),
            leadership: local.leadership.clone(),
            local: local.clone(),
        };
        let member = MemberId::parse("m1").expect("an id");
        let mut state = SessionState::create(
            local.id.clone(),
            bandsync_nats::JoinCode::parse("K7MQ2XBD").expect("a code"),
            member.clone(),
            bandsync_nats::DisplayName::parse("Ana").expect("a name"),
            now_us(),
        );
        state.seq = 7;
        state.timeline = timeline(96.0, true);
        handle.saw_state(&state);
        local.tick(&beat(20, 1));
        assert_eq!(ticks(&mut client).await, [(20, 1, 96.0)]);
        assert!(handle.leadership.leads(&member));
    }

    /// A session with one opened client, and the client's end of its socket.
    fn session() -> (LocalSession, DuplexStream) {
        let (ours, client) = tokio::io::duplex(1 << 16);
        let mailbox = Arc::new(Mailbox::new(8, Box::pin(ours)));
        mailbox.open(0);
        let local = LocalSession {
            id: SessionId::parse("s1").expect("an id"),
            inner: Mutex::default(),
            leadership: Arc::default(),
            epoch: AtomicU64::new(0),
            stop: CancellationToken::new(),
        };
        lock(&local.inner).clients.push(ClientSlot {
            conn: 1,
            member: MemberId::parse("m1").expect("an id"),
            mailbox,
        });
        (local, client)
    }

    fn timeline(tempo_bpm: f64, playing: bool) -> Timeline {
        serde_json::from_value(serde_json::json!({"segments": [{
            "anchor_time": 0, "anchor_beat": 0.0, "tempo_bpm": tempo_bpm, "playing": playing,
            "beats_per_bar": 4, "beat_unit": 4, "bar_origin_beat": 0.0, "bar_origin_number": 0,
        }]}))
        .expect("a timeline")
    }

    fn beat(seq: u64, epoch: u64) -> BeatMsg {
        BeatMsg {
            shard: 0,
            seq,
            epoch,
            server_time: now_us(),
        }
    }

    /// The ticks the client can read now, as (seq, epoch, tempo).
    async fn ticks(client: &mut DuplexStream) -> Vec<(u64, u64, f64)> {
        read_frames(client)
            .await
            .iter()
            .map(|text| match ServerMsg::parse(text) {
                Ok(ServerMsg::Tick(t)) => (t.seq, t.epoch, t.timeline.segments()[0].tempo_bpm),
                other => panic!("not a tick: {other:?}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn a_beat_ticks_a_playing_session_once_from_its_newest_timeline_and_owner() {
        let (local, mut client) = session();
        local.tick(&beat(10, 2));
        assert_eq!(ticks(&mut client).await, [], "no timeline seen yet");
        lock(&local.inner).saw_timeline(5, &timeline(90.0, false));
        local.tick(&beat(11, 2));
        assert_eq!(ticks(&mut client).await, [], "stopped: no tick");
        lock(&local.inner).saw_timeline(6, &timeline(100.0, true));
        lock(&local.inner).saw_timeline(4, &timeline(80.0, true));
        local.tick(&beat(12, 2));
        local.tick(&beat(12, 2));
        local.tick(&beat(11, 2));
        assert_eq!(
            ticks(&mut client).await,
            [(12, 2, 100.0)],
            "one tick per period, from the newest state (seq 6, not the late seq 4)"
        );
        local.tick(&beat(13, 3));
        local.tick(&beat(14, 2));
        assert_eq!(
            ticks(&mut client).await,
            [(13, 3, 100.0)],
            "a deposed owner's beat ticks nobody"
        );
    }
}
