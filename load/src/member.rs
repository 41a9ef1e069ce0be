//! One simulated member: connects through the client SDK, keeps its clock
//! synced, and records what it sees. A leader also starts playback and sends
//! tempo changes at the configured rate.
//!
//! How each figure is taken (one machine, so the true server clock is the
//! local clock):
//! - tick latency: local receive time − the tick's `server_time`;
//! - command → followers: a leader's tempo change encodes a key in its BPM
//!   (`tempo_for`); each follower's receive time of that event − the leader's
//!   send time, and per command the slowest follower;
//! - sync error: at sampling instants, the member's own estimate
//!   `timeline.position(clock.to_server(now))` against the authoritative
//!   timeline (the newest the session has published) at `now`, in time units;
//! - skew: per session and sampling instant, the spread of the members'
//!   errors, which is the spread of the instants at which they click a beat.

use crate::stats::{Recorder, Samples};
use bandsync_client::{Backoff, ClientError, ConnectOptions, Connection, Joined};
use bandsync_nats::command::MAX_CHART_BYTES;
use bandsync_nats::state::Change;
use bandsync_nats::{Command, Micros, ServerMsg, Song, Timeline, now_us};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

/// Distinct tempo values a leader cycles through; the key of a command.
const TEMPO_KEYS: u32 = 160;
const TEMPO_BASE: f64 = 100.0;
const TEMPO_STEP: f64 = 0.25;
/// Clock-sync round trips before a member counts as ready.
const INITIAL_PINGS: usize = 4;
/// How often a displaced leader asks for leadership back.
const RECLAIM_EVERY: Duration = Duration::from_secs(2);
/// Sampling instants kept waiting for every member's report.
const SKEW_KEEP: i64 = 8;

/// The BPM that carries command key `n`.
pub fn tempo_for(n: u32) -> f64 {
    TEMPO_BASE + f64::from(n % TEMPO_KEYS) * TEMPO_STEP
}

/// The key a BPM carries, if it is one of ours.
pub fn key_of(bpm: f64) -> Option<u32> {
    let k = ((bpm - TEMPO_BASE) / TEMPO_STEP).round();
    ((0.0..f64::from(TEMPO_KEYS)).contains(&k) && (tempo_for(k as u32) - bpm).abs() < 1e-9)
        .then_some(k as u32)
}

/// Error of an estimated position against the truth, in µs of music at the
/// true tempo (positive: the member is ahead).
pub fn error_us(estimate: f64, truth: f64, bpm: f64) -> f64 {
    (estimate - truth) * 60e6 / bpm
}

/// Settings and counters shared by every member of a run.
pub struct Run {
    pub recorder: Recorder,
    pub connected: AtomicUsize,
    pub connect_failed: AtomicUsize,
    pub connect_latency: Mutex<Samples>,
    pub ws_bases: Vec<String>,
    pub ping_every: Duration,
    /// Clock samples taken at `SETTLE_EVERY` after each connect.
    pub settle_pings: u64,
    pub sample_every: Duration,
    pub command_every: Option<Duration>,
    /// What each leader sets on connecting (empty: nothing).
    pub setlist: Vec<Song>,
    pub connect_gate: Semaphore,
    pub stop: CancellationToken,
}

struct CmdTrack {
    sent_at: Micros,
    expected: usize,
    seen: usize,
    slowest: Micros,
}

/// What the members of one session share.
pub struct Session {
    pub members: usize,
    pub connected: AtomicUsize,
    auth: Mutex<(u64, Option<Timeline>)>,
    commands: Mutex<HashMap<u32, CmdTrack>>,
    skew: Mutex<BTreeMap<i64, (usize, f64, f64)>>,
}

impl Session {
    pub fn new(members: usize) -> Self {
        Self {
            members,
            connected: AtomicUsize::new(0),
            auth: Mutex::new((0, None)),
            commands: Mutex::new(HashMap::new()),
            skew: Mutex::new(BTreeMap::new()),
        }
    }

    fn offer_timeline(&self, seq: u64, timeline: &Timeline) {
        let mut auth = self.auth.lock().unwrap_or_else(|e| e.into_inner());
        if auth.1.is_none() || seq > auth.0 {
            *auth = (seq, Some(timeline.clone()));
        }
    }

