//! The session state machine: pure, no I/O. The shard owner applies each command
//! to the state read from KV and writes the result back with compare-and-set;
//! the store replays the same functions to rebuild a session at any instant.
//!
//! Invariants: authority comes from this state (only `leader` may steer); at most
//! `Rules::max_members` members; `seq` grows by one per applied change set.

use crate::chordpro;
use crate::command::{Command, Song, check_bpm, check_meter};
use crate::error_code::ErrorCode;
use crate::ids::{CommandId, ConnId, DisplayName, JoinCode, MemberId, SessionId};
use crate::timeline::{Micros, Timeline};
use serde::{Deserialize, Serialize};

/// Settings of the owner that shape how commands apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// How far ahead a change is scheduled so every device hears of it in time.
    pub lead_us: Micros,
    pub max_members: usize,
    /// How long a disconnected leader keeps leadership.
    pub leader_grace_us: Micros,
    /// A session with nobody connected and no command for this long ends.
    pub idle_expiry_us: Micros,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            lead_us: 150_000,
            max_members: 12,
            leader_grace_us: 5_000_000,
            idle_expiry_us: 3_600_000_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub id: MemberId,
    pub name: DisplayName,
    pub joined_at: Micros,
    pub connected: bool,
    /// The live connection; a stale `bye` from an older one is ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<ConnId>,
    /// The round trip the member last reported that moved enough to publish
    /// (`quality`), in ms; absent until it reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    /// Its clock estimate's uncertainty, in ms, published with `rtt_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_error_ms: Option<f64>,
    /// The owner's: when `rtt_ms` was last published (reports come at most
    /// once per `quality::REPORT_EVERY_US` after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality_at: Option<Micros>,
    /// The owner's: when the member's cues and messages of the current rate
    /// window were accepted (`texts`), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub texts_at: Vec<Micros>,
}

impl Member {
    fn new(id: MemberId, name: DisplayName, joined_at: Micros, conn: Option<ConnId>) -> Self {
        Self {
            id,
            name,
            joined_at,
            connected: conn.is_some(),
            conn,
            rtt_ms: None,
            clock_error_ms: None,
            quality_at: None,
            texts_at: Vec::new(),
        }
    }
}

/// The leader's cue on every screen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cue {
    pub text: String,
    pub by: MemberId,
    /// When the owner applied it.
    pub at: Micros,
}

/// Why leadership moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaderReason {
    Created,
    Handed,
    /// The leader stayed away past the grace period.
    Grace,
    /// Requested while the leader was away.
    Requested,
    /// The leader displaced by `Grace` took it back.
    Reclaimed,
    /// Nobody led and a member arrived.
    Vacant,
}

/// What an applied command changed; events carry a list of these plus the new state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    Created {
        code: JoinCode,
    },
    MemberJoined {
        member: MemberId,
        name: DisplayName,
    },
    MemberConnected {
        member: MemberId,
    },
    MemberDisconnected {
        member: MemberId,
    },
    LeaderChanged {
        from: Option<MemberId>,
        to: MemberId,
        reason: LeaderReason,
    },
    LeadershipRequested {
        by: MemberId,
    },
    /// The leader opened or closed the session to new members.
    Joining {
        open: bool,
    },
    /// The leader removed a member; their token no longer works here.
    MemberRemoved {
        member: MemberId,
    },
    /// A member's connection quality moved enough to show (the event carries
    /// the members, with `rtt_ms` and `clock_error_ms`).
    MemberQuality {
        member: MemberId,
    },
    /// The leader's cue; `""` cleared it.
    Cue {
        text: String,
        by: MemberId,
    },
    /// A member's message to the band (not kept in the state).
    Message {
        from: MemberId,
        text: String,
    },
    Tempo {
        bpm: f64,
        at: Micros,
    },
    Meter {
        beats_per_bar: u8,
        beat_unit: u8,
        at: Micros,
    },
    Play {
        at: Micros,
        count_in_bars: u8,
    },
    Pause {
        at: Micros,
        beat: f64,
    },
    Stop {
        at: Micros,
    },
    Seek {
        at: Micros,
        beat: f64,
    },
    Setlist {
        songs: usize,
    },
    Song {
        index: usize,
        title: String,
        at: Micros,
    },
    Ended {
        reason: String,
    },
}

