// The honest sync light: a device that no longer hears the band says so and
// reconnects, rather than showing "live" over a stale timeline. Two signs:
// - no tick while the timeline plays for a few tick periods (the period is
//   read from the ticks themselves: server time over seq), once this
//   connection has heard two ticks (a server that never ticked proves nothing);
// - a ping unanswered for PONG_LATE_MS;
// - a socket not welcomed within WELCOME_LATE_MS of connecting.
// It checks on a timer, not on animation frames, which stop in hidden tabs.
import { Conn, reconnectNow } from './conn.js';
import { S } from './state.js';
import { Timeline } from './timeline.js';
import { Clock } from './clock.js';

const TICK_PERIODS_MISSED = 4;
const TICK_SILENCE_MIN_MS = 1200;
const PONG_LATE_MS = 3000;
const WELCOME_LATE_MS = 5000;
const CHECK_EVERY_MS = 250;

/** Called for every tick of this connection (after the epoch and seq checks). */
export function heardTick(m) {
  const now = performance.now();
  const last = Conn.lastTick;
  if (last && m.seq > last.seq) {
    const period = (m.server_time - last.serverTime) / (m.seq - last.seq) / 1000;
    if (period > 0 && period < 60_000) Conn.tickPeriodMs = period;
  }
  Conn.lastTick = { seq: m.seq, serverTime: m.server_time, at: now };
}

/** Why this device is out of sync now, or null. */
export function staleReason(now = performance.now()) {
  if (!Conn.ws) return null;
  if (Conn.pingSince != null && now - Conn.pingSince > PONG_LATE_MS) return 'no answer to pings';
  if (!S.welcomed) return now - Conn.openedAt > WELCOME_LATE_MS ? 'no welcome' : null;
  if (Conn.tickPeriodMs && Conn.lastTick && S.timeline) {
    const seg = Timeline.at(S.timeline, Clock.serverNow());
    // Silence counts from the last tick, or from when playing began if later
    // (ticks may have paused with the band: a resume after a long pause is not a stall).
    const since = Math.max(Conn.lastTick.at, Clock.toLocalPerfMs(seg.anchor_time));
    const silence = now - since;
    if (seg.playing && silence > Math.max(TICK_SILENCE_MIN_MS, TICK_PERIODS_MISSED * Conn.tickPeriodMs)) return 'no ticks';
  }
  return null;
}

export function startWatchdog() {
  setInterval(() => {
    const why = staleReason();
    if (why) reconnectNow(why);
  }, CHECK_EVERY_MS);
}
