//! The abusive-client measurement: two bands play while nobody misbehaves
//! (a quiet window) and while, in the first band, one member opens hundreds
//! of sockets with their token, another floods messages, a third never reads,
//! and a stranger guesses join codes (an abused window). The windows
//! run in ABBA order (quiet, abused, abused, quiet, …; `abused_window`) for
//! `rounds` rounds, with an unrecorded settle gap
//! between them; the abusers' process runs for each abused window and has
//! exited before the next quiet one begins. Each band's well-behaved members
//! record the delay of every tick (receive time minus the tick's server time:
//! one clock, one machine) and any connection they lose; `report` pools each
//! phase and sets the ratio against the quiet windows' own spread. The gateway
//! runs with its per-address limits on, and every member and abuser connects
//! from an address of its own (127.0.x.y).
//!
//! The abusers run in a process of their own at the lowest CPU priority
//! (`nice -n 19`), so that their busy loops delay the gateway, if anything,
//! through what it must do for them, not by taking the machine's cores.

mod report;

pub use report::{
    AbuseReport, Abusers, BandReport, Noise, PhaseCpu, PhaseSeen, WindowRecord, WindowUsage,
    abused_window, band_report, phase_cpu,
};

use crate::procstat::Watched;
use bandsync_client::{Api, ClientError, ConnectOptions, Connection, tcp_connect, ws_request};
use bandsync_nats::service::random_join_code;
use bandsync_nats::timeline::tick_phase;
use bandsync_nats::{Command, ServerMsg, now_us};
use futures::{SinkExt, StreamExt};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Well-behaved members per band, the leader included.
const BAND: usize = 4;
/// What one abuser may do at most, whatever the window.
const MAX_SOCKETS: usize = 300;
const MAX_GUESSES: usize = 200_000;
const MAX_FLOOD: usize = 2_000_000;
/// Unrecorded, before every window: the stack settles after the last
/// window's abusers (their sockets closing, the departures' events) and the
/// next window starts from a steady band.
const SETTLE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct Spec {
    /// Length of each window, quiet or abused.
    pub window: Duration,
    /// Quiet-then-abused pairs of windows (at least 1; 2 for a noise floor).
    pub rounds: usize,
    /// Sockets the first abuser tries to open with their token.
    pub sockets: usize,
    /// The `bandsync-abuse` executable, run as `abusers` for the abused window.
    pub abusers_exe: std::path::PathBuf,
    /// A CPU for the abusers alone (`taskset`); run the measurement itself on
    /// the others (`taskset -c 0 bandsync-abuse --abusers-cpu 1`).
    pub abusers_cpu: Option<usize>,
    /// The stack's tick period (its ticker's `--tick-ms`).
    pub tick_period: Duration,
    /// Only these abusers (`open`, `flood`, `stuck`, `guess`); empty: all.
    pub only: Vec<String>,
    /// The stack's processes (name, pid), whose CPU each phase reports.
    pub processes: Vec<(String, u32)>,
}

/// The window being recorded: 0 none, else its index + 1.
struct Recording {
    window: AtomicUsize,
    /// [window][band]
    seen: Mutex<Vec<[WindowRecord; 2]>>,
}

impl Recording {
    fn record(&self, band: usize, f: impl FnOnce(&mut WindowRecord)) {
        let window = self.window.load(Ordering::Acquire);
        if window == 0 {
            return;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = seen.get_mut(window - 1) {
            f(&mut w[band]);
        }
    }
}

/// 127.0.`group`.`n`: one address per member or abuser.
fn addr(group: u8, n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, group, n))
}

fn options(ip: IpAddr) -> ConnectOptions {
    ConnectOptions {
        local_ip: Some(ip),
        light: true,
        welcome_timeout: Some(Duration::from_secs(5)),
    }
}