impl Change {
    /// Whether the change set that holds it changes `members` or the leader
    /// (the store folds both into its members table).
    pub fn touches_members(&self) -> bool {
        matches!(
            self,
            Change::Created { .. }
                | Change::MemberJoined { .. }
                | Change::MemberConnected { .. }
                | Change::MemberDisconnected { .. }
                | Change::MemberRemoved { .. }
                | Change::MemberQuality { .. }
                | Change::LeaderChanged { .. }
        )
    }

    /// When a scheduled change takes effect (`at`); `None` for the changes
    /// that apply on arrival.
    pub fn effective_at(&self) -> Option<Micros> {
        match *self {
            Change::Tempo { at, .. }
            | Change::Meter { at, .. }
            | Change::Play { at, .. }
            | Change::Pause { at, .. }
            | Change::Stop { at }
            | Change::Seek { at, .. }
            | Change::Song { at, .. } => Some(at),
            _ => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Change::Created { .. } => "created",
            Change::MemberJoined { .. } => "member_joined",
            Change::MemberConnected { .. } => "member_connected",
            Change::MemberDisconnected { .. } => "member_disconnected",
            Change::LeaderChanged { .. } => "leader_changed",
            Change::LeadershipRequested { .. } => "leadership_requested",
            Change::Joining { .. } => "joining",
            Change::MemberRemoved { .. } => "member_removed",
            Change::MemberQuality { .. } => "member_quality",
            Change::Cue { .. } => "cue",
            Change::Message { .. } => "message",
            Change::Tempo { .. } => "tempo",
            Change::Meter { .. } => "meter",
            Change::Play { .. } => "play",
            Change::Pause { .. } => "pause",
            Change::Stop { .. } => "stop",
            Change::Seek { .. } => "seek",
            Change::Setlist { .. } => "setlist",
            Change::Song { .. } => "song",
            Change::Ended { .. } => "ended",
        }
    }
}

/// A refused command: a stable code and a sentence for the musician.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: String,
}

impl Rejection {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// What caused the latest change set (kept so a new owner can re-publish it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cause {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<CommandId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<MemberId>,
}

/// Everything about one session. Stored whole as JSON in KV and sent whole in a
/// `welcome`; events leave the members and the setlist out unless they changed
/// them (`members_rev`, `setlist_rev`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionState {
    pub id: SessionId,
    pub code: JoinCode,
    pub created_at: Micros,
    /// Number of change sets applied so far; events carry it.
    pub seq: u64,
    pub leader: Option<MemberId>,
    #[serde(default)]
    pub members: Vec<Member>,
    /// `seq` of the change set that last changed the members or the leader: a
    /// receiver whose members are of another revision has missed that event.
    #[serde(default)]
    pub members_rev: u64,
    pub timeline: Timeline,
    #[serde(default)]
    pub setlist: Vec<Song>,
    /// `seq` of the change set that last replaced the setlist (0: never): a
    /// receiver whose setlist is of another revision has missed that event.
    #[serde(default)]
    pub setlist_rev: u64,
    pub song: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leadership_request: Option<MemberId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_away_since: Option<Micros>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub displaced_leader: Option<MemberId>,
    /// Closed by the leader: nobody new may join.
    #[serde(default, skip_serializing_if = "is_false")]
    pub joining_closed: bool,
    /// Members the leader removed, newest last (at most `MAX_REMOVED`): their
    /// tokens are refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<MemberId>,
    /// The leader's cue, until cleared (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cue: Option<Cue>,
    pub last_activity: Micros,
    /// Stream sequence of the last command applied: replays at or below it are
    /// skipped. The owner's alone: a counter of the whole stream, it would tell
    /// a member how busy other sessions are (`hide_internals`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub last_cmd_seq: u64,
    /// The latest change set and its cause, so an owner can re-publish a lost event.
    pub last_changes: Vec<Change>,
    pub last_cause: Cause,
    pub last_change_at: Micros,
}

pub const DEFAULT_BPM: f64 = 120.0;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Removed members remembered per session. Past it the oldest is forgotten, and
/// its token (if not yet expired) would be admitted as a new member again.
pub const MAX_REMOVED: usize = 64;
/// Largest session state, serialised, that the sessions bucket must hold (its
/// `max_value_size` in `bandsync-nats`, which is 512 KiB): the largest
/// setlist (see `command::MAX_CHART_BYTES`) with a full band of members at
/// their longest names fits, and so does the event that carries them.
pub const MAX_STATE_BYTES: usize = 512 * 1024;

