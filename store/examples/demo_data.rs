//! Fills a database with two scripted band sessions, as a ticker would have
//! published them, and keeps the store serving its API until Ctrl-C or SIGTERM
//! (which also stop its nats-server). Used to
//! produce the real outputs in docs/analytics.md.
//!
//!     cargo run -p bandsync-store --example demo_data [-- DATABASE_URL]

use bandsync_nats::bus::Bus;
use bandsync_nats::state::Rules;
use bandsync_nats::{
    Command, CommandEnvelope, CommandId, DisplayName, ErrorMsg, EventMsg, GatewayId, JoinCode,
    MemberId, Micros, ServerMsg, SessionId, SessionState, Song, Subjects,
};
use bandsync_store::decode::StreamKind;
use bandsync_store::{Config, Store};
use bandsync_testkit::{NatsServer, Role};
use bytes::Bytes;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const S: Micros = 1_000_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let db_url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/bandsync_demo".into());
    let nats = NatsServer::start().await;
    let subjects = Subjects::new("bandsync")?;
    // As the operator: it publishes what gateways and tickers would.
    let settings = nats.bus_args(Role::Admin).settings("demo".into())?;
    let bus = Bus::open(&settings, subjects.clone()).await?;
    // 2026-11-28 19:00 UTC and 2026-12-01 21:00 UTC.
    let rehearsal_at = 1_795_892_400 * S;
    let gig_at = 1_796_158_800 * S;
    let mut published = 0;
    for band in [rehearsal(&subjects, rehearsal_at), gig(&subjects, gig_at)] {
        for (subject, id, payload) in band.out {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
            bus.js
                .publish_with_headers(subject, headers, payload)
                .await?
                .await?;
            published += 1;
        }
    }
    bus.js
        .publish(
            "bandsync.sess.rehearsal-1128.evt",
            Bytes::from_static(b"{\"type\":\"event\",\"seq\":\"oops\"}"),
        )
        .await?
        .await?;
    println!("published {published} messages and one garbage event");

    let token = CancellationToken::new();
    let mut config = Config::new(&nats.url(), &db_url, "127.0.0.1:9299".parse()?);
    config.bus = nats.bus_args(Role::Store);
    // The demo's analyst token (docs/analytics.md's examples use it).
    config.analyst_tokens = vec!["demo-analyst-token".into()];
    let store = Store::start(config, token.clone()).await?;
    while store.metrics().rows_inserted(StreamKind::Events)
        + store.metrics().rows_inserted(StreamKind::Commands)
        < published
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "stored; API on http://{} (Ctrl-C or SIGTERM to stop)",
        store.addr()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    token.cancel();
    store.wait().await;
    Ok(())
}

struct Script {
    state: SessionState,
    rules: Rules,
    subjects: Subjects,
    out: Vec<(String, String, Bytes)>,
    n: u64,
}

fn member(id: &str) -> MemberId {
    MemberId::parse(id).expect("valid member id")
}

impl Script {
    fn new(subjects: &Subjects, id: &str, code: &str, leader: &str, name: &str, t: Micros) -> Self {
        let state = SessionState::create(
            SessionId::parse(id).expect("valid"),
            JoinCode::parse(code).expect("valid"),
            member(leader),
            DisplayName::parse(name).expect("valid"),
            t,
        );
        let mut s = Self {
            state,
            rules: Rules::default(),
            subjects: subjects.clone(),
            out: Vec::new(),
            n: 0,
        };
        let ev = ServerMsg::Event(Box::new(EventMsg::latest(&s.state, 1))).to_bytes();
        s.out
            .push((s.subjects.evt(&s.state.id), format!("{id}-e0"), ev));
        s
    }

    fn send(&mut self, actor: &str, command: Command, t: Micros) -> &mut Self {
        self.n += 1;
        let id = &self.state.id;
        let cmd_id = CommandId::parse(format!("{id}-c{}", self.n)).expect("valid");
        let env = CommandEnvelope {
            id: cmd_id.clone(),
            session: id.clone(),
            actor: member(actor),
            gateway: GatewayId::parse("gw-a").expect("valid"),
            client_ref: None,
            sent_at: t - 3_000,
            command: command.clone(),
        };
        let shard = bandsync_nats::shard_of(id, bandsync_nats::shard::DEFAULT_SHARDS);
        let cmd_subject = self.subjects.cmd(shard, id);
        self.out.push((
            cmd_subject,
            cmd_id.to_string(),
            Bytes::from(serde_json::to_vec(&env).expect("serialises")),
        ));
        let evt_subject = self.subjects.evt(id);
        let outcome =
            match self
                .state
                .apply(&command, &member(actor), Some(&cmd_id), t, &self.rules)
            {
                Ok(changes) if changes.is_empty() => return self,
                Ok(_) => ServerMsg::Event(Box::new(EventMsg::latest(&self.state, 1))),
                Err(r) => {
                    let mut e = ErrorMsg::new(r.code, r.message, None);
                    e.session = Some(self.state.id.clone());
                    e.to = Some(member(actor));
                    e.cmd = Some(cmd_id.clone());
                    e.epoch = Some(1);
                    ServerMsg::Error(e)
                }
            };
        self.out
            .push((evt_subject, format!("{cmd_id}-e"), outcome.to_bytes()));
        self
    }

