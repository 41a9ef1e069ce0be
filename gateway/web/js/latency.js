// Tap-along latency calibration: the musician taps on each click they hear;
// how late the taps land after the beats is how late this device's sound
// comes out (plus their own reaction, which tapping along mostly cancels).
// Pure: no DOM, tested in node.
import { Timeline } from './timeline.js';

export const TAPS_NEEDED = 8;

/**
 * The latency offset (ms) the taps suggest: the median of each tap's
 * distance to its nearest beat, added to the offset already in force (the
 * clicks were already moved by it). Null until TAPS_NEEDED taps fell on a
 * playing timeline.
 */
export function offsetFromTaps(tl, taps, currentMs) {
  const diffs = [];
  for (const t of taps) {
    const seg = Timeline.at(tl, t);
    if (!seg.playing) continue;
    const pos = Timeline.segPosition(seg, t);
    const nearest = Math.round(pos);
    diffs.push(((pos - nearest) * 60e3) / seg.tempo_bpm);
  }
  if (diffs.length < TAPS_NEEDED) return null;
  diffs.sort((a, b) => a - b);
  const mid = diffs.length >> 1;
  const median = diffs.length % 2 ? diffs[mid] : (diffs[mid - 1] + diffs[mid]) / 2;
  return Math.max(-300, Math.min(300, Math.round(currentMs + median)));
}
