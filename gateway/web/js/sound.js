// The metronome: every click scheduled through WebAudio at the exact server
// time of its beat, mapped to the audio clock.
import { Clock } from './clock.js';
import { S } from './state.js';
import { Prefs } from './prefs.js';
import { Timeline } from './timeline.js';
import { showError } from './views.js';

const LOOKAHEAD_MS = 200; // clicks scheduled this far ahead while visible
const LOOKAHEAD_HIDDEN_MS = 1500; // timers are throttled in background tabs
const SCHEDULER_EVERY_MS = 25;
const COMMIT_MARGIN_US = 8000; // clicks this close to now are left alone
const TONES = {
  beep: { type: 'square', pitch: 1, decay: 0.045 },
  soft: { type: 'sine', pitch: 1, decay: 0.06 },
  wood: { type: 'triangle', pitch: 1.6, decay: 0.025 },
};

/**
 * The clicks due in [from, to): the beats, and with subdivisions the
 * subdivision clicks between them (marked `sub`, never accented). Beats are
 * read from one beat before `from`, so a subdivision of a beat already past
 * is still wanted (else each pass would cancel it).
 */
export function wanted(from, to) {
  const sub = Prefs.click.subdivision;
  const beats = Timeline.beatsBetween(S.timeline, sub > 1 ? from - 3e6 : from, to);
  const out = [];
  for (const b of beats) {
    if (b.t >= from) out.push(b);
    for (let j = 1; j < sub; j++) {
      const t = Math.round(b.t + (j * 60e6) / b.tempo / sub);
      if (t >= from && t < to && (!b.next || t < b.next)) out.push({ ...b, t, sub: j, accent: false });
    }
  }
  return out.sort((a, b) => a.t - b.t);
}

export const Sound = {
  ctx: null,
  on: false,
  scheduled: [], // [{t (server µs), osc}]
  recent: [], // last clicks scheduled, for tests: [{t, beat, accent, countIn}]
  timer: null,
  async enable() {
    // iOS Safari mutes Web Audio with the silent switch unless the page says it
    // plays media; a click the drummer cannot hear is worse than none.
    if (navigator.audioSession) navigator.audioSession.type = 'playback';
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
    this.warnLatency();
  },
  /** Settings changed: drop the clicks scheduled with the old ones; the next pass schedules anew. */
  retune() {
    this.stopAll();
    if (this.on) this.tick();
    this.warnLatency();
  },
  /** Bluetooth outputs are slow: say so, the offset can make up for it. */
  warnLatency() {
    const box = document.querySelector('#click-latency-warning');
    const ms = this.ctx ? Math.round((this.ctx.outputLatency || 0) * 1000) : 0;
    box.hidden = !(ms > 50);
    box.textContent = `This device's audio output is ${ms} ms late (Bluetooth?): the click may sound behind the band; a latency offset of about ${ms} ms makes up for it.`;
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
    if (Prefs.click.visualOnly) return this.stopAll();
    const now = Clock.serverNow();
    const from = now + COMMIT_MARGIN_US;
    const ahead = (document.hidden ? LOOKAHEAD_HIDDEN_MS : LOOKAHEAD_MS) * 1000;
    const want = wanted(from, now + ahead);
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
      // The latency offset plays the click that much earlier (positive) or later.
    const at = this.audioTimeOf(w.t) - Prefs.click.latencyMs / 1000;
      if (at < this.ctx.currentTime) continue;
      this.scheduled.push({ t: w.t, osc: this.click(at, w) });
      // For tests: how far ahead on the audio clock vs. on the server clock.
      this.recent.push({ ...w, audioLead: at - this.ctx.currentTime, serverLead: (w.t - Clock.serverNow()) / 1e6 });
      if (this.recent.length > 64) this.recent.shift();
    }
  },
  click(at, w) {
    const ctx = this.ctx;
    const c = Prefs.click;
    const accent = w.accent && c.accent && !w.sub;
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    const tone = TONES[c.sound] || TONES.beep;
    osc.type = tone.type;
    const base = accent ? (w.countIn ? 1568 : 1760) : w.countIn ? 784 : 1046.5;
    osc.frequency.value = base * tone.pitch * (w.sub ? 0.75 : 1);
    const peak = Math.max(0.0002, (accent ? 0.45 : w.sub ? 0.16 : 0.28) * c.volume);
    gain.gain.setValueAtTime(0.0001, at);
    gain.gain.exponentialRampToValueAtTime(peak, at + 0.001);
    gain.gain.exponentialRampToValueAtTime(0.0001, at + tone.decay);
    osc.connect(gain).connect(ctx.destination);
    osc.start(at);
    osc.stop(at + tone.decay + 0.005);
    return osc;
  },
};
