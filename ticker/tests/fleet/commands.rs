//! Acceptance 5: commands sent while a session's owner is dead are applied by
//! the next owner, each exactly once.

use crate::common::*;
use bandsync_nats::command::Song;
use bandsync_nats::state::Change;
use bandsync_nats::{Command, ServerMsg};
use std::time::{Duration, Instant};

const COMMANDS: usize = 5;

fn setlist(songs: usize) -> Command {
    Command::Setlist {
        songs: (1..=songs)
            .map(|i| Song {
                title: format!("Song {i}"),
                tempo_bpm: None,
                beats_per_bar: None,
                beat_unit: None,
                chart: String::new(),
            })
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_to_a_dead_owner_apply_once_after_takeover() {
    let _turn = exclusive().await;
    let fleet = Fleet::start(3).await;
    let bands = bands(&fleet, 40).await;
    let victim = 0;
    let orphans = fleet.sessions_of(victim, &bands).await;
    assert!(!orphans.is_empty());
    let mut orphaned: Vec<Band> = bands
        .into_iter()
        .filter(|b| orphans.contains(&b.session))
        .collect();

    fleet.tickers[victim].signal("KILL");
    let killed_at = Instant::now();
    let seq_before: Vec<u64> = orphaned.iter().map(|b| b.leader.state.seq).collect();
    for band in &mut orphaned {
        for k in 1..=COMMANDS {
            band.leader.send(&setlist(k), None).await.expect("send");
        }
    }
    let sent_within = killed_at.elapsed();

    let mut first_applied = Duration::MAX;
    for (band, seq_before) in orphaned.iter_mut().zip(seq_before) {
        for conn in [&mut band.leader, &mut band.follower] {
            let mut applied = Vec::new();
            while applied.len() < COMMANDS {
                let msg = conn
                    .wait_for(Duration::from_secs(10), |m| {
                        matches!(m, ServerMsg::Event(_))
                    })
                    .await
                    .unwrap_or_else(|e| panic!("{}: only {applied:?} applied: {e}", band.session));
                let ServerMsg::Event(e) = msg else {
                    unreachable!()
                };
                first_applied = first_applied.min(killed_at.elapsed());
                applied.extend(e.changes.iter().filter_map(|c| match c {
                    Change::Setlist { songs } => Some(*songs),
                    _ => None,
                }));
            }
            // Anything more would be a second application.
            while let Ok(ServerMsg::Event(e)) = conn.next_within(Duration::from_millis(300)).await {
                applied.extend(e.changes.iter().filter_map(|c| match c {
                    Change::Setlist { songs } => Some(*songs),
                    _ => None,
                }));
            }
            assert_eq!(
                applied,
                (1..=COMMANDS).collect::<Vec<_>>(),
                "{}: each command once, in order",
                band.session
            );
            assert_eq!(conn.state.setlist.len(), COMMANDS);
        }
        assert_eq!(
            band.leader.state.seq,
            seq_before + COMMANDS as u64,
            "one change set per command"
        );
    }
    println!(
        "{} orphaned sessions × {COMMANDS} commands sent within {sent_within:?} of the kill; \
         first applied {first_applied:?} after it",
        orphaned.len()
    );
    assert!(
        first_applied > sent_within,
        "the commands were sent while the owner was dead"
    );
}
