//! Bands that play through a fault: real members (the SDK) that record what
//! they receive, reconnect as a device would when their socket drops, and
//! leaders that keep sending tempo changes, each with its own tempo so that
//! every command can be found again in the events (applied, late, twice, lost).

use anyhow::Context;
use bandsync_client::{Api, Backoff, ConnectOptions, Connection};
use bandsync_nats::{Command, MemberId, ServerMsg, SessionId};
use futures::StreamExt;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long setting a band up may take.
const SETUP_WAIT: Duration = Duration::from_secs(20);
/// Bands set up at once.
const SETUP_PARALLEL: usize = 8;
/// A member whose socket dropped retries like the web client: quickly at first.
const RECONNECT: Backoff = Backoff {
    first: Duration::from_millis(100),
    max: Duration::from_secs(1),
    attempts: 120,
};

pub struct BandSpec {
    pub sessions: usize,
    /// Members per band, the leader included.
    pub members: usize,
    /// How often each leader changes the tempo.
    pub command_every: Duration,
}

/// A tempo as a key: commands are told apart by the tempo they set.
pub fn tempo_key(bpm: f64) -> i64 {
    (bpm * 100.0).round() as i64
}

/// The tempo of a leader's `n`th command: unique for the first 2,000.
fn nth_tempo(n: u64) -> f64 {
    100.0 + (n % 2000) as f64 * 0.1
}

#[derive(Debug, Clone)]
pub struct EventSeen {
    pub at: Instant,
    pub seq: u64,
    pub kinds: Vec<&'static str>,
    /// The tempo in force once the event's changes apply.
    pub tempo: i64,
    pub by: Option<MemberId>,
}

/// What one member received (and, for a leader, sent) while recording.
#[derive(Debug)]
pub struct MemberLog {
    pub session: SessionId,
    pub member: MemberId,
    pub leader: bool,
    pub ticks: Vec<Instant>,
    pub events: Vec<EventSeen>,
    /// A leader's tempo changes: when sent and the tempo (as a key).
    pub sent: Vec<(Instant, i64)>,
    /// Errors addressed to this member: when, the tempo of the refused
    /// command (a leader's tempo change), and the error.
    pub refused: Vec<(Instant, Option<i64>, String)>,
    /// When the socket dropped, and why.
    pub drops: Vec<(Instant, String)>,
    /// When it was welcomed again after a drop.
    pub back: Vec<Instant>,
}

/// Members recording until [`Recording::finish`].
pub struct Recording {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<MemberLog>>,
}

impl Recording {
    pub async fn finish(self) -> Vec<MemberLog> {
        self.stop.cancel();
        let mut logs = Vec::new();
        for task in self.tasks {
            if let Ok(log) = task.await {
                logs.push(log);
            }
        }
        logs
    }
}

struct Member {
    conn: Connection,
    token: String,
    leader: bool,
    /// Its own gateway first (where the load balancer put its band), then the rest.
    bases: Vec<String>,
}

/// Sets up the bands (band `i` on gateway `i mod G`, as the load balancer
/// places a session), has every leader play, and starts recording.
pub async fn start(gateways: &[String], spec: &BandSpec) -> anyhow::Result<Recording> {
    anyhow::ensure!(
        !gateways.is_empty() && spec.members >= 1,
        "bands need a gateway and a member"
    );
    let bands: Vec<anyhow::Result<Vec<Member>>> = futures::stream::iter(0..spec.sessions)
        .map(|i| {
            let mut bases = gateways.to_vec();
            bases.rotate_left(i % gateways.len());
            band(bases, i, spec.members)
        })
        .buffer_unordered(SETUP_PARALLEL)
        .collect()
        .await;
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    for members in bands {
        for m in members? {
            tasks.push(tokio::spawn(record(m, spec.command_every, stop.clone())));
        }
    }
    Ok(Recording { stop, tasks })
}

