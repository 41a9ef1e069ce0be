//! The golden vectors in `vectors.json` (next to this file), shared with the
//! browser client: web-tests/unit/vectors.test.mjs checks gateway/web/js
//! against the same cases, so the browser and the Rust side compute identical
//! positions, bars and beat times (compared exactly, not within a tolerance).
//! The clock cases are checked by client/tests/clock_vectors.rs.

use bandsync_protocol::timeline::Timeline;
use serde_json::Value;

fn vectors() -> Value {
    let text = include_str!("vectors.json");
    serde_json::from_str(text).expect("vectors.json is JSON")
}

fn int(v: &Value) -> i64 {
    v.as_i64().expect("an integer")
}

fn num(v: &Value) -> f64 {
    v.as_f64().expect("a number")
}

#[test]
fn timeline_cases_give_the_positions_bars_and_beat_times_of_the_vectors() {
    let all = vectors();
    let cases = all["timeline"].as_array().expect("timeline cases");
    assert!(cases.len() >= 8, "the cases are there");
    for case in cases {
        let name = case["name"].as_str().expect("a name");
        let timeline: Timeline =
            serde_json::from_value(case["timeline"].clone()).expect("a valid timeline");
        for q in case["at"].as_array().expect("queries") {
            let t = int(&q["t"]);
            let seg = timeline.at(t);
            let pos = timeline.position(t);
            assert_eq!(pos, num(&q["position"]), "{name}: position at {t}");
            assert_eq!(seg.bar_of(pos), int(&q["bar"]), "{name}: bar at {t}");
            assert_eq!(
                seg.bar_start(pos),
                num(&q["bar_start"]),
                "{name}: bar start at {t}"
            );
            assert_eq!(
                seg.next_bar_line(pos),
                num(&q["next_bar_line"]),
                "{name}: next bar line at {t}"
            );
        }
        for q in case["time_of_beat"].as_array().expect("beats") {
            let beat = num(&q["beat"]);
            assert_eq!(
                timeline.latest().time_of_beat(beat),
                int(&q["time"]),
                "{name}: time of beat {beat}"
            );
        }
    }
}
