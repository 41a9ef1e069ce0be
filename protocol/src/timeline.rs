//! The shared musical timeline: a timeline, not a stream of positions.
//!
//! A timeline is a short list of segments. Each segment says: from server time
//! `anchor_time` on, the position is `anchor_beat` plus, while playing, the elapsed
//! time at `tempo_bpm`. Every change is scheduled a lead time ahead, so a timeline
//! usually holds the segment in force now and at most one that starts soon; a
//! client keeps using the earlier segment until the later one's `anchor_time`.
//! All times are microseconds since the Unix epoch on the server's clock.
//!
//! A `Timeline` is valid by construction: `new` and the scheduling operations
//! keep it so (given the values `Command::validate` accepts), and deserialising
//! refuses any other (no segments, segments out of order, too many, a tempo,
//! meter or beat the math cannot use), so a timeline off the wire or out of
//! storage never panics or computes a NaN position.

use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch (server wall clock).
pub type Micros = i64;

/// The server's wall-clock time now.
pub fn now_us() -> Micros {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
}

pub const MIN_BPM: f64 = 20.0;
pub const MAX_BPM: f64 = 400.0;
pub const MAX_BEATS_PER_BAR: u8 = 32;
pub const BEAT_UNITS: [u8; 6] = [1, 2, 4, 8, 16, 32];
/// Furthest seek target, in beats (about 14 hours at 20 BPM).
pub const MAX_BEAT: f64 = 1_000_000.0;
pub const MAX_COUNT_IN_BARS: u8 = 8;
/// Segments kept: the one in force and the scheduled ones, which rarely exceed one.
pub const MAX_SEGMENTS: usize = 8;
/// Tolerance when deciding whether a position already sits on a beat or bar line.
const EPS_BEATS: f64 = 1e-6;
const MICROS_PER_MINUTE: f64 = 60_000_000.0;

/// One stretch of the timeline, in force from `anchor_time` until the next segment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Server time (µs) at which this segment takes effect.
    pub anchor_time: Micros,
    /// Position in beats at `anchor_time`; negative while counting in from beat 0.
    pub anchor_beat: f64,
    pub tempo_bpm: f64,
    pub playing: bool,
    pub beats_per_bar: u8,
    pub beat_unit: u8,
    /// A beat on which bar number `bar_origin_number` starts; bars are counted from it.
    pub bar_origin_beat: f64,
    pub bar_origin_number: i64,
    /// While playing and below this beat, the clicks are a count-in, not music.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count_in_until: Option<f64>,
}

impl Segment {
    /// Position in beats at server time `t` (meaningful for `t >= anchor_time`).
    pub fn position(&self, t: Micros) -> f64 {
        if self.playing {
            // Saturating: `t` may be any instant an analyst asks about.
            self.anchor_beat
                + t.saturating_sub(self.anchor_time) as f64 * self.tempo_bpm / MICROS_PER_MINUTE
        } else {
            self.anchor_beat
        }
    }

    /// Server time at which a playing segment reaches `beat`.
    pub fn time_of_beat(&self, beat: f64) -> Micros {
        self.anchor_time.saturating_add(
            ((beat - self.anchor_beat) * MICROS_PER_MINUTE / self.tempo_bpm).round() as Micros,
        )
    }

    /// Bar number (0-based) containing `beat`; saturates at the ends of `i64`
    /// (see `checked_bar_of` for a caller that must know).
    pub fn bar_of(&self, beat: f64) -> i64 {
        let bpb = f64::from(self.beats_per_bar);
        self.bar_origin_number
            .saturating_add(((beat - self.bar_origin_beat + EPS_BEATS) / bpb).floor() as i64)
    }

    /// Bar number (0-based) containing `beat`, or `None` when it is not a
    /// number an `i64` holds (a beat or bar origin so far out that the count
    /// overflows, or a non-finite beat).
    pub fn checked_bar_of(&self, beat: f64) -> Option<i64> {
        let bpb = f64::from(self.beats_per_bar);
        let bars = ((beat - self.bar_origin_beat + EPS_BEATS) / bpb).floor();
        // i64::MAX as f64 rounds up to 2^63, which is out of range: hence `<`.
        if !(bars.is_finite() && bars >= i64::MIN as f64 && bars < i64::MAX as f64) {
            return None;
        }
        self.bar_origin_number.checked_add(bars as i64)
    }

