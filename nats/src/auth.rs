//! Who may do what on the bus: one NATS user per role, and the subjects each
//! may publish and subscribe to, rendered as nats-server's `authorization`
//! block. Every deployment uses this block (deploy/nats-auth.conf is it for the
//! default prefix, checked by a test), and so does every test server, so every
//! system test shows the permissions are wide enough; `tests/permissions.rs`
//! shows they are narrow.
//!
//! Passwords are never in the block: it names an environment variable per
//! user (`$BANDSYNC_NATS_GATEWAY_PASSWORD`, ...) that nats-server reads at
//! start-up, and a variable left unset fails the server's start, so a server
//! never runs with an empty password.
//!
//! Only the ticker creates and updates streams and buckets ([`Provision`]):
//! the gateway and the store bind to them and wait for a ticker while they are
//! missing. Nobody but the operator (`admin`) may delete or purge one.
//!
//! [`Provision`]: crate::bus::Provision

use crate::subjects::Subjects;

/// The NATS users, one per kind of process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Publishes commands; reads session state and join codes; reserves join
    /// codes and announces itself in the gateways bucket.
    Gateway,
    /// Owns sessions: consumes commands, writes state, publishes events and
    /// ticks, holds leases; creates the streams and buckets.
    Ticker,
    /// Reads the command and event streams through its durable consumers.
    Store,
    /// The operator and the tools that inspect the bus (`bandsync-chaos`,
    /// test fixtures): everything.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Gateway, Role::Ticker, Role::Store, Role::Admin];

    /// The NATS user name.
    pub fn user(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Ticker => "ticker",
            Role::Store => "store",
            Role::Admin => "admin",
        }
    }

    /// The environment variable nats-server reads this user's password from.
    pub fn password_var(self) -> &'static str {
        match self {
            Role::Gateway => "BANDSYNC_NATS_GATEWAY_PASSWORD",
            Role::Ticker => "BANDSYNC_NATS_TICKER_PASSWORD",
            Role::Store => "BANDSYNC_NATS_STORE_PASSWORD",
            Role::Admin => "BANDSYNC_NATS_ADMIN_PASSWORD",
        }
    }
}

/// The user cluster nodes authenticate their routes with.
pub const ROUTE_USER: &str = "route";
/// The environment variable holding the route user's password.
pub const ROUTE_PASSWORD_VAR: &str = "BANDSYNC_NATS_ROUTE_PASSWORD";

/// What one user may publish and subscribe to (allow-lists: all else is refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

/// The JetStream API subject of `op` on `stream`, e.g. `$JS.API.STREAM.INFO.BANDSYNC_CMD`.
fn api(op: &str, stream: &str) -> String {
    format!("$JS.API.{op}.{stream}")
}

/// Creating, reading and deleting consumers of `stream` and receiving from
/// them: the subject itself (an ephemeral consumer) and every name under it.
fn consumers(stream: &str, ops: &[&str]) -> Vec<String> {
    let mut subjects = Vec::new();
    for op in ops {
        subjects.push(api(op, stream));
        subjects.push(format!("{}.>", api(op, stream)));
    }
    subjects
}

/// A KV bucket's write subjects: a put, a compare-and-set, a delete and a
/// purge are all publications to `$KV.<bucket>.<key>`.
fn kv_write(bucket: &str) -> String {
    format!("$KV.{bucket}.>")
}

/// A KV get: a direct get of the bucket's stream by key.
fn kv_read(bucket: &str) -> String {
    format!("{}.>", api("DIRECT.GET", &Subjects::kv_stream(bucket)))
}

/// Watching a KV bucket: an ordered consumer on its stream, with flow control.
fn kv_watch(bucket: &str) -> Vec<String> {
    let stream = Subjects::kv_stream(bucket);
    let mut subjects = consumers(&stream, &["CONSUMER.CREATE", "CONSUMER.DELETE"]);
    subjects.push(format!("$JS.FC.{stream}.>"));
    subjects
}

/// What `role` may do on the bus named by `s`.
pub fn permissions(role: Role, s: &Subjects) -> Permissions {
    // Replies to requests (JetStream API answers, acks, KV gets) and the
    // deliveries of push consumers come to the client's inbox.
    let inbox = "_INBOX.>".to_owned();
    // Binding to a stream or bucket reads its info: every service does.
    let info: Vec<String> = s.streams().iter().map(|n| api("STREAM.INFO", n)).collect();
    match role {
        Role::Gateway => Permissions {
            publish: [
                vec![
                    s.cmd_all(),
                    kv_write(&s.codes_bucket()),
                    kv_write(&s.gateways_bucket()),
                    kv_read(&s.sessions_bucket()),
                    kv_read(&s.codes_bucket()),
                ],
                info,
            ]
            .concat(),
            subscribe: vec![s.evt_all(), s.beat_all(), inbox],
        },
        Role::Ticker => {
            let cmd = s.cmd_stream();
            let mut publish = vec![s.evt_all(), s.beat_all()];
            for bucket in [
                s.sessions_bucket(),
                s.codes_bucket(),
                s.leases_bucket(),
                s.cursors_bucket(),
                s.tickers_bucket(),
            ] {
                publish.push(kv_write(&bucket));
            }
            for bucket in [
                s.sessions_bucket(),
                s.codes_bucket(),
                s.leases_bucket(),
                s.cursors_bucket(),
            ] {
                publish.push(kv_read(&bucket));
            }
            for bucket in [s.leases_bucket(), s.tickers_bucket(), s.gateways_bucket()] {
                publish.extend(kv_watch(&bucket));
            }
            // Each owned shard's commands: a push consumer of the worker's own.
            publish.extend(consumers(
                &cmd,
                &["CONSUMER.CREATE", "CONSUMER.DELETE", "CONSUMER.INFO"],
            ));
            publish.push(format!("$JS.FC.{cmd}.>"));
            publish.extend(info);
            // The ticker provisions: creates the streams and buckets and
            // updates their settings (never deletes or purges them). Creating
            // a bucket reads the account's JetStream limits first.
            publish.push("$JS.API.INFO".into());
            for stream in s.streams() {
                publish.push(api("STREAM.CREATE", &stream));
                publish.push(api("STREAM.UPDATE", &stream));
            }
            Permissions {
                publish,
                subscribe: vec![inbox],
            }
        }
        Role::Store => {
            let mut publish = Vec::new();
            for stream in [s.cmd_stream(), s.evt_stream()] {
                publish.extend(consumers(
                    &stream,
                    &[
                        "CONSUMER.CREATE",
                        "CONSUMER.DURABLE.CREATE",
                        "CONSUMER.INFO",
                        "CONSUMER.MSG.NEXT",
                    ],
                ));
                publish.push(format!("$JS.ACK.{stream}.>"));
            }
            publish.extend(info);
            Permissions {
                publish,
                subscribe: vec![inbox],
            }
        }
        Role::Admin => Permissions {
            publish: vec![">".into()],
            subscribe: vec![">".into()],
        },
    }
}