    fn timeline(&self) -> Option<Timeline> {
        self.auth
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    fn command_sent(&self, key: u32, at: Micros) {
        let expected = self.connected.load(Ordering::Relaxed).saturating_sub(1);
        let mut cmds = self.commands.lock().unwrap_or_else(|e| e.into_inner());
        cmds.insert(
            key,
            CmdTrack {
                sent_at: at,
                expected,
                seen: 0,
                slowest: 0,
            },
        );
    }

    /// A follower saw command `key` at `at`: its latency, and the slowest
    /// follower's once every follower has seen it.
    fn command_seen(&self, key: u32, at: Micros) -> Option<(Micros, Option<Micros>)> {
        let mut cmds = self.commands.lock().unwrap_or_else(|e| e.into_inner());
        let track = cmds.get_mut(&key)?;
        let latency = at - track.sent_at;
        track.seen += 1;
        track.slowest = track.slowest.max(latency);
        let all = (track.seen >= track.expected).then_some(track.slowest);
        if all.is_some() {
            cmds.remove(&key);
        }
        Some((latency, all))
    }

    /// A member's error at sampling instant `k`; the skew once all reported.
    fn skew_report(&self, k: i64, err: f64) -> Option<f64> {
        let expected = self.connected.load(Ordering::Relaxed);
        let mut skew = self.skew.lock().unwrap_or_else(|e| e.into_inner());
        let e = skew
            .entry(k)
            .or_insert((0, f64::INFINITY, f64::NEG_INFINITY));
        e.0 += 1;
        e.1 = e.1.min(err);
        e.2 = e.2.max(err);
        let done = (e.0 >= expected).then_some(e.2 - e.1);
        if done.is_some() {
            skew.remove(&k);
        }
        skew.retain(|&old, _| old > k - SKEW_KEEP);
        done
    }
}

/// Who this member is and where it connects.
pub struct Member {
    pub joined: Joined,
    pub leader: bool,
    /// Index into `Run::ws_bases` of the gateway to use first.
    pub gateway: usize,
    pub local_ip: Option<IpAddr>,
}

/// Songs whose charts add up to about `kb` KB (full-length charts, the last one
/// shorter); `kb` is at most `config::MAX_SETLIST_KB`.
pub fn setlist(kb: usize) -> Vec<Song> {
    let mut left = kb * 1000;
    let mut songs = Vec::new();
    while left > 0 {
        let chars = left.min(MAX_CHART_BYTES);
        left -= chars;
        let line = "| Am7 . . . | D7 . . . | Gmaj7 . . . | Cmaj7 . . . |\n";
        songs.push(Song {
            title: format!("Song {}", songs.len() + 1),
            tempo_bpm: Some(120.0),
            beats_per_bar: Some(4),
            beat_unit: None,
            chart: line.chars().cycle().take(chars).collect(),
        });
    }
    songs
}

/// Runs one member until `run.stop`.
pub async fn run(
    run: Arc<Run>,
    session: Arc<Session>,
    me: Member,
    mut play: watch::Receiver<bool>,
) {
    let options = ConnectOptions {
        local_ip: me.local_ip,
        light: true,
        welcome_timeout: Some(Duration::from_secs(30)),
    };
    let Some(mut conn) = first_connect(&run, &session, &me, &options).await else {
        return;
    };
    if me.leader && !run.setlist.is_empty() {
        let songs = run.setlist.clone();
        if conn.send(&Command::Setlist { songs }, None).await.is_err() {
            run.recorder.with(|w| w.error("send failed"));
        }
    }
    let mut played = false;
    // Set once the step's playback signal fired; the leader plays as soon as
    // it also holds leadership (it may have to reclaim it first).
    let mut play_due = *play.borrow_and_update();
    let mut reclaim_after = tokio::time::Instant::now();
    let mut next_key: u32 = 0;
    let mut command = tokio::time::interval(run.command_every.unwrap_or(Duration::from_secs(3600)));
    let mut tick_seq: Option<u64> = None;
    command.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Start the periodic work at a random phase so members do not move in step.
    let phase = |every: Duration| every.mul_f64(rand::random::<f64>());
    // Pings: every SETTLE_EVERY until the clock has `settle_pings` samples
    // (the SDK's recommendation for a fresh connection), then every ping_every.
    let ping_in = |conn: &Connection| {
        if conn.clock.taken() < run.settle_pings {
            bandsync_client::SETTLE_EVERY.min(run.ping_every)
        } else {
            run.ping_every
        }
    };
    let mut next_ping = tokio::time::Instant::now()
        + if run.settle_pings > 0 {
            ping_in(&conn)
        } else {
            phase(run.ping_every)
        };
    command.reset_after(phase(run.command_every.unwrap_or_default()));
    let sample_us = run.sample_every.as_micros() as i64;
    loop {
        let now = now_us();
        // Sample half-way between grid instants, so every member of a session
        // agrees on the instant's number however late it wakes.
        let half = sample_us / 2;
        let next_sample = ((now - half).div_euclid(sample_us) + 1) * sample_us + half;
        let sample_in = Duration::from_micros((next_sample - now).max(0) as u64);
        tokio::select! {
            biased;
            _ = run.stop.cancelled() => break,
            // Unfiltered: a message the client skips (an older owner's epoch,
            // an event already seen) was still delivered, and counts as a frame.
            msg = conn.next_unfiltered() => match msg {
                Ok((msg, taken)) => handle(&run, &session, &me, &mut tick_seq, msg, taken),
                Err(e) => {
                    run.recorder.with(|w| w.error(&format!("disconnected: {}", kind(&e))));
                    session.connected.fetch_sub(1, Ordering::Relaxed);
                    run.connected.fetch_sub(1, Ordering::Relaxed);
                    match reconnect(&run, &me, &options).await {
                        Some(c) => {
                            conn = c;
                            session.connected.fetch_add(1, Ordering::Relaxed);
                            run.connected.fetch_add(1, Ordering::Relaxed);
                            tick_seq = None;
                        }
                        None => return,
                    }
                }
            },
            changed = play.changed(), if me.leader && !play_due => {
                play_due = changed.is_ok() && *play.borrow();
            }
            _ = tokio::time::sleep_until(next_ping) => {
                next_ping = tokio::time::Instant::now() + ping_in(&conn);
                let t0 = now_us();
                if conn.send_raw(format!(r#"{{"type":"ping","t0":{t0}}}"#)).await.is_err() {
                    run.recorder.with(|w| w.error("send failed"));
                }
            }
            _ = command.tick(), if me.leader && played && is_leader(&conn) && run.command_every.is_some() => {
                next_key = (next_key + 1) % TEMPO_KEYS;
                let sent_at = now_us();
                session.command_sent(next_key, sent_at);
                let cmd = Command::Tempo { bpm: tempo_for(next_key) };
                match conn.send(&cmd, None).await {
                    Ok(()) => run.recorder.with(|w| w.commands_sent += 1),
                    Err(_) => run.recorder.with(|w| w.error("send failed")),
                }
            }
            _ = tokio::time::sleep(sample_in) => sample(&run, &session, &me, &conn, next_sample, sample_us),
        }
        if !me.leader {
            continue;
        }
        if !is_leader(&conn) {
            // Displaced (it connected after the grace period, or was away): a
            // real leader's client takes leadership back.
            if tokio::time::Instant::now() >= reclaim_after {
                reclaim_after = tokio::time::Instant::now() + RECLAIM_EVERY;
                run.recorder.with(|w| w.leader_reclaims += 1);
                if conn.send(&Command::RequestLeadership, None).await.is_err() {
                    run.recorder.with(|w| w.error("send failed"));
                }
            }
        } else if play_due && !played {
            played = true;
            // The command timer ran unpolled until now and would fire at once,
            // in step with every other leader that starts with this step:
            // a burst of a whole run's leaders every period, which no real
            // set of bands produces. Start it at a random phase instead.
            command.reset_after(phase(run.command_every.unwrap_or_default()));
            if conn
                .send(&Command::Play { count_in_bars: 0 }, None)
                .await
                .is_err()
            {
                run.recorder.with(|w| w.error("send failed"));
            }
        }
    }
    conn.close().await;
}

async fn first_connect(
    run: &Run,
    session: &Session,
    me: &Member,
    options: &ConnectOptions,
) -> Option<Connection> {
    let _permit = run.connect_gate.acquire().await.ok()?;
    let base = run.ws_bases.get(me.gateway % run.ws_bases.len().max(1))?;
    let started = std::time::Instant::now();
    let connected = async {
        let mut c = Connection::connect_with(base, &me.joined.token, options).await?;
        c.sync_clock(INITIAL_PINGS).await?;
        Ok::<_, ClientError>(c)
    };
    let conn = tokio::select! {
        _ = run.stop.cancelled() => return None,
        c = connected => c,
    };
    match conn {
        Ok(c) => {
            let us = started.elapsed().as_micros() as i64;
            run.connect_latency
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(us);
            session.offer_timeline(c.state.seq, &c.state.timeline);
            session.connected.fetch_add(1, Ordering::Relaxed);
            run.connected.fetch_add(1, Ordering::Relaxed);
            Some(c)
        }
        Err(e) => {
            tracing::debug!(error = %e, "connect failed");
            run.recorder
                .with(|w| w.error(&format!("connect: {}", kind(&e))));
            run.connect_failed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// The SDK's reconnect: rotate through the gateways with backoff, same token.
async fn reconnect(run: &Run, me: &Member, options: &ConnectOptions) -> Option<Connection> {
    let mut bases = run.ws_bases.clone();
    let first = me.gateway % bases.len().max(1);
    bases.rotate_left(first);
    tokio::select! {
        _ = run.stop.cancelled() => None,
        c = Connection::connect_retrying(&bases, &me.joined.token, options, Backoff::default()) => match c {
            Ok(mut c) => {
                run.recorder.with(|w| w.error("reconnected"));
                let _ = c.sync_clock(INITIAL_PINGS).await;
                Some(c)
            }
            Err(e) => {
                run.recorder.with(|w| w.error(&format!("reconnect failed: {}", kind(&e))));
                None
            }
        },
    }
}

fn is_leader(conn: &Connection) -> bool {
    conn.state.leader.as_ref() == Some(&conn.member)
}

fn kind(e: &ClientError) -> &'static str {
    match e {
        ClientError::Io(_) => "io",
        ClientError::BadAddress(_) => "bad address",
        ClientError::BadToken => "bad token",
        ClientError::WebSocket(_) => "websocket",
        ClientError::Decode(_) => "decode",
        ClientError::Closed(_) => "closed",
        ClientError::NoWelcome(_) => "refused",
        ClientError::Timeout => "timeout",
        ClientError::MissedChange { .. } => "missed change",
    }
}

/// Records a message read from the socket; `taken`: the client's view used
/// it (false for what `Connection::next` would have skipped).
fn handle(
    run: &Run,
    session: &Session,
    me: &Member,
    tick_seq: &mut Option<u64>,
    msg: ServerMsg,
    taken: bool,
) {
    let now = now_us();
    // A tick, the common case, is counted under the lock it takes anyway.
    if !taken || !matches!(msg, ServerMsg::Tick(_)) {
        run.recorder.with(|w| w.frames_delivered += 1);
        if !taken {
            return;
        }
    }
    match msg {
        ServerMsg::Tick(t) => run.recorder.with(|w| {
            w.frames_delivered += 1;
            w.ticks_received += 1;
            w.tick_latency.push(now - t.server_time);
            match *tick_seq {
                Some(last) if t.seq <= last => w.ticks_duplicate += 1,
                Some(last) => w.ticks_missed += t.seq - last - 1,
                None => {}
            }
            *tick_seq = Some(tick_seq.map_or(t.seq, |last| last.max(t.seq)));
        }),
        ServerMsg::Event(e) => {
            session.offer_timeline(e.state.seq, &e.state.timeline);
            if me.leader {
                return;
            }
            for change in &e.changes {
                if let Change::Tempo { bpm, .. } = change
                    && let Some(key) = key_of(*bpm)
                    && let Some((each, all)) = session.command_seen(key, now)
                {
                    // The event carries the owner's apply time (one clock on
                    // one machine): that splits the path into leader → owner
                    // and owner → slowest follower.
                    let to_owner = e.at - (now - each);
                    run.recorder.with(|w| {
                        w.command_each.push(each);
                        if let Some(all) = all {
                            w.command_all.push(all);
                            w.command_to_owner.push(to_owner);
                            w.command_owner_to_all.push(all - to_owner);
                        }
                    });
                }
            }
        }
        ServerMsg::Error(e) => run.recorder.with(|w| w.error(e.code.as_str())),
        ServerMsg::Reconnect { .. } => run.recorder.with(|w| w.error("told to reconnect")),
        ServerMsg::Welcome { .. } | ServerMsg::Pong { .. } | ServerMsg::Token { .. } => {}
    }
}

fn sample(run: &Run, session: &Session, me: &Member, conn: &Connection, at: Micros, period: i64) {
    let Some(truth) = session.timeline() else {
        return;
    };
    let now = now_us();
    let seg = truth.at(now);
    if !seg.playing {
        return;
    }
    let estimate = conn.position_at(conn.clock.to_server(now));
    let err = error_us(estimate, truth.position(now), seg.tempo_bpm);
    if !err.is_finite() {
        run.recorder.with(|w| w.error("non-finite estimate"));
        return;
    }
    let k = (at - period / 2) / period;
    let skew = session.skew_report(k, err);
    run.recorder.with(|w| {
        if !me.leader {
            w.sync_error.push(err.abs().round() as i64);
        }
        if let Some(s) = skew {
            w.skew.push(s.round() as i64);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setlists_have_the_size_asked_and_are_valid() {
        assert!(setlist(0).is_empty());
        for kb in [1, 30, crate::config::MAX_SETLIST_KB] {
            let songs = setlist(kb);
            let chars: usize = songs.iter().map(|s| s.chart.chars().count()).sum();
            assert_eq!(chars, kb * 1000);
            let cmd = Command::Setlist { songs };
            assert!(cmd.validate().is_ok(), "{kb} KB: {:?}", cmd.validate());
        }
    }

    #[test]
    fn tempo_keys_round_trip() {
        for n in [0, 1, 80, 159] {
            assert_eq!(key_of(tempo_for(n)), Some(n));
        }
        assert_eq!(tempo_for(160), tempo_for(0));
        assert_eq!(key_of(120.1), None);
        assert_eq!(key_of(99.0), None);
        assert_eq!(key_of(TEMPO_BASE + 160.0 * TEMPO_STEP), None);
    }

    #[test]
    fn error_is_in_time_units() {
        // Half a beat ahead at 120 BPM is 250 ms.
        assert_eq!(error_us(10.5, 10.0, 120.0), 250_000.0);
        assert_eq!(error_us(10.0, 10.0, 90.0), 0.0);
    }

    #[test]
    fn command_completes_when_every_follower_saw_it() {
        let s = Session::new(3);
        s.connected.store(3, Ordering::Relaxed);
        s.command_sent(7, 1_000);
        assert_eq!(s.command_seen(7, 1_500), Some((500, None)));
        assert_eq!(s.command_seen(7, 1_200), Some((200, Some(500))));
        assert_eq!(s.command_seen(7, 1_300), None, "completed and forgotten");
        assert_eq!(s.command_seen(8, 1_300), None, "never sent");
    }

    #[test]
    fn skew_is_the_spread_once_all_reported() {
        let s = Session::new(3);
        s.connected.store(3, Ordering::Relaxed);
        assert_eq!(s.skew_report(5, 100.0), None);
        assert_eq!(s.skew_report(5, -50.0), None);
        assert_eq!(s.skew_report(5, 20.0), Some(150.0));
        // Old incomplete instants are dropped.
        assert_eq!(s.skew_report(6, 1.0), None);
        assert_eq!(s.skew_report(6 + SKEW_KEEP, 1.0), None);
        assert_eq!(s.skew.lock().expect("lock").len(), 1);
    }
}
