//! Shared helpers: a fresh database per test, a scripted band session driven
//! through the real state machine, publishing onto the real streams, and a
//! store started in-process or as a child process.

use async_nats::HeaderMap;
use async_nats::jetstream;
use bandsync_nats::bus::{Bus, BusSettings};
use bandsync_nats::state::Rules;
use bandsync_nats::{
    Command, CommandEnvelope, CommandId, DisplayName, ErrorMsg, EventMsg, GatewayId, JoinCode,
    MemberId, Micros, ServerMsg, SessionId, SessionState, Subjects,
};
use bandsync_store::{Config, Store};
use bandsync_testkit::{NatsServer, Role};
use bytes::Bytes;
use std::time::Duration;
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

pub const PREFIX: &str = "bandsync";

/// Server address of the shared PostgreSQL, without a database name.
pub fn pg_base() -> String {
    std::env::var("BANDSYNC_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A database created for one test and dropped (with its connections) at the end.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    /// Only names the database: the store creates it, as it would in production.
    pub fn fresh() -> Self {
        Self {
            name: format!("bandsync_test_{:016x}", rand::random::<u64>()),
        }
    }

    pub fn url(&self) -> String {
        format!("{}/{}", pg_base(), self.name)
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url(), NoTls)
            .await
            .expect("connecting to the test database");
        tokio::spawn(conn);
        client
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.client()
            .await
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async code; a thread with its own runtime does the SQL.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let Ok((client, conn)) =
                    tokio_postgres::connect(&format!("{}/postgres", pg_base()), NoTls).await
                else {
                    return;
                };
                tokio::spawn(conn);
                let _ = client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await;
            });
        })
        .join();
    }
}

pub fn subjects() -> Subjects {
    Subjects::new(PREFIX).expect("valid prefix")
}

/// The test's own connection, as the operator: it publishes commands and
/// events as gateways and tickers would.
pub async fn bus(nats: &NatsServer) -> Bus {
    let settings: BusSettings = nats
        .bus_args(Role::Admin)
        .settings("store-test".into())
        .expect("settings");
    Bus::open(&settings, subjects())
        .await
        .expect("opening the bus")
}

/// Starts a store in this process on a free port.
pub async fn start_store(nats: &NatsServer, db_url: &str) -> (Store, CancellationToken) {
    start_store_with(nats, db_url, |_| {}).await
}

/// The analyst token every test store accepts.
pub const ANALYST: &str = "analyst-token-for-the-tests";

/// `GET url` as the tests' analyst.
pub async fn analyst_get(url: &str) -> bandsync_testkit::Response {
    let bearer = format!("Bearer {ANALYST}");
    bandsync_testkit::http_get_with(url, &[("Authorization", &bearer)])
        .await
        .expect("GET")
}

/// Starts a store in this process on a free port, its settings changed by `tweak`.
/// The store logs in as its own NATS user, which may not create the streams:
/// they are declared first, as a ticker would.
pub async fn start_store_with(
    nats: &NatsServer,
    db_url: &str,
    tweak: impl FnOnce(&mut Config),
) -> (Store, CancellationToken) {
    nats.bus_args(Role::Ticker)
        .open("ticker".into())
        .await
        .expect("a ticker declares the streams");
    let token = CancellationToken::new();
    let mut config = Config::new(&nats.url(), db_url, "127.0.0.1:0".parse().expect("addr"));
    config.bus = nats.bus_args(Role::Store);
    config.analyst_tokens = vec![ANALYST.into()];
    tweak(&mut config);
    let store = Store::start(config, token.clone())
        .await
        .expect("store starts");
    (store, token)
}

/// Publishes raw bytes to a stream subject and waits for JetStream's ack.
pub async fn publish_raw(js: &jetstream::Context, subject: String, payload: Bytes) -> u64 {
    js.publish(subject, payload)
        .await
        .expect("publish")
        .await
        .expect("stream ack")
        .sequence
}

/// Publishes many messages with at most `window` acks outstanding: fast and ordered.
pub async fn publish_all(
    js: &jetstream::Context,
    msgs: impl IntoIterator<Item = (String, Option<String>, Bytes)>,
) {
    const WINDOW: usize = 512;
    let mut inflight = Vec::with_capacity(WINDOW);
    for (subject, id, payload) in msgs {
        let mut headers = HeaderMap::new();
        if let Some(id) = id {
            headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
        }
        inflight.push(
            js.publish_with_headers(subject, headers, payload)
                .await
                .expect("publish"),
        );
        if inflight.len() >= WINDOW {
            for ack in inflight.drain(..) {
                ack.await.expect("stream ack");
            }
        }
    }
    for ack in inflight {
        ack.await.expect("stream ack");
    }
}