    fn hello(&mut self, who: &str, name: &str, t: Micros) -> &mut Self {
        self.send(
            who,
            Command::Hello {
                name: DisplayName::parse(name).expect("valid"),
                conn: conn_of(who),
            },
            t,
        )
    }

    fn bye(&mut self, who: &str, t: Micros) -> &mut Self {
        self.send(who, Command::Bye { conn: conn_of(who) }, t)
    }
}

fn song(title: &str, bpm: f64, bpb: u8) -> Song {
    Song {
        title: title.into(),
        tempo_bpm: Some(bpm),
        beats_per_bar: Some(bpb),
        beat_unit: None,
        chart: String::new(),
    }
}

fn rehearsal(subjects: &Subjects, t: Micros) -> Script {
    let mut s = Script::new(subjects, "rehearsal-1128", "K7MQ2X", "ana", "Ana", t);
    s.hello("ana", "Ana", t + 20 * S)
        .hello("bo", "Bo", t + 45 * S)
        .hello("cy", "Cy", t + 60 * S)
        .hello("dee", "Dee", t + 90 * S)
        .send(
            "ana",
            Command::Setlist {
                songs: vec![
                    song("Blue Train", 138.0, 4),
                    song("Take Five", 172.0, 5),
                    song("So What", 136.0, 4),
                ],
            },
            t + 120 * S,
        )
        .send("ana", Command::Song { index: 0 }, t + 130 * S)
        .send("ana", Command::Play { count_in_bars: 1 }, t + 140 * S)
        .send("bo", Command::Tempo { bpm: 120.0 }, t + 200 * S)
        .send("ana", Command::Tempo { bpm: 128.0 }, t + 260 * S)
        .send("ana", Command::Pause, t + 400 * S)
        .send("ana", Command::Song { index: 1 }, t + 460 * S)
        .send("ana", Command::Play { count_in_bars: 2 }, t + 470 * S)
        .send("ana", Command::Stop, t + 800 * S)
        .send(
            "ana",
            Command::HandLeadership { to: member("cy") },
            t + 820 * S,
        )
        .send("cy", Command::Song { index: 2 }, t + 840 * S)
        .send("cy", Command::Play { count_in_bars: 1 }, t + 850 * S)
        .send("cy", Command::Tempo { bpm: 140.0 }, t + 1000 * S)
        .send("cy", Command::Pause, t + 1250 * S)
        .bye("dee", t + 1300 * S);
    s
}

fn gig(subjects: &Subjects, t: Micros) -> Script {
    let mut s = Script::new(subjects, "gig-1201", "H4RZ9P", "bo", "Bo", t);
    s.hello("bo", "Bo", t + 10 * S)
        .hello("ana", "Ana", t + 15 * S)
        .hello("eli", "Eli", t + 30 * S)
        .send(
            "bo",
            Command::Setlist {
                songs: vec![song("So What", 132.0, 4), song("Blue Train", 140.0, 4)],
            },
            t + 40 * S,
        )
        .send("bo", Command::Song { index: 0 }, t + 50 * S)
        .send("bo", Command::Play { count_in_bars: 1 }, t + 60 * S)
        .send("eli", Command::Stop, t + 100 * S)
        .send("bo", Command::Song { index: 1 }, t + 400 * S)
        .send("bo", Command::Play { count_in_bars: 1 }, t + 410 * S)
        .bye("bo", t + 500 * S);
    // Bo's phone died: after the grace period leadership passes to the longest-present member.
    let mut later = s.state.clone();
    let changes = later.housekeep(t + 506 * S, &s.rules);
    if !changes.is_empty() {
        s.state = later;
        let ev = ServerMsg::Event(Box::new(EventMsg::latest(&s.state, 1))).to_bytes();
        s.out
            .push((s.subjects.evt(&s.state.id), "gig-1201-grace".into(), ev));
    }
    s.send("ana", Command::Stop, t + 700 * S);
    s
}

/// Each demo member's one connection, on a gateway named after them.
fn conn_of(who: &str) -> bandsync_nats::ConnId {
    bandsync_nats::ConnId::parse(format!("gw-{who}/1")).expect("valid connection id")
}