/// Runs the measurement against the gateway at `base`.
pub async fn run(base: &str, spec: Spec) -> anyhow::Result<AbuseReport> {
    let recording = Arc::new(Recording {
        window: AtomicUsize::new(0),
        seen: Mutex::default(),
    });
    let stop = CancellationToken::new();
    let mut codes = Vec::new();
    let mut readers = Vec::new();
    let mut tick_slot_ms = [0.0; 2];
    let period_us = i64::try_from(spec.tick_period.as_micros())?;
    for band in 0..2u8 {
        let leader = Api::new(base)
            .with_local_ip(addr(1, band * 10 + 1))
            .create("Leader")
            .await?;
        codes.push(leader.code.clone());
        // The stack's ticker runs with the default shard count.
        let shard =
            bandsync_nats::shard::shard_of(&leader.session, bandsync_nats::shard::DEFAULT_SHARDS);
        tick_slot_ms[usize::from(band)] = tick_phase(shard, period_us) as f64 / 1000.0;
        let mut members = vec![
            Connection::connect_with(base, &leader.token, &options(addr(1, band * 10 + 1))).await?,
        ];
        for i in 1..BAND as u8 {
            let ip = addr(1, band * 10 + 1 + i);
            let joined = Api::new(base)
                .with_local_ip(ip)
                .join(leader.code.as_str(), &format!("Member {i}"))
                .await?;
            members.push(Connection::connect_with(base, &joined.token, &options(ip)).await?);
        }
        for m in &mut members {
            m.sync_clock(4).await?;
        }
        members[0]
            .send(&Command::Play { count_in_bars: 0 }, None)
            .await?;
        for m in members {
            readers.push(tokio::spawn(read_ticks(
                m,
                usize::from(band),
                recording.clone(),
                stop.clone(),
            )));
        }
    }
    // The abusers are members of the first band (and a stranger).
    let code = codes[0].as_str().to_owned();
    let mut tokens = Vec::new();
    for n in 1..=3u8 {
        let joined = Api::new(base)
            .with_local_ip(addr(2, n))
            .join(&code, &format!("Abuser {n}"))
            .await?;
        tokens.push(joined.token);
    }

    // Quiet and abused windows in ABBA order (`abused_window`), each after a
    // settle gap (the first one into playing).
    let windows = 2 * spec.rounds.max(1);
    recording
        .seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .resize_with(windows, Default::default);
    // [process][quiet, abused]: each window's usage and length.
    let mut cpu: Vec<[Vec<WindowUsage>; 2]> = vec![Default::default(); spec.processes.len()];
    let mut abusers = Abusers::default();
    for w in 0..windows {
        tokio::time::sleep(SETTLE).await;
        let abused = abused_window(w);
        let process = if abused {
            Some(start_abusers(base, &spec, &tokens)?)
        } else {
            None
        };
        let mut watched: Vec<_> = spec
            .processes
            .iter()
            .map(|(n, pid)| Watched::new(n, *pid))
            .collect();
        watched.iter_mut().for_each(Watched::begin);
        let began = Instant::now();
        recording.window.store(w + 1, Ordering::Release);
        tokio::time::sleep(spec.window).await;
        recording.window.store(0, Ordering::Release);
        let length = began.elapsed();
        for (phases, watched) in cpu.iter_mut().zip(&mut watched) {
            phases[usize::from(abused)].push((watched.end(), length));
        }
        // Done before the next (quiet) window's settle gap begins.
        if let Some(process) = process {
            abusers.add(&finish_abusers(process, spec.window).await?);
        }
    }
    stop.cancel();
    for r in readers {
        let _ = r.await;
    }
    let seen = std::mem::take(&mut *recording.seen.lock().unwrap_or_else(|e| e.into_inner()));
    let mut bands: [Vec<WindowRecord>; 2] = Default::default();
    for [first, other] in seen {
        bands[0].push(first);
        bands[1].push(other);
    }
    Ok(AbuseReport {
        rounds: windows / 2,
        window_secs: spec.window.as_secs(),
        bands: bands.map(|windows| band_report(&windows)),
        tick_slot_ms,
        abusers,
        cpu: cpu
            .into_iter()
            .map(|[quiet, abused]| (phase_cpu(&quiet), phase_cpu(&abused)))
            .collect(),
    })
}

