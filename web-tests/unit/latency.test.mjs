// Tap-along calibration: the median lateness of the taps becomes the offset.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { offsetFromTaps } from '../../gateway/web/js/latency.js';

const tl = { segments: [{ anchor_time: 0, anchor_beat: 0, tempo_bpm: 120, playing: true, beats_per_bar: 4, beat_unit: 4, bar_origin_beat: 0, bar_origin_number: 0 }] };
const beat = 500_000; // µs at 120 BPM

test('taps 80 ms after the beats, one wild: an offset of 80 ms', () => {
  const taps = [1, 2, 3, 4, 5, 6, 7, 8].map((k) => k * beat + 80_000);
  taps[3] += 150_000; // a late tap: the median ignores it
  assert.equal(offsetFromTaps(tl, taps, 0), 80);
  assert.equal(offsetFromTaps(tl, taps, 20), 100, 'added to the offset already in force');
});

test('taps early, too few taps, and taps while stopped', () => {
  assert.equal(offsetFromTaps(tl, [1, 2, 3, 4, 5, 6, 7, 8].map((k) => k * beat - 30_000), 0), -30);
  assert.equal(offsetFromTaps(tl, [beat, 2 * beat], 0), null);
  const stopped = { segments: [{ ...tl.segments[0], playing: false }] };
  assert.equal(offsetFromTaps(stopped, [1, 2, 3, 4, 5, 6, 7, 8].map((k) => k * beat), 0), null);
});
