// Joining, the messages from the server and what they do to the client's state.
import { Clock, localNowUs } from './clock.js';
import { Conn, FATAL_CODES, connect, disconnect, heardPong, scheduleReconnect, setConn, stopPings } from './conn.js';
import { heardTick } from './watchdog.js';
import { announce, heardMessage } from './band.js';
import { Sound } from './sound.js';
import { AUTH_KEY, LAST_KEY, NAME_KEY, S, UI, isLeader, nameOf } from './state.js';
import { $, fmtCode, store } from './util.js';
import { flash, renderStatic, showError, showLandingError } from './views.js';

export async function api(path, body) {
  let res;
  try {
    res = await fetch(path, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
  } catch {
    throw { code: 'unavailable', message: 'Cannot reach the BandSync server. Check the network and try again.' };
  }
  let data = null;
  try {
    data = await res.json();
  } catch {
    /* not JSON: a proxy error page */
  }
  if (!res.ok) {
    throw {
      code: (data && data.code) || (res.status >= 500 ? 'unavailable' : 'invalid'),
      message: (data && data.message) || `The server answered ${res.status} ${res.statusText}.`,
    };
  }
  return data;
}

export function onMessage(msg) {
  switch (msg.type) {
    case 'pong':
      Clock.add(msg.t0, msg.server_time, localNowUs());
      heardPong();
      if (S.welcomed && Conn.state !== 'online') setConn('online', 'live');
      break;
    case 'welcome':
      S.welcomed = true;
      Conn.outOfSync = null;
      Conn.attempt = 0;
      S.me = msg.member;
      Clock.prime(msg.server_time);
      applyState(msg.state, true);
      setConn(Clock.synced ? 'online' : 'syncing', Clock.synced ? 'live' : 'syncing');
      break;
    case 'event':
      onEvent(msg);
      break;
    case 'tick':
      onTick(msg);
      break;
    case 'error':
      onError(msg);
      break;
    case 'token':
      // A fresh token (tokens expire): the next connection, or a reload, uses it.
      S.auth = { ...S.auth, token: msg.token };
      store.set('sessionStorage', AUTH_KEY, S.auth);
      store.set('localStorage', LAST_KEY, S.auth);
      break;
    case 'reconnect':
      // The gateway is going away: come back at once (any gateway), same token.
      reconnectSoon(msg.reason, 200 + Math.random() * 600, 'moving to another server');
      break;
    default:
      break; // newer servers may send more; ignore what we do not know
  }
}

// Leaves this socket and connects again (same token): the welcome brings the whole state.
export function reconnectSoon(reason, delayMs, why) {
  S.reconnects.push(reason);
  Conn.attempt = 0;
  if (Conn.ws) {
    const ws = Conn.ws;
    Conn.ws = null;
    stopPings();
    ws.close(1000, 'reconnecting');
  }
  scheduleReconnect(delayMs);
  setConn('offline', why);
}

// Events leave the members and the setlist (charts and all, the bulk of a state)
// out unless they changed them, and name the revisions they refer to: ours,
// unless we missed the event that changed them (then null: fetch the state).
function stateAfter(m) {
  const st = m.state;
  for (const [part, rev] of [['members', 'members_rev'], ['setlist', 'setlist_rev']]) {
    if (m[part]) st[part] = m[part];
    else if (!(st[part] && st[part].length)) {
      if ((st[rev] || 0) !== (S.state[rev] || 0)) return null;
      st[part] = S.state[part];
    }
  }
  return st;
}

function onEvent(m) {
  if (m.epoch < S.epoch) return; // from an owner that lost its lease
  S.epoch = Math.max(S.epoch, m.epoch);
  if (m.seq <= S.seq || !S.state) return; // already have it (or newer)
  const state = stateAfter(m);
  if (!state) return reconnectSoon('missed_change', 0, 'fetching the session');
  S.lastEventAt = m.at;
  const wasLeader = isLeader();
  applyState(state, false);
  for (const c of m.changes || []) {
    if (c.kind === 'ended') {
      return endMembership('ended', `The session ended (${c.reason || 'closed'}).`);
    }
    if (c.kind === 'leader_changed' && c.to === S.me && !wasLeader) flash('You are the leader now.');
    if (c.kind === 'leader_changed' && c.from === S.me && c.to !== S.me) {
      flash(`${nameOf(c.to)} leads now.`);
    }
    if (c.kind === 'leader_changed') announce(c.to === S.me ? 'You are the leader now.' : `${nameOf(c.to)} leads now.`);
    if (c.kind === 'message') heardMessage(c);
    if (c.kind === 'cue') announce(c.text ? `Cue: ${c.text}` : 'Cue cleared');
  }
}

function onTick(m) {
  if (m.epoch < S.epoch) return;
  S.epoch = Math.max(S.epoch, m.epoch);
  if (m.seq <= S.tickSeq) return;
  S.tickSeq = m.seq;
  heardTick(m);
  if (!S.state || m.server_time < S.lastEventAt) return; // older than the state we hold
  if (JSON.stringify(m.timeline) !== JSON.stringify(S.timeline)) {
    S.timeline = m.timeline;
    S.state.timeline = m.timeline;
    renderStatic();
  }
}

function onError(m) {
  if (m.id && Conn.reports.delete(m.id)) return; // a quality report: best effort
  const what = m.id && Conn.pending.get(m.id);
  if (m.id) Conn.pending.delete(m.id);
  // Sent by the gateway just before it closes the socket: this membership is over.
  if (!m.id && FATAL_CODES.has(m.code)) {
    return endMembership(m.code, m.message);
  }
  showError(m.code, what ? `${m.message} (${what.replace('_', ' ')})` : m.message);
}

export function applyState(state, fromWelcome) {
  S.state = state;
  S.seq = fromWelcome ? state.seq : Math.max(S.seq, state.seq);
  S.timeline = state.timeline;
  if (S.browse != null && (S.browse >= state.setlist.length || S.browse === state.song)) S.browse = null;
  renderStatic();
}

export function endMembership(code, message) {
  disconnect();
  Sound.stopAll();
  S.auth = null;
  S.state = null;
  store.set('sessionStorage', AUTH_KEY, null);
  store.set('localStorage', LAST_KEY, null);
  showLanding();
  showLandingError(code, message);
}

export function showLanding() {
  $('#session').hidden = true;
  $('#landing').hidden = false;
  document.title = 'BandSync';
  const last = store.get('localStorage', LAST_KEY);
  $('#rejoin').hidden = !last;
  if (last) {
    $('#rejoin-code').textContent = fmtCode(last.code);
    $('#rejoin-name').textContent = last.name;
  }
  const name = store.get('localStorage', NAME_KEY) || '';
  if (!$('#create-name').value) $('#create-name').value = name;
  if (!$('#join-name').value) $('#join-name').value = name;
}

export function enterSession(auth) {
  S.auth = auth;
  S.state = null;
  S.timeline = null;
  S.seq = 0;
  S.browse = null;
  store.set('sessionStorage', AUTH_KEY, auth);
  store.set('localStorage', LAST_KEY, auth);
  store.set('localStorage', NAME_KEY, auth.name);
  $('#landing').hidden = true;
  $('#landing-error').hidden = true;
  $('#session').hidden = false;
  $('#join-code-big').textContent = fmtCode(auth.code);
  // Nothing of a previous session may show while this one connects.
  for (const sel of ['#members', '#setlist', '#chart']) $(sel).textContent = '';
  UI.chartKey = null;
  UI.lastDynamic = null;
  $('#status').textContent = 'Connecting…';
  $('#status').dataset.mode = 'connecting';
  $('#member-count').textContent = '';
  document.title = `BandSync · ${fmtCode(auth.code)}`;
  renderStatic();
  Conn.attempt = 0;
  connect();
}

export async function createSession(name) {
  const res = await api('/api/sessions', { name });
  enterSession({ ...res, name });
}
export async function joinSession(code, name) {
  const res = await api('/api/join', { code, name });
  enterSession({ ...res, name, code: res.code || code });
}