/// Starts the abusers' process for one window, at the lowest CPU priority: on
/// one machine, what they cost the band should be what the gateway spends on
/// them, not the CPU their own loops burn.
fn start_abusers(
    base: &str,
    spec: &Spec,
    tokens: &[String],
) -> anyhow::Result<tokio::process::Child> {
    let mut command = match spec.abusers_cpu {
        // On a CPU of their own, as if on another machine.
        Some(cpu) => {
            let mut c = tokio::process::Command::new("taskset");
            c.args(["-c", &cpu.to_string(), "nice", "-n", "19"]);
            c
        }
        None => {
            let mut c = tokio::process::Command::new("nice");
            c.args(["-n", "19"]);
            c
        }
    };
    Ok(command
        .arg(&spec.abusers_exe)
        .arg(format!("--window-secs={}", spec.window.as_secs()))
        .arg(format!("--sockets={}", spec.sockets))
        .args(spec.only.iter().map(|o| format!("--only={o}")))
        .args(["abusers", "--base", base, "--tokens", &tokens.join(",")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?)
}

/// Waits for the abusers' process to end and reads what it reports.
async fn finish_abusers(
    process: tokio::process::Child,
    window: Duration,
) -> anyhow::Result<Abusers> {
    let out = tokio::time::timeout(window + Duration::from_secs(30), process.wait_with_output())
        .await
        .map_err(|_| anyhow::anyhow!("the abusers did not finish"))??;
    anyhow::ensure!(out.status.success(), "the abusers failed: {}", out.status);
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// A well-behaved member: reads everything, records each tick's delay and a
/// lost connection (then stops: a member the abuse dropped is the finding).
async fn read_ticks(
    mut c: Connection,
    band: usize,
    recording: Arc<Recording>,
    stop: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            () = stop.cancelled() => return,
            msg = c.next() => msg,
        };
        match msg {
            Ok(ServerMsg::Tick(t)) => {
                let delay = now_us() - t.server_time;
                recording.record(band, |w| w.delays_us.push(delay));
            }
            Ok(ServerMsg::Error(e)) => {
                tracing::warn!(code = e.code.as_str(), "a quiet member got an error");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "a quiet member lost its connection");
                recording.record(band, |w| w.dropped += 1);
                return;
            }
        }
    }
}

/// All four abusers at once for `window` (the `abusers` process).
pub async fn abuse_for(
    base: &str,
    tokens: &[String],
    window: Duration,
    sockets: usize,
    only: &[String],
) -> anyhow::Result<Abusers> {
    anyhow::ensure!(tokens.len() == 3, "three abusers' tokens");
    let stop = CancellationToken::new();
    let timer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(window).await;
            stop.cancel();
        })
    };
    let report = abuse(base, tokens, stop, sockets, only).await;
    timer.abort();
    report
}

/// All four abusers at once until `stop`.
async fn abuse(
    base: &str,
    tokens: &[String],
    stop: CancellationToken,
    sockets: usize,
    only: &[String],
) -> anyhow::Result<Abusers> {
    let on = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let gateway: SocketAddr = base
        .trim_start_matches("http://")
        .parse()
        .map_err(|e| anyhow::anyhow!("gateway address {base}: {e}"))?;
    let (opener, flooder, stuck) = (&tokens[0], &tokens[1], &tokens[2]);
    // The member who never reads: a tiny receive buffer, and no read after the upgrade.
    let _stuck = if on("stuck") {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(addr(2, 3), 0))?;
        socket.set_recv_buffer_size(2048)?;
        let stream = socket.connect(gateway).await?;
        Some(tokio_tungstenite::client_async(ws_request(base, stuck)?, stream).await?)
    } else {
        None
    };
    let (opened, flooded, guessed) = tokio::join!(
        only_if(
            on("open"),
            open_sockets(base, opener, sockets.min(MAX_SOCKETS), stop.clone())
        ),
        only_if(on("flood"), flood(base, gateway, flooder, stop.clone())),
        only_if(on("guess"), guess_codes(base, stop.clone())),
    );
    // The member who never reads keeps their socket to the end.
    stop.cancelled().await;
    let mut report = Abusers::default();
    (report.sockets_opened, report.sockets_refused) = opened.unwrap_or_default();
    (
        report.flood_sent,
        report.flood_answers,
        report.flood_sockets,
    ) = flooded.transpose()?.unwrap_or_default();
    (report.guesses, report.guess_answers) = guessed.unwrap_or_default();
    Ok(report)
}

/// `work`'s outcome if this abuser is on (`--only`), else `None` at once.
async fn only_if<T>(on: bool, work: impl Future<Output = T>) -> Option<T> {
    if on { Some(work.await) } else { None }
}

/// Opens sockets with one member's token, one after another, keeping each.
async fn open_sockets(
    base: &str,
    token: &str,
    n: usize,
    stop: CancellationToken,
) -> (u64, BTreeMap<String, u64>) {
    let mut held = Vec::new();
    let mut refused = BTreeMap::new();
    for _ in 0..n {
        if stop.is_cancelled() {
            break;
        }
        match Connection::connect_with(base, token, &options(addr(2, 1))).await {
            Ok(c) => held.push(c),
            Err(e) => *refused.entry(refusal(&e)).or_default() += 1,
        }
    }
    stop.cancelled().await;
    (held.len() as u64, refused)
}

