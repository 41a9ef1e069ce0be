//! A scripted rehearsal on the bus ends up in the tables, the views and the API.

use crate::support::*;
use bandsync_nats::now_us;
use bandsync_testkit::{NatsServer, eventually, http_get, http_get_with, metric};
use std::time::Duration;

#[tokio::test]
async fn rehearsal_lands_once_and_is_served() {
    let nats = NatsServer::start().await;
    let db = TestDb::fresh();
    let bus = bus(&nats).await;
    let band = rehearsal("reh1", now_us() - 600_000_000);
    publish_all(&bus.js, band.commands()).await;
    publish_all(&bus.js, band.events()).await;
    // The owner re-publishes an event it was unsure about: same bytes, new stream
    // message. The log keeps the event once; the copy is a dead letter.
    let (subject, _, bytes) = band.events().pop().expect("events");
    let copy = publish_raw(&bus.js, subject, bytes).await;
    let n_events = band.events().len() as i64;
    let n_commands = band.commands().len() as i64;

    let (store, token) = start_store(&nats, &db.url()).await;
    eventually(Duration::from_secs(20), "every message stored", || async {
        db.count("SELECT count(*) FROM events").await == n_events
            && db.count("SELECT count(*) FROM commands").await == n_commands
            && db.count("SELECT count(*) FROM dead_letters").await == 1
    })
    .await;

    // Every stream sequence the stream holds is a row or the copy's dead letter, none twice.
    let evt_info = bus
        .js
        .get_stream("BANDSYNC_EVT")
        .await
        .expect("stream")
        .info()
        .await
        .expect("info")
        .state
        .clone();
    assert_eq!(evt_info.messages as i64, n_events + 1);
    assert_eq!(
        db.count("SELECT count(DISTINCT stream_seq) FROM events")
            .await,
        n_events
    );
    assert_eq!(
        db.count("SELECT min(stream_seq) FROM events").await,
        evt_info.first_sequence as i64
    );
    assert_eq!(copy, evt_info.last_sequence, "the copy came last");
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM dead_letters WHERE stream_seq = {copy} AND reason LIKE 'duplicate:%'"
        ))
        .await,
        1
    );
    assert_eq!(
        db.count("SELECT count(*) FROM events WHERE kind = 'rejected'")
            .await,
        1
    );

    let client = db.client().await;
    let row = client
        .query_one(
            "SELECT members, member_names, leaders, songs_played, tempo_changes, rejected_commands,
                    changes_applied, last_song, playing
             FROM session_summary WHERE session_id = 'reh1'",
            &[],
        )
        .await
        .expect("summary row");
    assert_eq!(row.get::<_, i64>(0), 3);
    assert_eq!(row.get::<_, Vec<String>>(1), ["ana", "bo", "cy"]);
    assert_eq!(row.get::<_, Vec<String>>(2), ["ana", "bo"]);
    assert_eq!(row.get::<_, Vec<String>>(3), ["Blue Train", "So What"]);
    assert_eq!(row.get::<_, i64>(4), 1);
    assert_eq!(row.get::<_, i64>(5), 1);
    assert_eq!(row.get::<_, i64>(6), band.state.seq as i64);
    assert_eq!(row.get::<_, Option<String>>(7).as_deref(), Some("So What"));
    assert!(!row.get::<_, bool>(8));
    let bpms: Vec<f64> = client
        .query(
            "SELECT bpm FROM tempo_timeline WHERE session_id = 'reh1' ORDER BY seq, change_no",
            &[],
        )
        .await
        .expect("tempo timeline")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(bpms, [120.0, 140.0, 150.0, 136.0]);
    let stops: Vec<(String, Option<String>)> = client
        .query(
            "SELECT kind, song FROM session_stops WHERE session_id = 'reh1' ORDER BY seq",
            &[],
        )
        .await
        .expect("stops")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let stop = |k: &str, s: &str| (k.to_owned(), Some(s.to_owned()));
    assert_eq!(
        stops,
        [stop("pause", "Blue Train"), stop("stop", "So What")]
    );
    let rejected: (String, Option<String>) = client
        .query_one(
            "SELECT error_code, command FROM rejected_commands WHERE session_id = 'reh1'",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .expect("rejection");
    assert_eq!(
        rejected,
        ("not_leader".to_owned(), Some("tempo".to_owned()))
    );

    // HTTP API.
    let base = format!("http://{}", store.addr());
    let get = |path: &str| {
        let url = format!("{base}{path}");
        async move {
            let bearer = format!("Bearer {ANALYST}");
            let r = http_get_with(&url, &[("Authorization", &bearer)])
                .await
                .expect("GET");
            (r.status, r.body)
        }
    };
    // The log is the analysts' only: no token, or a wrong one, reads nothing.
    for headers in [
        vec![],
        vec![("Authorization", "Bearer not-the-analyst-token")],
    ] {
        let r = http_get_with(&format!("{base}/sessions"), &headers)
            .await
            .expect("GET");
        assert_eq!(r.status, 401, "{}", r.body);
        assert!(!r.body.contains("reh1"), "{}", r.body);
    }
    let (status, body) = get("/sessions?member=cy").await;
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(list[0]["session_id"], "reh1");
    assert_eq!(list[0]["songs_played"][1], "So What");
    let (_, body) = get("/sessions?member=nobody").await;
    assert_eq!(body, "[]");

    let (_, body) = get("/sessions/reh1/events?limit=5").await;
    let page: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(5));
    let next = page["next_after"].as_i64().expect("a next page");
    let (_, body) = get(&format!("/sessions/reh1/events?after={next}&limit=1000")).await;
    let rest: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        rest["items"].as_array().map(Vec::len),
        Some(n_events as usize - 5)
    );
    assert!(rest["next_after"].is_null());

    let (status, csv) = get("/sessions/reh1/export.csv").await;
    assert_eq!(status, 200);
    assert_eq!(
        csv.lines().next(),
        Some(
            "stream_seq,seq,epoch,kind,changes,actor,cmd_id,error_code,occurred_at,published_at,payload"
        )
    );
    assert_eq!(
        csv.lines()
            .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
            .count(),
        n_events as usize
    );
    let (_, ndjson) = get("/sessions/reh1/export.ndjson").await;
    assert_eq!(ndjson.lines().count(), n_events as usize);
    for line in ndjson.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("each line is JSON");
        assert!(v["payload"]["type"].is_string());
    }

    let (status, body) = get("/sessions/bad.id/events").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = get("/sessions/reh1/state?at=not-a-time").await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = get("/healthz").await;
    assert_eq!(status, 200);
    let (status, body) = get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    let (_, metrics) = get("/metrics").await;
    let read = |series: &str| metric(&metrics, series).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        read("bandsync_store_rows_inserted_total{stream=\"events\"}"),
        n_events as f64
    );
    assert_eq!(
        read("bandsync_store_rows_inserted_total{stream=\"commands\"}"),
        n_commands as f64
    );
    assert_eq!(
        read("bandsync_store_dead_letters_total{stream=\"events\"}"),
        1.0,
        "the re-published copy"
    );

    token.cancel();
    store.wait().await;
}

/// A store given no analyst tokens serves the log to nobody, and its health,
/// readiness and metrics to everyone.
#[tokio::test]
async fn without_analyst_tokens_the_log_is_closed() {
    let nats = NatsServer::start().await;
    let db = TestDb::fresh();
    let (store, token) = start_store_with(&nats, &db.url(), |c| c.analyst_tokens.clear()).await;
    let base = format!("http://{}", store.addr());
    let r = http_get_with(
        &format!("{base}/sessions"),
        &[("Authorization", "Bearer analyst-token-for-the-tests")],
    )
    .await
    .expect("GET");
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("BANDSYNC_ANALYST_TOKENS"), "{}", r.body);
    for open in ["/healthz", "/metrics"] {
        let r = http_get(&format!("{base}{open}")).await.expect("GET");
        assert_eq!(r.status, 200, "{open}");
    }
    token.cancel();
    store.wait().await;
}
