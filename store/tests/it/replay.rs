//! Acceptance 5: the state replayed from the stored events at any instant equals
//! the state the owner held then (recorded mid-way, and the KV value at the end).

use crate::support::*;
use bandsync_nats::{SessionState, Subjects, now_us};
use bandsync_store::api::replay::Replayed;
use bandsync_testkit::{NatsServer, eventually};
use std::time::Duration;

#[tokio::test]
async fn replay_equals_the_owners_state_at_every_instant() {
    let nats = NatsServer::start().await;
    let db = TestDb::fresh();
    let bus = bus(&nats).await;
    let band = rehearsal("rp1", now_us() - 600_000_000);
    publish_all(&bus.js, band.events()).await;
    // The owner keeps its state in KV; at the end it holds the final state.
    let shard = bandsync_nats::shard_of(&band.id, bandsync_nats::shard::DEFAULT_SHARDS);
    let kv_bytes = serde_json::to_vec(&band.state).expect("serialises");
    bus.sessions
        .put(Subjects::session_key(shard, &band.id), kv_bytes.into())
        .await
        .expect("kv put");

    let (store, token) = start_store(&nats, &db.url()).await;
    let n = band.events().len() as i64;
    eventually(Duration::from_secs(20), "events stored", || async {
        db.count("SELECT count(*) FROM events").await == n
    })
    .await;

    let base = format!("http://{}/sessions/rp1/state", store.addr());
    let state_at = |at: i64| {
        let url = format!("{base}?at={at}");
        async move {
            let r = analyst_get(&url).await;
            assert_eq!(r.status, 200, "{}", r.body);
            serde_json::from_str::<Replayed>(&r.body).expect("replayed state")
        }
    };
    // The state the owner held at `t`: the one after the last step at or before `t`.
    let owner_at = |t: i64| -> &SessionState {
        &band
            .steps
            .iter()
            .rev()
            .find(|s| s.at <= t)
            .expect("after creation")
            .state
    };
    let mut instants = Vec::new();
    for pair in band.steps.windows(2) {
        let (a, b) = (pair[0].at, pair[1].at);
        instants.extend([a, a + 1, (a + b) / 2, b - 1]);
    }
    instants.push(band.steps.last().expect("steps").at + 3_000_000);
    for t in instants {
        let got = state_at(t).await;
        let want = owner_at(t);
        assert_eq!(got.state, as_read(want), "state at {t}");
        // JSON carries the beat; serde_json may round the last bit when reading it back.
        let beat = want.timeline.position(t);
        assert!(
            (got.position.beat - beat).abs() < 1e-9,
            "position at {t}: {} vs {beat}",
            got.position.beat
        );
        assert_eq!(got.seq, want.seq as i64);
    }
    let before = analyst_get(&format!("{base}?at={}", band.steps[0].at - 1)).await;
    assert_eq!(before.status, 404, "nothing before the session existed");

    // At the end, replay of "now" equals the owner's KV value.
    let kv = bus
        .sessions
        .get(Subjects::session_key(shard, &band.id))
        .await
        .expect("kv get")
        .expect("kv value");
    let kv_state: SessionState = serde_json::from_slice(&kv).expect("kv state");
    let r = analyst_get(&base).await;
    let now: Replayed = serde_json::from_str(&r.body).expect("replayed state");
    assert_eq!(now.state, as_read(&kv_state));

    // An RFC 3339 instant reads the same as its microseconds.
    let t = band.steps[7].at + 500_000;
    let secs = t.div_euclid(1_000_000);
    let rfc = rfc3339(secs, t.rem_euclid(1_000_000));
    let r = analyst_get(&format!("{base}?at={rfc}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let by_text: Replayed = serde_json::from_str(&r.body).expect("replayed");
    assert_eq!(by_text.at, t);

    token.cancel();
    store.wait().await;
}

/// The state as any reader of the JSON sees it (serde_json may round a float's last bit).
/// The owner's state as the log holds it: through JSON, and without what only
/// the owner needs (events leave out connections and the stream position).
fn as_read(state: &SessionState) -> SessionState {
    let mut read: SessionState =
        serde_json::from_slice(&serde_json::to_vec(state).expect("serialises")).expect("parses");
    read.hide_internals();
    read
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` from Unix seconds (civil-from-days, proleptic Gregorian).
fn rfc3339(secs: i64, micros: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
