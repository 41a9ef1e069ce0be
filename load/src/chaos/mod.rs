//! The chaos suite: the clustered topology (three JetStream nodes, R3, two
//! tickers, two gateways, the store with its own PostgreSQL) under playing
//! bands whose leaders keep changing the tempo; one fault at a time; a report
//! of what the bands saw (`report.rs`) and of what reached PostgreSQL.
//!
//! Faults are real: kill -9 of the NATS node leading a given stream or bucket
//! (found from JetStream's own cluster info), SIGSTOP/SIGCONT of a node, kill -9
//! of a gateway, a ticker or the store, a real PostgreSQL restart, and a
//! rolling restart of everything in lame-duck / SIGTERM order.

pub mod band;
pub mod report;

use crate::stack::{Role, Signal, Stack};
use anyhow::Context;
use bandsync_nats::Subjects;
use std::time::Duration;
use tokio::time::Instant;

pub use report::FaultReport;

/// What to do to the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// kill -9 the NATS node leading this stream or bucket (restarted after the window).
    KillNatsLeading(Asset),
    /// SIGSTOP the NATS node leading the command stream for this long, then
    /// SIGCONT: a frozen, unreachable node.
    FreezeNats(Duration),
    KillGateway,
    KillTicker,
    KillStore,
    RestartPostgres,
    /// Every NATS node (lame duck), gateway and ticker (SIGTERM), one at a time.
    RollingRestart,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asset {
    Leases,
    SessionState,
    Commands,
}

impl Fault {
    pub fn name(self) -> String {
        match self {
            Fault::KillNatsLeading(a) => format!("kill -9 the NATS node leading {}", a.name()),
            Fault::FreezeNats(d) => format!(
                "SIGSTOP the NATS node leading the command stream for {} s",
                d.as_secs()
            ),
            Fault::KillGateway => "kill -9 a gateway".into(),
            Fault::KillTicker => "kill -9 a ticker".into(),
            Fault::KillStore => "kill -9 the store".into(),
            Fault::RestartPostgres => "restart PostgreSQL".into(),
            Fault::RollingRestart => "rolling restart (NATS lame duck, gateways, tickers)".into(),
        }
    }

    /// Parses the names `bandsync-chaos --faults` takes.
    pub fn parse(s: &str) -> anyhow::Result<Fault> {
        Ok(match s {
            "nats-leases" => Fault::KillNatsLeading(Asset::Leases),
            "nats-sessions" => Fault::KillNatsLeading(Asset::SessionState),
            "nats-commands" => Fault::KillNatsLeading(Asset::Commands),
            "nats-freeze" => Fault::FreezeNats(Duration::from_secs(10)),
            "gateway" => Fault::KillGateway,
            "ticker" => Fault::KillTicker,
            "store" => Fault::KillStore,
            "postgres" => Fault::RestartPostgres,
            "rolling" => Fault::RollingRestart,
            other => anyhow::bail!(
                "unknown fault {other:?}: nats-leases, nats-sessions, nats-commands, nats-freeze, gateway, ticker, store, postgres, rolling"
            ),
        })
    }

    pub const ALL: &'static str =
        "nats-leases,nats-sessions,nats-commands,nats-freeze,gateway,ticker,store,postgres,rolling";
}

impl Asset {
    fn name(self) -> &'static str {
        match self {
            Asset::Leases => "the leases bucket",
            Asset::SessionState => "the session-state bucket",
            Asset::Commands => "the command stream",
        }
    }
}

/// How long to watch after a fault, and how long to let things settle after.
pub struct Timing {
    pub window: Duration,
    pub settle: Duration,
}

/// Runs `fault` against a running stack with bands recording; returns the
/// report once the window and the settling time have passed.
pub async fn inject(
    stack: &mut Stack,
    gateways: &[String],
    bands: &band::BandSpec,
    fault: Fault,
    timing: &Timing,
) -> anyhow::Result<FaultReport> {
    let recording = band::start(gateways, bands).await?;
    // Steady play before the fault, so the first gap measured is the fault's.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let fault_at = Instant::now();
    let mut notes = Vec::new();
    let recover = act(stack, fault, &mut notes).await?;
    let until = fault_at + timing.window;
    tokio::time::sleep_until(until).await;
    recover.run(stack).await?;
    tokio::time::sleep(timing.settle).await;
    let logs = recording.finish().await;
    let mut report = report::analyse(&fault.name(), &logs, fault_at, until);
    report.notes.splice(0..0, notes);
    if let (Some(db), Some(_)) = (&stack.database_url, &stack.store) {
        let (missing, doubled) = rows_check(stack, db).await?;
        report.rows_missing = Some(missing);
        report.rows_doubled = Some(doubled);
    }
    Ok(report)
}

/// What to undo after the window (a killed process comes back for the next fault).
enum Recover {
    Nothing,
    Restart(String),
}

impl Recover {
    async fn run(self, stack: &mut Stack) -> anyhow::Result<()> {
        match self {
            Recover::Nothing => Ok(()),
            Recover::Restart(name) => stack.restart(&name).await,
        }
    }
}

