//! Acceptance 4: a garbage message lands in dead_letters with its reason, and
//! the messages after it are stored; so does an event whose state the store
//! cannot use (an invalid timeline, a bar count no column holds), and the good
//! events batched with it are written.

use crate::support::*;
use bandsync_nats::now_us;
use bandsync_testkit::{NatsServer, eventually, http_get, metric, scrape_metric};
use bytes::Bytes;
use std::time::Duration;

#[tokio::test]
async fn garbage_goes_to_dead_letters_and_the_pipeline_goes_on() {
    let nats = NatsServer::start().await;
    let db = TestDb::fresh();
    let bus = bus(&nats).await;
    let (store, token) = start_store(&nats, &db.url()).await;

    let band = rehearsal("dl1", now_us());
    let events = band.events();
    let (first, later) = events.split_at(3);
    publish_all(&bus.js, first.to_vec()).await;
    let garbage_evt = publish_raw(
        &bus.js,
        "bandsync.sess.dl1.evt".into(),
        Bytes::from_static(b"\xff\xfe not json"),
    )
    .await;
    let garbage_cmd = publish_raw(
        &bus.js,
        "bandsync.cmd.3.dl1".into(),
        Bytes::from_static(b"{\"type\":\"tempo\"}"),
    )
    .await;
    // Valid JSON, wrong session for its subject.
    let (_, _, bytes) = events[0].clone();
    let misrouted = publish_raw(&bus.js, "bandsync.sess.other.evt".into(), bytes).await;
    publish_all(&bus.js, later.to_vec()).await;
    publish_all(&bus.js, band.commands()).await;

    let expected = events.len() as i64;
    eventually(Duration::from_secs(20), "later events stored", || async {
        db.count("SELECT count(*) FROM events").await == expected
            && db.count("SELECT count(*) FROM dead_letters").await == 3
            && db.count("SELECT count(*) FROM commands").await == band.commands().len() as i64
    })
    .await;

    let client = db.client().await;
    let rows = client
        .query("SELECT stream, stream_seq, subject, reason, payload FROM dead_letters ORDER BY stream, stream_seq", &[])
        .await
        .expect("dead letters");
    let got: Vec<(String, i64, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        [
            (
                "BANDSYNC_CMD".to_owned(),
                garbage_cmd as i64,
                "bandsync.cmd.3.dl1".to_owned()
            ),
            (
                "BANDSYNC_EVT".to_owned(),
                garbage_evt as i64,
                "bandsync.sess.dl1.evt".to_owned()
            ),
            (
                "BANDSYNC_EVT".to_owned(),
                misrouted as i64,
                "bandsync.sess.other.evt".to_owned()
            ),
        ]
    );
    let reasons: Vec<String> = rows.iter().map(|r| r.get(3)).collect();
    assert!(reasons[0].contains("not a command envelope"), "{reasons:?}");
    assert!(reasons[1].contains("not an event"), "{reasons:?}");
    assert!(reasons[2].contains("names session other"), "{reasons:?}");
    assert_eq!(
        rows[1].get::<_, Vec<u8>>(4),
        b"\xff\xfe not json",
        "the payload is kept byte for byte"
    );
    let metrics = store.metrics().render();
    let read = |series: &str| metric(&metrics, series).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        read("bandsync_store_dead_letters_total{stream=\"events\"}"),
        2.0
    );
    assert_eq!(
        read("bandsync_store_dead_letters_total{stream=\"commands\"}"),
        1.0
    );

    token.cancel();
    store.wait().await;
}