/// An event message with its state's timeline segments replaced by `edit`:
/// what a buggy owner, or a hand-made message, could put on the bus.
pub fn with_segments(event: &Bytes, edit: impl FnOnce(&mut serde_json::Value)) -> Bytes {
    let mut v: serde_json::Value = serde_json::from_slice(event).expect("an event is JSON");
    edit(&mut v["state"]["timeline"]["segments"]);
    Bytes::from(serde_json::to_vec(&v).expect("serialises"))
}

/// The durable consumer's messages not yet acked: (pending, ack pending).
pub async fn consumer_backlog(js: &jetstream::Context, stream: &str) -> (u64, usize) {
    let info = js
        .get_stream(stream)
        .await
        .expect("stream")
        .consumer_info("store")
        .await
        .expect("consumer info");
    (info.num_pending, info.num_ack_pending)
}

/// What one step of a scripted session put on the bus.
pub struct Step {
    pub at: Micros,
    pub command: Option<(String, Bytes)>,
    /// The event or rejection the owner published, with its subject.
    pub outcome: (String, Bytes),
    /// The owner's state after the step (unchanged by a rejection).
    pub state: SessionState,
}

/// A band session driven through the real state machine, as a ticker would.
pub struct Band {
    pub id: SessionId,
    pub state: SessionState,
    pub epoch: u64,
    pub rules: Rules,
    pub steps: Vec<Step>,
    next_cmd: u64,
    subjects: Subjects,
}

pub fn member(id: &str) -> MemberId {
    MemberId::parse(id).expect("valid member")
}

impl Band {
    /// A session created at `t0` by `leader`.
    pub fn create(id: &str, leader: &str, t0: Micros) -> Self {
        let sid = SessionId::parse(id).expect("valid session");
        let code = JoinCode::parse("K7MQ2X").expect("valid code");
        let state = SessionState::create(
            sid.clone(),
            code,
            member(leader),
            DisplayName::parse(leader).expect("name"),
            t0,
        );
        let subjects = subjects();
        let event = ServerMsg::Event(Box::new(EventMsg::latest(&state, 1))).to_bytes();
        let steps = vec![Step {
            at: t0,
            command: None,
            outcome: (subjects.evt(&sid), event),
            state: state.clone(),
        }];
        Self {
            id: sid,
            state,
            epoch: 1,
            rules: Rules::default(),
            steps,
            next_cmd: 0,
            subjects,
        }
    }

    /// `actor` sends `command` at `now`; the owner applies it and publishes the outcome.
    pub fn send(&mut self, actor: &str, command: Command, now: Micros) -> &mut Self {
        self.next_cmd += 1;
        let cmd_id =
            CommandId::parse(format!("{}-c{}", self.id, self.next_cmd)).expect("valid cmd id");
        let env = CommandEnvelope {
            id: cmd_id.clone(),
            session: self.id.clone(),
            actor: member(actor),
            gateway: GatewayId::parse("g1").expect("valid gateway"),
            client_ref: None,
            sent_at: now,
            command: command.clone(),
        };
        let cmd_bytes = Bytes::from(serde_json::to_vec(&env).expect("serialises"));
        let shard = bandsync_nats::shard_of(&self.id, bandsync_nats::shard::DEFAULT_SHARDS);
        let cmd_subject = self.subjects.cmd(shard, &self.id);
        let outcome =
            match self
                .state
                .apply(&command, &member(actor), Some(&cmd_id), now, &self.rules)
            {
                Ok(_) => ServerMsg::Event(Box::new(EventMsg::latest(&self.state, self.epoch))),
                Err(rejection) => {
                    let mut err = ErrorMsg::new(rejection.code, rejection.message, None);
                    err.session = Some(self.id.clone());
                    err.to = Some(member(actor));
                    err.cmd = Some(cmd_id);
                    err.epoch = Some(self.epoch);
                    ServerMsg::Error(err)
                }
            };
        self.steps.push(Step {
            at: now,
            command: Some((cmd_subject, cmd_bytes)),
            outcome: (self.subjects.evt(&self.id), outcome.to_bytes()),
            state: self.state.clone(),
        });
        self
    }

    pub fn hello(&mut self, who: &str, now: Micros) -> &mut Self {
        let name = DisplayName::parse(who).expect("name");
        self.send(
            who,
            Command::Hello {
                name,
                conn: bandsync_nats::ConnId::parse(format!("g1-{who}/1")).expect("conn"),
            },
            now,
        )
    }

