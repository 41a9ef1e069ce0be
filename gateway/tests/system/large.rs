//! Messages longer than a frame (a welcome or an event carrying a setlist with
//! its charts) go out in fragments; clients get them whole.

use crate::common::*;
use bandsync_nats::{Command, Song};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setlist_longer_than_a_frame_arrives_whole() {
    let stack = Stack::start(Knobs::default()).await;
    let (mut leader, mut followers) = band(&stack, 0, &[1]).await;
    // Under the test stack's 4,096-byte limit on client messages, yet the event
    // and the welcome that carry it span several 1,024-byte fragments.
    let songs: Vec<Song> = (0..3)
        .map(|i| Song {
            title: format!("Song {i}"),
            tempo_bpm: Some(100.0),
            beats_per_bar: Some(4),
            beat_unit: None,
            chart: "| C ♯ . . | Am ♭ . . |\n".repeat(40),
        })
        .collect();
    leader
        .send(
            &Command::Setlist {
                songs: songs.clone(),
            },
            None,
        )
        .await
        .expect("send");
    let follower = &mut followers[0];
    follower
        .wait_until(WAIT, |s| s.setlist.len() == 3)
        .await
        .expect("the setlist event");
    assert_eq!(follower.state.setlist, songs);

    let joined = stack
        .api(1)
        .join(leader.state.code.as_str(), "Late")
        .await
        .expect("join");
    let late = stack.connect(1, &joined).await;
    assert_eq!(late.state.setlist, songs, "the welcome carries the setlist");
    let welcome_bytes = serde_json::to_string(&late.state)
        .expect("serialises")
        .len();
    assert!(
        welcome_bytes > 2 * 1024,
        "welcome of {welcome_bytes} bytes spans fragments"
    );
}
