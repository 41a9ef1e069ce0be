//! Issue 10: an ended session's join code must be released even when deleting
//! it fails at first (it used to be dropped with `let _ =`, the code reserved
//! forever).

use crate::common::*;
use bandsync_client::Api;
use bandsync_nats::bus::Bus;
use bandsync_nats::{Subjects, shard_of};
use bandsync_testkit::eventually;

/// The codes bucket's stream captures `subjects` from now on. Pointed elsewhere,
/// a KV delete (a publish on `$KV.<bucket>.<code>`) finds no stream and fails
/// with "no responders", as with the bucket unavailable; what it stores stays.
async fn capture_codes(bus: &Bus, subjects: Vec<String>) {
    let mut stream = bus
        .js
        .get_stream(&bus.codes.stream_name)
        .await
        .expect("the codes stream");
    let mut config = stream.info().await.expect("its info").config.clone();
    config.subjects = subjects;
    bus.js
        .update_stream(config)
        .await
        .expect("updating the codes stream's subjects");
}

async fn code_holder(bus: &Bus, code: &str) -> Option<String> {
    bus.codes
        .get(code)
        .await
        .expect("reading the code")
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_sessions_code_is_released_after_a_failed_deletion() {
    let _turn = exclusive().await;
    let fleet = Fleet::start_with(1, &["--idle-expiry-secs=3"]).await;
    let ticker = &fleet.tickers[0];
    let bus = fleet.bus("ending-test").await;
    // Nobody connects: the session is idle from its creation and ends 3 s later.
    let created = Api::new(fleet.base(0))
        .create("Leader")
        .await
        .expect("create");
    let code = created.code.as_str();
    let state_key = Subjects::session_key(shard_of(&created.session, SHARDS), &created.session);
    let own_subjects = vec![format!("{}>", bus.codes.prefix)];
    capture_codes(&bus, vec!["bandsync-test.codes-offline.>".into()]).await;
    assert_eq!(
        code_holder(&bus, code).await.as_deref(),
        Some(created.session.as_str()),
        "the code names the session (the stream keeps what it stored)"
    );

    eventually(WAIT, "the ticker to count a failed deletion", || async {
        ticker
            .metric("bandsync_ticker_session_deletion_failures_total")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            >= 1.0
    })
    .await;
    assert_eq!(
        code_holder(&bus, code).await.as_deref(),
        Some(created.session.as_str()),
        "still reserved while the bucket is unavailable"
    );
    assert!(
        bus.sessions
            .get(&state_key)
            .await
            .expect("reading the state")
            .is_some(),
        "the ended state is kept until its code is released"
    );
    let log = ticker.log();
    let warning = log
        .lines()
        .find(|l| l.contains("ended session not deleted yet"))
        .unwrap_or_else(|| panic!("the failure is logged; the log:\n{log}"));
    println!("{warning}");
    assert!(
        warning.contains(&format!(
            "releasing join code {code} of ended session {}",
            created.session
        )),
        "the warning names the operation, the code and the session: {warning}"
    );

    capture_codes(&bus, own_subjects).await;
    eventually(WAIT, "the code to be released", || async {
        code_holder(&bus, code).await.is_none()
    })
    .await;
    eventually(WAIT, "the ended state to be deleted", || async {
        bus.sessions
            .get(&state_key)
            .await
            .expect("reading the state")
            .is_none()
    })
    .await;
    let ending = ticker
        .metric("bandsync_ticker_sessions_ending")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ending, 0.0, "no deletion left pending");
}