async fn band(bases: Vec<String>, i: usize, members: usize) -> anyhow::Result<Vec<Member>> {
    let api = Api::new(&bases[0]);
    let lead = api
        .create(&format!("Leader {i}"))
        .await
        .context("creating a session")?;
    let mut joined = vec![(lead.token.clone(), true)];
    for m in 1..members {
        let j = api
            .join(lead.code.as_str(), &format!("Member {i}-{m}"))
            .await
            .context("joining")?;
        joined.push((j.token, false));
    }
    let mut band = Vec::new();
    for (token, leader) in joined {
        let conn = Connection::connect(&bases[0], &token)
            .await
            .context("connecting")?;
        band.push(Member {
            conn,
            token,
            leader,
            bases: bases.clone(),
        });
    }
    let everyone = members;
    let leader = &mut band[0].conn;
    leader
        .wait_until(SETUP_WAIT, |s| {
            s.members.iter().filter(|m| m.connected).count() == everyone
        })
        .await
        .context("waiting for the band to connect")?;
    leader
        .send(&Command::Play { count_in_bars: 0 }, None)
        .await
        .context("play")?;
    leader
        .wait_until(SETUP_WAIT, |s| s.timeline.latest().playing)
        .await
        .context("waiting for play")?;
    Ok(band)
}

async fn record(mut m: Member, command_every: Duration, stop: CancellationToken) -> MemberLog {
    let mut log = MemberLog {
        session: m.conn.state.id.clone(),
        member: m.conn.member.clone(),
        leader: m.leader,
        ticks: Vec::new(),
        events: Vec::new(),
        sent: Vec::new(),
        refused: Vec::new(),
        drops: Vec::new(),
        back: Vec::new(),
    };
    // Leaders start at a random phase, so a fault meets commands at every stage.
    let phase = Duration::from_millis(rand::random_range(
        0..command_every.as_millis().max(1) as u64,
    ));
    let mut commands = tokio::time::interval_at(Instant::now() + phase, command_every);
    commands.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0u64;
    loop {
        let received = tokio::select! {
            () = stop.cancelled() => break,
            _ = commands.tick(), if m.leader => {
                let bpm = nth_tempo(n);
                n += 1;
                // The id comes back in a refusal, so a refused command is known as such.
                let id = format!("t{}", tempo_key(bpm));
                match m.conn.send(&Command::Tempo { bpm }, Some(&id)).await {
                    Ok(()) => {
                        log.sent.push((Instant::now(), tempo_key(bpm)));
                        continue;
                    }
                    Err(e) => Err(e),
                }
            }
            r = m.conn.next_unfiltered() => r.map(|(msg, _)| msg),
        };
        let at = Instant::now();
        match received {
            Ok(ServerMsg::Tick(_)) => log.ticks.push(at),
            Ok(ServerMsg::Event(e)) => log.events.push(EventSeen {
                at,
                seq: e.seq,
                kinds: e.changes.iter().map(|c| c.kind()).collect(),
                tempo: tempo_key(e.state.timeline.latest().tempo_bpm),
                by: e.cause.by.clone(),
            }),
            Ok(ServerMsg::Error(e)) => {
                let tempo =
                    e.id.as_deref()
                        .and_then(|id| id.strip_prefix('t')?.parse().ok());
                log.refused
                    .push((at, tempo, format!("{}: {}", e.code.as_str(), e.message)));
            }
            Ok(_) => {}
            Err(e) => {
                log.drops.push((at, e.to_string()));
                let options = ConnectOptions::default();
                let again = Connection::connect_retrying(&m.bases, &m.token, &options, RECONNECT);
                let again = tokio::select! {
                    () = stop.cancelled() => break,
                    c = again => c,
                };
                match again {
                    Ok(conn) => {
                        m.conn = conn;
                        log.back.push(Instant::now());
                    }
                    Err(e) => {
                        log.drops
                            .push((Instant::now(), format!("gave up reconnecting: {e}")));
                        break;
                    }
                }
            }
        }
    }
    log
}