/// A message JSON accepts but PostgreSQL's jsonb refuses (a NUL character) is
/// isolated from its batch and dead-lettered; its neighbours are stored.
#[tokio::test]
async fn a_row_postgres_refuses_is_isolated() {
    let nats = NatsServer::start().await;
    let db = TestDb::fresh();
    let bus = bus(&nats).await;
    let mut band = Band::create("nul1", "ana", now_us());
    let chart = "intro\u{0}verse".to_owned();
    let song = bandsync_nats::Song {
        title: "Nul".into(),
        tempo_bpm: None,
        beats_per_bar: None,
        beat_unit: None,
        chart,
    };
    band.hello("ana", now_us());
    // The state machine refuses such a chart; this owner slipped it in anyway, as
    // a new setlist riding on each of two tempo changes.
    for bpm in [99.0, 98.0] {
        band.state.setlist = vec![song.clone()];
        band.state.setlist_rev = band.state.seq + 1;
        band.send("ana", bandsync_nats::Command::Tempo { bpm }, now_us());
    }
    // Both events carry the chart in their setlist: the decoder refuses them.
    publish_all(&bus.js, band.events()).await;
    // A rejection whose text PostgreSQL's jsonb refuses: the batch is split and only
    // that row goes to the dead letters.
    let mut err =
        bandsync_nats::ErrorMsg::new(bandsync_nats::ErrorCode::Invalid, "bad\u{0}text", None);
    err.session = Some(bandsync_nats::SessionId::parse("nul1").expect("valid"));
    let refused = bandsync_nats::ServerMsg::Error(err).to_bytes();
    publish_raw(&bus.js, "bandsync.sess.nul1.evt".into(), refused).await;
    let (store, token) = start_store(&nats, &db.url()).await;
    eventually(
        Duration::from_secs(20),
        "events and dead letters",
        || async {
            db.count("SELECT count(*) FROM events").await == 2
                && db.count("SELECT count(*) FROM dead_letters").await == 3
        },
    )
    .await;
    let reasons: Vec<String> = db
        .client()
        .await
        .query("SELECT reason FROM dead_letters ORDER BY stream_seq", &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        reasons[..2].iter().all(|r| r.contains("NUL character")),
        "{reasons:?}"
    );
    assert!(reasons[2].contains("refused by PostgreSQL"), "{reasons:?}");
    token.cancel();
    store.wait().await;
}

/// Issue 10: an event whose timeline has no segments panicked a store worker on
/// every redelivery, and the good events batched with it never reached
/// PostgreSQL while `/readyz` said 200 and the pending gauge 0. Now each event
/// the store cannot use is a dead letter with its reason, the rest is written,
/// and nothing stays pending.
#[tokio::test]
async fn poison_timelines_are_dead_letters_and_their_batch_is_written() {
    let nats = NatsServer::start().await;
    let db = TestDb::fresh();
    let bus = bus(&nats).await;
    let band = rehearsal("px1", now_us());
    let events = band.events();
    let (subject, _, template) = events[3].clone();
    let poison = [
        // The one seen live: no segments at all.
        with_segments(&template, |s| *s = serde_json::json!([])),
        // Two segments out of order.
        with_segments(&template, |s| {
            let mut later = s[0].clone();
            later["anchor_time"] = (s[0]["anchor_time"].as_i64().expect("time") - 1).into();
            s.as_array_mut().expect("segments").push(later);
        }),
        // A meter the bar arithmetic divides by.
        with_segments(&template, |s| s[0]["beats_per_bar"] = 0.into()),
        // Valid, but its bar count overflows the sessions table's bigint.
        with_segments(&template, |s| {
            s[0]["bar_origin_number"] = i64::MAX.into();
            s[0]["anchor_beat"] = 8.0.into();
        }),
    ];
    // All of it on the stream before the store starts: one batch, poison in the middle.
    let (first, later) = events.split_at(3);
    publish_all(&bus.js, first.to_vec()).await;
    let mut poison_seqs = Vec::new();
    for p in &poison {
        poison_seqs.push(publish_raw(&bus.js, subject.clone(), p.clone()).await as i64);
    }
    publish_all(&bus.js, later.to_vec()).await;
    publish_all(&bus.js, band.commands()).await;

    let (store, token) = start_store(&nats, &db.url()).await;
    let good = events.len() as i64;
    eventually(
        Duration::from_secs(20),
        "good events and poison stored",
        || async {
            db.count("SELECT count(*) FROM events").await == good
                && db.count("SELECT count(*) FROM dead_letters").await == poison.len() as i64
                && db.count("SELECT count(*) FROM commands").await == band.commands().len() as i64
        },
    )
    .await;
    // The summary of the good events is there: the session's last state.
    assert_eq!(
        db.count("SELECT last_seq FROM sessions WHERE session_id = 'px1'")
            .await,
        band.state.seq as i64
    );
    let rows = db
        .client()
        .await
        .query(
            "SELECT stream_seq, reason FROM dead_letters WHERE stream = 'BANDSYNC_EVT' ORDER BY stream_seq",
            &[],
        )
        .await
        .expect("dead letters");
    let got: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), poison_seqs);
    let expected = [
        "bad event state: invalid timeline: it has no segments",
        "bad event state: invalid timeline: segment 1 starts at",
        "bad event state: invalid timeline: segment 0: beats_per_bar 0 is outside 1..=32",
        "cannot summarise the event: the bar containing beat 8 is not a number a bigint column holds",
    ];
    for ((_, reason), want) in got.iter().zip(expected) {
        assert!(reason.contains(want), "{reason:?} should say {want:?}");
    }

    // Nothing left pending, on the server or in the store's own figures.
    let addr = store.addr();
    eventually(Duration::from_secs(10), "nothing pending", || async {
        consumer_backlog(&bus.js, "BANDSYNC_EVT").await == (0, 0)
            && scrape_metric(
                &format!("http://{addr}/metrics"),
                "bandsync_store_pending_messages{stream=\"events\"}",
            )
            .await
            .is_ok_and(|v| v == 0.0)
    })
    .await;
    let ready = http_get(&format!("http://{addr}/readyz"))
        .await
        .expect("GET /readyz");
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert!(ready.body.contains("ingest events: ok"), "{}", ready.body);
    let metrics = store.metrics().render();
    let read = |series: &str| metric(&metrics, series).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        read("bandsync_store_dead_letters_total{stream=\"events\"}"),
        4.0
    );
    assert_eq!(
        read("bandsync_store_rows_inserted_total{stream=\"events\"}"),
        good as f64
    );
    assert_eq!(
        read("bandsync_store_ingest_restarts_total{stream=\"events\"}"),
        0.0
    );

    token.cancel();
    store.wait().await;
}

