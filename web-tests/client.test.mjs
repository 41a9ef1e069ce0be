// The web client on its own: a stand-in gateway (lib/fake.mjs) serves the files
// and plays the WebSocket's server side, so these run without NATS or Rust and
// pin down the client's timeline math, clock sync, message handling and controls.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { LAPTOP, PHONE, device, launch, screenshot, sleep, text, until, visible } from './lib/browser.mjs';
import { fakeSocket, member, nowUs, segment, serveWeb, sessionState } from './lib/fake.mjs';

const ANA = member('m-ana', 'Ana', true, 600);
const BEN = member('m-ben', 'Ben', true, 300);

const CHART = ['| C    | G/B  |', '| Am   | F    |', '| C    | G    |', '| F    | C    |', '', '| Am   | Em   |', '| F    | G    |'].join('\n');

let browser;
let web;
const tokens = { 'tok-ana': 'm-ana', 'tok-ben': 'm-ben', 'tok-ben-2': 'm-ben' };

before(async () => {
  browser = await launch();
  web = await serveWeb((path, body) => {
    if (path === '/api/sessions') return [201, { session: 'sess1', code: 'K7MQ2X', member: 'm-ana', token: 'tok-ana' }];
    if (path === '/api/join') {
      const code = String(body?.code || '').replace(/[-\s]/g, '').toUpperCase();
      if (code !== 'K7MQ2X') return [404, { code: 'unknown_session', message: `no session has the code ${code}` }];
      return [200, { session: 'sess1', code: 'K7MQ2X', member: 'm-ben', token: 'tok-ben' }];
    }
    return [404, { code: 'invalid', message: 'no such endpoint' }];
  });
});

after(async () => {
  await browser?.close();
  await web?.close();
});

/** A page already in session `sess1` as `token` (as after a reload). */
async function inSession(profile, token, fakeOpts) {
  const page = await device(browser, profile);
  const fake = await fakeSocket(page, fakeOpts);
  await page.addInitScript((auth) => {
    if (!sessionStorage.getItem('bandsync.auth')) sessionStorage.setItem('bandsync.auth', JSON.stringify(auth));
  }, { session: 'sess1', code: 'K7MQ2X', member: tokens[token], token, name: tokens[token] === 'm-ana' ? 'Ana' : 'Ben' });
  await page.goto(web.url);
  return { page, fake };
}

const welcomeWith = (state) => (token) => ({ member: tokens[token], state: typeof state === 'function' ? state() : state });

