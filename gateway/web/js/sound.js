// The metronome: every click scheduled through WebAudio at the exact server
// time of its beat, mapped to the audio clock.
import { Clock } from './clock.js';
import { S } from './state.js';
import { Timeline } from './timeline.js';
import { showError } from './views.js';

const LOOKAHEAD_MS = 200; // clicks scheduled this far ahead while visible
const LOOKAHEAD_HIDDEN_MS = 1500; // timers are throttled in background tabs
const SCHEDULER_EVERY_MS = 25;
const COMMIT_MARGIN_US = 8000; // clicks this close to now are left alone

export const Sound = {
  ctx: null,
  on: false,
  scheduled: [], // [{t (server µs), osc}]
  recent: [], // last clicks scheduled, for tests: [{t, beat, accent, countIn}]
  timer: null,
  async enable() {
    if (!this.ctx) {
      const AC = window.AudioContext || window.webkitAudioContext;
      if (!AC) {
        showError('no_audio', 'This browser has no Web Audio, so the click cannot sound here.');
        return;
      }
      this.ctx = new AC({ latencyHint: 'interactive' });
    }
    try {
      await this.ctx.resume();
    } catch {
      /* resumes on the next gesture */
    }
    this.on = true;
    this.timer = setInterval(() => this.tick(), SCHEDULER_EVERY_MS);
    this.tick();
  },
  disable() {
    this.on = false;
    clearInterval(this.timer);
    this.stopAll();
  },
  stopAll() {
    for (const c of this.scheduled) {
      try {
        c.osc.stop();
      } catch {
        /* already stopped */
      }
    }
    this.scheduled = [];
  },
  /** Maps a server time (µs) to this AudioContext's clock, output latency included. */
  audioTimeOf(serverUs) {
    const ctx = this.ctx;
    const perfMs = Clock.toLocalPerfMs(serverUs);
    const ts = ctx.getOutputTimestamp ? ctx.getOutputTimestamp() : null;
    if (ts && ts.performanceTime > 0 && ts.contextTime > 0) {
      return ts.contextTime + (perfMs - ts.performanceTime) / 1000;
    }
    const latency = ctx.outputLatency || ctx.baseLatency || 0;
    return ctx.currentTime + (perfMs - performance.now()) / 1000 - latency;
  },
  /** Brings the scheduled clicks in line with the timeline: adds due ones, cancels stale ones. */
  tick() {
    if (!this.on || !this.ctx || !S.timeline) return;
    const now = Clock.serverNow();
    const from = now + COMMIT_MARGIN_US;
    const ahead = (document.hidden ? LOOKAHEAD_HIDDEN_MS : LOOKAHEAD_MS) * 1000;
    const want = Timeline.beatsBetween(S.timeline, from, now + ahead);
    const keep = [];
    for (const c of this.scheduled) {
      if (c.t < from) {
        if (c.t > now - 1e6) keep.push(c); // committed; forget it a second later
      } else if (want.some((w) => Math.abs(w.t - c.t) < 1000)) {
        keep.push(c);
      } else {
        try {
          c.osc.stop();
        } catch {
          /* never started */
        }
      }
    }
    this.scheduled = keep;
    for (const w of want) {
      if (keep.some((c) => Math.abs(c.t - w.t) < 1000)) continue;
      const at = this.audioTimeOf(w.t);
      if (at < this.ctx.currentTime) continue;
      this.scheduled.push({ t: w.t, osc: this.click(at, w) });
      // For tests: how far ahead on the audio clock vs. on the server clock.
      this.recent.push({ ...w, audioLead: at - this.ctx.currentTime, serverLead: (w.t - Clock.serverNow()) / 1e6 });
      if (this.recent.length > 64) this.recent.shift();
    }
  },
  click(at, w) {
    const ctx = this.ctx;
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.type = 'square';
    osc.frequency.value = w.accent ? (w.countIn ? 1568 : 1760) : w.countIn ? 784 : 1046.5;
    const peak = w.accent ? 0.45 : 0.28;
    gain.gain.setValueAtTime(0.0001, at);
    gain.gain.exponentialRampToValueAtTime(peak, at + 0.001);
    gain.gain.exponentialRampToValueAtTime(0.0001, at + 0.045);
    osc.connect(gain).connect(ctx.destination);
    osc.start(at);
    osc.stop(at + 0.05);
    return osc;
  },
};
