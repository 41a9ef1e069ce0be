// A stand-in for the gateway, for tests of the client alone: serves
// gateway/web/* over HTTP, answers the JSON API, and plays the server side of
// the WebSocket through Playwright's routeWebSocket. It does not implement
// the session rules (the Rust state machine does); tests push states directly.
import { after, before } from 'node:test';
import { createServer } from 'node:http';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch } from './browser.mjs';

const WEB = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'gateway', 'web');
const TYPES = { html: 'text/html; charset=utf-8', js: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8', svg: 'image/svg+xml' };
/** The file under gateway/web a GET names, or null: `/`, `/style.css`, `/js/<module>.js`. */
function fileOf(path) {
  if (path === '/') return 'index.html';
  const m = /^\/((?:js\/)?[a-z0-9_-]+\.(?:js|css))$/.exec(path);
  return m ? m[1] : null;
}

export const nowUs = () => (performance.timeOrigin + performance.now()) * 1000;

/**
 * A browser and the stand-in for a test file: launched before its tests,
 * closed after them. `stand.browser` and `stand.web` are set once they run.
 */
export function standIn(api = () => [404, { code: 'invalid', message: 'no API here' }]) {
  const stand = { browser: null, web: null };
  before(async () => {
    stand.browser = await launch();
    stand.web = await serveWeb(api);
  });
  after(async () => {
    await stand.browser?.close();
    await stand.web?.close();
  });
  return stand;
}

/** Serves the client files; `api` answers POSTs: (path, body) => [status, json]. */
export function serveWeb(api) {
  const server = createServer((req, res) => {
    const path = req.url.split('?')[0];
    if (req.method === 'GET' && path === '/qr.svg') {
      // The gateway draws the real one (gateway/src/web.rs); a stand-in square here.
      res.writeHead(200, { 'content-type': 'image/svg+xml' });
      res.end('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 8 8"><rect width="8" height="8" fill="#fff"/></svg>');
      return;
    }
    const file = req.method === 'GET' ? fileOf(path) : null;
    if (file && existsSync(join(WEB, file))) {
      res.writeHead(200, { 'content-type': TYPES[file.split('.').pop()], 'cache-control': 'no-store' });
      res.end(readFileSync(join(WEB, file)));
      return;
    }
    if (req.method === 'POST') {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        let parsed = null;
        try {
          parsed = JSON.parse(body);
        } catch {
          /* left null */
        }
        const [status, json] = api(path, parsed);
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(json));
      });
      return;
    }
    res.writeHead(404).end();
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      resolve({ url: `http://127.0.0.1:${port}`, close: () => new Promise((r) => server.close(r)) });
    });
  });
}

export function segment(fields) {
  return {
    anchor_time: Math.round(nowUs()),
    anchor_beat: 0,
    tempo_bpm: 120,
    playing: false,
    beats_per_bar: 4,
    beat_unit: 4,
    bar_origin_beat: 0,
    bar_origin_number: 0,
    ...fields,
  };
}

export function sessionState({ members, leader, segments, setlist = [], song = null, seq = 5, ...rest }) {
  const t = Math.round(nowUs());
  return {
    id: 'sess1',
    code: 'K7MQ2X',
    created_at: t - 60e6,
    seq,
    leader,
    members,
    timeline: { segments },
    setlist,
    song,
    last_activity: t,
    last_cmd_seq: seq,
    last_changes: [],
    last_cause: {},
    last_change_at: t,
    ...rest,
  };
}

export const member = (id, name, connected = true, joinedAgoS = 60) => ({
  id,
  name,
  joined_at: Math.round(nowUs() - joinedAgoS * 1e6),
  connected,
});

/**
 * Plays the server end of every WebSocket the page opens to /ws.
 * `skewUs` is added to server times (a server clock ahead of the device's).
 */
export async function fakeSocket(page, { welcome, skewUs = 0, latencyMs = 0 } = {}) {
  const fake = { sockets: [], received: [], skewUs, onCommand: null, stalled: false };
  fake.serverNow = () => Math.round(nowUs() + fake.skewUs);
  fake.send = (msg) => {
    const ws = fake.sockets[fake.sockets.length - 1];
    ws.send(JSON.stringify(msg));
  };
  await page.routeWebSocket(/\/ws\?/, (ws) => {
    fake.sockets.push(ws);
    const offered = JSON.parse(new URL(ws.url()).searchParams.get('__offered') || '[]');
    const prefix = 'bandsync.token.';
    const token = (offered.find((p) => p.startsWith(prefix)) || '').slice(prefix.length) || null;
    ws.token = token;
    ws.offered = offered;
    ws.tokenInUrl = new URL(ws.url()).searchParams.has('token');
    ws.onMessage((text) => {
      if (fake.stalled || ws.stalled) return; // a stalled link: nothing reaches the server, no pong comes back
      const msg = JSON.parse(text);
      fake.received.push(msg);
      if (msg.type === 'ping') {
        const reply = () => ws.send(JSON.stringify({ type: 'pong', t0: msg.t0, server_time: fake.serverNow() }));
        // Symmetric delay: half before reading the clock, half after.
        if (latencyMs) setTimeout(() => { const st = fake.serverNow(); setTimeout(() => ws.send(JSON.stringify({ type: 'pong', t0: msg.t0, server_time: st })), latencyMs / 2); }, latencyMs / 2);
        else reply();
      } else if (fake.onCommand) {
        fake.onCommand(msg, ws);
      }
    });
    if (welcome && !fake.stalled) {
      const w = typeof welcome === 'function' ? welcome(token) : welcome;
      if (w) ws.send(JSON.stringify({ type: 'welcome', server_time: fake.serverNow(), ...w }));
    }
  });
  // The page offers its token as a subprotocol, which the route cannot see: a
  // wrapper copies what each socket offers into its URL for the route to read
  // (installed after the route, so that it wraps Playwright's stand-in).
  await page.addInitScript(() => {
    const Native = window.WebSocket;
    window.WebSocket = class WebSocket extends Native {
      constructor(url, protocols) {
        const u = new URL(url, location.href);
        u.searchParams.set('__offered', JSON.stringify([].concat(protocols || [])));
        super(u.toString(), protocols);
      }
    };
  });
  return fake;
}
