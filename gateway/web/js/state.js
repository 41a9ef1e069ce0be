// The client's state, shared by the modules, and what is derived from it.

export const S = {
  auth: null, // {session, code, member, token, name}
  me: null,
  state: null, // SessionState
  timeline: null,
  seq: 0, // highest event seq applied
  epoch: 0, // highest owner epoch seen
  tickSeq: 0,
  lastEventAt: 0,
  browse: null, // setlist index a follower is browsing, or null when live
  editing: null, // setlist index being edited, or null when adding
  welcomed: false,
  reconnects: [], // reasons of the `reconnect` messages received
};

// What the views remember between renders (module bindings are read-only
// elsewhere, so these live in one object).
export const UI = {
  chartKey: null, // song index and chart text last rendered
  lastDynamic: null, // what the last frame showed, to skip identical repaints
  currentLine: -2,
  userScrolledAt: -Infinity, // when the musician last scrolled the chart by hand (auto-scroll waits 4 s)
  chart: null, // the shown chart, parsed (chordpro.js)
  pinned: false, // this device looks at another part of the chart (pedals): no auto-scroll
  section: null, // index of the section header looked at while pinned
  lastBeat: null, // the beat last flashed (vibration once per beat)
  lastMode: null, // the mode the last frame showed, to announce changes
  spaceTaken: false, // the last Space keydown was a shortcut: swallow its keyup
  tempoDirty: 0, // time until which the tempo input shows the user's pending value
};

export const AUTH_KEY = 'bandsync.auth'; // sessionStorage: this tab's membership (a reload rejoins)
export const LAST_KEY = 'bandsync.last'; // localStorage: offered as "Rejoin" on the landing screen
export const NAME_KEY = 'bandsync.name'; // localStorage: the name typed last time

export const isLeader = () => !!(S.state && S.me && S.state.leader === S.me);
export const nameOf = (id) => (S.state && S.state.members.find((m) => m.id === id)?.name) || 'someone';
export const latestSeg = () => S.timeline.segments[S.timeline.segments.length - 1];

/** The song whose chart is shown: the browsed one, or the live one. */
export function shownSong() {
  const st = S.state;
  if (!st) return null;
  const i = S.browse != null ? S.browse : st.song;
  return i != null && st.setlist[i] ? { index: i, song: st.setlist[i], live: S.browse == null } : null;
}