    /// First beat of the bar containing `beat`.
    pub fn bar_start(&self, beat: f64) -> f64 {
        let bpb = f64::from(self.beats_per_bar);
        self.bar_origin_beat + ((beat - self.bar_origin_beat + EPS_BEATS) / bpb).floor() * bpb
    }

    /// The first bar line at or after `beat`.
    pub fn next_bar_line(&self, beat: f64) -> f64 {
        let bpb = f64::from(self.beats_per_bar);
        self.bar_origin_beat + ((beat - self.bar_origin_beat - EPS_BEATS) / bpb).ceil() * bpb
    }
}

/// The session's timeline: 1..=`MAX_SEGMENTS` segments in strictly increasing
/// `anchor_time` order, each with a tempo, meter and beats the math can use.
/// Deserialising checks all of it (`TryFrom<TimelineRepr>`); the JSON shape is
/// the derived one, `{"segments":[...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "TimelineRepr")]
pub struct Timeline {
    segments: Vec<Segment>,
}

/// A timeline as it arrives, before it is checked.
#[derive(Deserialize)]
struct TimelineRepr {
    segments: Vec<Segment>,
}

/// Why a timeline was refused; `segment` is the 0-based index of the first bad one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidTimeline {
    #[error("invalid timeline: it has no segments")]
    Empty,
    #[error("invalid timeline: {0} segments, at most {MAX_SEGMENTS}")]
    TooManySegments(usize),
    #[error(
        "invalid timeline: segment {segment} starts at {anchor_time}, not after the one before it"
    )]
    OutOfOrder { segment: usize, anchor_time: Micros },
    #[error("invalid timeline: segment {segment}: {field} {value} is not a finite number")]
    NotFinite {
        segment: usize,
        field: &'static str,
        value: f64,
    },
    #[error(
        "invalid timeline: segment {segment}: tempo_bpm {value} is outside {MIN_BPM}..={MAX_BPM}"
    )]
    Tempo { segment: usize, value: f64 },
    #[error(
        "invalid timeline: segment {segment}: beats_per_bar {value} is outside 1..={MAX_BEATS_PER_BAR}"
    )]
    BeatsPerBar { segment: usize, value: u8 },
    #[error("invalid timeline: segment {segment}: beat_unit {value} is not one of {BEAT_UNITS:?}")]
    BeatUnit { segment: usize, value: u8 },
}

impl TryFrom<TimelineRepr> for Timeline {
    type Error = InvalidTimeline;

    fn try_from(repr: TimelineRepr) -> Result<Self, InvalidTimeline> {
        let timeline = Timeline {
            segments: repr.segments,
        };
        timeline.check()?;
        Ok(timeline)
    }
}

