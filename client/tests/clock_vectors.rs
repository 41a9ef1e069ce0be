//! The clock cases of the golden vectors (protocol/tests/vectors.json), shared
//! with the browser client's estimator (gateway/web/js/clock.js, checked by
//! web-tests/unit/vectors.test.mjs): the same samples give the same offset
//! after every sample, to the microsecond.

use bandsync_client::ClockSync;
use serde_json::Value;

fn int(v: &Value) -> i64 {
    v.as_i64().expect("an integer")
}

#[test]
fn clock_cases_give_the_offsets_of_the_vectors() {
    let all: Value = serde_json::from_str(include_str!("../../protocol/tests/vectors.json"))
        .expect("vectors.json is JSON");
    let cases = all["clock"].as_array().expect("clock cases");
    assert!(cases.len() >= 4, "the cases are there");
    for case in cases {
        let name = case["name"].as_str().expect("a name");
        let mut clock = ClockSync::default();
        let offsets = case["offsets"].as_array().expect("offsets");
        for (i, s) in case["samples"]
            .as_array()
            .expect("samples")
            .iter()
            .enumerate()
        {
            clock.add_sample(int(&s[0]), int(&s[1]), int(&s[2]));
            assert_eq!(
                clock.offset(),
                int(&offsets[i]),
                "{name}: offset after sample {i}"
            );
        }
        assert_eq!(
            clock.min_rtt(),
            Some(int(&case["min_rtt"])),
            "{name}: min rtt"
        );
        assert_eq!(
            clock.resets(),
            case["resets"].as_u64().expect("resets"),
            "{name}: resets"
        );
        assert_eq!(
            clock.samples(),
            case["kept"].as_u64().expect("kept") as usize,
            "{name}: kept"
        );
        let [now, bound] = [
            int(&case["uncertainty_at"][0]),
            int(&case["uncertainty_at"][1]),
        ];
        assert_eq!(clock.uncertainty(now), Some(bound), "{name}: uncertainty");
    }
}
