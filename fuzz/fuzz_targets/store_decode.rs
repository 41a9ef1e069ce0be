//! The store's decoder of stream messages (store/src/decode.rs): any payload on
//! a subject of its session (or any subject): a row or a dead letter, never a
//! panic. `decode` turns a panic into a dead letter so one bad message cannot
//! stop ingestion; here a panic aborts (libfuzzer-sys's hook), so it is found.
#![no_main]

use arbitrary::Arbitrary;
use bandsync_nats::{SessionId, Subjects, shard_of};
use bandsync_store::decode::{Decoded, Raw, StreamKind, decode};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    events: bool,
    /// Use this subject as it is instead of the payload's session's.
    subject: Option<&'a str>,
    stream_seq: u64,
    published_us: i64,
    payload: &'a [u8],
}

fuzz_target!(|input: Input<'_>| {
    let subjects = Subjects::new("bandsync").expect("valid prefix");
    let kind = if input.events {
        StreamKind::Events
    } else {
        StreamKind::Commands
    };
    let session = serde_json::from_slice::<serde_json::Value>(input.payload)
        .ok()
        .and_then(|v| v.get("session")?.as_str().map(str::to_owned))
        .and_then(|s| SessionId::parse(s).ok())
        .unwrap_or_else(|| SessionId::parse("s1").expect("valid"));
    let subject = match input.subject {
        Some(s) => s.to_owned(),
        None if input.events => subjects.evt(&session),
        None => subjects.cmd(shard_of(&session, 256), &session),
    };
    let raw = Raw {
        stream_seq: input.stream_seq,
        subject: &subject,
        payload: input.payload,
        published_us: input.published_us,
    };
    match decode(kind, &subjects, &raw) {
        Decoded::Dead(dead) => assert!(
            !dead.reason.contains("panicked"),
            "decoder panicked: {}",
            dead.reason
        ),
        Decoded::Command(row) => assert_eq!(row.session_id, session.as_str()),
        Decoded::Event(row) => assert_eq!(row.session_id, session.as_str()),
    }
});
