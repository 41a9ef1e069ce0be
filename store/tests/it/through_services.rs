//! Acceptance 1: a scripted band session driven through real gateways and a
//! real ticker; PostgreSQL then holds exactly the streams' messages.

use crate::support::{TestDb, start_store};
use async_nats::jetstream::consumer::{DeliverPolicy, push::OrderedConfig};
use bandsync_client::{Api, Connection};
use bandsync_nats::{Command, ServerMsg, Song, Subjects};
use bandsync_testkit::{InProcessStack, Role, StackOptions, eventually};
use futures::StreamExt;
use std::collections::BTreeSet;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// Every stream sequence a stream holds, read back with an ordered consumer.
async fn stream_seqs(client: &async_nats::Client, stream: &str) -> BTreeSet<i64> {
    let js = async_nats::jetstream::new(client.clone());
    let stream = js.get_stream(stream).await.expect("stream exists");
    let last = stream.get_info().await.expect("info").state.last_sequence;
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_subject: client.new_inbox(),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut seqs = BTreeSet::new();
    while seqs.last().is_none_or(|&s| (s as u64) < last) {
        let msg = tokio::time::timeout(WAIT, messages.next())
            .await
            .expect("stream read")
            .expect("message")
            .expect("ok");
        seqs.insert(msg.info().expect("info").stream_sequence as i64);
    }
    seqs
}

async fn table_seqs(db: &TestDb, table: &str) -> (i64, BTreeSet<i64>) {
    let rows = db
        .client()
        .await
        .query(&format!("SELECT stream_seq FROM {table}"), &[])
        .await
        .expect("query");
    let seqs: BTreeSet<i64> = rows.iter().map(|r| r.get(0)).collect();
    (rows.len() as i64, seqs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_band_session_through_gateways_and_ticker_is_stored_exactly_once() {
    let stack = InProcessStack::start(StackOptions {
        shards: 8,
        gateway_ids: &["gw-a", "gw-b"],
        token_secret: "store-test-secret-0123456789",
        ..StackOptions::default()
    })
    .await;
    let (nats, bases) = (&stack.nats, &stack.bases);
    let db = TestDb::fresh();
    let (_store, store_stop) = start_store(nats, &db.url()).await;

    // The rehearsal: a leader on gateway A, two followers on B.
    let lead = Api::new(&bases[0]).create("Lead").await.expect("create");
    let mut leader = Connection::connect(&bases[0], &lead.token)
        .await
        .expect("leader connects");
    let mut followers = Vec::new();
    for name in ["Bass", "Keys"] {
        let joined = Api::new(&bases[1])
            .join(lead.code.as_str(), name)
            .await
            .expect("join");
        followers.push(
            Connection::connect(&bases[1], &joined.token)
                .await
                .expect("follower connects"),
        );
    }
    let song = |title: &str, bpm: f64| Song {
        title: title.into(),
        tempo_bpm: Some(bpm),
        beats_per_bar: Some(4),
        beat_unit: None,
        chart: "C | F | G | C".into(),
    };
    let script = [
        Command::Setlist {
            songs: vec![song("Opener", 120.0), song("Ballad", 72.0)],
        },
        Command::Song { index: 0 },
        Command::Play { count_in_bars: 1 },
        Command::Tempo { bpm: 126.0 },
        Command::Pause,
        Command::Song { index: 1 },
        Command::Play { count_in_bars: 0 },
        Command::Cue {
            text: "last chorus".into(),
        },
        Command::Message {
            text: "one more?".into(),
        },
        Command::Stop,
    ];
    for command in &script {
        leader.send(command, None).await.expect("send");
        let kind = command.kind();
        leader
            .wait_for_change(WAIT, kind)
            .await
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
    }
    // A follower's connection report is an event like any other.
    followers[1]
        .send(
            &Command::Report {
                rtt_ms: 42.5,
                clock_error_ms: 1.2,
            },
            None,
        )
        .await
        .expect("send");
    followers[1]
        .wait_for_change(WAIT, "member_quality")
        .await
        .expect("member_quality");
    // A command the owner refuses (a pause while stopped) is stored too. (A
    // follower's leader-only command would not do: its gateway refuses it, and
    // it never reaches the bus.)
    leader.send(&Command::Pause, None).await.expect("send");
    leader
        .wait_for(WAIT, |m| matches!(m, ServerMsg::Error(_)))
        .await
        .expect("rejected");
    for f in followers {
        f.close().await;
    }
    leader.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await; // the last byes reach the streams

    let client = nats.connect(Role::Admin).await;
    let subjects = Subjects::new("bandsync").expect("prefix");
    let cmd_seqs = stream_seqs(&client, &subjects.cmd_stream()).await;
    let evt_seqs = stream_seqs(&client, &subjects.evt_stream()).await;
    assert!(
        cmd_seqs.len() >= script.len() + 3,
        "commands reached the stream: {}",
        cmd_seqs.len()
    );
    assert!(
        evt_seqs.len() >= script.len() + 3,
        "events reached the stream: {}",
        evt_seqs.len()
    );
    eventually(WAIT, "every message stored", || async {
        table_seqs(&db, "commands").await.0 == cmd_seqs.len() as i64
            && table_seqs(&db, "events").await.0 == evt_seqs.len() as i64
    })
    .await;
    let (n, seqs) = table_seqs(&db, "commands").await;
    assert_eq!(
        (n as usize, &seqs),
        (cmd_seqs.len(), &cmd_seqs),
        "commands: same count, same sequence set"
    );
    let (n, seqs) = table_seqs(&db, "events").await;
    assert_eq!(
        (n as usize, &seqs),
        (evt_seqs.len(), &evt_seqs),
        "events: same count, same sequence set"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM events WHERE kind = 'rejected'")
            .await,
        1
    );
    assert_eq!(db.count("SELECT count(*) FROM dead_letters").await, 0);
    // The cue and the message, as docs/analytics.md reads them.
    let texts: Vec<(String, String, String)> = db
        .client()
        .await
        .query(
            "SELECT kind, coalesce(change->>'by', change->>'from'), change->>'text' \
             FROM session_changes WHERE kind IN ('cue', 'message') ORDER BY occurred_at",
            &[],
        )
        .await
        .expect("query")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let by = lead.member.to_string();
    assert_eq!(
        texts,
        [
            ("cue".to_owned(), by.clone(), "last chorus".to_owned()),
            ("message".to_owned(), by, "one more?".to_owned()),
        ]
    );
    assert_eq!(
        db.count("SELECT count(*) FROM session_changes WHERE kind = 'member_quality'")
            .await,
        1
    );
    store_stop.cancel();
}