impl Timeline {
    /// Paused at beat 0, bar 0 starting on beat 0.
    pub fn new(now: Micros, tempo_bpm: f64, beats_per_bar: u8, beat_unit: u8) -> Self {
        let timeline = Self {
            segments: vec![Segment {
                anchor_time: now,
                anchor_beat: 0.0,
                tempo_bpm,
                playing: false,
                beats_per_bar,
                beat_unit,
                bar_origin_beat: 0.0,
                bar_origin_number: 0,
                count_in_until: None,
            }],
        };
        debug_assert_eq!(timeline.check(), Ok(()), "a new timeline is valid");
        timeline
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Whether this timeline keeps the invariants deserialisation demands
    /// (the state machine's property tests and fuzz target check it too).
    pub fn check(&self) -> Result<(), InvalidTimeline> {
        let n = self.segments.len();
        if n == 0 {
            return Err(InvalidTimeline::Empty);
        }
        if n > MAX_SEGMENTS {
            return Err(InvalidTimeline::TooManySegments(n));
        }
        for (segment, s) in self.segments.iter().enumerate() {
            if segment > 0 && s.anchor_time <= self.segments[segment - 1].anchor_time {
                return Err(InvalidTimeline::OutOfOrder {
                    segment,
                    anchor_time: s.anchor_time,
                });
            }
            let numbers = [
                ("anchor_beat", Some(s.anchor_beat)),
                ("tempo_bpm", Some(s.tempo_bpm)),
                ("bar_origin_beat", Some(s.bar_origin_beat)),
                ("count_in_until", s.count_in_until),
            ];
            for (field, value) in numbers {
                if let Some(value) = value.filter(|v| !v.is_finite()) {
                    return Err(InvalidTimeline::NotFinite {
                        segment,
                        field,
                        value,
                    });
                }
            }
            if !(MIN_BPM..=MAX_BPM).contains(&s.tempo_bpm) {
                return Err(InvalidTimeline::Tempo {
                    segment,
                    value: s.tempo_bpm,
                });
            }
            if !(1..=MAX_BEATS_PER_BAR).contains(&s.beats_per_bar) {
                return Err(InvalidTimeline::BeatsPerBar {
                    segment,
                    value: s.beats_per_bar,
                });
            }
            if !BEAT_UNITS.contains(&s.beat_unit) {
                return Err(InvalidTimeline::BeatUnit {
                    segment,
                    value: s.beat_unit,
                });
            }
        }
        Ok(())
    }

    /// The segment in force at `t` (the first one for times before it).
    /// Cannot panic: a timeline always has a segment (`new` makes one, the
    /// operations only ever replace scheduled ones or prune down to the one in
    /// force, and deserialisation refuses an empty list).
    pub fn at(&self, t: Micros) -> &Segment {
        self.segments
            .iter()
            .rev()
            .find(|s| s.anchor_time <= t)
            .unwrap_or(&self.segments[0])
    }

    /// The last scheduled segment: the base for the next change. Cannot panic:
    /// a timeline always has a segment (see `at`).
    pub fn latest(&self) -> &Segment {
        self.segments
            .last()
            .expect("a timeline always has a segment")
    }

    pub fn position(&self, t: Micros) -> f64 {
        self.at(t).position(t)
    }

    /// Whether the timeline is playing at `t` or will be once its scheduled segments apply.
    pub fn is_active(&self, t: Micros) -> bool {
        self.at(t).playing || self.latest().playing
    }

    /// Adds `seg`, dropping scheduled segments it overrides and those no longer needed at `now`.
    fn schedule(&mut self, seg: Segment, now: Micros) {
        self.segments.retain(|s| s.anchor_time < seg.anchor_time);
        self.segments.push(seg);
        self.prune(now);
        // The state machine passes only values `Command::validate` accepts; a
        // caller that did not would publish a timeline no receiver accepts.
        debug_assert_eq!(self.check(), Ok(()), "a scheduled timeline stays valid");
    }

    /// Keeps the segment in force at `now` and all later ones.
    pub fn prune(&mut self, now: Micros) {
        let in_force = self
            .segments
            .iter()
            .rposition(|s| s.anchor_time <= now)
            .unwrap_or(0);
        let keep_from = in_force.max(self.segments.len().saturating_sub(MAX_SEGMENTS));
        self.segments.drain(..keep_from);
    }

    /// When a change requested at `now` takes effect: a lead time ahead, never
    /// before an already scheduled segment.
    fn effective(&self, now: Micros, lead: Micros) -> Micros {
        (now + lead).max(self.latest().anchor_time)
    }

    /// New tempo. While playing it lands on the next beat with phase kept.
    pub fn set_tempo(&mut self, bpm: f64, now: Micros, lead: Micros) -> Micros {
        let base = *self.latest();
        let at = self.effective(now, lead);
        let seg = if base.playing {
            let beat = (base.position(at) - EPS_BEATS).ceil();
            Segment {
                anchor_time: base.time_of_beat(beat).max(at),
                anchor_beat: beat,
                tempo_bpm: bpm,
                ..base
            }
        } else {
            Segment {
                anchor_time: at,
                tempo_bpm: bpm,
                ..base
            }
        };
        self.schedule(seg, now);
        seg.anchor_time
    }

    /// New time signature, from the next bar line (playing) or the current bar (paused).
    pub fn set_meter(
        &mut self,
        beats_per_bar: u8,
        beat_unit: u8,
        now: Micros,
        lead: Micros,
    ) -> Micros {
        let base = *self.latest();
        let at = self.effective(now, lead);
        let (anchor_time, bar_beat) = if base.playing {
            let line = base.next_bar_line(base.position(at));
            (base.time_of_beat(line).max(at), line)
        } else {
            (at, base.bar_start(base.anchor_beat))
        };
        let seg = Segment {
            anchor_time,
            anchor_beat: base.position(anchor_time),
            beats_per_bar,
            beat_unit,
            bar_origin_beat: bar_beat,
            bar_origin_number: base.bar_of(bar_beat),
            ..base
        };
        self.schedule(seg, now);
        anchor_time
    }

    /// Starts playing after exactly `count_in_bars` bars of clicks, from the
    /// start of the bar that holds the stopped position (a band comes back in
    /// on a downbeat, never mid-bar; a position on a bar line starts there),
    /// and never before beat 0, where the song starts (a bar grid moved by a
    /// meter change can put a bar line before it).
    pub fn play(&mut self, count_in_bars: u8, now: Micros, lead: Micros) -> Micros {
        let base = *self.latest();
        let at = self.effective(now, lead);
        let stopped = base.anchor_beat;
        let from = base.bar_start(stopped).max(stopped.min(0.0));
        let count_in = f64::from(count_in_bars) * f64::from(base.beats_per_bar);
        let seg = Segment {
            anchor_time: at,
            anchor_beat: from - count_in,
            playing: true,
            count_in_until: (count_in_bars > 0).then_some(from),
            ..base
        };
        self.schedule(seg, now);
        at
    }

    /// Pauses at the scheduled instant; a pause during the count-in rewinds to where music starts.
    pub fn pause(&mut self, now: Micros, lead: Micros) -> (Micros, f64) {
        let base = *self.latest();
        let at = self.effective(now, lead);
        let mut beat = base.position(at);
        if let Some(music) = base.count_in_until {
            beat = beat.max(music);
        }
        let seg = Segment {
            anchor_time: at,
            anchor_beat: beat,
            playing: false,
            count_in_until: None,
            ..base
        };
        self.schedule(seg, now);
        (at, beat)
    }

    /// Stops and rewinds to beat 0, bar 0.
    pub fn stop(&mut self, now: Micros, lead: Micros) -> Micros {
        let base = *self.latest();
        let at = self.effective(now, lead);
        let seg = Segment {
            anchor_time: at,
            anchor_beat: 0.0,
            playing: false,
            bar_origin_beat: 0.0,
            bar_origin_number: 0,
            count_in_until: None,
            ..base
        };
        self.schedule(seg, now);
        at
    }

    /// Jumps to `beat` at the scheduled instant, playing on if it was playing.
    pub fn seek(&mut self, beat: f64, now: Micros, lead: Micros) -> Micros {
        let base = *self.latest();
        let at = self.effective(now, lead);
        let seg = Segment {
            anchor_time: at,
            anchor_beat: beat,
            count_in_until: None,
            ..base
        };
        self.schedule(seg, now);
        at
    }

    /// Replaces tempo and meter while stopped (used when a song is selected).
    pub fn reset(
        &mut self,
        tempo_bpm: f64,
        beats_per_bar: u8,
        beat_unit: u8,
        now: Micros,
        lead: Micros,
    ) -> Micros {
        let at = self.effective(now, lead);
        let seg = Segment {
            anchor_time: at,
            ..Timeline::new(at, tempo_bpm, beats_per_bar, beat_unit).segments[0]
        };
        self.schedule(seg, now);
        at
    }
}

/// A tick period is cut into slots about this wide and a shard ticks in one of
/// them, so an owner's ticks (and the gateways' fan-out, and the clients' reads)
/// go out in small rounds across the period instead of all at its start: at
/// 1 Hz a tenth of all sessions at once made a 12 ms burst that every command
/// landing in it waited behind.
pub const TICK_SLOT_US: Micros = 10_000;

/// How many slots a period has: one per `TICK_SLOT_US`, at least one.
pub fn tick_slots(period_us: Micros) -> i64 {
    (period_us / TICK_SLOT_US).max(1)
}

/// When in each period a shard's sessions tick: its slot's offset from the
/// period boundary. The same for every ticker, so owners agree on it.
pub fn tick_phase(shard: crate::Shard, period_us: Micros) -> Micros {
    let slots = tick_slots(period_us);
    i64::from(shard) % slots * (period_us / slots)
}

/// The first slot start after `now`: its time and its slot number (a shard
/// ticks there when `tick_phase` is `slot × period / slots`).
pub fn next_tick_slot(now: Micros, period_us: Micros) -> (Micros, i64) {
    let slots = tick_slots(period_us);
    let slot_us = period_us / slots;
    let start = now - now.rem_euclid(period_us);
    let slot = (now - start) / slot_us + 1;
    if slot < slots {
        (start + slot * slot_us, slot)
    } else {
        (start + period_us, 0)
    }
}

/// Sequence number of the latest tick due at or before `t`, for a tick period
/// and a shard's phase: derived from the clock, so it increases strictly and
/// carries on across owners.
pub fn tick_seq(t: Micros, period_us: Micros, phase_us: Micros) -> u64 {
    u64::try_from((t - phase_us).max(0) / period_us.max(1)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LEAD: Micros = 150_000;
    const T0: Micros = 1_700_000_000_000_000;

    fn playing_at_120() -> Timeline {
        let mut tl = Timeline::new(T0, 120.0, 4, 4);
        tl.play(0, T0, LEAD);
        tl
    }

    #[test]
    fn position_advances_at_tempo_once_playing() {
        let tl = playing_at_120();
        assert_eq!(
            tl.position(T0),
            0.0,
            "nothing moves before the scheduled start"
        );
        assert_eq!(tl.position(T0 + LEAD), 0.0);
        assert!(
            (tl.position(T0 + LEAD + 500_000) - 1.0).abs() < 1e-9,
            "120 BPM = 2 beats/s"
        );
    }

    #[test]
    fn count_in_starts_bars_early_and_music_starts_on_the_beat() {
        let mut tl = Timeline::new(T0, 120.0, 4, 4);
        let at = tl.play(2, T0, LEAD);
        let seg = tl.at(at);
        assert_eq!(seg.anchor_beat, -8.0);
        assert_eq!(seg.count_in_until, Some(0.0));
        assert!(
            (tl.position(at + 4_000_000) - 0.0).abs() < 1e-9,
            "8 beats at 120 BPM take 4 s"
        );
    }

    #[test]
    fn tempo_change_lands_on_a_beat_with_phase_kept() {
        let mut tl = playing_at_120();
        let now = T0 + LEAD + 1_100_000; // position 2.2 beats
        let at = tl.set_tempo(90.0, now, LEAD);
        let seg = tl.at(at);
        assert_eq!(seg.anchor_beat, 3.0, "2.2 + lead 0.3 = 2.5, next beat is 3");
        assert_eq!(at, T0 + LEAD + 1_500_000);
        assert!(
            (tl.position(at - 1) - 3.0).abs() < 1e-5,
            "continuous at the switch"
        );
        assert!(
            (tl.position(at + 2_000_000) - 6.0).abs() < 1e-9,
            "90 BPM = 1.5 beats/s"
        );
        assert!(
            tl.position(now) < 3.0,
            "before the switch the old tempo holds"
        );
    }

    #[test]
    fn pause_freezes_at_scheduled_instant_and_play_resumes_at_the_bar_start() {
        let mut tl = playing_at_120();
        let now = T0 + LEAD + 3_000_000; // beat 6: bar 1, its third beat
        let (at, beat) = tl.pause(now, LEAD);
        assert!((beat - 6.3).abs() < 1e-9);
        assert!((tl.position(at + 10_000_000) - 6.3).abs() < 1e-9);
        assert!(
            (tl.position(now + 100_000) - 6.2).abs() < 1e-9,
            "still playing until the pause lands"
        );
        let later = at + 5_000_000;
        let start = tl.play(0, later, LEAD);
        let seg = *tl.at(start);
        assert_eq!(
            (seg.anchor_beat, seg.count_in_until),
            (4.0, None),
            "bar 1 again, from its first beat"
        );
        assert!((tl.position(start + 500_000) - 5.0).abs() < 1e-9);
    }

    #[test]
    fn resuming_counts_in_exactly_the_bars_asked_before_the_bar_line() {
        let mut tl = Timeline::new(T0, 120.0, 6, 8);
        tl.play(0, T0, LEAD);
        // 30.88 beats: bar 5 (beats 30..36) of 6/8, as the rehearsal saw.
        let (at, beat) = tl.pause(T0 + LEAD + 15_440_000 - LEAD, LEAD);
        assert!((beat - 30.88).abs() < 1e-9, "{beat}");
        let start = tl.play(1, at + 1_000_000, LEAD);
        let seg = *tl.at(start);
        assert_eq!(seg.count_in_until, Some(30.0), "music from bar 5's line");
        assert_eq!(seg.anchor_beat, 24.0, "one 6-beat bar of count-in");
        assert_eq!(
            seg.bar_of(seg.anchor_beat),
            4,
            "the count-in is one whole bar"
        );
        assert_eq!(seg.bar_start(seg.anchor_beat), seg.anchor_beat);
        // A pause on a bar line resumes there; two bars of count-in are 12 beats.
        let (paused, beat) = tl.pause(start + 9_000_000 - LEAD, LEAD); // 24 + 18 beats
        assert!((beat - 42.0).abs() < 1e-6, "{beat}");
        let again = tl.play(2, paused + 1_000_000, LEAD);
        let seg = *tl.at(again);
        assert!((seg.count_in_until.expect("counting in") - 42.0).abs() < 1e-6);
        assert!((seg.anchor_beat - 30.0).abs() < 1e-6);
    }

    #[test]
    fn resuming_never_starts_before_the_song() {
        let mut tl = Timeline::new(T0, 120.0, 4, 4);
        tl.seek(16.0, T0, LEAD);
        // A 3/4 grid from beat 16 puts a bar line at beat -2.
        tl.set_meter(3, 4, T0 + 1, LEAD);
        tl.seek(0.5, T0 + 2, LEAD);
        let at = tl.play(0, T0 + 3, LEAD);
        assert_eq!(tl.at(at).anchor_beat, 0.0);
    }

    #[test]
    fn pause_during_count_in_rewinds_to_music_start() {
        let mut tl = Timeline::new(T0, 120.0, 4, 4);
        tl.seek(16.0, T0, LEAD);
        let at = tl.play(1, T0 + LEAD, LEAD);
        let (_, beat) = tl.pause(at + 500_000, LEAD);
        assert_eq!(beat, 16.0);
    }

    #[test]
    fn meter_change_lands_on_next_bar_line_and_keeps_bar_numbers() {
        let mut tl = playing_at_120();
        let now = T0 + LEAD + 2_500_000; // beat 5 = bar 1, beat 2 of 4
        let at = tl.set_meter(3, 4, now, LEAD);
        let seg = *tl.at(at);
        assert_eq!(seg.anchor_beat, 8.0, "next bar line after beat 5.3");
        assert_eq!(seg.bar_of(8.0), 2);
        assert_eq!(seg.bar_of(11.0), 3, "bars are now 3 beats long");
        assert_eq!(tl.at(now).bar_of(5.0), 1);
    }

    #[test]
    fn seek_and_stop_move_the_anchor() {
        let mut tl = playing_at_120();
        let now = T0 + LEAD + 1_000_000;
        let at = tl.seek(32.0, now, LEAD);
        assert!((tl.position(at + 500_000) - 33.0).abs() < 1e-9);
        let at = tl.stop(at + 1_000_000, LEAD);
        assert_eq!(tl.position(at + 1), 0.0);
        assert!(!tl.at(at).playing);
    }

    #[test]
    fn prune_keeps_the_segment_in_force() {
        let mut tl = playing_at_120();
        tl.set_tempo(100.0, T0 + 10_000_000, LEAD);
        tl.prune(T0 + 20_000_000);
        assert_eq!(tl.segments().len(), 1);
        assert_eq!(tl.latest().tempo_bpm, 100.0);
    }

    #[test]
    fn tick_seq_is_monotonic_in_time() {
        assert_eq!(tick_seq(1_000_000, 100_000, 0), 10);
        assert_eq!(tick_seq(1_099_999, 100_000, 0), 10);
        assert_eq!(tick_seq(1_100_000, 100_000, 0), 11);
        assert_eq!(
            tick_seq(1_029_999, 100_000, 30_000),
            9,
            "a shard in slot 3 ticks 30 ms into the period"
        );
        assert_eq!(tick_seq(1_030_000, 100_000, 30_000), 10);
    }

    #[test]
    fn shards_spread_over_the_slots_of_a_period() {
        let phases = |period: Micros| -> std::collections::BTreeSet<Micros> {
            (0..256).map(|s| tick_phase(s, period)).collect()
        };
        assert_eq!(phases(100_000).len(), 10, "10 Hz: ten slots of 10 ms");
        assert_eq!(phases(1_000_000).len(), 100, "1 Hz: a hundred");
        assert_eq!(phases(10_000).len(), 1);
        assert_eq!(tick_phase(13, 1_000_000), 130_000);
        assert_eq!(tick_phase(13, 100_000), 30_000);
        for period in [10_000, 100_000, 155_000, 1_000_000, 60_000_000] {
            assert!(phases(period).iter().all(|&p| (0..period).contains(&p)));
        }
    }

    #[test]
    fn the_slot_loop_meets_every_shards_phase_once_a_period() {
        for period in [10_000, 100_000, 155_000, 1_000_000] {
            let mut met = std::collections::BTreeMap::new();
            let from = T0 + 1_234;
            let mut t = from;
            loop {
                let (next, slot) = next_tick_slot(t, period);
                assert!(next > t);
                if next > from + 3 * period {
                    break;
                }
                let offset = next.rem_euclid(period);
                assert_eq!(offset, slot * (period / tick_slots(period)));
                *met.entry(offset).or_insert(0) += 1;
                t = next;
            }
            let phases: std::collections::BTreeSet<Micros> =
                (0..256).map(|s| tick_phase(s, period)).collect();
            for p in phases {
                assert!(
                    met.get(&p) == Some(&3),
                    "period {period}: phase {p} met {:?} times in three periods",
                    met.get(&p)
                );
            }
        }
    }

    #[test]
    fn golden_json() {
        let tl = Timeline::new(1_000, 120.0, 4, 4);
        let json = serde_json::to_string(&tl).expect("serialises");
        assert_eq!(
            json,
            r#"{"segments":[{"anchor_time":1000,"anchor_beat":0.0,"tempo_bpm":120.0,"playing":false,"beats_per_bar":4,"beat_unit":4,"bar_origin_beat":0.0,"bar_origin_number":0}]}"#
        );
        assert_eq!(serde_json::from_str::<Timeline>(&json).expect("parses"), tl);
    }

    /// A valid one-segment timeline as JSON, with `edit` applied to the segment.
    fn json_with(edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut v = serde_json::to_value(Timeline::new(1_000, 120.0, 4, 4)).expect("ser");
        edit(&mut v["segments"][0]);
        v.to_string()
    }

    fn refused(json: &str) -> String {
        serde_json::from_str::<Timeline>(json)
            .expect_err("an invalid timeline is refused")
            .to_string()
    }

    #[test]
    fn deserialising_refuses_every_invalid_shape() {
        assert!(serde_json::from_str::<Timeline>(&json_with(|_| {})).is_ok());
        assert!(refused(r#"{"segments":[]}"#).contains("no segments"));
        let segment =
            serde_json::to_value(Timeline::new(1_000, 120.0, 4, 4).segments[0]).expect("ser");
        let at = |t: i64| {
            let mut s = segment.clone();
            s["anchor_time"] = t.into();
            s
        };
        let list =
            |segs: Vec<serde_json::Value>| serde_json::json!({ "segments": segs }).to_string();
        assert!(refused(&list(vec![at(2), at(1)])).contains("segment 1 starts at 1"));
        assert!(
            refused(&list(vec![at(1), at(1)])).contains("not after"),
            "strictly increasing: equal times are refused"
        );
        let nine = (0..=MAX_SEGMENTS as i64).map(at).collect();
        assert!(refused(&list(nine)).contains("9 segments, at most 8"));
        let eight = (0..MAX_SEGMENTS as i64).map(at).collect();
        assert!(serde_json::from_str::<Timeline>(&list(eight)).is_ok());

        let field =
            |name: &str, value: serde_json::Value| refused(&json_with(|s| s[name] = value.clone()));
        assert!(field("beats_per_bar", 0.into()).contains("beats_per_bar 0 is outside 1..=32"));
        assert!(field("beats_per_bar", 33.into()).contains("beats_per_bar 33"));
        assert!(field("beat_unit", 3.into()).contains("beat_unit 3 is not one of"));
        assert!(field("beat_unit", 0.into()).contains("beat_unit 0"));
        assert!(field("tempo_bpm", 0.0.into()).contains("tempo_bpm 0 is outside 20..=400"));
        assert!(field("tempo_bpm", 19.99.into()).contains("tempo_bpm 19.99"));
        assert!(field("tempo_bpm", 400.5.into()).contains("tempo_bpm 400.5"));
        // JSON has no NaN or infinity; serde_json refuses a number it cannot hold.
        assert!(
            refused(&json_with(|_| {}).replace("\"anchor_beat\":0.0", "\"anchor_beat\":1e999"))
                .contains("number out of range")
        );
        // Other formats can carry them: the check itself refuses each field.
        let base = Timeline::new(1_000, 120.0, 4, 4).segments[0];
        type Edit = fn(&mut Segment);
        let cases: [(&str, Edit); 6] = [
            ("anchor_beat", |s| s.anchor_beat = f64::NAN),
            ("anchor_beat", |s| s.anchor_beat = f64::INFINITY),
            ("bar_origin_beat", |s| s.bar_origin_beat = f64::NEG_INFINITY),
            ("count_in_until", |s| s.count_in_until = Some(f64::NAN)),
            ("tempo_bpm", |s| s.tempo_bpm = f64::NAN),
            ("tempo_bpm", |s| s.tempo_bpm = f64::INFINITY),
        ];
        for (name, edit) in cases {
            let mut seg = base;
            edit(&mut seg);
            let err = Timeline::try_from(TimelineRepr {
                segments: vec![seg],
            })
            .expect_err("non-finite refused");
            assert!(
                matches!(err, InvalidTimeline::NotFinite { field, .. } if field == name),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn position_and_bars_do_not_overflow_at_the_ends_of_time() {
        let tl = playing_at_120();
        assert!(tl.position(i64::MIN).is_finite());
        assert!(tl.position(i64::MAX).is_finite());
        let mut seg = *tl.latest();
        seg.bar_origin_number = i64::MAX;
        assert_eq!(seg.bar_of(8.0), i64::MAX, "saturates");
        assert_eq!(seg.checked_bar_of(8.0), None);
        assert_eq!(seg.checked_bar_of(0.0), Some(i64::MAX));
        seg.bar_origin_number = 0;
        seg.bar_origin_beat = -1e308;
        assert_eq!(seg.checked_bar_of(1e308), None, "the bar count is infinite");
        assert_eq!(seg.checked_bar_of(f64::NAN), None);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Tempo(f64),
        Meter(u8),
        Play(u8),
        Pause,
        Stop,
        Seek(f64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (MIN_BPM..MAX_BPM).prop_map(Op::Tempo),
            (1u8..=MAX_BEATS_PER_BAR).prop_map(Op::Meter),
            (0u8..=MAX_COUNT_IN_BARS).prop_map(Op::Play),
            Just(Op::Pause),
            Just(Op::Stop),
            (0.0..1000.0f64).prop_map(Op::Seek),
        ]
    }

    /// Equal, floats up to the last bit: serde_json's default float parser is
    /// not correctly rounded (106.89804747635063 reads back as ...064; exact
    /// needs its `float_roundtrip` feature).
    fn same_but_rounding(a: &Timeline, b: &Timeline) -> bool {
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-12 * x.abs().max(1.0);
        a.segments.len() == b.segments.len()
            && a.segments.iter().zip(&b.segments).all(|(x, y)| {
                let floats = |s: &Segment| [s.anchor_beat, s.tempo_bpm, s.bar_origin_beat];
                x.anchor_time == y.anchor_time
                    && (x.playing, x.beats_per_bar, x.beat_unit, x.bar_origin_number)
                        == (y.playing, y.beats_per_bar, y.beat_unit, y.bar_origin_number)
                    && floats(x)
                        .into_iter()
                        .zip(floats(y))
                        .all(|(p, q)| close(p, q))
                    && match (x.count_in_until, y.count_in_until) {
                        (Some(p), Some(q)) => close(p, q),
                        (p, q) => p == q,
                    }
            })
    }

    proptest! {
        /// Whatever the leader does, segments stay ordered, bounded, and the
        /// position never jumps except where a pause, stop, seek or play says so.
        #[test]
        fn timeline_invariants(ops in proptest::collection::vec((op(), 0i64..2_000_000), 1..40)) {
            let mut tl = Timeline::new(T0, 120.0, 4, 4);
            let mut now = T0;
            for (op, gap) in ops {
                now += gap;
                let before = tl.clone();
                let at = match op {
                    Op::Tempo(b) => tl.set_tempo(b, now, LEAD),
                    Op::Meter(m) => tl.set_meter(m, 4, now, LEAD),
                    Op::Play(n) if !tl.latest().playing => tl.play(n, now, LEAD),
                    Op::Pause if tl.latest().playing => tl.pause(now, LEAD).0,
                    Op::Stop => tl.stop(now, LEAD),
                    Op::Seek(b) => tl.seek(b, now, LEAD),
                    _ => continue,
                };
                prop_assert!(at >= now + LEAD, "changes never take effect before the lead time");
                prop_assert!(tl.segments().windows(2).all(|w| w[0].anchor_time < w[1].anchor_time));
                prop_assert!(tl.segments().len() <= MAX_SEGMENTS);
                // Whatever the operations build, a receiver accepts and reads back.
                let json = serde_json::to_string(&tl).expect("serialises");
                let back: Result<Timeline, _> = serde_json::from_str(&json);
                prop_assert!(
                    back.as_ref().is_ok_and(|b| same_but_rounding(b, &tl)),
                    "{:?} from {}", back, json
                );
                // Nothing changes before the effective time.
                prop_assert!((tl.position(now) - before.position(now)).abs() < 1e-6);
                if matches!(op, Op::Tempo(_) | Op::Meter(_)) {
                    // Tempo and meter changes keep the position continuous.
                    prop_assert!((tl.position(at) - before.position(at)).abs() < 1e-4);
                }
            }
        }
    }
}
