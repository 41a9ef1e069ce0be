// What a musician sees (Timeline.describe), which only the browser computes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Timeline } from '../../gateway/web/js/timeline.js';

const seg = (f) => ({
  anchor_time: 0, anchor_beat: 0, tempo_bpm: 120, playing: false, beats_per_bar: 4, beat_unit: 4,
  bar_origin_beat: 0, bar_origin_number: 0, ...f,
});
const seen = (tl, ts) => ts.map((t) => { const d = Timeline.describe(tl, t); return `${d.mode} ${d.text}`; });

test('a resume after a pause mid-bar counts exactly the bars asked for, then the bar that was playing', () => {
  // Paused at beat 30.88 (bar 8); play with one bar of count-in restarts bar 8 (beat 28).
  const tl = { segments: [seg({ anchor_time: 1e6, anchor_beat: 30.88 }), seg({ anchor_time: 5e6, anchor_beat: 24, playing: true, count_in_until: 28 })] };
  assert.deepEqual(seen(tl, [2e6, 5e6, 5.5e6, 6.5e6, 7e6, 7.5e6]), [
    'starting 8:3', 'count-in −1:1', 'count-in −1:2', 'count-in −1:4', 'playing 8:1', 'playing 8:2',
  ]);
});

test('a two-bar count-in shows −2 then −1, whatever the bar origin', () => {
  const tl = { segments: [seg({ anchor_time: 0, anchor_beat: -8, playing: true, count_in_until: 0 })] };
  assert.deepEqual(seen(tl, [0, 1.5e6, 2e6, 3.5e6, 4e6]), ['count-in −2:1', 'count-in −2:4', 'count-in −1:1', 'count-in −1:4', 'playing 1:1']);
  // An older server resumed from mid-bar (count_in_until 30.88): still one bar, counted to the re-entry.
  const old = { segments: [seg({ anchor_time: 0, anchor_beat: 26.88, playing: true, count_in_until: 30.88 })] };
  assert.deepEqual(seen(old, [0]), ['count-in −1:1']);
});

test('6/8: six beats to the bar', () => {
  const tl = { segments: [seg({ anchor_time: 0, playing: true, beats_per_bar: 6, beat_unit: 8 })] };
  assert.deepEqual(seen(tl, [0, 2.5e6, 3e6]), ['playing 1:1', 'playing 1:6', 'playing 2:1']);
});