impl SessionState {
    /// Clears what only the owner needs before the state leaves the bus for
    /// members: the connections (gateway ids and counters) and the command
    /// stream's position.
    pub fn hide_internals(&mut self) {
        self.last_cmd_seq = 0;
        for m in &mut self.members {
            m.conn = None;
            m.quality_at = None;
            m.texts_at.clear();
        }
    }

    /// A new session led by its creator, who is not connected yet.
    pub fn create(
        id: SessionId,
        code: JoinCode,
        leader: MemberId,
        name: DisplayName,
        now: Micros,
    ) -> Self {
        let member = Member::new(leader.clone(), name, now, None);
        Self {
            id,
            code: code.clone(),
            created_at: now,
            seq: 1,
            leader: Some(leader.clone()),
            members: vec![member],
            members_rev: 1,
            timeline: Timeline::new(now, DEFAULT_BPM, 4, 4),
            setlist: Vec::new(),
            setlist_rev: 0,
            song: None,
            leadership_request: None,
            leader_away_since: Some(now),
            displaced_leader: None,
            joining_closed: false,
            removed: Vec::new(),
            cue: None,
            last_activity: now,
            last_cmd_seq: 0,
            last_changes: vec![
                Change::Created { code },
                Change::LeaderChanged {
                    from: None,
                    to: leader,
                    reason: LeaderReason::Created,
                },
            ],
            last_cause: Cause {
                cmd: None,
                by: None,
            },
            last_change_at: now,
        }
    }

    pub fn member(&self, id: &MemberId) -> Option<&Member> {
        self.members.iter().find(|m| &m.id == id)
    }

