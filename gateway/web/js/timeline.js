// Pure functions over the server's Timeline JSON; they mirror
// protocol/src/timeline.rs (golden vectors: protocol/tests/vectors.json).
// No DOM here: node's test runner imports this module as it is.

export const EPS_BEATS = 1e-6; // same tolerance as the server's timeline math

export const Timeline = {
  /** The segment in force at server time t: the last with anchor_time <= t, else the first. */
  at(tl, t) {
    const segs = tl.segments;
    for (let i = segs.length - 1; i >= 0; i--) if (segs[i].anchor_time <= t) return segs[i];
    return segs[0];
  },
  segPosition(seg, t) {
    return seg.playing ? seg.anchor_beat + ((t - seg.anchor_time) * seg.tempo_bpm) / 60e6 : seg.anchor_beat;
  },
  position(tl, t) {
    return Timeline.segPosition(Timeline.at(tl, t), t);
  },
  barOf(seg, beat) {
    return seg.bar_origin_number + Math.floor((beat - seg.bar_origin_beat + EPS_BEATS) / seg.beats_per_bar);
  },
  barStart(seg, beat) {
    const bpb = seg.beats_per_bar;
    return seg.bar_origin_beat + Math.floor((beat - seg.bar_origin_beat + EPS_BEATS) / bpb) * bpb;
  },
  /** First bar line at or after `beat`. */
  nextBarLine(seg, beat) {
    const bpb = seg.beats_per_bar;
    return seg.bar_origin_beat + Math.ceil((beat - seg.bar_origin_beat - EPS_BEATS) / bpb) * bpb;
  },
  /** Server time (integer µs, rounded like Rust's `f64::round`) at which `seg` reaches `beat`. */
  timeOfBeat(seg, beat) {
    const dt = ((beat - seg.anchor_beat) * 60e6) / seg.tempo_bpm;
    return seg.anchor_time + Math.sign(dt) * Math.round(Math.abs(dt));
  },
  /** First beat of 0-based bar number `bar` under segment `seg`. */
  beatOfBar(seg, bar) {
    return seg.bar_origin_beat + (bar - seg.bar_origin_number) * seg.beats_per_bar;
  },
  /**
   * What a musician sees at server time t: 1-based bar and beat, count-in, mode.
   * During a count-in, `bar` counts down to the music: -2, -1.
   */
  describe(tl, t) {
    const seg = Timeline.at(tl, t);
    const pos = Timeline.segPosition(seg, t);
    const countIn = seg.playing && seg.count_in_until != null && pos < seg.count_in_until - EPS_BEATS;
    // A count-in is counted back from where the music starts (count_in_until),
    // so its display shows exactly the bars asked for: −2, −1, then bar 1.
    const bpb = seg.beats_per_bar;
    const start = countIn
      ? seg.count_in_until - Math.ceil((seg.count_in_until - pos - EPS_BEATS) / bpb) * bpb
      : Timeline.barStart(seg, pos);
    const beatInBar = Math.floor(pos - start + EPS_BEATS);
    const frac = pos - Math.floor(pos + EPS_BEATS);
    const bar = countIn ? -Math.round((seg.count_in_until - start) / bpb) : Timeline.barOf(seg, pos) + 1;
    const latest = tl.segments[tl.segments.length - 1];
    let mode;
    if (countIn) mode = 'count-in';
    else if (seg.playing) mode = 'playing';
    else if (latest.playing && latest.anchor_time > t) mode = 'starting';
    else if (Math.abs(pos) < EPS_BEATS) mode = 'stopped';
    else mode = 'paused';
    const barText = bar < 0 ? `\u2212${-bar}` : String(bar);
    return {
      pos, seg, bar, beat: beatInBar + 1, beatIndex: beatInBar, frac, countIn, mode,
      chartBar: countIn ? null : Timeline.barOf(seg, pos),
      text: `${barText}:${beatInBar + 1}`,
    };
  },
  /**
   * Integer beats whose server time lies in [a, b), across segments:
   * [{t, beat, accent, countIn}]. A segment only clicks from its own anchor_time on.
   */
  beatsBetween(tl, a, b) {
    const out = [];
    const segs = tl.segments;
    for (let i = 0; i < segs.length; i++) {
      const seg = segs[i];
      if (!seg.playing) continue;
      const lo = Math.max(a, seg.anchor_time);
      const hi = Math.min(b, i + 1 < segs.length ? segs[i + 1].anchor_time : Infinity);
      if (lo >= hi) continue;
      const first = Math.ceil(Timeline.segPosition(seg, lo) - EPS_BEATS) || 0; // never -0
      const last = Timeline.segPosition(seg, hi);
      for (let k = first; k < last - EPS_BEATS && out.length < 256; k++) {
        const t = Timeline.timeOfBeat(seg, k);
        if (t < lo - 1 || t >= hi) continue;
        const start = Timeline.barStart(seg, k);
        out.push({
          t,
          beat: k,
          tempo: seg.tempo_bpm,
          next: i + 1 < segs.length ? segs[i + 1].anchor_time : null, // where this segment ends
          accent: Math.abs(k - start) < EPS_BEATS,
          countIn: seg.count_in_until != null && k < seg.count_in_until - EPS_BEATS,
        });
      }
    }
    return out;
  },
};
