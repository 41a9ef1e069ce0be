// BandSync browser client: plain JS, no build step, no external resources.
//
// The contract is docs/protocol.md. In short: the server shares a *timeline*
// (segments with anchor time/beat and tempo); this client estimates its offset
// to the server clock with ping/pong, then computes the position locally for
// every animation frame and schedules every metronome click at the exact
// server-derived beat time through WebAudio.
'use strict';

(() => {
  // ---------------------------------------------------------------- constants
  const AUTH_KEY = 'bandsync.auth'; // sessionStorage: this tab's membership (a reload rejoins)
  const LAST_KEY = 'bandsync.last'; // localStorage: offered as "Rejoin" on the landing screen
  const NAME_KEY = 'bandsync.name'; // localStorage: the name typed last time
  const JOIN_ALPHABET = /^[ABCDEFGHJKMNPQRSTUVWXYZ23456789]{6}([ABCDEFGHJKMNPQRSTUVWXYZ23456789]{2})?$/;
  const EPS_BEATS = 1e-6; // same tolerance as the server's timeline math
  const PING_BURST = 8; // pings sent quickly after connecting
  const PING_BURST_GAP_MS = 60;
  const PING_EVERY_MS = 2000;
  const CLOCK_WINDOW = 16; // recent samples kept (about 30 s at one per 2 s)
  const CLOCK_BEST = 3; // lowest-RTT samples averaged for the offset
  const LOOKAHEAD_MS = 200; // clicks scheduled this far ahead while visible
  const LOOKAHEAD_HIDDEN_MS = 1500; // timers are throttled in background tabs
  const SCHEDULER_EVERY_MS = 25;
  const COMMIT_MARGIN_US = 8000; // clicks this close to now are left alone
  const RECONNECT_MIN_MS = 500;
  const RECONNECT_MAX_MS = 10000;
  const ERROR_SHOW_MS = 9000;
  // Errors that mean this membership cannot come back: forget it.
  const FATAL_CODES = new Set(['unauthorized', 'unknown_session', 'session_full', 'removed', 'joining_closed']);

  const $ = (sel) => document.querySelector(sel);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };

  // ------------------------------------------------------------ local clock
  /** Local wall clock in µs (monotonic within the page). */
  const localNowUs = () => (performance.timeOrigin + performance.now()) * 1000;

  // --------------------------------------------------------------- timeline
  // Pure functions over the server's Timeline JSON; they mirror nats/src/timeline.rs.
  const Timeline = {
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
    timeOfBeat(seg, beat) {
      return seg.anchor_time + ((beat - seg.anchor_beat) * 60e6) / seg.tempo_bpm;
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
      const start = Timeline.barStart(seg, pos);
      const beatInBar = Math.floor(pos - start + EPS_BEATS);
      const frac = pos - Math.floor(pos + EPS_BEATS);
      const countIn = seg.playing && seg.count_in_until != null && pos < seg.count_in_until - EPS_BEATS;
      let bar;
      if (countIn) bar = -Math.max(1, Math.ceil((seg.count_in_until - start - EPS_BEATS) / seg.beats_per_bar));
      else bar = Timeline.barOf(seg, pos) + 1;
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
            accent: Math.abs(k - start) < EPS_BEATS,
            countIn: seg.count_in_until != null && k < seg.count_in_until - EPS_BEATS,
          });
        }
      }
      return out;
    },
  };

  // ------------------------------------------------------------- clock sync
  // NTP-style: offset = server_time − (t0 + t3)/2, trusting the samples with the
  // lowest round trip (their error is at most rtt/2) among the recent window.
  const Clock = {
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

  // -------------------------------------------------------------- client state
  const S = {
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

  // --------------------------------------------------------------- storage
  const store = {
    get(kind, key) {
      try {
        return JSON.parse(window[kind].getItem(key) || 'null');
      } catch {
        return null;
      }
    },
    set(kind, key, value) {
      try {
        if (value == null) window[kind].removeItem(key);
        else window[kind].setItem(key, JSON.stringify(value));
      } catch {
        /* private mode: membership then lasts only as long as the page */
      }
    },
  };

  // -------------------------------------------------------------- errors
  let errorTimer = null;
  function showError(code, message) {
    const box = $('#session').hidden ? null : $('#error');
    if (!box) return showLandingError(code, message);
    box.querySelector('.error-code').textContent = code;
    box.querySelector('.error-message').textContent = message;
    box.hidden = false;
    box.classList.remove('pop');
    void box.offsetWidth; // restart the animation
    box.classList.add('pop');
    clearTimeout(errorTimer);
    errorTimer = setTimeout(() => (box.hidden = true), ERROR_SHOW_MS);
  }
  function showLandingError(code, message) {
    const box = $('#landing-error');
    box.textContent = '';
    box.append(el('span', 'error-code', code), ' ', el('span', 'error-message', message));
    box.hidden = false;
  }

  // -------------------------------------------------------------- HTTP API
  async function api(path, body) {
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

  // ------------------------------------------------------------ connection
  const Conn = {
    ws: null,
    attempt: 0,
    timer: null,
    pingTimer: null,
    wanted: false,
    state: 'offline',
    nextId: 1,
    pending: new Map(), // command id → type, to name the command an error answers
  };

  function setConn(state, text) {
    Conn.state = state;
    const box = $('#conn');
    box.dataset.state = state;
    $('#conn-text').textContent = text || state;
  }

  function connect() {
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
    setConn('connecting', Conn.attempt ? `reconnecting (${Conn.attempt})` : 'connecting');
    ws.onopen = () => {
      if (Conn.ws !== ws) return;
      setConn('syncing', 'syncing');
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

  function scheduleReconnect(delayMs) {
    clearTimeout(Conn.timer);
    if (!Conn.wanted) return;
    const backoff = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** Conn.attempt);
    const delay = delayMs ?? backoff * (0.5 + Math.random() * 0.5);
    Conn.attempt += 1;
    setConn('offline', `offline — retry in ${Math.ceil(delay / 1000)} s`);
    Conn.timer = setTimeout(connect, delay);
  }

  function disconnect() {
    Conn.wanted = false;
    clearTimeout(Conn.timer);
    stopPings();
    const ws = Conn.ws;
    Conn.ws = null;
    if (ws) ws.close(1000, 'leaving');
    setConn('offline', 'offline');
  }

  function rawSend(obj) {
    if (!Conn.ws || Conn.ws.readyState !== WebSocket.OPEN) return false;
    Conn.ws.send(JSON.stringify(obj));
    return true;
  }

  /** Sends a command; errors come back as `error` messages carrying its id. */
  function send(cmd) {
    const id = `c${Conn.nextId++}`;
    if (!rawSend({ ...cmd, id })) {
      showError('offline', 'Not connected to the server, so that was not sent. Reconnecting…');
      return null;
    }
    Conn.pending.set(id, cmd.type);
    if (Conn.pending.size > 64) Conn.pending.delete(Conn.pending.keys().next().value);
    return id;
  }

  function ping() {
    rawSend({ type: 'ping', t0: localNowUs() });
  }
  function startPings() {
    stopPings();
    let n = 0;
    const burst = () => {
      ping();
      n += 1;
      Conn.pingTimer = setTimeout(n < PING_BURST ? burst : steady, n < PING_BURST ? PING_BURST_GAP_MS : PING_EVERY_MS);
    };
    const steady = () => {
      ping();
      Conn.pingTimer = setTimeout(steady, PING_EVERY_MS);
    };
    burst();
  }
  function stopPings() {
    clearTimeout(Conn.pingTimer);
    Conn.pingTimer = null;
  }

  // -------------------------------------------------------------- messages
  function onMessage(msg) {
    switch (msg.type) {
      case 'pong':
        Clock.add(msg.t0, msg.server_time, localNowUs());
        if (S.welcomed && Conn.state !== 'online') setConn('online', 'live');
        break;
      case 'welcome':
        S.welcomed = true;
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
  function reconnectSoon(reason, delayMs, why) {
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
    }
  }

  function onTick(m) {
    if (m.epoch < S.epoch) return;
    S.epoch = Math.max(S.epoch, m.epoch);
    if (m.seq <= S.tickSeq) return;
    S.tickSeq = m.seq;
    if (!S.state || m.server_time < S.lastEventAt) return; // older than the state we hold
    if (JSON.stringify(m.timeline) !== JSON.stringify(S.timeline)) {
      S.timeline = m.timeline;
      S.state.timeline = m.timeline;
      renderStatic();
    }
  }

  function onError(m) {
    const what = m.id && Conn.pending.get(m.id);
    if (m.id) Conn.pending.delete(m.id);
    // Sent by the gateway just before it closes the socket: this membership is over.
    if (!m.id && FATAL_CODES.has(m.code)) {
      return endMembership(m.code, m.message);
    }
    showError(m.code, what ? `${m.message} (${what.replace('_', ' ')})` : m.message);
  }

  function applyState(state, fromWelcome) {
    S.state = state;
    S.seq = fromWelcome ? state.seq : Math.max(S.seq, state.seq);
    S.timeline = state.timeline;
    if (S.browse != null && (S.browse >= state.setlist.length || S.browse === state.song)) S.browse = null;
    renderStatic();
  }

  function endMembership(code, message) {
    disconnect();
    Sound.stopAll();
    S.auth = null;
    S.state = null;
    store.set('sessionStorage', AUTH_KEY, null);
    store.set('localStorage', LAST_KEY, null);
    showLanding();
    showLandingError(code, message);
  }

  // -------------------------------------------------------------- helpers
  const isLeader = () => !!(S.state && S.me && S.state.leader === S.me);
  const nameOf = (id) => (S.state && S.state.members.find((m) => m.id === id)?.name) || 'someone';
  const latestSeg = () => S.timeline.segments[S.timeline.segments.length - 1];
  const fmtBpm = (bpm) => (Math.abs(bpm - Math.round(bpm)) < 0.05 ? String(Math.round(bpm)) : bpm.toFixed(1));
  const fmtCode = (code) => {
    if (code && code.length === 8) return `${code.slice(0, 4)}-${code.slice(4)}`;
    return code && code.length === 6 ? `${code.slice(0, 3)}-${code.slice(3)}` : code || '';
  };

  let flashTimer = null;
  function flash(text) {
    const box = $('#request-banner');
    if (!box.hidden && box.dataset.kind === 'request') return;
    box.dataset.kind = 'note';
    $('#request-text').textContent = text;
    $('#request-accept').hidden = true;
    box.hidden = false;
    clearTimeout(flashTimer);
    flashTimer = setTimeout(() => {
      if (box.dataset.kind === 'note') box.hidden = true;
    }, 4000);
  }

  // ---------------------------------------------------------------- sound
  const Sound = {
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

  // -------------------------------------------------------------- screens
  function showLanding() {
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

  function enterSession(auth) {
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
    chartKey = null;
    lastDynamic = null;
    $('#status').textContent = 'Connecting…';
    $('#status').dataset.mode = 'connecting';
    $('#member-count').textContent = '';
    document.title = `BandSync · ${fmtCode(auth.code)}`;
    renderStatic();
    Conn.attempt = 0;
    connect();
  }

  async function createSession(name) {
    const res = await api('/api/sessions', { name });
    enterSession({ ...res, name });
  }
  async function joinSession(code, name) {
    const res = await api('/api/join', { code, name });
    enterSession({ ...res, name, code: res.code || code });
  }

  // ------------------------------------------------------ render: state-driven
  // Everything that changes only with the state (not with time) is rendered here.
  function renderStatic() {
    const st = S.state;
    const leader = isLeader();
    $('#role').textContent = st ? (leader ? 'Leader' : 'Follower') : '—';
    $('#role').dataset.role = leader ? 'leader' : 'follower';
    $('#leader-controls').hidden = !st || !leader;
    $('#quickbar').hidden = !st || !leader;
    document.body.classList.toggle('has-quickbar', !!st && leader);
    $('#follower-controls').hidden = !st || leader;
    $('#song-editor').hidden = !st || !leader;
    document.body.dataset.role = leader ? 'leader' : 'follower';
    if (!st) return;

    renderMembers(st, leader);
    renderSetlist(st, leader);
    renderChart();
    renderRequest(st, leader);
    syncInputs();
    lastDynamic = null; // force the next frame to repaint
  }

  function renderMembers(st, leader) {
    const ul = $('#members');
    ul.textContent = '';
    const members = [...st.members].sort((a, b) => a.joined_at - b.joined_at);
    $('#member-count').textContent = `${members.filter((m) => m.connected).length}/${members.length} online`;
    for (const m of members) {
      const li = el('li', m.connected ? 'member on' : 'member off');
      li.dataset.member = m.id;
      li.append(el('i', 'dot'), el('span', 'name', m.name));
      if (st.leader === m.id) li.append(el('span', 'badge lead', 'leader'));
      if (m.id === S.me) li.append(el('span', 'badge you', 'you'));
      if (!m.connected) li.append(el('span', 'away', 'away'));
      if (leader && m.id !== S.me) {
        const b = el('button', 'btn small hand', 'Make leader');
        b.type = 'button';
        b.disabled = !m.connected;
        b.addEventListener('click', () => send({ type: 'hand_leadership', to: m.id }));
        const r = el('button', 'btn small ghost remove', 'Remove');
        r.type = 'button';
        r.title = `Remove ${m.name} from the band: their device is disconnected and cannot come back`;
        r.addEventListener('click', () => {
          if (confirm(`Remove ${m.name} from the band?`)) send({ type: 'remove_member', member: m.id });
        });
        li.append(b, r);
      }
      ul.append(li);
    }
    // Who else may join: the leader opens and closes the door.
    $('#joining-row').hidden = !leader && !st.joining_closed;
    $('#joining-state').textContent = st.joining_closed ? 'Joining is closed.' : 'Anyone with the code can join.';
    const jb = $('#joining-btn');
    jb.hidden = !leader;
    jb.textContent = st.joining_closed ? 'Open joining' : 'Close joining';
    jb.onclick = () => send({ type: 'joining', open: !!st.joining_closed });
  }

  function renderSetlist(st, leader) {
    const ol = $('#setlist');
    ol.textContent = '';
    $('#setlist-empty').hidden = st.setlist.length > 0;
    st.setlist.forEach((song, i) => {
      const li = el('li', 'song');
      if (st.song === i) li.classList.add('live');
      if (S.browse === i) li.classList.add('browsing');
      const title = el('button', 'song-name', song.title);
      title.type = 'button';
      title.title = 'Show this chart';
      title.addEventListener('click', () => browse(i));
      const info = [];
      if (song.tempo_bpm) info.push(`${fmtBpm(song.tempo_bpm)} BPM`);
      if (song.beats_per_bar) info.push(`${song.beats_per_bar}/4`);
      const meta = el('span', 'song-meta', info.join(' · '));
      if (st.song === i) meta.append(el('span', 'badge live', 'live'));
      li.append(el('span', 'song-num', String(i + 1)), title, meta);
      if (leader) {
        const actions = el('span', 'song-actions');
        const load = el('button', 'btn small load', st.song === i ? 'Restart' : 'Load');
        load.type = 'button';
        load.title = 'Make this the band\u2019s song (stops and rewinds)';
        load.addEventListener('click', () => {
          S.browse = null;
          send({ type: 'song', index: i });
        });
        const edit = el('button', 'btn small ghost', 'Edit');
        edit.type = 'button';
        edit.addEventListener('click', () => startEdit(i));
        const del = el('button', 'btn small ghost danger', 'Remove');
        del.type = 'button';
        del.addEventListener('click', () => {
          const songs = st.setlist.filter((_, j) => j !== i);
          send({ type: 'setlist', songs });
        });
        actions.append(load, edit, del);
        li.append(actions);
      }
      ol.append(li);
    });
  }

  function browse(i) {
    const st = S.state;
    S.browse = i === st.song ? null : i;
    renderStatic();
    // The chart is above the setlist on a phone: bring it into view.
    const wrap = $('.chart-wrap');
    const r = wrap.getBoundingClientRect();
    if (r.top < 0 || r.top > window.innerHeight * 0.6) wrap.scrollIntoView({ behavior: 'smooth', block: 'start' });
  }

  /** The song whose chart is shown: the browsed one, or the live one. */
  function shownSong() {
    const st = S.state;
    if (!st) return null;
    const i = S.browse != null ? S.browse : st.song;
    return i != null && st.setlist[i] ? { index: i, song: st.setlist[i], live: S.browse == null } : null;
  }

  let chartKey = null;
  function renderChart() {
    const shown = shownSong();
    const st = S.state;
    $('#song-title').textContent = st.song != null && st.setlist[st.song] ? st.setlist[st.song].title : 'No song selected';
    $('#browse-bar').hidden = !(shown && !shown.live);
    if (shown && !shown.live) $('#browse-title').textContent = shown.song.title;
    const chart = shown ? shown.song.chart || '' : '';
    const key = `${shown ? shown.index : '-'}|${chart}`;
    if (key === chartKey) return;
    chartKey = key;
    const ol = $('#chart');
    ol.textContent = '';
    const lines = chart.replace(/\s+$/, '').split('\n');
    const has = chart.trim().length > 0;
    $('#chart-empty').hidden = has;
    $('#chart-empty').textContent = shown
      ? 'This song has no chart.'
      : isLeader()
        ? 'No song loaded. Add songs to the setlist and press Load.'
        : 'No song loaded yet. The leader picks one from the setlist.';
    if (!has) return;
    lines.forEach((line, i) => {
      const li = el('li', 'line');
      li.dataset.bar = String(i);
      li.append(el('span', 'bar-num', String(i + 1)), el('span', 'bar-text', line.trim() ? line : '\u00a0'));
      ol.append(li);
    });
    currentLine = -2;
    ol.scrollTop = 0;
  }

  function renderRequest(st, leader) {
    const box = $('#request-banner');
    const req = st.leadership_request;
    if (leader && req && req !== S.me) {
      box.dataset.kind = 'request';
      $('#request-text').textContent = `${nameOf(req)} asks to lead.`;
      $('#request-accept').hidden = false;
      $('#request-accept').onclick = () => send({ type: 'hand_leadership', to: req });
      box.hidden = false;
    } else if (box.dataset.kind === 'request') {
      box.hidden = true;
      box.dataset.kind = '';
    }
    const btn = $('#request-btn');
    const waiting = req === S.me;
    btn.disabled = waiting;
    btn.textContent = waiting ? `Waiting for ${nameOf(st.leader)}…` : 'Ask to lead';
  }

  let tempoDirty = 0; // time until which the tempo input shows the user's pending value
  function syncInputs() {
    const seg = latestSeg();
    // Transport reflects where the timeline is heading (its last scheduled segment).
    $('#play-btn').disabled = seg.playing;
    $('#pause-btn').disabled = !seg.playing;
    $('#stop-btn').disabled = !seg.playing && seg.anchor_beat === 0;
    $('#q-play').textContent = seg.playing ? '❚❚ Pause' : '▶ Play';
    $('#q-play').classList.toggle('play', !seg.playing);
    $('#q-stop').disabled = $('#stop-btn').disabled;
    const now = performance.now();
    const ti = $('#tempo-input');
    if (document.activeElement !== ti && now > tempoDirty) ti.value = fmtBpm(seg.tempo_bpm);
    $('#q-bpm').textContent = ti.value;
    const mb = $('#meter-beats');
    const mu = $('#meter-unit');
    if (document.activeElement !== mb && document.activeElement !== mu) {
      mb.value = seg.beats_per_bar;
      mu.value = String(seg.beat_unit);
    }
  }

  // ------------------------------------------------------- render: every frame
  let lastDynamic = null;
  let currentLine = -2;
  let userScrolledAt = 0;
  function frame() {
    requestAnimationFrame(frame);
    if (!S.timeline || $('#session').hidden) return;
    const t = Clock.serverNow();
    const d = Timeline.describe(S.timeline, t);
    const seg = d.seg;
    const flashOn = (d.mode === 'playing' || d.mode === 'count-in') && d.frac < 0.22;
    const key = `${d.text}|${d.mode}|${flashOn}|${seg.beats_per_bar}|${seg.beat_unit}|${seg.tempo_bpm}`;
    if (key === lastDynamic) return;
    lastDynamic = key;

    $('#pos-bar').textContent = d.text.split(':')[0];
    $('#pos-beat').textContent = String(d.beat);
    const position = $('#position');
    position.dataset.mode = d.mode;
    position.classList.toggle('accent', flashOn && d.beatIndex === 0);
    const status = $('#status');
    status.dataset.mode = d.mode;
    status.textContent = {
      'count-in': 'Count-in',
      playing: 'Playing',
      starting: 'Starting…',
      stopped: 'Stopped',
      paused: 'Paused',
    }[d.mode];
    $('#tempo').textContent = fmtBpm(seg.tempo_bpm);
    $('#meter').textContent = `${seg.beats_per_bar}/${seg.beat_unit}`;

    // Beat lights: one per beat of the bar, the current one lit, beat 1 accented.
    const lights = $('#lights');
    const n = seg.beats_per_bar;
    if (lights.childElementCount !== n) {
      lights.textContent = '';
      for (let i = 0; i < n; i++) lights.append(el('span', i === 0 ? 'light one' : 'light'));
    }
    lights.dataset.mode = d.mode;
    [...lights.children].forEach((light, i) => {
      light.classList.toggle('current', i === d.beatIndex && d.mode !== 'stopped');
      light.classList.toggle('on', i === d.beatIndex && flashOn);
    });

    // Chart: highlight the current bar's line and keep it in view.
    const shown = shownSong();
    if (shown && shown.live) {
      let line = d.chartBar;
      if (d.mode === 'stopped') line = -1;
      if (d.countIn) line = Timeline.barOf(seg, seg.count_in_until) * -1 - 1; // marks "next" below
      highlightLine(d, line);
    } else if (currentLine !== -2) {
      highlightLine(d, -1);
    }
  }

  function highlightLine(d, line) {
    const ol = $('#chart');
    const next = d.countIn ? Timeline.barOf(d.seg, d.seg.count_in_until) : null;
    const target = d.countIn ? next : line;
    const id = `${d.countIn ? 'n' : 'c'}${target}`;
    if (id === currentLine) return;
    currentLine = id;
    for (const li of ol.children) {
      const bar = Number(li.dataset.bar);
      li.classList.toggle('current', !d.countIn && bar === line);
      li.classList.toggle('next', d.countIn && bar === next);
      li.classList.toggle('past', !d.countIn && line >= 0 && bar < line);
    }
    const focus = ol.children[target];
    if (focus && performance.now() - userScrolledAt > 4000) {
      const top = focus.offsetTop - ol.clientHeight * 0.3;
      ol.scrollTo({ top: Math.max(0, top), behavior: 'smooth' });
    }
  }

  // -------------------------------------------------------------- controls
  let tempoTimer = null;
  function setTempoSoon(bpm, delay) {
    bpm = Math.round(Math.min(400, Math.max(20, bpm)) * 10) / 10;
    $('#tempo-input').value = fmtBpm(bpm);
    $('#q-bpm').textContent = fmtBpm(bpm);
    tempoDirty = performance.now() + delay + 1500;
    clearTimeout(tempoTimer);
    tempoTimer = setTimeout(() => send({ type: 'tempo', bpm }), delay);
  }

  const taps = [];
  let tapTimer = null;
  function tap() {
    const now = performance.now();
    if (taps.length && now - taps[taps.length - 1] > 2000) taps.length = 0;
    taps.push(now);
    if (taps.length > 8) taps.shift();
    const btn = $('#tap-btn');
    btn.classList.remove('tapped');
    void btn.offsetWidth;
    btn.classList.add('tapped');
    if (taps.length >= 2) {
      const gaps = taps.slice(1).map((t, i) => t - taps[i]);
      const bpm = 60000 / (gaps.reduce((a, b) => a + b, 0) / gaps.length);
      $('#tempo-input').value = String(Math.round(bpm));
      tempoDirty = now + 3000;
    }
    clearTimeout(tapTimer);
    if (taps.length >= 4) {
      tapTimer = setTimeout(() => {
        const v = Number($('#tempo-input').value);
        if (v >= 20 && v <= 400) send({ type: 'tempo', bpm: v });
        taps.length = 0;
      }, 1200);
    }
  }

  function readSong() {
    const title = $('#song-title-in').value.trim();
    const bpm = $('#song-bpm').value.trim();
    const bpb = $('#song-bpb').value.trim();
    const song = { title, chart: $('#song-chart').value.replace(/\r\n/g, '\n') };
    if (bpm) song.tempo_bpm = Number(bpm);
    if (bpb) song.beats_per_bar = Number(bpb);
    if (!song.chart) delete song.chart;
    return song;
  }

  function startEdit(i) {
    const song = S.state.setlist[i];
    S.editing = i;
    $('#song-title-in').value = song.title;
    $('#song-bpm').value = song.tempo_bpm ?? '';
    $('#song-bpb').value = song.beats_per_bar ?? '';
    $('#song-chart').value = song.chart || '';
    $('#song-save').textContent = 'Save song';
    $('#song-editor-summary').textContent = `Edit “${song.title}”`;
    $('#song-cancel').hidden = false;
    $('#song-editor').open = true;
    $('#song-title-in').focus();
  }
  function resetEditor() {
    S.editing = null;
    $('#song-form').reset();
    $('#song-save').textContent = 'Add song';
    $('#song-editor-summary').textContent = 'Add a song';
    $('#song-cancel').hidden = true;
  }

  function wire() {
    $('#create-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      const name = $('#create-name').value.trim();
      if (!name) return showLandingError('invalid', 'Type your name first.');
      $('#create-btn').disabled = true;
      try {
        await createSession(name);
      } catch (err) {
        showLandingError(err.code, err.message);
      } finally {
        $('#create-btn').disabled = false;
      }
    });
    $('#join-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      const code = $('#join-code').value.replace(/[\s-]/g, '').toUpperCase();
      const name = $('#join-name').value.trim();
      if (!JOIN_ALPHABET.test(code)) {
        return showLandingError('invalid', 'A join code is eight letters and digits, like K7MQ-2XBD.');
      }
      if (!name) return showLandingError('invalid', 'Type your name first.');
      $('#join-btn').disabled = true;
      try {
        await joinSession(code, name);
      } catch (err) {
        showLandingError(err.code, err.message);
      } finally {
        $('#join-btn').disabled = false;
      }
    });
    $('#join-code').addEventListener('input', (e) => {
      const v = e.target.value.toUpperCase();
      if (v !== e.target.value) e.target.value = v;
    });
    $('#rejoin-btn').addEventListener('click', () => {
      const last = store.get('localStorage', LAST_KEY);
      if (last) enterSession(last);
    });
    $('#rejoin-forget').addEventListener('click', () => {
      store.set('localStorage', LAST_KEY, null);
      $('#rejoin').hidden = true;
    });

    $('#leave-btn').addEventListener('click', () => {
      releaseScreen();
      disconnect();
      Sound.disable();
      updateSoundBtn();
      S.auth = null;
      S.state = null;
      S.timeline = null;
      store.set('sessionStorage', AUTH_KEY, null);
      store.set('localStorage', LAST_KEY, null);
      showLanding();
    });
    $('#error .close').addEventListener('click', () => ($('#error').hidden = true));
    $('#join-code-big').parentElement.addEventListener('click', () => {
      const link = `${location.origin}/?join=${S.auth ? S.auth.code : ''}`;
      navigator.clipboard?.writeText(link).then(() => flash('Join link copied.'), () => {});
    });

    $('#sound-btn').addEventListener('click', async () => {
      if (Sound.on) Sound.disable();
      else await Sound.enable();
      updateSoundBtn();
    });

    $('#play-btn').addEventListener('click', () => send({ type: 'play', count_in_bars: Number($('#count-in').value) }));
    $('#pause-btn').addEventListener('click', () => send({ type: 'pause' }));
    $('#q-play').addEventListener('click', () => {
      if (latestSeg().playing) send({ type: 'pause' });
      else send({ type: 'play', count_in_bars: Number($('#count-in').value) });
    });
    $('#q-stop').addEventListener('click', () => send({ type: 'stop' }));
    $('#q-down').addEventListener('click', () => setTempoSoon(Number($('#tempo-input').value) - 1, 400));
    $('#q-up').addEventListener('click', () => setTempoSoon(Number($('#tempo-input').value) + 1, 400));
    $('#stop-btn').addEventListener('click', () => send({ type: 'stop' }));
    $('#seek-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const bar = Math.floor(Number($('#seek-bar').value));
      if (!(bar >= 1)) return showError('invalid', 'Bars are numbered from 1.');
      const beat = Timeline.beatOfBar(latestSeg(), bar - 1);
      if (beat < 0) return showError('invalid', `Bar ${bar} lies before the start.`);
      send({ type: 'seek', beat });
    });

    $('#tempo-down').addEventListener('click', () => setTempoSoon(Number($('#tempo-input').value) - 1, 400));
    $('#tempo-up').addEventListener('click', () => setTempoSoon(Number($('#tempo-input').value) + 1, 400));
    $('#tempo-set').addEventListener('click', () => setTempoSoon(Number($('#tempo-input').value), 0));
    $('#tempo-input').addEventListener('keydown', (e) => {
      if (e.key === 'Enter') setTempoSoon(Number(e.target.value), 0);
    });
    $('#tap-btn').addEventListener('pointerdown', (e) => {
      e.preventDefault();
      tap();
    });
    $('#meter-form').addEventListener('submit', (e) => {
      e.preventDefault();
      send({ type: 'meter', beats_per_bar: Number($('#meter-beats').value), beat_unit: Number($('#meter-unit').value) });
    });

    $('#request-btn').addEventListener('click', () => send({ type: 'request_leadership' }));
    $('#go-live').addEventListener('click', () => {
      S.browse = null;
      renderStatic();
    });

    $('#song-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const song = readSong();
      if (!song.title) return showError('invalid', 'A song needs a title.');
      const songs = [...S.state.setlist];
      if (S.editing != null && S.editing < songs.length) songs[S.editing] = song;
      else songs.push(song);
      if (send({ type: 'setlist', songs })) resetEditor();
    });
    $('#song-cancel').addEventListener('click', resetEditor);

    $('#chart').addEventListener('wheel', () => (userScrolledAt = performance.now()), { passive: true });
    $('#chart').addEventListener('touchmove', () => (userScrolledAt = performance.now()), { passive: true });

    document.addEventListener('visibilitychange', () => {
      if (document.hidden) return;
      ping(); // timers were throttled: refresh the clock at once
      holdScreen();
    });
    document.addEventListener('pointerdown', holdScreen);
    document.addEventListener('keydown', onKey);
    window.addEventListener('online', () => {
      if (Conn.wanted && !Conn.ws) {
        Conn.attempt = 0;
        connect();
      }
    });
  }

  // Keep the screen on while in a session: a phone that dims mid-song is no use on stage.
  let wakeLock = null;
  async function holdScreen() {
    if (wakeLock || !navigator.wakeLock || document.hidden || !S.auth) return;
    try {
      wakeLock = await navigator.wakeLock.request('screen');
      wakeLock.addEventListener('release', () => (wakeLock = null));
    } catch {
      /* not allowed yet: tried again on the next tap */
    }
  }
  function releaseScreen() {
    wakeLock?.release().catch(() => {});
    wakeLock = null;
  }

  /** Space plays or pauses for the leader, unless typing or on a button. */
  function onKey(e) {
    if (e.code !== 'Space' || e.repeat || !isLeader() || $('#session').hidden) return;
    if (e.target.closest('input, textarea, select, button, summary, [contenteditable]')) return;
    e.preventDefault();
    if (latestSeg().playing) send({ type: 'pause' });
    else send({ type: 'play', count_in_bars: Number($('#count-in').value) });
  }

  function updateSoundBtn() {
    const b = $('#sound-btn');
    b.textContent = Sound.on ? '\u266a Click: on' : '\u266a Click: off';
    b.setAttribute('aria-pressed', String(Sound.on));
    b.classList.toggle('on', Sound.on);
  }

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
})();