async fn act(stack: &mut Stack, fault: Fault, notes: &mut Vec<String>) -> anyhow::Result<Recover> {
    let first = |stack: &Stack, role| {
        stack
            .names(role)
            .into_iter()
            .next()
            .with_context(|| format!("no {role:?} in this stack"))
    };
    Ok(match fault {
        Fault::KillNatsLeading(asset) => {
            let node = leader_of(stack, asset).await?;
            notes.push(format!("{node} led {}", asset.name()));
            stack.kill(&node).await?;
            Recover::Restart(node)
        }
        Fault::FreezeNats(d) => {
            // The worst node to freeze for commands: their stream's leader.
            let node = leader_of(stack, Asset::Commands).await?;
            notes.push(format!("{node} led {}", Asset::Commands.name()));
            stack.signal(&node, Signal::Stop).await?;
            tokio::time::sleep(d).await;
            stack.signal(&node, Signal::Cont).await?;
            Recover::Nothing
        }
        Fault::KillGateway => kill(stack, first(stack, Role::Gateway)?).await?,
        Fault::KillTicker => kill(stack, first(stack, Role::Ticker)?).await?,
        Fault::KillStore => kill(stack, first(stack, Role::Store)?).await?,
        Fault::RestartPostgres => {
            let pg = first(stack, Role::Postgres)?;
            // A real restart: fast shutdown (rolls back, closes every connection).
            stack.signal(&pg, Signal::Int).await?;
            stack.wait_exit(&pg, Duration::from_secs(30)).await?;
            stack.restart(&pg).await?;
            Recover::Nothing
        }
        Fault::RollingRestart => {
            for node in stack.names(Role::Nats) {
                stack.signal(&node, Signal::Usr2).await?;
                let waited = Duration::from_secs(crate::topology::LAME_DUCK_DURATION_SECS + 15);
                stack.wait_exit(&node, waited).await?;
                stack.restart(&node).await?;
                stack.wait_nats_healthy().await?;
            }
            for name in stack
                .names(Role::Gateway)
                .into_iter()
                .chain(stack.names(Role::Ticker))
            {
                stack.signal(&name, Signal::Term).await?;
                stack.wait_exit(&name, Duration::from_secs(15)).await?;
                stack.restart(&name).await?;
            }
            Recover::Nothing
        }
    })
}

async fn kill(stack: &mut Stack, name: String) -> anyhow::Result<Recover> {
    stack.kill(&name).await?;
    Ok(Recover::Restart(name))
}

/// The NATS node (server name = process name) leading a stream or bucket now.
pub async fn leader_of(stack: &Stack, asset: Asset) -> anyhow::Result<String> {
    let client = stack.admin_client().await?;
    let js = async_nats::jetstream::new(client);
    let subjects = Subjects::new(bandsync_nats::subjects::DEFAULT_PREFIX)?;
    let stream_name = match asset {
        Asset::Commands => subjects.cmd_stream(),
        Asset::Leases => {
            js.get_key_value(subjects.leases_bucket())
                .await?
                .stream_name
        }
        Asset::SessionState => {
            js.get_key_value(subjects.sessions_bucket())
                .await?
                .stream_name
        }
    };
    let mut stream = js.get_stream(&stream_name).await?;
    let info = stream.info().await?;
    info.cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .with_context(|| format!("{stream_name} has no leader now"))
}

/// Rows the event and command streams hold that PostgreSQL lacks (neither a row
/// nor a dead letter), and events stored twice under different stream sequences.
/// Waits up to 30 s for the store to catch up before calling a row missing.
async fn rows_check(stack: &Stack, database_url: &str) -> anyhow::Result<(i64, i64)> {
    let client = stack.admin_client().await?;
    let js = async_nats::jetstream::new(client);
    let subjects = Subjects::new(bandsync_nats::subjects::DEFAULT_PREFIX)?;
    let (db, conn) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
        .await
        .context("connecting to the stack's PostgreSQL")?;
    tokio::spawn(conn);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut missing = 0i64;
        for stream in [subjects.cmd_stream(), subjects.evt_stream()] {
            let info = js.get_stream(&stream).await?.info().await?.clone();
            let in_stream = i64::try_from(info.state.messages)?;
            let stored: i64 = db
                .query_one(
                    "SELECT (SELECT count(*) FROM events WHERE stream = $1)
                          + (SELECT count(*) FROM commands WHERE stream = $1)
                          + (SELECT count(*) FROM dead_letters WHERE stream = $1)",
                    &[&stream],
                )
                .await?
                .get(0);
            missing += in_stream - stored;
        }
        let doubled: i64 = db
            .query_one(
                "SELECT count(*) - count(DISTINCT (session_id, seq)) FROM events WHERE kind = 'event'",
                &[],
            )
            .await?
            .get(0);
        if missing == 0 || Instant::now() > deadline {
            return Ok((missing, doubled));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