fn refusal(e: &ClientError) -> String {
    use bandsync_client::ClientError as E;
    use tokio_tungstenite::tungstenite::Error as W;
    match e {
        E::WebSocket(W::Http(r)) => format!("http {}", r.status().as_u16()),
        E::NoWelcome(why) => why
            .strip_prefix("error ")
            .and_then(|w| w.split(':').next())
            .unwrap_or(why)
            .to_owned(),
        other => other.to_string(),
    }
}

/// Floods commands, and connects again whenever the gateway closes the
/// socket (as a determined abuser would), until `stop`.
async fn flood(
    base: &str,
    gateway: SocketAddr,
    token: &str,
    stop: CancellationToken,
) -> anyhow::Result<(u64, BTreeMap<String, u64>, BTreeMap<String, u64>)> {
    let (mut sent, mut answers, mut closes) = (0, BTreeMap::new(), BTreeMap::new());
    while !stop.is_cancelled() && (sent as usize) < MAX_FLOOD {
        let stream = tcp_connect(gateway, Some(addr(2, 2))).await?;
        let ws = match tokio_tungstenite::client_async(ws_request(base, token)?, stream).await {
            Ok((ws, _)) => ws,
            Err(e) => {
                let why = match &e {
                    tokio_tungstenite::tungstenite::Error::Http(r) => {
                        format!("refused http {}", r.status().as_u16())
                    }
                    other => other.to_string(),
                };
                *closes.entry(why).or_default() += 1;
                // What a client told to retry later does, impatiently.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (n, closed) = flood_once(ws, &stop, &mut answers).await;
        sent += n;
        *closes.entry(closed).or_default() += 1;
    }
    Ok((sent, answers, closes))
}

/// One socket's flood: until the gateway closes it or `stop`.
async fn flood_once(
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    stop: &CancellationToken,
    answers: &mut BTreeMap<String, u64>,
) -> (u64, String) {
    let (mut tx, mut rx) = ws.split();
    let over = CancellationToken::new();
    let reader = async {
        let mut closed = "stopped".to_owned();
        let grace = async {
            stop.cancelled().await;
            tokio::time::sleep(Duration::from_secs(2)).await;
        };
        tokio::pin!(grace);
        loop {
            let msg = tokio::select! {
                () = &mut grace => break,
                msg = rx.next() => match msg {
                    Some(msg) => msg,
                    None => break,
                },
            };
            match msg {
                Ok(Message::Text(t)) => {
                    let kind = match ServerMsg::parse(&t) {
                        Ok(ServerMsg::Error(e)) => e.code.as_str().to_owned(),
                        Ok(_) => continue,
                        Err(_) => "undecodable".into(),
                    };
                    *answers.entry(kind).or_default() += 1;
                }
                Ok(Message::Close(f)) => {
                    closed = f.map_or("closed".into(), |f| format!("closed {}", f.reason));
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    closed = e.to_string();
                    break;
                }
            }
        }
        over.cancel();
        closed
    };
    let writer = async {
        let mut sent = 0u64;
        let msg = r#"{"type":"tempo","bpm":100}"#;
        while !stop.is_cancelled() && !over.is_cancelled() {
            if tx.send(Message::text(msg)).await.is_err() {
                break;
            }
            sent += 1;
        }
        let _ = tx.close().await;
        sent
    };
    let (closed, sent) = tokio::join!(reader, writer);
    (sent, closed)
}

/// Joins with random codes as fast as the gateway answers.
async fn guess_codes(base: &str, stop: CancellationToken) -> (u64, BTreeMap<String, u64>) {
    let api = Api::new(base).with_local_ip(addr(3, 1));
    let mut answers: BTreeMap<String, u64> = BTreeMap::new();
    let mut n = 0u64;
    while !stop.is_cancelled() && (n as usize) < MAX_GUESSES {
        let answer = match api.join(random_join_code().as_str(), "Guesser").await {
            Ok(_) => "joined".to_owned(),
            Err(bandsync_client::ApiError::Refused { code, .. }) => code,
            Err(e) => e.to_string(),
        };
        *answers.entry(answer).or_default() += 1;
        n += 1;
    }
    (n, answers)
}
