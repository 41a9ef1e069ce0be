// BandSync browser client: ES modules, no build step, no external resources.
//
// The contract is docs/protocol.md. In short: the server shares a *timeline*
// (segments with anchor time/beat and tempo); this client estimates its offset
// to the server clock with ping/pong (clock.js), then computes the position
// locally for every animation frame (frame.js) and schedules every metronome
// click at the exact server-derived beat time through WebAudio (sound.js).
import { Clock, localNowUs } from './clock.js';
import { Conn, send } from './conn.js';
import { updateSoundBtn, wire } from './controls.js';
import { frame } from './frame.js';
import { enterSession, showLanding } from './session.js';
import { Sound } from './sound.js';
import { AUTH_KEY, S } from './state.js';
import { Timeline } from './timeline.js';
import { startWatchdog } from './watchdog.js';
import { startReports } from './band.js';
import { $, store } from './util.js';

// ----------------------------------------------------------- debug hook
// For tests and the curious: everything is computed from these.
window.bandsync = {
  get state() {
    return S.state;
  },
  get timeline() {
    return S.timeline;
  },
  get me() {
    return S.me;
  },
  get offsetUs() {
    return Clock.offsetUs;
  },
  get rttUs() {
    return Clock.rttUs;
  },
  get synced() {
    return Clock.synced;
  },
  get connection() {
    return Conn.state;
  },
  get tickPeriodMs() {
    return Conn.tickPeriodMs;
  },
  /** Why the connection was last given up as out of sync (until the next welcome). */
  get outOfSync() {
    return Conn.outOfSync;
  },
  get reconnects() {
    return S.reconnects.slice();
  },
  get clicks() {
    return Sound.recent.slice();
  },
  serverNow: () => Clock.serverNow(),
  localNowUs,
  position: (t) => (S.timeline ? Timeline.position(S.timeline, t ?? Clock.serverNow()) : null),
  describe: (t) => {
    if (!S.timeline) return null;
    const { seg, ...d } = Timeline.describe(S.timeline, t ?? Clock.serverNow());
    return d;
  },
  beatsBetween: (a, b) => (S.timeline ? Timeline.beatsBetween(S.timeline, a, b) : []),
  send: (cmd) => send(cmd),
  Timeline,
};

// ----------------------------------------------------------------- start
wire();
const params = new URLSearchParams(location.search);
if (params.get('join')) $('#join-code').value = params.get('join').toUpperCase();
const auth = store.get('sessionStorage', AUTH_KEY);
if (auth && auth.token) enterSession(auth);
else showLanding();
updateSoundBtn();
requestAnimationFrame(frame);
startWatchdog();
startReports();
