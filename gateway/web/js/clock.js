// Clock sync: this page's estimate of the server clock, by interval
// intersection, the estimator of the Rust SDK (client/src/clock.rs, whose
// comment explains it); both compute the same offset from the same samples
// (golden vectors: protocol/tests/vectors.json, checked by both test suites).
//
// A ping sent at local t0, stamped `server` by the gateway, received at local
// t3 proves the offset θ = server − local lies in [server − t3, server − t0].
// The estimate is the centre of the intersection of the recent intervals,
// each widened by the assumed drift over its age. Integer µs throughout, with
// Rust's rounding (`/` truncates, `div_euclid` floors), so the two agree exactly.

/** Pings sent at SETTLE_EVERY_MS after connecting, then one per steady interval. */
export const SETTLE_PINGS = 40;
export const SETTLE_EVERY_MS = 250;
const RECENT = 32;
const DRIFT_PPM = 30;

const div = (a, b) => Math.trunc(a / b); // Rust's i64 `/`
const drift = (age) => div(age * DRIFT_PPM, 1_000_000);

const low = (s, epoch) => s.offset - div(s.rtt, 2) + drift(s.t0 - epoch);
const high = (s, epoch) => s.offset + div(s.rtt + 1, 2) - drift(s.t0 - epoch);

/** Pure estimator: feed it samples, read the offset. */
export class ClockSync {
  constructor() {
    this.recent = [];
    this.epoch = 0;
    this.lower = 0;
    this.upper = 0;
    this.estimate = 0;
    this.resets = 0;
    this.taken = 0;
  }

  /** `t0` local send time, `server` the pong's server time, `t3` local receive time (µs, integers). */
  add(t0, server, t3) {
    const rtt = Math.max(0, t3 - t0);
    this.taken += 1;
    const s = { t0, rtt, offset: server - div(t0 + t3, 2) };
    if (this.recent.length === RECENT) this.recent.shift();
    this.recent.push(s);
    if (this.recent.length === 1) {
      this.epoch = t0;
      this.lower = low(s, t0);
      this.upper = high(s, t0);
    } else {
      const lower = Math.max(this.lower, low(s, this.epoch));
      const upper = Math.min(this.upper, high(s, this.epoch));
      const widen = 2 * drift(s.t0 - this.epoch);
      if (lower - upper > widen) this.rebuild();
      else {
        this.lower = lower;
        this.upper = upper;
      }
    }
    this.estimate = Math.floor((this.lower + this.upper) / 2);
  }

  /** The newest sample disagrees: keep the longest run of recent samples, newest first, that intersect. */
  rebuild() {
    this.resets += 1;
    const newest = this.recent[this.recent.length - 1];
    this.epoch = newest.t0;
    let lower = low(newest, this.epoch);
    let upper = high(newest, this.epoch);
    let keep = 1;
    for (let i = this.recent.length - 2; i >= 0; i--) {
      const s = this.recent[i];
      const l = Math.max(lower, low(s, this.epoch));
      const u = Math.min(upper, high(s, this.epoch));
      if (l > u) break;
      lower = l;
      upper = u;
      keep += 1;
    }
    this.recent.splice(0, this.recent.length - keep);
    this.lower = lower;
    this.upper = upper;
  }

  get offset() {
    return this.estimate;
  }

  /** Half-width of the interval the offset lies in at local time `now`, or null before any sample. */
  uncertainty(now) {
    if (!this.recent.length) return null;
    return Math.max(0, div(this.upper - this.lower, 2) + drift(now - this.epoch));
  }

  get minRtt() {
    return this.recent.length ? Math.min(...this.recent.map((s) => s.rtt)) : null;
  }

  /** Delay before the next ping: quick while settling, then `steadyMs`. */
  pingInterval(steadyMs) {
    return this.taken < SETTLE_PINGS ? Math.min(SETTLE_EVERY_MS, steadyMs) : steadyMs;
  }
}

/** Local wall clock in µs (monotonic within the page). */
export const localNowUs = () => (performance.timeOrigin + performance.now()) * 1000;

/** The page's clock: the estimator fed by pongs, and conversions to and from server time. */
export const Clock = {
  sync: new ClockSync(),
  primed: 0, // offset guessed from the welcome, before any pong
  get offsetUs() {
    return this.sync.taken ? this.sync.offset : this.primed;
  },
  get rttUs() {
    return this.sync.minRtt;
  },
  get synced() {
    return this.sync.taken > 0;
  },
  add(t0, serverTime, t3) {
    if (!(t3 - t0 >= 0) || t3 - t0 > 10e6) return;
    this.sync.add(Math.round(t0), Math.round(serverTime), Math.round(t3));
  },
  /** A first guess from a one-way message (welcome), until pongs arrive. */
  prime(serverTime) {
    if (!this.synced) this.primed = serverTime - localNowUs();
  },
  serverNow() {
    return localNowUs() + this.offsetUs;
  },
  toLocalPerfMs(serverUs) {
    return (serverUs - this.offsetUs) / 1000 - performance.timeOrigin;
  },
};
