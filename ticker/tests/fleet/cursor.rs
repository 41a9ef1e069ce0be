//! Issue 10: a shard's saved command cursor that is not a number used to be read
//! as 0, silently, replaying the whole command stream: a session that had ended
//! was created again by its replayed `create`. Now it is loud (an error log
//! naming the value, `bandsync_ticker_corrupt_cursors_total`), the shard resumes
//! after the last command its sessions record, and a replayed `create` whose
//! join code no longer names its session is skipped.

use crate::common::*;
use bandsync_client::Api;
use bandsync_nats::bus::Bus;
use bandsync_nats::{SessionId, SessionState, Subjects, shard_of};
use bandsync_testkit::eventually;
use std::collections::BTreeSet;

const CORRUPT: &str = "not-a-number";

fn state_key(session: &SessionId) -> String {
    Subjects::session_key(shard_of(session, SHARDS), session)
}

async fn stored(bus: &Bus, session: &SessionId) -> Option<SessionState> {
    let raw = bus
        .sessions
        .get(state_key(session))
        .await
        .expect("reading a session state")?;
    Some(serde_json::from_slice(&raw).expect("a session state"))
}

/// The shard's saved cursor, if it is a number.
async fn cursor(bus: &Bus, session: &SessionId) -> Option<u64> {
    let raw = bus
        .cursors
        .get(Subjects::shard_key(shard_of(session, SHARDS)))
        .await
        .expect("reading a cursor")?;
    String::from_utf8_lossy(&raw).parse().ok()
}

fn counter(value: Result<f64, bandsync_testkit::MetricError>) -> f64 {
    value.unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_cursor_is_reported_and_its_replay_revives_no_ended_session() {
    let _turn = exclusive().await;
    let mut fleet = Fleet::start_with(1, &["--idle-expiry-secs=3"]).await;
    let bus = fleet.bus("cursor-test").await;
    // A band playing with both members connected: never idle.
    let band = bands(&fleet, 1).await.pop().expect("one band");
    let playing = stored(&bus, &band.session).await.expect("the band's state");
    // A session nobody connects to: it ends 3 s after its creation and is deleted.
    let gone = Api::new(fleet.base(0))
        .create("Gone")
        .await
        .expect("create")
        .session;
    let created_at = bus
        .js
        .get_stream(bus.subjects.cmd_stream())
        .await
        .expect("the command stream")
        .get_last_raw_message_by_subject(&bus.subjects.cmd(shard_of(&gone, SHARDS), &gone))
        .await
        .expect("the ended session's create")
        .sequence;
    eventually(WAIT, "the idle session to end and be deleted", || async {
        stored(&bus, &gone).await.is_none()
    })
    .await;

    // Its owner hands the shards over, saving the cursors; then they are corrupted.
    fleet.tickers[0].signal("TERM");
    fleet.tickers[0].wait_exit(WAIT).await;
    let shards: BTreeSet<_> = [&band.session, &gone]
        .into_iter()
        .map(|s| shard_of(s, SHARDS))
        .collect();
    for &shard in &shards {
        bus.cursors
            .put(Subjects::shard_key(shard), CORRUPT.into())
            .await
            .expect("writing a corrupt cursor");
    }
    let next = fleet.add_ticker().await;
    fleet.wait_balanced(&[next], WAIT).await;
    let ticker = &fleet.tickers[next];

    // Loud: counted, and logged with the value (once the shards have loaded).
    eventually(WAIT, "each corrupt cursor counted", || async {
        counter(ticker.metric("bandsync_ticker_corrupt_cursors_total").await) >= shards.len() as f64
    })
    .await;
    let corrupt = counter(ticker.metric("bandsync_ticker_corrupt_cursors_total").await);
    assert_eq!(corrupt, shards.len() as f64, "each counted once");
    // The log is a file another process writes: wait for the lines, not a race.
    let logged_lines = |log: &str| {
        log.lines()
            .filter(|l| l.contains("corrupt command cursor") && l.contains(CORRUPT))
            .count()
    };
    eventually(
        WAIT,
        "an error naming the value per shard in the log",
        || async { logged_lines(&ticker.log()) >= shards.len() },
    )
    .await;
    let log = ticker.log();
    assert_eq!(
        logged_lines(&log),
        shards.len(),
        "one error per shard; the log:\n{log}"
    );

    // The replay went past the ended session's create and saved a real cursor.
    eventually(
        WAIT,
        "the cursor saved past the ended session's create",
        || async { cursor(&bus, &gone).await.is_some_and(|c| c >= created_at) },
    )
    .await;
    assert!(
        stored(&bus, &gone).await.is_none(),
        "the replayed create revived the ended session {gone}"
    );
    let stale = counter(ticker.metric("bandsync_ticker_stale_creates_total").await);
    assert_eq!(stale, 1.0, "the ended session's create skipped");
    eventually(WAIT, "the band's shard to save a real cursor", || async {
        cursor(&bus, &band.session).await.is_some()
    })
    .await;
    let after = stored(&bus, &band.session).await.expect("the band's state");
    assert_eq!(
        (after.seq, after.last_cmd_seq),
        (playing.seq, playing.last_cmd_seq),
        "no command of the band applied twice"
    );
}