/// A new owner re-publishes a session's latest event; past the stream's
/// duplicate window the stream stores it again. The log keeps each event once,
/// and the copy is a dead letter naming why, so every stream message is
/// accounted for (stream messages = rows + dead letters).
#[tokio::test]
async fn a_re_published_event_is_stored_once() {
    let nats = NatsServer::start().await;
    let db = TestDb::fresh();
    let bus = bus(&nats).await;
    let band = rehearsal("dup1", now_us());
    let events = band.events();
    publish_all(&bus.js, events.clone()).await;
    // The latest event again, as a new message (no msg id: outside the window).
    let (subject, _, bytes) = events.last().expect("events").clone();
    let copy = publish_raw(&bus.js, subject, bytes).await;
    // And the first one, in the same batch as nothing else.
    let (subject, _, bytes) = events[0].clone();
    publish_raw(&bus.js, subject, bytes).await;
    let (store, token) = start_store(&nats, &db.url()).await;

    let expected = events.len() as i64;
    eventually(
        Duration::from_secs(20),
        "events and their copies",
        || async {
            db.count("SELECT count(*) FROM events").await == expected
                && db.count("SELECT count(*) FROM dead_letters").await == 2
        },
    )
    .await;
    assert_eq!(
        db.count(
            "SELECT count(*) - count(DISTINCT (session_id, seq)) FROM events WHERE kind = 'event'"
        )
        .await,
        0,
        "no event twice"
    );
    let client = db.client().await;
    let row = client
        .query_one(
            "SELECT reason FROM dead_letters WHERE stream_seq = $1",
            &[&(copy as i64)],
        )
        .await
        .expect("the copy is a dead letter");
    let reason: String = row.get(0);
    assert!(
        reason.starts_with("duplicate: event") && reason.contains("session dup1"),
        "{reason}"
    );
    let mut stream = bus
        .js
        .get_stream("BANDSYNC_EVT")
        .await
        .expect("events stream");
    let in_stream = stream.info().await.expect("info").state.messages as i64;
    assert_eq!(
        in_stream,
        db.count("SELECT count(*) FROM events").await
            + db.count("SELECT count(*) FROM dead_letters").await,
        "every stream message is a row or a dead letter"
    );

    token.cancel();
    store.wait().await;
}
