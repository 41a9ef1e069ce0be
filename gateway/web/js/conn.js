// The WebSocket to the gateway: connecting with the token, reconnecting with
// backoff, pings for the clock, and sending commands.
import { Clock, localNowUs } from './clock.js';
import { endMembership, onMessage } from './session.js';
import { S } from './state.js';
import { $ } from './util.js';
import { showError } from './views.js';

const PING_BURST = 8; // pings sent quickly after connecting
const PING_BURST_GAP_MS = 60;
const PING_EVERY_MS = 2000; // once settled (clock.js: quicker for the first 40)
const RECONNECT_MIN_MS = 500;
const RECONNECT_MAX_MS = 10000;
// Errors that mean this membership cannot come back: forget it.
export const FATAL_CODES = new Set(['unauthorized', 'unknown_session', 'session_full', 'removed', 'joining_closed']);

export const Conn = {
  ws: null,
  attempt: 0,
  timer: null,
  pingTimer: null,
  wanted: false,
  state: 'offline',
  nextId: 1,
  pending: new Map(), // command id → type, to name the command an error answers
  reports: new Set(), // ids of the quality reports sent lately: their errors are not shown
  pingSince: null, // performance.now() of the oldest unanswered ping on this socket
  openedAt: 0, // performance.now() when this socket was opened
  lastTick: null, // {seq, serverTime, at} of this socket's last tick
  tickPeriodMs: null, // measured from the ticks
  outOfSync: null, // why the last socket was given up as stale, until the next welcome
};

export function setConn(state, text) {
  Conn.state = state;
  const box = $('#conn');
  box.dataset.state = state;
  $('#conn-text').textContent = text || state;
  // The stage view says it plainly when the position shown cannot be trusted.
  document.body.dataset.conn = state;
  const banner = $('#sync-banner');
  banner.hidden = !(state === 'stale' || state === 'offline');
  banner.textContent = state === 'stale' ? 'Out of sync \u2014 reconnecting' : `Not connected \u2014 ${text || 'reconnecting'}`;
}

export function connect() {
  clearTimeout(Conn.timer);
  if (!S.auth) return;
  Conn.wanted = true;
  const proto = location.protocol === 'https:' ? 'wss' : 'ws';
  // `session` is for a load balancer that keeps a band on one gateway
  // (deploy/nginx.conf); the gateway ignores it.
  const url = `${proto}://${location.host}/ws?session=${encodeURIComponent(S.auth.session)}`;
  let ws;
  try {
    // The token travels as a subprotocol, a header, never in the URL (which
    // proxies write to their access logs).
    ws = new WebSocket(url, ['bandsync', `bandsync.token.${S.auth.token}`]);
  } catch {
    return scheduleReconnect();
  }
  Conn.ws = ws;
  S.welcomed = false;
  Conn.pingSince = null;
  Conn.openedAt = performance.now();
  Conn.lastTick = null;
  Conn.tickPeriodMs = null;
  if (Conn.outOfSync) setConn('stale', 'out of sync \u2014 reconnecting');
  else setConn('connecting', Conn.attempt ? `reconnecting (${Conn.attempt})` : 'connecting');
  ws.onopen = () => {
    if (Conn.ws !== ws) return;
    if (!Conn.outOfSync) setConn('syncing', 'syncing');
    startPings();
  };
  ws.onmessage = (e) => {
    if (Conn.ws !== ws) return;
    let msg;
    try {
      msg = JSON.parse(e.data);
    } catch {
      return;
    }
    onMessage(msg);
  };
  ws.onclose = (e) => {
    if (Conn.ws !== ws) return;
    Conn.ws = null;
    stopPings();
    if (!Conn.wanted) return;
    // The gateway names the reason (an ErrorCode) in the close frame.
    if (FATAL_CODES.has(e.reason)) {
      return endMembership(e.reason, 'This membership is no longer valid. Join again with the code.');
    }
    if (e.reason === 'replaced') {
      // The same member opened the session in another tab or device: going
      // back would close that one, and the two would take turns for ever.
      Conn.wanted = false;
      return setConn('offline', 'open in another tab or device — reload to use it here');
    }
    scheduleReconnect();
  };
  ws.onerror = () => {}; // a close follows
}

export function scheduleReconnect(delayMs) {
  clearTimeout(Conn.timer);
  if (!Conn.wanted) return;
  const backoff = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** Conn.attempt);
  const delay = delayMs ?? backoff * (0.5 + Math.random() * 0.5);
  Conn.attempt += 1;
  setConn('offline', `offline — retry in ${Math.ceil(delay / 1000)} s`);
  Conn.timer = setTimeout(connect, delay);
}

export function disconnect() {
  Conn.wanted = false;
  clearTimeout(Conn.timer);
  stopPings();
  const ws = Conn.ws;
  Conn.ws = null;
  if (ws) ws.close(1000, 'leaving');
  setConn('offline', 'offline');
}

export function rawSend(obj) {
  if (!Conn.ws || Conn.ws.readyState !== WebSocket.OPEN) return false;
  Conn.ws.send(JSON.stringify(obj));
  return true;
}

/** Sends a command; errors come back as `error` messages carrying its id. */
export function send(cmd) {
  const id = `c${Conn.nextId++}`;
  if (!rawSend({ ...cmd, id })) {
    showError('offline', 'Not connected to the server, so that was not sent. Reconnecting…');
    return null;
  }
  Conn.pending.set(id, cmd.type);
  if (Conn.pending.size > 64) Conn.pending.delete(Conn.pending.keys().next().value);
  return id;
}

export function ping() {
  if (rawSend({ type: 'ping', t0: localNowUs() }) && Conn.pingSince == null) Conn.pingSince = performance.now();
}

/** A pong arrived on this socket: every ping so far is answered (they are answered in order). */
export function heardPong() {
  Conn.pingSince = null;
}

/**
 * This socket no longer hears the band: say so plainly, drop it and connect
 * again at once (the welcome brings the whole state; "live" only after it).
 */
export function reconnectNow(why) {
  Conn.outOfSync = why;
  const ws = Conn.ws;
  Conn.ws = null;
  stopPings();
  if (ws) {
    try {
      ws.close(1000, 'out of sync');
    } catch {
      /* already closing */
    }
  }
  S.welcomed = false;
  Conn.attempt = 0;
  if (S.state) setConn('stale', 'out of sync \u2014 reconnecting');
  else Conn.outOfSync = null; // never in sync yet: just a slow first connection
  clearTimeout(Conn.timer);
  Conn.timer = setTimeout(connect, 0);
}
export function startPings() {
  stopPings();
  let n = 0;
  const burst = () => {
    ping();
    n += 1;
    Conn.pingTimer = setTimeout(n < PING_BURST ? burst : steady, n < PING_BURST ? PING_BURST_GAP_MS : PING_EVERY_MS);
  };
  const steady = () => {
    ping();
    Conn.pingTimer = setTimeout(steady, Clock.sync.pingInterval(PING_EVERY_MS));
  };
  burst();
}
export function stopPings() {
  clearTimeout(Conn.pingTimer);
  Conn.pingTimer = null;
}
