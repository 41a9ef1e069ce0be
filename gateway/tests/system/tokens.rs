//! Member tokens: carried in a header, never the URL; they expire, a connected
//! member is handed fresh ones, and a rotated key logs nobody out.

use crate::common::{Knobs, SECRET, Stack, WAIT};
use bandsync_client::{ClientError, Connection};
use bandsync_gateway::token::{Key, TokenKeys};
use bandsync_nats::{DisplayName, ServerMsg};
use std::time::{Duration, Instant, SystemTime};
use tokio_tungstenite::tungstenite;

fn refused_as(result: Result<Connection, ClientError>, words: &str) {
    match result {
        Err(ClientError::NoWelcome(why)) => assert!(
            why.contains("unauthorized") && why.contains(words),
            "refused otherwise: {why}"
        ),
        Err(e) => panic!("expected an unauthorized error, got {e}"),
        Ok(_) => panic!("expected a refusal ({words}), got a welcome"),
    }
}

/// The token the gateway hands out next, and when it lapses.
async fn next_token(c: &mut Connection, limit: Duration) -> (String, u64) {
    match c
        .wait_for(limit, |m| matches!(m, ServerMsg::Token { .. }))
        .await
        .expect("a token message")
    {
        ServerMsg::Token { token, expires_at } => (token, expires_at),
        _ => unreachable!(),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expire_and_connected_members_are_handed_fresh_ones() {
    const LIFETIME: u64 = 10;
    let mut stack = Stack::start(Knobs {
        gateways: 0,
        ..Knobs::default()
    })
    .await;
    stack
        .add_gateway_with("gw-0", &[format!("--token-lifetime-secs={LIFETIME}")])
        .await;
    let base = stack.base(0);
    let lead = stack.api(0).create("Leader").await.expect("create");
    let issued = unix_now();
    assert!(
        (issued + LIFETIME - 1..=issued + LIFETIME + 1).contains(&lead.token_expires_at),
        "expires at {} (now {issued})",
        lead.token_expires_at
    );

    // On connecting: a fresh token right after the welcome.
    let connected = Instant::now();
    let mut c = Connection::connect(&base, &lead.token)
        .await
        .expect("connects");
    let (first, _) = next_token(&mut c, WAIT).await;
    // Then on a ping once half the lifetime has passed, not before.
    let (second, second_exp) = loop {
        c.sync_clock(1).await.expect("ping answered");
        if let Ok(ServerMsg::Token { token, expires_at }) =
            c.next_within(Duration::from_millis(500)).await
        {
            break (token, expires_at);
        }
        assert!(
            connected.elapsed() < Duration::from_secs(LIFETIME),
            "no fresh token within the lifetime"
        );
    };
    let waited = connected.elapsed();
    assert!(
        waited >= Duration::from_secs(LIFETIME / 2) - Duration::from_millis(100),
        "refreshed after {waited:?}, before half the lifetime"
    );
    assert_eq!(c.token, second, "the client keeps the newest token");
    assert!(second_exp > lead.token_expires_at, "a later expiry");
    assert_ne!(second, first);

    // The token from the create has lapsed by now; the refreshed one works.
    let until = Instant::now() + WAIT;
    while unix_now() < lead.token_expires_at {
        assert!(Instant::now() < until, "the clock stands still");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    refused_as(Connection::connect(&base, &lead.token).await, "expired");
    let again = Connection::connect(&base, &second).await;
    assert!(again.is_ok(), "the refreshed token is refused");

    // A token in the URL, as before, is not read: 401 before the upgrade.
    let url = format!("{}/ws?token={second}", base.replace("http://", "ws://"));
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 401),
        other => panic!("a token in the URL was not refused: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_logs_nobody_out_until_it_is_dropped() {
    let mut stack = Stack::start(Knobs {
        gateways: 0,
        ..Knobs::default()
    })
    .await;
    const NEW: &str = "the-new-secret-0123456789";
    // gw-0 signs with the first key; gw-1 signs with a new one and still
    // verifies the first; gw-2 knows only the new one.
    stack.add_gateway_with("gw-0", &[]).await;
    stack
        .add_gateway_with(
            "gw-1",
            &[
                format!("--token-secret={NEW}"),
                "--token-key-id=k2".into(),
                format!("--token-old-keys=k1:{SECRET}"),
            ],
        )
        .await;
    stack
        .add_gateway_with(
            "gw-2",
            &[format!("--token-secret={NEW}"), "--token-key-id=k2".into()],
        )
        .await;
    let lead = stack.api(0).create("Leader").await.expect("create");
    assert!(lead.token.starts_with("k1."), "{}", lead.token);

    let mut c = Connection::connect(&stack.base(1), &lead.token)
        .await
        .expect("an old key's token is admitted while the key is kept");
    let (fresh, _) = next_token(&mut c, WAIT).await;
    assert!(
        fresh.starts_with("k2."),
        "re-signed with the new key: {fresh}"
    );
    c.close().await;

    refused_as(
        Connection::connect(&stack.base(2), &lead.token).await,
        "no longer knows",
    );
    assert!(
        Connection::connect(&stack.base(2), &fresh).await.is_ok(),
        "the re-signed token is refused"
    );

    // A token from another secret under the same id is a forgery.
    let forged = TokenKeys::new(
        Key::new("k2", b"guessed-secret-0123456789").expect("key"),
        vec![],
        Duration::from_secs(3600),
    )
    .sign(
        &lead.session,
        &lead.member,
        &DisplayName::parse("Leader").expect("name"),
        SystemTime::now(),
    )
    .0;
    refused_as(
        Connection::connect(&stack.base(2), &forged).await,
        "signature",
    );
}
