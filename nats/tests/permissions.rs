//! The bus lets each process do its job and nothing more (issue 12: one forged
//! event with a higher `seq`, published by any NATS client, made the gateways
//! stop forwarding its session). The test servers run with the same users and
//! permissions as every deployment, so every system test shows they are wide
//! enough; these show they are narrow, by what lands on the bus, not by
//! timeouts.

use async_nats::{Event, ServerError};
use bandsync_nats::auth::{self, Role};
use bandsync_nats::bus::Bus;
use bandsync_nats::{SessionId, Subjects};
use bandsync_testkit::NatsServer;
use bytes::Bytes;
use std::time::Duration;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

/// deploy/nats-auth.conf is the block `auth` renders for the default prefix,
/// which every test server runs with.
#[test]
fn the_deployed_permissions_are_the_tested_ones() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/nats-auth.conf");
    let subjects = Subjects::new(bandsync_nats::subjects::DEFAULT_PREFIX).expect("prefix");
    let rendered = auth::server_authorization(&subjects);
    if std::env::var_os("BANDSYNC_BLESS").is_some() {
        std::fs::write(path, &rendered).expect("writing deploy/nats-auth.conf");
    }
    let deployed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        deployed == rendered,
        "deploy/nats-auth.conf differs from nats/src/auth.rs's permissions; \
         rewrite it with BANDSYNC_BLESS=1 cargo test -p bandsync-nats --test permissions"
    );
}

#[tokio::test]
async fn nobody_connects_without_credentials() {
    let server = NatsServer::start().await;
    let anonymous = async_nats::ConnectOptions::new()
        .connect(server.url())
        .await;
    assert!(
        anonymous.is_err(),
        "a client without credentials was let in"
    );
    let wrong = async_nats::ConnectOptions::new()
        .user_and_password("gateway".into(), "not-the-password".into())
        .connect(server.url())
        .await;
    assert!(wrong.is_err(), "a wrong password was let in");
    let unknown = async_nats::ConnectOptions::new()
        .user_and_password("route".into(), server.logins().password(Role::Admin).into())
        .connect(server.url())
        .await;
    assert!(unknown.is_err(), "the route user is not a client");
    server.connect(Role::Gateway).await;
}

/// A client logged in as `role`, and the permission violations the server
/// reports to it (they come back asynchronously, as errors on the connection).
async fn client_as(
    server: &NatsServer,
    role: Role,
) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = server
        .logins()
        .options(role)
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let Event::ServerError(ServerError::Other(message)) = event {
                    let _ = tx.send(message);
                }
            }
        })
        .connect(server.url())
        .await
        .expect("logging in");
    (client, rx)
}

/// What the bus holds that a forger would change: the events stream's last
/// sequence and message count, a session's state revision and value.
#[derive(Debug, PartialEq)]
struct Contents {
    events: (u64, u64),
    commands: u64,
    state: Option<(u64, Bytes)>,
    streams: usize,
}

async fn contents(bus: &Bus, key: &str) -> Contents {
    let mut evt = bus
        .js
        .get_stream(bus.subjects.evt_stream())
        .await
        .expect("the events stream");
    let evt = evt.info().await.expect("events stream info").state.clone();
    let mut cmd = bus
        .js
        .get_stream(bus.subjects.cmd_stream())
        .await
        .expect("the command stream");
    let cmd = cmd.info().await.expect("command stream info").state.clone();
    let state = bus
        .sessions
        .entry(key)
        .await
        .expect("reading the state")
        .map(|e| (e.revision, e.value));
    let mut streams = 0;
    for name in bus.subjects.streams() {
        if bus.js.get_stream(&name).await.is_ok() {
            streams += 1;
        }
    }
    Contents {
        events: (evt.last_sequence, evt.messages),
        commands: cmd.messages,
        state,
        streams,
    }
}

#[tokio::test]
async fn gateway_and_store_cannot_forge_events_state_or_streams() {
    let server = NatsServer::start().await;
    // The ticker declares the streams and buckets and writes as an owner does.
    let ticker = Bus::open(
        &server
            .bus_args(Role::Ticker)
            .settings("ticker".into())
            .expect("settings"),
        Subjects::new("bandsync").expect("prefix"),
    )
    .await
    .expect("the ticker opens the bus");
    let s = ticker.subjects.clone();
    let session = SessionId::parse("band1").expect("id");
    let key = Subjects::session_key(3, &session);
    let event = br#"{"type":"event","session":"band1","seq":1,"epoch":1}"#;
    ticker
        .publish_durable(s.evt(&session), "band1-1", Bytes::from_static(event))
        .await
        .expect("the ticker publishes an event");
    ticker
        .sessions
        .put(&key, Bytes::from_static(b"{\"state\":\"real\"}"))
        .await
        .expect("the ticker writes session state");
    let admin = Bus::open(
        &server
            .bus_args(Role::Admin)
            .settings("admin".into())
            .expect("settings"),
        s.clone(),
    )
    .await
    .expect("the operator opens the bus");
    let before = contents(&admin, &key).await;
    assert_eq!(before.events.1, 1, "the ticker's event landed");
    assert_eq!(before.streams, 8);

    let forged = br#"{"type":"event","session":"band1","seq":999999,"epoch":999999}"#;
    let evt = s.evt(&session);
    let beat = s.beat(3);
    let state_key = format!("$KV.{}.{key}", s.sessions_bucket());
    let api = |op: &str, stream: &str| format!("$JS.API.STREAM.{op}.{stream}");
    let sessions_stream = Subjects::kv_stream(&s.sessions_bucket());
    let cmd = s.cmd(3, &session);
    let wrecking = vec![
        api("DELETE", &s.evt_stream()),
        api("PURGE", &s.evt_stream()),
        api("DELETE", &sessions_stream),
        api("PURGE", &sessions_stream),
    ];
    let cases: Vec<(Role, Vec<String>)> = vec![
        (
            Role::Gateway,
            [
                vec![evt.clone(), beat.clone(), state_key.clone()],
                wrecking.clone(),
            ]
            .concat(),
        ),
        (
            Role::Store,
            [vec![evt.clone(), beat, state_key, cmd], wrecking.clone()].concat(),
        ),
        // The ticker provisions, but never deletes or purges.
        (Role::Ticker, wrecking),
    ];
    for (role, subjects) in cases {
        let (client, mut violations) = client_as(&server, role).await;
        for subject in &subjects {
            client
                .publish_with_reply(
                    subject.clone(),
                    client.new_inbox(),
                    Bytes::from_static(forged),
                )
                .await
                .expect("the client sends it");
        }
        // The server handles a connection's messages in order: once a later
        // request is answered, every forgery above was refused (its error is on
        // its way) or handed to JetStream.
        async_nats::jetstream::new(client.clone())
            .get_stream(s.evt_stream())
            .await
            .expect("stream info is allowed to every service");
        let mut refused = Vec::new();
        while refused.len() < subjects.len() {
            match tokio::time::timeout(WAIT, violations.recv()).await {
                Ok(Some(message)) => refused.push(message),
                _ => break,
            }
        }
        // Nothing landed: by now a forgery the server took would be stored
        // (the wait above lasts until every refusal came, or WAIT).
        assert_eq!(
            contents(&admin, &key).await,
            before,
            "what {} sent changed the bus",
            role.user()
        );
        for subject in &subjects {
            let expected = format!("Permissions Violation for Publish to \"{subject}\"");
            assert!(
                refused.iter().any(|m| m.contains(&expected)),
                "{} publishing to {subject} was not refused (server said: {refused:?})",
                role.user()
            );
        }
    }
}
