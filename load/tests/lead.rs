//! Adaptive lead time, through the load generator's impairing proxy: one
//! member's link has 300 ms of delay each way; once it has reported its round
//! trip, the owner schedules changes far enough ahead that every member,
//! the slow one included, receives every change before it takes effect.

use bandsync_client::{Api, Connection};
use bandsync_load::config::Impairment;
use bandsync_load::proxy::Proxy;
use bandsync_nats::state::Change;
use bandsync_nats::{Command, Micros, ServerMsg};
use bandsync_testkit::{InProcessStack, StackOptions};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);
const DELAY_MS: f64 = 300.0;
const DONE: &str = "done";

/// What one member received: (its estimate of server time on receipt, the
/// change's effective time, the change's kind), until the leader's "done".
async fn receive_until_done(mut c: Connection) -> Vec<(Micros, Micros, &'static str)> {
    let mut got = Vec::new();
    loop {
        let msg = c.next_within(WAIT).await.expect("the band's events");
        let received = c.server_now();
        let ServerMsg::Event(e) = msg else { continue };
        for change in &e.changes {
            if let Some(at) = change.effective_at() {
                got.push((received, at, change.kind()));
            }
            if matches!(change, Change::Message { text, .. } if text == DONE) {
                return got;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_hears_of_every_change_before_it_happens_on_a_300_ms_link() {
    let stack = InProcessStack::start(StackOptions {
        shards: 4,
        gateway_ids: &["lead-0"],
        token_secret: "lead-test-secret-0123456789",
        ..StackOptions::default()
    })
    .await;
    let slow_link = Impairment {
        up_delay_ms: DELAY_MS,
        down_delay_ms: DELAY_MS,
        ..Impairment::default()
    };
    let proxy = Proxy::start(stack.gateways[0].addr, slow_link, stack.stopping())
        .await
        .expect("proxy starts");
    let direct = stack.bases[0].clone();
    let api = Api::new(&direct);

    let lead = api.create("Lead").await.expect("create");
    let mut leader = Connection::connect(&direct, &lead.token)
        .await
        .expect("leader connects");
    leader.sync_clock(4).await.expect("clock");
    let near = api.join(lead.code.as_str(), "Near").await.expect("join");
    let mut near = Connection::connect(&direct, &near.token)
        .await
        .expect("near connects");
    near.sync_clock(4).await.expect("clock");
    let far = api.join(lead.code.as_str(), "Far").await.expect("join");
    let mut far = Connection::connect(&format!("http://{}", proxy.addr), &far.token)
        .await
        .expect("far connects through the proxy");
    far.sync_clock(4).await.expect("clock");

    // The far member reports its round trip, as the web client does every 5 s.
    let report = far.quality_report().expect("pongs taken");
    let Command::Report { rtt_ms, .. } = report else {
        unreachable!("a report")
    };
    assert!(rtt_ms >= 2.0 * DELAY_MS, "the proxy's delay: {rtt_ms} ms");
    far.send(&report, None).await.expect("send");
    let far_id = far.member.clone();
    leader
        .wait_until(WAIT, |s| {
            s.member(&far_id).is_some_and(|m| m.rtt_ms.is_some())
        })
        .await
        .expect("the far member's quality shown");

    let readers = [
        tokio::spawn(receive_until_done(near)),
        tokio::spawn(receive_until_done(far)),
    ];
    let script = [
        Command::Tempo { bpm: 96.0 },
        Command::Play { count_in_bars: 1 },
        Command::Tempo { bpm: 100.0 },
        Command::Meter {
            beats_per_bar: 6,
            beat_unit: 8,
        },
        Command::Seek { beat: 12.0 },
        Command::Pause,
        Command::Play { count_in_bars: 0 },
        Command::Stop,
    ];
    let mut at_leader = Vec::new();
    for command in &script {
        leader.send(command, None).await.expect("send");
        let kind = command.kind();
        let (e, _) = leader
            .wait_for_change(WAIT, kind)
            .await
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        let received = leader.server_now();
        for change in &e.changes {
            if let Some(at) = change.effective_at() {
                at_leader.push((received, at, change.kind()));
                assert!(
                    at - e.at >= 650_000,
                    "{kind} scheduled {} ms ahead, not the far member's round trip + 50 ms",
                    (at - e.at) / 1_000
                );
            }
        }
    }
    leader
        .send(&Command::Message { text: DONE.into() }, None)
        .await
        .expect("send");
    let mut received = vec![("leader", at_leader)];
    for (who, reader) in ["near", "far"].into_iter().zip(readers) {
        received.push((who, reader.await.expect("reader")));
    }
    for (who, changes) in &received {
        assert_eq!(changes.len(), script.len(), "{who}: every change");
        for &(when, at, kind) in changes {
            assert!(
                when < at,
                "{who} received {kind} {} ms after it took effect",
                (when - at) / 1_000
            );
        }
    }
    let (_, far_changes) = &received[2];
    let closest = far_changes.iter().map(|(when, at, _)| at - when).min();
    assert!(
        closest.is_some_and(|margin| margin > 100_000),
        "the far member had room to spare: {closest:?} µs"
    );
}
