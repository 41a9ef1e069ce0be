// Clock sync: this page's estimate of the server clock from ping/pong.
// NTP-style: offset = server_time − (t0 + t3)/2, trusting the samples with the
// lowest round trip (their error is at most rtt/2) among the recent window.

const CLOCK_WINDOW = 16; // recent samples kept (about 30 s at one per 2 s)
const CLOCK_BEST = 3; // lowest-RTT samples averaged for the offset

/** Local wall clock in µs (monotonic within the page). */
export const localNowUs = () => (performance.timeOrigin + performance.now()) * 1000;

export const Clock = {
  samples: [],
  offsetUs: 0,
  rttUs: null,
  synced: false,
  add(t0, serverTime, t3) {
    const rtt = t3 - t0;
    if (!(rtt >= 0) || rtt > 10e6) return;
    this.samples.push({ offset: serverTime - (t0 + t3) / 2, rtt });
    if (this.samples.length > CLOCK_WINDOW) this.samples.shift();
    const best = [...this.samples].sort((x, y) => x.rtt - y.rtt).slice(0, CLOCK_BEST);
    this.offsetUs = best.reduce((s, x) => s + x.offset, 0) / best.length;
    this.rttUs = best[0].rtt;
    this.synced = true;
  },
  /** A first guess from a one-way message (welcome), until pongs arrive. */
  prime(serverTime) {
    if (!this.synced && this.samples.length === 0) this.offsetUs = serverTime - localNowUs();
  },
  serverNow() {
    return localNowUs() + this.offsetUs;
  },
  toLocalPerfMs(serverUs) {
    return (serverUs - this.offsetUs) / 1000 - performance.timeOrigin;
  },
};