    /// Event stream messages (subject, msg id, bytes) in order.
    pub fn events(&self) -> Vec<(String, Option<String>, Bytes)> {
        self.steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (
                    s.outcome.0.clone(),
                    Some(format!("{}-e{i}", self.id)),
                    s.outcome.1.clone(),
                )
            })
            .collect()
    }

    /// Command stream messages (subject, msg id, bytes) in order.
    pub fn commands(&self) -> Vec<(String, Option<String>, Bytes)> {
        self.steps
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                s.command
                    .clone()
                    .map(|(subj, b)| (subj, Some(format!("{}-k{i}", self.id)), b))
            })
            .collect()
    }
}

/// A rehearsal: two songs, tempo changes, a rejected command, pause and seek.
pub fn rehearsal(id: &str, t0: Micros) -> Band {
    use bandsync_nats::Song;
    let s = 1_000_000;
    let song = |title: &str, bpm: f64| Song {
        title: title.into(),
        tempo_bpm: Some(bpm),
        beats_per_bar: Some(4),
        beat_unit: None,
        chart: String::new(),
    };
    let mut band = Band::create(id, "ana", t0);
    band.hello("ana", t0 + s)
        .hello("bo", t0 + 2 * s)
        .hello("cy", t0 + 3 * s)
        .send(
            "ana",
            Command::Setlist {
                songs: vec![song("Blue Train", 140.0), song("So What", 136.0)],
            },
            t0 + 4 * s,
        )
        .send("ana", Command::Song { index: 0 }, t0 + 5 * s)
        .send("ana", Command::Play { count_in_bars: 1 }, t0 + 6 * s)
        .send("bo", Command::Tempo { bpm: 100.0 }, t0 + 20 * s) // not the leader: rejected
        .send("ana", Command::Tempo { bpm: 150.0 }, t0 + 30 * s)
        .send("ana", Command::Pause, t0 + 60 * s)
        .send(
            "ana",
            Command::HandLeadership { to: member("bo") },
            t0 + 61 * s,
        )
        .send("bo", Command::Song { index: 1 }, t0 + 62 * s)
        .send("bo", Command::Seek { beat: 16.0 }, t0 + 63 * s)
        .send("bo", Command::Play { count_in_bars: 0 }, t0 + 64 * s)
        .send(
            "bo",
            Command::Meter {
                beats_per_bar: 3,
                beat_unit: 4,
            },
            t0 + 90 * s,
        )
        .send("bo", Command::Stop, t0 + 120 * s);
    band
}

/// `sessions × per_session` events from the real state machine (tempo changes
/// by each session's leader), interleaved across sessions as a busy bus would be.
pub fn bulk_events(
    tag: &str,
    sessions: usize,
    per_session: usize,
) -> Vec<(String, Option<String>, Bytes)> {
    let subjects = subjects();
    let rules = Rules::default();
    let t0 = bandsync_nats::now_us();
    let ana = member("ana");
    let mut states: Vec<SessionState> = (0..sessions)
        .map(|i| {
            let id = SessionId::parse(format!("{tag}{i}")).expect("valid id");
            SessionState::create(
                id,
                JoinCode::parse("K7MQ2X").expect("code"),
                ana.clone(),
                DisplayName::parse("Ana").expect("name"),
                t0,
            )
        })
        .collect();
    let mut out = Vec::with_capacity(sessions * per_session);
    for round in 0..per_session {
        for state in &mut states {
            if round > 0 {
                let bpm = 60.0 + (round % 120) as f64;
                let now = t0 + (round as i64) * 1_000;
                state
                    .apply(&Command::Tempo { bpm }, &ana, None, now, &rules)
                    .expect("leader may set the tempo");
            }
            let msg = ServerMsg::Event(Box::new(EventMsg::latest(state, 1))).to_bytes();
            out.push((
                subjects.evt(&state.id),
                Some(bandsync_nats::Subjects::event_msg_id(&state.id, state.seq)),
                msg,
            ));
        }
    }
    out
}

/// One series of a store's `/metrics`; an absent series or an unreachable
/// endpoint fails the test (never a 0).
pub async fn store_metric(store: &Store, series: &str) -> f64 {
    let url = format!("http://{}/metrics", store.addr());
    bandsync_testkit::scrape_metric(&url, series)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Nothing of the events stream dead-lettered, and its backlog drained, as the
/// store's own metrics say.
pub async fn assert_events_clean(store: &Store) {
    let dead = store_metric(
        store,
        r#"bandsync_store_dead_letters_total{stream="events"}"#,
    )
    .await;
    assert_eq!(dead, 0.0, "no event dead-lettered");
    bandsync_testkit::eventually(
        Duration::from_secs(10),
        "the backlog read as empty",
        || async {
            store_metric(store, r#"bandsync_store_pending_messages{stream="events"}"#).await == 0.0
        },
    )
    .await;
}
