//! Cues and messages through the real stack: the leader's cue reaches every
//! member on both gateways, a follower's is refused, and a member over the
//! owner's rate is refused while the others' texts still flow.

use crate::common::*;
use bandsync_client::{Connection, as_error};
use bandsync_nats::state::{Change, texts::MAX_TEXTS};
use bandsync_nats::{Command, ErrorCode, ServerMsg};

async fn expect_refusal(c: &mut Connection, id: &str) -> ErrorCode {
    refusal_after(c, id).await.0
}

/// Waits for the refusal of the command `id`, with the messages received on the way.
async fn refusal_after(c: &mut Connection, id: &str) -> (ErrorCode, Vec<(String, String)>) {
    let mut seen = Vec::new();
    let msg = c
        .wait_for(WAIT, |m| {
            seen.extend(messages_in(m));
            matches!(m, ServerMsg::Error(e) if e.id.as_deref() == Some(id))
        })
        .await
        .unwrap_or_else(|e| panic!("no refusal of {id}: {e}"));
    (as_error(&msg).expect("an error").code, seen)
}

/// The `message` changes of an event, as (from, text).
fn messages_in(m: &ServerMsg) -> Vec<(String, String)> {
    let ServerMsg::Event(e) = m else {
        return Vec::new();
    };
    e.changes
        .iter()
        .filter_map(|c| match c {
            Change::Message { from, text } => Some((from.to_string(), text.clone())),
            _ => None,
        })
        .collect()
}

/// The messages a member receives until (and with) the first one with `last`.
async fn messages_until(c: &mut Connection, last: &str) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    c.wait_for(WAIT, |m| {
        let new = messages_in(m);
        let done = new.iter().any(|(_, text)| text == last);
        seen.extend(new);
        done
    })
    .await
    .unwrap_or_else(|e| panic!("no message {last:?}: {e}"));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cue_reaches_the_band_on_two_gateways_and_texts_are_rate_limited() {
    let stack = Stack::start(Knobs::default()).await;
    let (mut leader, mut followers) = band(&stack, 0, &[0, 1, 1]).await;
    let cue = |text: &str| Command::Cue { text: text.into() };

    followers[1]
        .send(&cue("stop!"), Some("f-cue"))
        .await
        .expect("send");
    assert_eq!(
        expect_refusal(&mut followers[1], "f-cue").await,
        ErrorCode::NotLeader
    );

    leader.send(&cue("last chorus"), None).await.expect("send");
    let by = leader.member.clone();
    for c in std::iter::once(&mut leader).chain(followers.iter_mut()) {
        let (event, change) = event_of_kind(c, "cue").await;
        assert_eq!(
            change,
            Change::Cue {
                text: "last chorus".into(),
                by: by.clone()
            }
        );
        let shown = event.state.cue.expect("the state holds the cue");
        assert_eq!((shown.text.as_str(), &shown.by), ("last chorus", &by));
        assert!(
            c.state.cue.is_some(),
            "{}: the cue is in the view",
            c.member
        );
    }

    // Follower 2 (on gateway 1) sends its five texts, then one too many.
    let chatty = followers[2].member.to_string();
    for i in 1..=MAX_TEXTS {
        let text = format!("m{i}");
        followers[2]
            .send(&Command::Message { text }, None)
            .await
            .expect("send");
    }
    followers[2]
        .send(&Command::Message { text: "m6".into() }, Some("over"))
        .await
        .expect("send");
    let (code, mut read_first) = refusal_after(&mut followers[2], "over").await;
    assert_eq!(code, ErrorCode::RateLimited);
    // The refusal came from the owner after it applied the five: a message
    // the leader sends now is ordered after all six.
    leader
        .send(
            &Command::Message {
                text: "still here".into(),
            },
            None,
        )
        .await
        .expect("send");
    let expected: Vec<(String, String)> = (1..=MAX_TEXTS)
        .map(|i| (chatty.clone(), format!("m{i}")))
        .chain([(by.to_string(), "still here".to_owned())])
        .collect();
    for c in std::iter::once(&mut leader).chain(followers.iter_mut()) {
        // The sender read its own first while it waited for the refusal.
        let mut seen = if c.member.as_str() == chatty {
            std::mem::take(&mut read_first)
        } else {
            Vec::new()
        };
        seen.extend(messages_until(c, "still here").await);
        assert_eq!(
            seen, expected,
            "{}: the five, never the sixth, then the leader's",
            c.member
        );
    }
}