/// nats-server's `authorization` block for the bus named by `s`: every role's
/// user, its password read from its environment variable, its permissions.
/// No user without a password: a client without credentials is refused.
pub fn server_authorization(s: &Subjects) -> String {
    let list = |subjects: &[String]| -> String {
        subjects
            .iter()
            .map(|x| format!("          \"{x}\"\n"))
            .collect()
    };
    let mut out = format!(
        "# Who may do what on the bus (prefix \"{}\"), generated from\n\
         # nats/src/auth.rs: a test fails when this file differs from it\n\
         # (BANDSYNC_BLESS=1 cargo test -p bandsync-nats --test permissions rewrites it).\n\
         # Each password is read from the environment variable named here.\n\
         authorization {{\n  users = [\n",
        s.prefix()
    );
    for role in Role::ALL {
        let p = permissions(role, s);
        out.push_str(&format!(
            "    {{\n      user: {}\n      password: ${}\n      permissions: {{\n        \
             publish: {{allow: [\n{}        ]}}\n        \
             subscribe: {{allow: [\n{}        ]}}\n      }}\n    }}\n",
            role.user(),
            role.password_var(),
            list(&p.publish),
            list(&p.subscribe),
        ));
    }
    out.push_str("  ]\n}\n");
    out
}

/// A cluster block's `authorization`: routes from other nodes log in as
/// [`ROUTE_USER`], and a node's own route URLs carry the same credentials.
pub fn route_authorization() -> String {
    format!("authorization {{ user: {ROUTE_USER}, password: ${ROUTE_PASSWORD_VAR} }}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(patterns: &[String], subject: &str) -> bool {
        patterns.iter().any(|p| matches(p, subject))
    }

    /// NATS subject matching: `*` one token, `>` one or more at the end.
    fn matches(pattern: &str, subject: &str) -> bool {
        let mut p = pattern.split('.');
        let mut s = subject.split('.');
        loop {
            match (p.next(), s.next()) {
                (Some(">"), Some(_)) => return true,
                (Some("*"), Some(_)) => {}
                (Some(a), Some(b)) if a == b => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }

    #[test]
    fn only_tickers_publish_events_beats_and_state() {
        let s = Subjects::new("bandsync").expect("prefix");
        let forged = [
            "bandsync.sess.abc.evt",
            "bandsync.beat.3",
            "$KV.bandsync_sessions.3.abc",
            "$KV.bandsync_leases.3",
            "$JS.API.STREAM.DELETE.BANDSYNC_EVT",
            "$JS.API.STREAM.PURGE.BANDSYNC_EVT",
            "$JS.API.STREAM.CREATE.BANDSYNC_EVT",
            "$JS.API.STREAM.DELETE.KV_bandsync_sessions",
        ];
        for role in [Role::Gateway, Role::Store] {
            let p = permissions(role, &s);
            for subject in forged {
                assert!(
                    !allowed(&p.publish, subject),
                    "{role:?} may publish {subject}"
                );
            }
        }
        let ticker = permissions(Role::Ticker, &s);
        for subject in &forged[..4] {
            assert!(
                allowed(&ticker.publish, subject),
                "the ticker publishes {subject}"
            );
        }
        for subject in &forged[4..6] {
            assert!(
                !allowed(&ticker.publish, subject),
                "nobody but admin: {subject}"
            );
        }
        let gateway = permissions(Role::Gateway, &s);
        assert!(allowed(&gateway.publish, "bandsync.cmd.3.abc"));
        assert!(allowed(&gateway.subscribe, "bandsync.sess.abc.evt"));
        assert!(allowed(&gateway.subscribe, "bandsync.beat.3"));
        assert!(!allowed(
            &permissions(Role::Store, &s).publish,
            "bandsync.cmd.3.abc"
        ));
    }

    #[test]
    fn every_user_has_a_password_variable() {
        let block = server_authorization(&Subjects::new("bandsync").expect("prefix"));
        for role in Role::ALL {
            assert!(block.contains(&format!("user: {}\n", role.user())));
            assert!(block.contains(&format!("password: ${}\n", role.password_var())));
        }
        assert!(!block.contains("no_auth_user"));
    }
}