    fn member_mut(&mut self, id: &MemberId) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| &m.id == id)
    }

    pub fn is_leader(&self, id: &MemberId) -> bool {
        self.leader.as_ref() == Some(id)
    }

    /// Applies one member command. On success returns the changes (possibly none,
    /// for a command that changes nothing, such as a stale `bye`) and records them.
    pub fn apply(
        &mut self,
        cmd: &Command,
        actor: &MemberId,
        cmd_id: Option<&CommandId>,
        now: Micros,
        rules: &Rules,
    ) -> Result<Vec<Change>, Rejection> {
        cmd.validate()
            .map_err(|e| Rejection::new(ErrorCode::Invalid, e.to_string()))?;
        let changes = self.changes_for(cmd, actor, now, rules)?;
        self.last_activity = now;
        self.timeline.prune(now);
        if !changes.is_empty() {
            self.record(
                changes.clone(),
                Cause {
                    cmd: cmd_id.cloned(),
                    by: Some(actor.clone()),
                },
                now,
            );
        }
        Ok(changes)
    }

    fn record(&mut self, changes: Vec<Change>, cause: Cause, now: Micros) {
        self.seq += 1;
        if changes.iter().any(|c| matches!(c, Change::Setlist { .. })) {
            self.setlist_rev = self.seq;
        }
        if changes.iter().any(Change::touches_members) {
            self.members_rev = self.seq;
        }
        self.last_changes = changes;
        self.last_cause = cause;
        self.last_change_at = now;
    }

    fn require_leader(&self, actor: &MemberId) -> Result<(), Rejection> {
        self.member(actor).ok_or_else(not_a_member)?;
        if !self.is_leader(actor) {
            return Err(not_leader());
        }
        Ok(())
    }

    fn changes_for(
        &mut self,
        cmd: &Command,
        actor: &MemberId,
        now: Micros,
        rules: &Rules,
    ) -> Result<Vec<Change>, Rejection> {
        let lead = self.lead(rules);
        match cmd {
            Command::Create { .. } => {
                Err(Rejection::new(ErrorCode::Invalid, "session already exists"))
            }
            Command::Hello { name, conn } => self.hello(actor, name, conn, now, rules),
            Command::Bye { conn } => Ok(self.bye(actor, conn, now)),
            Command::RequestLeadership => self.request_leadership(actor, now),
            Command::HandLeadership { to } => {
                self.require_leader(actor)?;
                if self.member(to).is_none() {
                    return Err(Rejection::new(
                        ErrorCode::Invalid,
                        "that member is not in this session",
                    ));
                }
                if self.is_leader(to) {
                    return Ok(Vec::new());
                }
                Ok(vec![self.set_leader(to.clone(), LeaderReason::Handed, now)])
            }
            Command::Joining { open } => {
                self.require_leader(actor)?;
                if self.joining_closed != *open {
                    return Ok(Vec::new());
                }
                self.joining_closed = !open;
                Ok(vec![Change::Joining { open: *open }])
            }
            Command::RemoveMember { member } => {
                self.require_leader(actor)?;
                self.remove(actor, member)
            }
            Command::Cue { text } => {
                self.require_leader(actor)?;
                self.cue(actor, text, now)
            }
            Command::Message { text } => self.message(actor, text, now),
            Command::Report {
                rtt_ms,
                clock_error_ms,
            } => self.report(actor, *rtt_ms, *clock_error_ms, now),
            _ => {
                self.require_leader(actor)?;
                self.timeline_command(cmd, now, lead)
            }
        }
    }

    fn timeline_command(
        &mut self,
        cmd: &Command,
        now: Micros,
        lead: Micros,
    ) -> Result<Vec<Change>, Rejection> {
        let tl = &mut self.timeline;
        let change = match *cmd {
            Command::Tempo { bpm } => Change::Tempo {
                bpm,
                at: tl.set_tempo(bpm, now, lead),
            },
            Command::Meter {
                beats_per_bar,
                beat_unit,
            } => Change::Meter {
                beats_per_bar,
                beat_unit,
                at: tl.set_meter(beats_per_bar, beat_unit, now, lead),
            },
            Command::Play { count_in_bars } => {
                if tl.latest().playing {
                    return Err(Rejection::new(ErrorCode::Invalid, "already playing"));
                }
                Change::Play {
                    at: tl.play(count_in_bars, now, lead),
                    count_in_bars,
                }
            }
            Command::Pause => {
                if !tl.latest().playing {
                    return Err(Rejection::new(ErrorCode::Invalid, "not playing"));
                }
                let (at, beat) = tl.pause(now, lead);
                Change::Pause { at, beat }
            }
            Command::Stop => Change::Stop {
                at: tl.stop(now, lead),
            },
            Command::Seek { beat } => Change::Seek {
                at: tl.seek(beat, now, lead),
                beat,
            },
            Command::Setlist { ref songs } => {
                // The live song is remembered by index: follow it by title when the list changes.
                let live = self
                    .song
                    .and_then(|i| self.setlist.get(i))
                    .map(|s| s.title.clone());
                self.setlist = songs.clone();
                self.song =
                    live.and_then(|title| self.setlist.iter().position(|s| s.title == title));
                Change::Setlist { songs: songs.len() }
            }
            Command::Song { index } => {
                let Some(song) = self.setlist.get(index) else {
                    return Err(Rejection::new(
                        ErrorCode::Invalid,
                        format!("no song {index} in the setlist"),
                    ));
                };
                let base = *tl.latest();
                // The entry's own values first, then the chart's directives,
                // then what the band had.
                let chart = chordpro::directives(&song.chart);
                let bpm = song.tempo_bpm.or(chart.tempo_bpm).unwrap_or(base.tempo_bpm);
                let bpb = song
                    .beats_per_bar
                    .or(chart.time.map(|t| t.0))
                    .unwrap_or(base.beats_per_bar);
                let unit = song
                    .beat_unit
                    .or(chart.time.map(|t| t.1))
                    .unwrap_or(base.beat_unit);
                // Values were checked when the setlist was accepted; re-check what was stored.
                check_bpm(bpm)
                    .and_then(|()| check_meter(bpb, unit))
                    .map_err(|e| Rejection::new(ErrorCode::Invalid, e.to_string()))?;
                let at = tl.reset(bpm, bpb, unit, now, lead);
                let title = song.title.clone();
                self.song = Some(index);
                Change::Song { index, title, at }
            }
            _ => return Err(Rejection::new(ErrorCode::Invalid, "not a timeline command")),
        };
        Ok(vec![change])
    }

    fn remove(&mut self, actor: &MemberId, member: &MemberId) -> Result<Vec<Change>, Rejection> {
        if member == actor {
            return Err(Rejection::new(
                ErrorCode::Invalid,
                "the leader cannot remove themselves; hand leadership over first",
            ));
        }
        let Some(at) = self.members.iter().position(|m| &m.id == member) else {
            return Err(Rejection::new(
                ErrorCode::Invalid,
                "that member is not in this session",
            ));
        };
        self.members.remove(at);
        if self.removed.len() >= MAX_REMOVED {
            self.removed.remove(0);
        }
        self.removed.push(member.clone());
        if self.leadership_request.as_ref() == Some(member) {
            self.leadership_request = None;
        }
        if self.displaced_leader.as_ref() == Some(member) {
            self.displaced_leader = None;
        }
        Ok(vec![Change::MemberRemoved {
            member: member.clone(),
        }])
    }

    fn hello(
        &mut self,
        actor: &MemberId,
        name: &DisplayName,
        conn: &ConnId,
        now: Micros,
        rules: &Rules,
    ) -> Result<Vec<Change>, Rejection> {
        let mut changes = Vec::new();
        match self.member_mut(actor) {
            Some(m) => {
                m.connected = true;
                m.conn = Some(conn.clone());
                changes.push(Change::MemberConnected {
                    member: actor.clone(),
                });
            }
            None => {
                if self.removed.contains(actor) {
                    return Err(Rejection::new(
                        ErrorCode::Removed,
                        "the leader removed you from this session",
                    ));
                }
                if self.joining_closed {
                    return Err(Rejection::new(
                        ErrorCode::JoiningClosed,
                        "the leader has closed this session to new members",
                    ));
                }
                if self.members.len() >= rules.max_members {
                    return Err(Rejection::new(
                        ErrorCode::SessionFull,
                        format!("this session already has {} members", rules.max_members),
                    ));
                }
                self.members.push(Member::new(
                    actor.clone(),
                    name.clone(),
                    now,
                    Some(conn.clone()),
                ));
                changes.push(Change::MemberJoined {
                    member: actor.clone(),
                    name: name.clone(),
                });
            }
        }
        if self.is_leader(actor) {
            self.leader_away_since = None;
        } else if self.leader.is_none() {
            changes.push(self.set_leader(actor.clone(), LeaderReason::Vacant, now));
        }
        Ok(changes)
    }

    fn bye(&mut self, actor: &MemberId, conn: &ConnId, now: Micros) -> Vec<Change> {
        let Some(m) = self.member_mut(actor) else {
            return Vec::new();
        };
        if m.conn.as_ref() != Some(conn) {
            return Vec::new(); // an older connection of a member who has already reconnected
        }
        m.connected = false;
        m.conn = None;
        if self.is_leader(actor) {
            self.leader_away_since = Some(now);
        }
        vec![Change::MemberDisconnected {
            member: actor.clone(),
        }]
    }

    fn request_leadership(
        &mut self,
        actor: &MemberId,
        now: Micros,
    ) -> Result<Vec<Change>, Rejection> {
        self.member(actor).ok_or_else(not_a_member)?;
        if self.is_leader(actor) {
            return Ok(Vec::new());
        }
        if self.displaced_leader.as_ref() == Some(actor) {
            return Ok(vec![self.set_leader(
                actor.clone(),
                LeaderReason::Reclaimed,
                now,
            )]);
        }
        if self.leader_away_since.is_some() || self.leader.is_none() {
            return Ok(vec![self.set_leader(
                actor.clone(),
                LeaderReason::Requested,
                now,
            )]);
        }
        self.leadership_request = Some(actor.clone());
        Ok(vec![Change::LeadershipRequested { by: actor.clone() }])
    }

    fn set_leader(&mut self, to: MemberId, reason: LeaderReason, now: Micros) -> Change {
        let from = self.leader.replace(to.clone());
        let connected = self.member(&to).is_some_and(|m| m.connected);
        self.leader_away_since = if connected {
            None
        } else {
            self.leader_away_since.or(Some(now))
        };
        self.leadership_request = None;
        if reason != LeaderReason::Grace {
            self.displaced_leader = None;
        }
        Change::LeaderChanged { from, to, reason }
    }

    /// Time-driven rules, run by the owner every few hundred milliseconds:
    /// leadership passes on after the grace period, idle sessions end.
    pub fn housekeep(&mut self, now: Micros, rules: &Rules) -> Vec<Change> {
        let mut changes = Vec::new();
        if let (Some(leader), Some(since)) = (self.leader.clone(), self.leader_away_since)
            && now - since >= rules.leader_grace_us
        {
            let successor = self
                .members
                .iter()
                .filter(|m| m.connected && m.id != leader)
                .min_by_key(|m| m.joined_at)
                .map(|m| m.id.clone());
            if let Some(to) = successor {
                changes.push(self.set_leader(to, LeaderReason::Grace, now));
                self.displaced_leader = Some(leader);
            }
        }
        if self.is_idle(now, rules) {
            changes.push(Change::Ended {
                reason: "idle".into(),
            });
        }
        if !changes.is_empty() {
            self.timeline.prune(now);
            self.record(
                changes.clone(),
                Cause {
                    cmd: None,
                    by: None,
                },
                now,
            );
        }
        changes
    }

    pub fn is_idle(&self, now: Micros, rules: &Rules) -> bool {
        !self.members.iter().any(|m| m.connected)
            && now - self.last_activity >= rules.idle_expiry_us
    }

    /// What every change set keeps, whatever commands arrived from whomever:
    /// at most one leader and a member, members distinct and within the cap,
    /// connected exactly when a connection is recorded, a leadership request
    /// and a displaced leader that are members other than the leader, the live
    /// song in the setlist, revisions not ahead of `seq`, a valid timeline with
    /// finite positions. The property tests and the fuzz target check it after
    /// every step; an `Err` names the first one broken.
    pub fn check_invariants(&self, rules: &Rules) -> Result<(), String> {
        let is_member = |id: &MemberId| self.member(id).is_some();
        if let Some(leader) = &self.leader
            && !is_member(leader)
        {
            return Err(format!("leader {leader} is not a member"));
        }
        for (i, m) in self.members.iter().enumerate() {
            if self.members[..i].iter().any(|o| o.id == m.id) {
                return Err(format!("member {} is listed twice", m.id));
            }
            if m.connected != m.conn.is_some() {
                return Err(format!(
                    "member {} connected: {} with connection {:?}",
                    m.id, m.connected, m.conn
                ));
            }
        }
        if self.members.len() > rules.max_members {
            return Err(format!(
                "{} members, over the cap of {}",
                self.members.len(),
                rules.max_members
            ));
        }
        for (what, who) in [
            ("leadership request", &self.leadership_request),
            ("displaced leader", &self.displaced_leader),
        ] {
            if let Some(id) = who
                && (!is_member(id) || self.is_leader(id))
            {
                return Err(format!("{what} {id} is not a member other than the leader"));
            }
        }
        if let Some(back) = self.members.iter().find(|m| self.removed.contains(&m.id)) {
            return Err(format!("removed member {} is a member", back.id));
        }
        if let Some(m) = self
            .members
            .iter()
            .find(|m| m.texts_at.len() > texts::MAX_TEXTS)
        {
            return Err(format!(
                "member {} has {} texts in the rate window",
                m.id,
                m.texts_at.len()
            ));
        }
        if self.removed.len() > MAX_REMOVED {
            return Err(format!("{} removed members remembered", self.removed.len()));
        }
        if let Some(i) = self.song
            && i >= self.setlist.len()
        {
            return Err(format!("song {i} of a setlist of {}", self.setlist.len()));
        }
        if self.members_rev > self.seq || self.setlist_rev > self.seq {
            return Err(format!(
                "revisions (members {}, setlist {}) ahead of seq {}",
                self.members_rev, self.setlist_rev, self.seq
            ));
        }
        self.timeline.check().map_err(|e| e.to_string())?;
        for s in self.timeline.segments() {
            for t in [s.anchor_time, self.last_activity, self.last_change_at] {
                let beat = self.timeline.position(t);
                if !beat.is_finite() {
                    return Err(format!("position {beat} at {t}"));
                }
            }
        }
        Ok(())
    }

    /// Whether a housekeeping pass could change something soon (cheap pre-check).
    /// A leader away past the grace matters only if someone could take over:
    /// otherwise an owner would re-check every such session several times a second
    /// for as long as it lingers (up to the idle expiry).
    pub fn needs_housekeeping(&self, now: Micros, rules: &Rules) -> bool {
        let successor_waiting = self
            .leader_away_since
            .is_some_and(|s| now - s >= rules.leader_grace_us)
            && self
                .members
                .iter()
                .any(|m| m.connected && Some(&m.id) != self.leader.as_ref());
        successor_waiting || self.is_idle(now, rules)
    }
}

/// A leader-only command (`Command::leader_only`) from another member; a
/// gateway refuses it with the same words.
pub fn not_leader() -> Rejection {
    Rejection::new(
        ErrorCode::NotLeader,
        "only the leader can do that; ask for leadership first",
    )
}

/// A command from someone the session does not hold as a member.
fn not_a_member() -> Rejection {
    Rejection::new(
        ErrorCode::Unauthorized,
        "you are not a member of this session",
    )
}

pub mod quality;
pub mod texts;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests;
