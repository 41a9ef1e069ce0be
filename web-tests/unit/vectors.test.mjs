// The browser's pure modules against the golden vectors shared with Rust
// (protocol/tests/vectors.json; protocol/tests/vectors.rs and
// client/tests/clock_vectors.rs read the same file): identical positions,
// bars, beat times and clock offsets, compared exactly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ClockSync } from '../../gateway/web/js/clock.js';
import { Timeline } from '../../gateway/web/js/timeline.js';

const vectors = JSON.parse(readFileSync(new URL('../../protocol/tests/vectors.json', import.meta.url)));

test('timeline cases: positions, bars, bar lines and beat times as in Rust', () => {
  assert.ok(vectors.timeline.length >= 8);
  for (const c of vectors.timeline) {
    for (const q of c.at) {
      const seg = Timeline.at(c.timeline, q.t);
      const pos = Timeline.position(c.timeline, q.t);
      assert.equal(pos, q.position, `${c.name}: position at ${q.t}`);
      assert.equal(Timeline.barOf(seg, pos), q.bar, `${c.name}: bar at ${q.t}`);
      assert.equal(Timeline.barStart(seg, pos), q.bar_start, `${c.name}: bar start at ${q.t}`);
      assert.equal(Timeline.nextBarLine(seg, pos), q.next_bar_line, `${c.name}: next bar line at ${q.t}`);
    }
    const latest = c.timeline.segments[c.timeline.segments.length - 1];
    for (const q of c.time_of_beat) {
      assert.equal(Timeline.timeOfBeat(latest, q.beat), q.time, `${c.name}: time of beat ${q.beat}`);
    }
  }
});

test('clock cases: the interval intersection gives the offsets of the Rust SDK after every sample', () => {
  assert.ok(vectors.clock.length >= 4);
  for (const c of vectors.clock) {
    const clock = new ClockSync();
    c.samples.forEach(([t0, server, t3], i) => {
      clock.add(t0, server, t3);
      assert.equal(clock.offset, c.offsets[i], `${c.name}: offset after sample ${i}`);
    });
    assert.equal(clock.minRtt, c.min_rtt, `${c.name}: min rtt`);
    assert.equal(clock.resets, c.resets, `${c.name}: resets`);
    assert.equal(clock.recent.length, c.kept, `${c.name}: kept`);
    assert.equal(clock.uncertainty(c.uncertainty_at[0]), c.uncertainty_at[1], `${c.name}: uncertainty`);
  }
});