describe('web client against a stand-in gateway', () => {
  test('landing: creating a session opens it with the join code and the leader role', async () => {
    const page = await device(browser, LAPTOP);
    const fake = await fakeSocket(page, {
      welcome: welcomeWith(() => sessionState({ members: [{ ...ANA }], leader: 'm-ana', segments: [segment({})] })),
    });
    await page.goto(web.url);
    await screenshot(page, 'client-landing-laptop');
    await page.fill('#create-name', 'Ana');
    await page.click('#create-btn');
    await until('the join code', async () => (await text(page, '#join-code-big')) === 'K7M-Q2X');
    assert.equal(fake.sockets[0].token, 'tok-ana');
    assert.deepEqual(fake.sockets[0].offered, ['bandsync', 'bandsync.token.tok-ana']);
    assert.equal(fake.sockets[0].tokenInUrl, false, 'the token stays out of the URL');
    await until('leader role', async () => (await text(page, '#role')) === 'Leader');
    assert.ok(await visible(page, '#leader-controls'));
    assert.ok(!(await visible(page, '#follower-controls')));
    await until('clock synced', () => page.evaluate(() => bandsync.synced));
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  test('landing: a join code nobody has shows the server code and sentence', async () => {
    const page = await device(browser, PHONE);
    await page.goto(web.url);
    await page.fill('#join-code', 'zzzz-zzzz');
    await page.fill('#join-name', 'Ben');
    await page.click('#join-btn');
    await until('the error', () => visible(page, '#landing-error'));
    const t = await text(page, '#landing-error');
    assert.match(t, /unknown_session/);
    assert.match(t, /no session has the code ZZZZZZZZ/);
    await page.fill('#join-code', 'k7');
    await page.click('#join-btn');
    await until('client-side check', async () => /eight letters/.test(await text(page, '#landing-error')));
    await screenshot(page, 'client-landing-phone-error');
    await page.context().close();
  });

  test('clock sync: offset to a server clock 2.5 s ahead, through 30 ms of delay, is within 2 ms', async () => {
    const { page } = await inSession(LAPTOP, 'tok-ben', {
      skewUs: 2_500_000,
      latencyMs: 30,
      welcome: welcomeWith(() => sessionState({ members: [{ ...ANA }, { ...BEN }], leader: 'm-ana', segments: [segment({})] })),
    });
    await until('8 pongs', () => page.evaluate(() => bandsync.synced && bandsync.rttUs !== null), { timeout: 5000 });
    await sleep(800);
    const { offset, rtt, skew } = await page.evaluate(() => ({
      offset: bandsync.offsetUs,
      rtt: bandsync.rttUs,
      skew: bandsync.serverNow() - bandsync.localNowUs(),
    }));
    assert.ok(Math.abs(offset - 2_500_000) < 2000, `offset ${offset}`);
    assert.ok(Math.abs(skew - 2_500_000) < 2000, `serverNow − local ${skew}`);
    assert.ok(rtt >= 25_000 && rtt < 200_000, `rtt ${rtt}`);
    await page.context().close();
  });

  test('count-in then playing: the display and the chart follow the timeline', async () => {
    const start = Math.round(nowUs() + 700_000);
    const seg = segment({ anchor_time: start, anchor_beat: -4, playing: true, count_in_until: 0 });
    const state = sessionState({
      members: [{ ...ANA }, { ...BEN }],
      leader: 'm-ana',
      segments: [segment({ anchor_time: start - 5e6 }), seg],
      setlist: [{ title: 'Let It Be', tempo_bpm: 120, chart: CHART }],
      song: 0,
    });
    const { page } = await inSession(PHONE, 'tok-ben', { welcome: welcomeWith(state) });
    // Pure: what a musician sees at given server times.
    const seen = await page.evaluate((s) => [0, 100e3, 600e3, 1600e3, 2100e3, 2600e3, 4100e3, 8100e3].map((dt) => {
      const d = bandsync.describe(s + dt);
      return `${d.mode} ${d.text}`;
    }), start);
    assert.deepEqual(seen, [
      'count-in −1:1', 'count-in −1:1', 'count-in −1:2', 'count-in −1:4', 'playing 1:1', 'playing 1:2', 'playing 2:1', 'playing 4:1',
    ]);
    assert.equal(await page.evaluate((s) => bandsync.describe(s - 100e3).mode, start), 'starting');
    await until('count-in shown', async () => (await text(page, '#status')) === 'Count-in');
    await until('music-start line marked', () => page.$eval('#chart li[data-bar="0"]', (e) => e.classList.contains('next')));
    await screenshot(page, 'client-count-in-phone');
    await until('playing shown', async () => (await text(page, '#status')) === 'Playing', { timeout: 5000 });
    await until('bar 2 highlighted', () => page.$eval('#chart li[data-bar="1"]', (e) => e.classList.contains('current')), { timeout: 5000 });
    assert.equal(await page.$$eval('#chart li.current', (l) => l.length), 1);
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  test('timeline math: tempo change keeps phase, clicks stay continuous, meter change renumbers bars', async () => {
    const { page } = await inSession(LAPTOP, 'tok-ben', {
      welcome: welcomeWith(() => sessionState({ members: [{ ...ANA }], leader: 'm-ana', segments: [segment({})] })),
    });
    const r = await page.evaluate(() => {
      const T = bandsync.Timeline;
      const T0 = 1_700_000_000_000_000;
      const base = { beats_per_bar: 4, beat_unit: 4, bar_origin_beat: 0, bar_origin_number: 0 };
      // 120 BPM from T0; at T0+1.5 s (beat 3) switch to 90 BPM.
      const tl = {
        segments: [
          { ...base, anchor_time: T0, anchor_beat: 0, tempo_bpm: 120, playing: true },
          { ...base, anchor_time: T0 + 1_500_000, anchor_beat: 3, tempo_bpm: 90, playing: true },
        ],
      };
      const clicks = T.beatsBetween(tl, T0, T0 + 3_500_000);
      // Meter change to 3/4 at beat 8 (bar 2), as the server's set_meter does.
      const meter = {
        segments: [
          { ...base, anchor_time: T0, anchor_beat: 0, tempo_bpm: 120, playing: true },
          { ...base, anchor_time: T0 + 4_000_000, anchor_beat: 8, tempo_bpm: 120, playing: true, beats_per_bar: 3, bar_origin_beat: 8, bar_origin_number: 2 },
        ],
      };
      return {
        beats: clicks.map((c) => c.beat),
        times: clicks.map((c) => Math.round((c.t - T0) / 1000)),
        accents: clicks.filter((c) => c.accent).map((c) => c.beat),
        before: T.position(tl, T0 + 1_499_999),
        afterTwo: T.position(tl, T0 + 3_500_000),
        beforeStart: T.position(tl, T0 - 1_000_000),
        meter: [3_999_999, 4_000_000, 5_500_000, 6_100_000].map((dt) => T.describe(meter, T0 + dt).text),
      };
    });
    assert.deepEqual(r.beats, [0, 1, 2, 3, 4, 5]);
    assert.deepEqual(r.times, [0, 500, 1000, 1500, 2167, 2833]);
    assert.deepEqual(r.accents, [0, 4]);
    assert.ok(Math.abs(r.before - 3) < 1e-5);
    assert.ok(Math.abs(r.afterTwo - 6) < 1e-9);
    assert.equal(r.meter.join(' '), '2:4 3:1 4:1 4:2');
    await page.context().close();
  });

  test('stale messages are dropped: old seq, old epoch, ticks older than the last event', async () => {
    const segs = (bpm) => [segment({ tempo_bpm: bpm, anchor_time: Math.round(nowUs() - 1e6) })];
    const { page, fake } = await inSession(LAPTOP, 'tok-ben', {
      welcome: welcomeWith(() => sessionState({ members: [{ ...ANA }, { ...BEN }], leader: 'm-ana', segments: segs(120), seq: 5 })),
    });
    await until('welcome', async () => (await text(page, '#tempo')) === '120');
    const event = (seq, epoch, bpm) => {
      const at = fake.serverNow();
      return { type: 'event', session: 'sess1', seq, epoch, at, cause: { by: 'm-ana' }, changes: [{ kind: 'tempo', bpm, at }], state: sessionState({ members: [{ ...ANA }, { ...BEN }], leader: 'm-ana', segments: segs(bpm), seq }) };
    };
    fake.send(event(6, 3, 100));
    await until('event applied', async () => (await text(page, '#tempo')) === '100');
    fake.send(event(6, 3, 80)); // same seq again
    fake.send(event(7, 2, 70)); // a deposed owner
    const lastEventAt = fake.serverNow();
    fake.send(event(7, 3, 101));
    await until('newer event applied', async () => (await text(page, '#tempo')) === '101');
    fake.send({ type: 'tick', session: 'sess1', seq: 10, epoch: 3, server_time: lastEventAt - 50_000, timeline: { segments: segs(60) } });
    await sleep(150);
    assert.equal(await text(page, '#tempo'), '101', 'a tick from before the event is ignored');
    fake.send({ type: 'tick', session: 'sess1', seq: 11, epoch: 3, server_time: fake.serverNow(), timeline: { segments: segs(102) } });
    await until('tick applied', async () => (await text(page, '#tempo')) === '102');
    fake.send({ type: 'tick', session: 'sess1', seq: 11, epoch: 3, server_time: fake.serverNow(), timeline: { segments: segs(50) } });
    fake.send({ type: 'tick', session: 'sess1', seq: 12, epoch: 2, server_time: fake.serverNow(), timeline: { segments: segs(50) } });
    await sleep(150);
    assert.equal(await text(page, '#tempo'), '102');
    await page.context().close();
  });

  test('leader controls send the commands of the protocol', async () => {
    const state = sessionState({
      members: [{ ...ANA }, { ...BEN }],
      leader: 'm-ana',
      segments: [segment({ anchor_time: Math.round(nowUs() - 1e6) })],
      setlist: [{ title: 'Intro', chart: 'a\nb' }],
    });
    const { page, fake } = await inSession(LAPTOP, 'tok-ana', { welcome: welcomeWith(state) });
    // Just enough of the owner for the transport buttons to follow the state.
    let seq = state.seq;
    fake.onCommand = (msg) => {
      const seg = { ...state.timeline.segments.at(-1), anchor_time: fake.serverNow() + 150_000 };
      if (msg.type === 'play') Object.assign(seg, { playing: true });
      else if (msg.type === 'pause') Object.assign(seg, { playing: false, anchor_beat: 3.5 });
      else if (msg.type === 'stop') Object.assign(seg, { playing: false, anchor_beat: 0 });
      else return;
      state.timeline = { segments: [state.timeline.segments.at(-1), seg] };
      seq += 1;
      fake.send({ type: 'event', session: 'sess1', seq, epoch: 1, at: fake.serverNow(), cause: { by: 'm-ana' }, changes: [], state: { ...state, seq } });
    };
    await until('leader controls', () => visible(page, '#leader-controls'));
    assert.ok(await page.$eval('#pause-btn', (b) => b.disabled), 'nothing to pause');
    const cmds = () => fake.received.filter((m) => m.type !== 'ping').map(({ id, ...m }) => m);
    await page.click('#tempo-up');
    await page.click('#tempo-up');
    await page.click('#tempo-up');
    await until('one debounced tempo', () => cmds().length === 1);
    assert.deepEqual(cmds()[0], { type: 'tempo', bpm: 123 });
    await page.fill('#tempo-input', '96.5');
    await page.press('#tempo-input', 'Enter');
    await page.selectOption('#count-in', '2');
    await page.click('#play-btn');
    await page.click('#pause-btn');
    await page.click('#stop-btn');
    await page.fill('#seek-bar', '5');
    await page.click('#seek-form button');
    await page.fill('#meter-beats', '7');
    await page.selectOption('#meter-unit', '8');
    await page.click('#meter-form button');
    await page.click('#song-editor summary');
    await page.fill('#song-title-in', 'Blackbird');
    await page.fill('#song-bpm', '94');
    await page.fill('#song-chart', 'G Am7 G/B G\nC A7/C# D');
    await page.click('#song-save');
    await page.click('#setlist li:first-child .btn:text("Load")');
    await page.click('#members li[data-member="m-ben"] .hand');
    await until('all commands', () => cmds().length === 10);
    assert.deepEqual(cmds().slice(1), [
      { type: 'tempo', bpm: 96.5 },
      { type: 'play', count_in_bars: 2 },
      { type: 'pause' },
      { type: 'stop' },
      { type: 'seek', beat: 16 },
      { type: 'meter', beats_per_bar: 7, beat_unit: 8 },
      { type: 'setlist', songs: [{ title: 'Intro', chart: 'a\nb' }, { title: 'Blackbird', tempo_bpm: 94, chart: 'G Am7 G/B G\nC A7/C# D' }] },
      { type: 'song', index: 0 },
      { type: 'hand_leadership', to: 'm-ben' },
    ]);
    assert.ok(fake.received.filter((m) => m.type !== 'ping').every((m) => typeof m.id === 'string'), 'every command has an id');
    await page.context().close();
  });

  test('errors: a refused command shows its code and sentence', async () => {
    const { page, fake } = await inSession(PHONE, 'tok-ben', {
      welcome: welcomeWith(() => sessionState({ members: [{ ...ANA }, { ...BEN }], leader: 'm-ana', segments: [segment({})] })),
    });
    fake.onCommand = (msg, ws) => {
      ws.send(JSON.stringify({ type: 'error', code: 'not_leader', message: 'only the leader can do that; ask for leadership first', id: msg.id }));
    };
    await until('follower', async () => (await text(page, '#role')) === 'Follower');
    await page.evaluate(() => bandsync.send({ type: 'tempo', bpm: 90 }));
    await until('error banner', () => visible(page, '#error'));
    assert.equal(await text(page, '#error .error-code'), 'not_leader');
    assert.match(await text(page, '#error .error-message'), /only the leader can do that/);
    await screenshot(page, 'client-error-phone');
    await page.context().close();
  });

  test('reconnect: on a reconnect message, a dropped socket and a reload, the newest token comes back', async () => {
    const { page, fake } = await inSession(LAPTOP, 'tok-ben', {
      welcome: welcomeWith(() => sessionState({ members: [{ ...ANA }, { ...BEN }], leader: 'm-ana', segments: [segment({})] })),
    });
    await until('online', () => page.evaluate(() => bandsync.connection === 'online'));
    // Tokens expire: the gateway hands out fresh ones, which replace the old.
    fake.send({ type: 'token', token: 'tok-ben-2', expires_at: Math.round(Date.now() / 1000) + 86400 });
    fake.send({ type: 'reconnect', reason: 'gateway shutting down; connect again' });
    await until('second socket', () => fake.sockets.length === 2, { timeout: 3000 });
    await until('online again', () => page.evaluate(() => bandsync.connection === 'online'));
    fake.sockets[1].close({ code: 1011, reason: 'internal' });
    await until('third socket (backoff)', () => fake.sockets.length === 3, { timeout: 5000 });
    await page.reload();
    await until('fourth socket after reload', () => fake.sockets.length === 4, { timeout: 5000 });
    assert.deepEqual(fake.sockets.map((s) => s.token), ['tok-ben', 'tok-ben-2', 'tok-ben-2', 'tok-ben-2']);
    await until('online after reload', () => page.evaluate(() => bandsync.connection === 'online'));
    assert.equal(await page.evaluate(() => bandsync.me), 'm-ben');
    await page.context().close();
  });

  test('members and setlist by reference: light events keep them; an event naming a setlist never received brings a fresh welcome', async () => {
    const first = [{ title: 'Let It Be', tempo_bpm: 72, chart: CHART }];
    const second = [...first, { title: 'Blackbird', tempo_bpm: 94, chart: 'G Am7 G/B G' }];
    let welcomes = 0;
    const base = { members: [{ ...ANA }, { ...BEN }], members_rev: 2, leader: 'm-ana', segments: [segment({})], song: 0 };
    const { page, fake } = await inSession(PHONE, 'tok-ben', {
      welcome: welcomeWith(() => {
        welcomes += 1;
        return welcomes === 1
          ? sessionState({ ...base, setlist: first, setlist_rev: 3, seq: 5 })
          : sessionState({ ...base, setlist: second, setlist_rev: 7, seq: 8 });
      }),
    });
    await until('online', () => page.evaluate(() => bandsync.connection === 'online'));
    const event = (seq, setlistRev, extra = {}) => ({
      type: 'event', session: 'sess1', seq, epoch: 1, at: fake.serverNow(), cause: { by: 'm-ana' },
      changes: [{ kind: 'tempo', bpm: 80, at: fake.serverNow() }],
      state: sessionState({ ...base, members: [], setlist: [], setlist_rev: setlistRev, seq }), ...extra,
    });
    // Same revision, no setlist in the event: the chart stays.
    fake.send(event(6, 3));
    await until('event applied', () => page.evaluate(() => bandsync.state.seq === 6));
    assert.equal(await page.evaluate(() => bandsync.state.setlist.length), 1);
    assert.equal(await text(page, '#song-title'), 'Let It Be');
    assert.ok((await page.$$('#chart li')).length > 0, 'the chart is still shown');
    assert.equal(await page.evaluate(() => bandsync.state.members.length), 2, 'the members are kept');
    assert.equal((await page.$$('#members li')).length, 2);
    // An event naming revision 7, which this device never received: it reconnects
    // (same token) and the welcome brings the whole state.
    fake.send(event(8, 7));
    await until('second socket', () => fake.sockets.length === 2, { timeout: 3000 });
    await until('fresh state', () => page.evaluate(() => bandsync.state.setlist.length === 2));
    assert.deepEqual(fake.sockets.map((s) => s.token), ['tok-ben', 'tok-ben']);
    // An event carrying the new setlist replaces it.
    fake.send(event(9, 9, { setlist: [{ title: 'So What', chart: 'Dm7' }] }));
    await until('carried setlist', () => page.evaluate(() => bandsync.state.setlist.map((s) => s.title).join() === 'So What'));
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  test('a session that has ended sends the musician back to the landing screen', async () => {
    const page = await device(browser, PHONE);
    await page.routeWebSocket(/\/ws\?/, (ws) => {
      ws.send(JSON.stringify({ type: 'error', code: 'unknown_session', message: 'this session has ended or never existed' }));
      ws.close({ code: 1008, reason: 'unknown_session' });
    });
    await page.addInitScript(() => {
      sessionStorage.setItem('bandsync.auth', JSON.stringify({ session: 'gone', code: 'ABCDEF', member: 'm-x', token: 'tok-gone', name: 'X' }));
    });
    await page.goto(web.url);
    await until('landing with the error', () => visible(page, '#landing-error'));
    assert.match(await text(page, '#landing-error'), /unknown_session.*ended or never existed/);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('bandsync.auth')), null, 'membership forgotten');
    await page.context().close();
  });

  test('the leader closes joining and removes a member; the removed member is sent back to the start', async () => {
    const state = sessionState({ members: [{ ...ANA }, { ...BEN }], leader: 'm-ana', segments: [segment({})] });
    const { page, fake } = await inSession(LAPTOP, 'tok-ana', { welcome: welcomeWith(state) });
    await until('leader controls', () => visible(page, '#leader-controls'));
    const cmds = () => fake.received.filter((m) => m.type !== 'ping').map(({ id, ...m }) => m);
    assert.equal(await text(page, '#joining-btn'), 'Close joining');
    await page.click('#joining-btn');
    await until('joining command', () => cmds().length === 1);
    assert.deepEqual(cmds()[0], { type: 'joining', open: false });
    fake.send({ type: 'event', session: 'sess1', seq: state.seq + 1, epoch: 1, at: fake.serverNow(), cause: { by: 'm-ana' }, changes: [{ kind: 'joining', open: false }], state: { ...state, seq: state.seq + 1, joining_closed: true } });
    await until('closed shown', async () => (await text(page, '#joining-state')) === 'Joining is closed.');
    assert.equal(await text(page, '#joining-btn'), 'Open joining');
    page.once('dialog', (d) => d.accept());
    await page.click('li[data-member="m-ben"] .remove');
    await until('remove command', () => cmds().length === 2);
    assert.deepEqual(cmds()[1], { type: 'remove_member', member: 'm-ben' });
    await screenshot(page, 'client-joining-closed-laptop');
    await page.context().close();

    // The removed member's device: told, closed, back to the start screen.
    const phone = await device(browser, PHONE);
    await phone.routeWebSocket(/\/ws\?/, (ws) => {
      ws.send(JSON.stringify({ type: 'error', code: 'removed', message: 'the leader removed you from this session' }));
      ws.close({ code: 1008, reason: 'removed' });
    });
    await phone.addInitScript(() => {
      sessionStorage.setItem('bandsync.auth', JSON.stringify({ session: 'sess1', code: 'K7MQ2X', member: 'm-ben', token: 'tok-ben', name: 'Ben' }));
    });
    await phone.goto(web.url);
    await until('landing with the error', () => visible(phone, '#landing-error'));
    assert.match(await text(phone, '#landing-error'), /removed.*leader removed you/);
    assert.equal(await phone.evaluate(() => localStorage.getItem('bandsync.last')), null, 'no Rejoin offered');
    await phone.context().close();
  });

  test('metronome: clicks are scheduled exactly on the beats, accent on beat 1', async () => {
    const start = Math.round(nowUs() + 1_500_000);
    const { page } = await inSession(LAPTOP, 'tok-ben', {
      welcome: welcomeWith(() => sessionState({
        members: [{ ...ANA }, { ...BEN }],
        leader: 'm-ana',
        segments: [segment({ anchor_time: start, anchor_beat: -2, playing: true, tempo_bpm: 150, count_in_until: 0 })],
      })),
    });
    await until('synced', () => page.evaluate(() => bandsync.synced));
    await page.click('#sound-btn');
    await until('sound on', async () => (await text(page, '#sound-btn')).includes('on'));
    await until('count-in and two bars', async () => (await page.evaluate(() => bandsync.clicks.length)) >= 8, { timeout: 6000 });
    const clicks = await page.evaluate(() => bandsync.clicks);
    assert.deepEqual(clicks.slice(0, 4).map((c) => c.beat), [-2, -1, 0, 1], `clicks: ${JSON.stringify(clicks)}`);
    for (const c of clicks) {
      const expect = start + (c.beat + 2) * 400_000; // 150 BPM = 400 ms a beat
      assert.ok(Math.abs(c.t - expect) < 1, `beat ${c.beat} at ${c.t}, expected ${expect}`);
      assert.equal(c.accent, ((c.beat % 4) + 4) % 4 === 0, `accent of beat ${c.beat}`);
      assert.equal(c.countIn, c.beat < 0);
      // The audio clock mapping: a click due in x s on the server clock is scheduled
      // x s ahead on the audio clock, less the output latency (a few tens of ms at most).
      const early = c.serverLead - c.audioLead;
      assert.ok(early > -0.005 && early < 0.08, `beat ${c.beat}: audio lead ${c.audioLead}, server lead ${c.serverLead}`);
    }
    const beats = clicks.map((c) => c.beat);
    assert.deepEqual(beats, [...new Set(beats)], 'no beat scheduled twice');
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  test('design: leader on a laptop, follower on a phone browsing ahead', async () => {
    const members = [
      { ...ANA }, { ...BEN }, member('m-cleo', 'Cleo', true, 200), member('m-dev', 'Dev', false, 100), member('m-eli', 'Eli', true, 50),
    ];
    const setlist = [
      { title: 'Let It Be', tempo_bpm: 72, chart: CHART },
      { title: 'Blackbird', tempo_bpm: 94, beats_per_bar: 3, chart: 'G  Am7  G/B  G\nC  A7/C#  D  B7/D#\nEm  Em/D  Cm  G' },
      { title: 'Superstition', tempo_bpm: 100 },
    ];
    const started = Math.round(nowUs() - 9_400_000);
    const state = sessionState({
      members,
      leader: 'm-ana',
      segments: [segment({ anchor_time: started, anchor_beat: 0, tempo_bpm: 72, playing: true })],
      setlist,
      song: 0,
      leadership_request: 'm-cleo',
    });
    const leader = await inSession(LAPTOP, 'tok-ana', { welcome: welcomeWith(state) });
    const follower = await inSession(PHONE, 'tok-ben', { welcome: welcomeWith({ ...state, leadership_request: undefined }) });
    await until('playing', async () => (await text(leader.page, '#status')) === 'Playing');
    await until('playing (phone)', async () => (await text(follower.page, '#status')) === 'Playing');
    await sleep(300);
    await screenshot(leader.page, 'client-leader-laptop');
    await screenshot(follower.page, 'client-follower-phone');
    await screenshot(follower.page, 'client-follower-phone-full', { fullPage: true });
    await follower.page.click('#setlist li:nth-child(2) .song-name');
    await until('browsing', () => visible(follower.page, '#browse-bar'));
    await screenshot(follower.page, 'client-follower-phone-browsing');
    await follower.page.click('#go-live');
    const phoneLeader = await inSession(PHONE, 'tok-ana', { welcome: welcomeWith(state) });
    await until('quick bar', () => visible(phoneLeader.page, '#quickbar'));
    assert.equal(await text(phoneLeader.page, '#q-play'), '❚❚ Pause');
    assert.equal(await text(phoneLeader.page, '#q-bpm'), '72');
    await sleep(200);
    await screenshot(phoneLeader.page, 'client-leader-phone');
    await phoneLeader.page.context().close();
    const tablet = await inSession({ viewport: { width: 820, height: 1180 }, hasTouch: true }, 'tok-ben', { welcome: welcomeWith({ ...state, leadership_request: undefined }) });
    await until('playing (tablet)', async () => (await text(tablet.page, '#status')) === 'Playing');
    await screenshot(tablet.page, 'client-follower-tablet');
    await tablet.page.context().close();
    await until('live again', async () => !(await visible(follower.page, '#browse-bar')));
    assert.deepEqual(leader.page.errors, []);
    assert.deepEqual(follower.page.errors, []);
    await leader.page.context().close();
    await follower.page.context().close();
  });
});
