// On stage, against the stand-in gateway: transport keys whatever has focus,
// the count-in display, 6/8, pedals, and the honest sync light (a stalled
// socket is said to be out of sync, dropped and replaced; never "live").
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LAPTOP, PHONE, device, screenshot, text, until, visible } from './lib/browser.mjs';
import { fakeSocket, member, nowUs, segment, sessionState, standIn } from './lib/fake.mjs';
import { SONG } from './lib/songs.mjs';

const stand = standIn();

const MEMBERS = () => [member('m-ana', 'Ana', true, 600), member('m-ben', 'Ben', true, 300)];

async function open(profile, me, state, opts = {}, init = null) {
  const page = await device(stand.browser, profile);
  if (init) await page.addInitScript(init);
  const fake = await fakeSocket(page, { welcome: () => ({ member: me, state: typeof state === 'function' ? state() : state }), ...opts });
  await page.addInitScript((auth) => {
    if (!sessionStorage.getItem('bandsync.auth')) sessionStorage.setItem('bandsync.auth', JSON.stringify(auth));
  }, { session: 'sess1', code: 'K7MQ2X', member: me, token: `tok-${me}`, name: me });
  await page.goto(stand.web.url);
  await until('welcomed', () => page.evaluate(() => bandsync.state !== null));
  return { page, fake };
}
const commands = (fake, type) => fake.received.filter((m) => m.type === type);

test('Space acts on the transport whatever has focus: after "+" it pauses, it does not press "+" again', async () => {
  const state = () => sessionState({ members: MEMBERS(), leader: 'm-ana', segments: [segment({ anchor_time: Math.round(nowUs() - 1e6), playing: true })] });
  const { page, fake } = await open(LAPTOP, 'm-ana', state);
  await until('online', () => page.evaluate(() => bandsync.connection === 'online'));
  await page.focus('#tempo-up');
  await page.keyboard.press('Space');
  await until('a pause sent', () => commands(fake, 'pause').length === 1);
  assert.equal(await page.inputValue('#tempo-input'), '120', '"+" was not pressed');
  await page.focus('#count-in');
  await page.keyboard.press('Space');
  await until('a second pause sent', () => commands(fake, 'pause').length === 2);
  assert.equal(await page.inputValue('#count-in'), '1');
  // Its arrows still choose in the list.
  await page.keyboard.press('ArrowDown');
  assert.equal(await page.inputValue('#count-in'), '2');
  await page.keyboard.press('ArrowUp');
  // Typing keeps its space.
  await page.click('#song-editor summary');
  await page.fill('#song-title-in', 'Let');
  await page.focus('#song-title-in');
  await page.keyboard.press('Space');
  assert.equal(await page.inputValue('#song-title-in'), 'Let ');
  assert.equal(commands(fake, 'pause').length + commands(fake, 'play').length, 2);
  assert.deepEqual(commands(fake, 'tempo'), []);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a resume with two bars of count-in shows −2, −1, then the bar that was playing; 6/8 shows as 6/8', async () => {
  // Paused at beat 30.88 (bar 8); resumed from bar 8's line (beat 28) after two bars.
  const t = Math.round(nowUs() + 600_000);
  const state = () => sessionState({
    members: MEMBERS(), leader: 'm-ana',
    segments: [segment({ anchor_time: t - 5e6, anchor_beat: 30.88 }), segment({ anchor_time: t, anchor_beat: 20, playing: true, count_in_until: 28, tempo_bpm: 240 })],
  });
  const { page } = await open(PHONE, 'm-ben', state);
  await page.evaluate(() => {
    window.said = [];
    new MutationObserver(() => window.said.push(document.querySelector('#announce').textContent))
      .observe(document.querySelector('#announce'), { childList: true, characterData: true, subtree: true });
  });
  const seen = new Set();
  await until('bar 8 after the count-in', async () => {
    const bar = await text(page, '#pos-bar');
    seen.add(bar);
    return bar === '8' && seen.has('\u22121');
  }, { every: 20 });
  assert.ok(seen.has('\u22122') && seen.has('\u22121'), `bars seen: ${[...seen]}`);
  assert.ok(![...seen].some((b) => b === '\u22123'), `no third count-in bar: ${[...seen]}`);
  // Announced for screen readers: the count-in with its length, then the music.
  await until('announced', async () => (await text(page, '#announce')) === 'Playing');
  assert.ok((await page.evaluate(() => window.said)).includes('Count-in, 2 bars'), 'the count-in announced');
  await page.context().close();

  const sixEight = () => sessionState({ members: MEMBERS(), leader: 'm-ana', segments: [segment({ beats_per_bar: 6, beat_unit: 8 })] });
  const six = await open(PHONE, 'm-ben', sixEight);
  await until('6/8 shown', async () => (await text(six.page, '#meter')) === '6/8');
  assert.equal(await six.page.$$eval('#lights .light', (l) => l.length), 6);
  await six.page.context().close();
});

test('pedals: PageDown/PageUp move this device between sections, Escape goes back live; → loads the next song for the leader', async () => {
  const setlist = [{ title: 'Amazing Grace', chart: SONG }, { title: 'Second' }];
  const state = () => sessionState({ members: MEMBERS(), leader: 'm-ana', segments: [segment({})], setlist, song: 0 });
  const { page, fake } = await open(PHONE, 'm-ben', state);
  await until('chart', () => page.$$eval('#chart li.section', (l) => l.length >= 3));
  const topSection = () => page.$eval('#chart', (ol) => {
    const heads = [...ol.querySelectorAll('li.section')];
    return heads.findIndex((h) => Math.abs(h.offsetTop - 4 - ol.scrollTop) < 3);
  });
  await page.keyboard.press('PageDown');
  await until('browse bar', () => visible(page, '#browse-bar'));
  assert.match(await text(page, '#browse-title'), /Looking ahead/);
  await page.keyboard.press('PageDown');
  await until('the chorus at the top', async () => (await topSection()) === 1);
  await page.keyboard.press('PageUp');
  await until('verse 1 at the top', async () => (await topSection()) === 0);
  await page.keyboard.press('Escape');
  await until('live again', async () => !(await visible(page, '#browse-bar')));
  // Browsing from the setlist below the stage brings the stage back: the live
  // position and "Go live" in view with the browsed chart.
  await page.click('#setlist li:nth-child(2) .song-name');
  await until('position and Go live in view', () => page.evaluate(() => [document.querySelector('#position'), document.querySelector('#go-live')]
    .every((e) => { const r = e.getBoundingClientRect(); return r.top >= 0 && r.bottom <= innerHeight; })));
  await page.keyboard.press('Escape');
  await until('live again', async () => !(await visible(page, '#browse-bar')));
  // A follower's → looks at the next song; Escape comes back.
  await page.keyboard.press('ArrowRight');
  await until('browsing song 2', async () => (await text(page, '#browse-title')) === 'Browsing Second');
  await page.keyboard.press('Escape');
  await until('live again', async () => !(await visible(page, '#browse-bar')));
  assert.deepEqual(commands(fake, 'song'), [], 'a follower sends nothing');
  await page.context().close();

  const lead = await open(LAPTOP, 'm-ana', state);
  await lead.page.keyboard.press('ArrowRight');
  await until('song 2 loaded', () => commands(lead.fake, 'song').length === 1);
  assert.equal(commands(lead.fake, 'song')[0].index, 1);
  await lead.page.context().close();
});

test('a stalled socket: "out of sync — reconnecting" on the stage view, a new connection, never "live" until it is welcomed', async () => {
  const start = Math.round(nowUs() - 2e6);
  const timeline = { segments: [segment({ anchor_time: start, playing: true })] };
  const state = () => sessionState({ members: MEMBERS(), leader: 'm-ana', segments: timeline.segments });
  const { page, fake } = await open(PHONE, 'm-ben', state);
  // The server ticks at 10 Hz on whichever socket is current, unless it is stalled.
  let seq = 1000;
  const ticker = setInterval(() => {
    const ws = fake.sockets[fake.sockets.length - 1];
    seq += 1;
    if (!ws.stalled && !fake.stalled) ws.send(JSON.stringify({ type: 'tick', seq, epoch: 1, server_time: fake.serverNow(), timeline }));
  }, 100);
  try {
    await until('live, hearing ticks', () => page.evaluate(() => bandsync.connection === 'online' && Math.abs(bandsync.tickPeriodMs - 100) < 30));
    await page.evaluate(() => {
      window.connStates = [];
      new MutationObserver(() => {
        window.firstReason ??= bandsync.outOfSync;
        window.connStates.push(document.querySelector('#conn').dataset.state);
      })
        .observe(document.querySelector('#conn'), { attributes: true, attributeFilter: ['data-state'] });
    });
    // The link stalls: no ticks, no pongs, no welcome on a new socket either.
    fake.stalled = true;
    await until('out of sync shown', () => visible(page, '#sync-banner'), { timeout: 5000 });
    assert.equal(await text(page, '#sync-banner'), 'Out of sync \u2014 reconnecting');
    assert.equal(await text(page, '#conn-text'), 'out of sync \u2014 reconnecting');
    assert.equal(await text(page, '#status'), 'Out of sync', 'not "Playing" on a stale timeline');
    await screenshot(page, 'stage-out-of-sync-phone');
    await until('a new socket tried', () => fake.sockets.length >= 2);
    assert.equal(await page.evaluate(() => bandsync.connection), 'stale');
    // The ticks fell silent first (4 periods of 100 ms, at least 1.2 s), before any ping was 3 s late.
    assert.equal(await page.evaluate(() => window.firstReason), 'no ticks');
    fake.stalled = false; // the link comes back: the next socket is welcomed
    await until('live again', () => page.evaluate(() => bandsync.connection === 'online'));
    assert.ok(!(await visible(page, '#sync-banner')));
    const states = await page.evaluate(() => window.connStates);
    const firstStale = states.indexOf('stale');
    assert.ok(firstStale >= 0, `states: ${states}`);
    assert.deepEqual(states.slice(0, firstStale).filter((s) => s !== 'online'), [], `live until the stall: ${states}`);
    assert.equal(states[states.length - 1], 'online');
    assert.ok(!states.slice(firstStale, -1).includes('online'), `never live while stale: ${states}`);
    assert.deepEqual(page.errors, []);
  } finally {
    clearInterval(ticker);
  }
  await page.context().close();
});

test('no pong in time: out of sync, even while stopped', async () => {
  const state = () => sessionState({ members: MEMBERS(), leader: 'm-ana', segments: [segment({})] });
  const { page, fake } = await open(LAPTOP, 'm-ben', state);
  await until('online', () => page.evaluate(() => bandsync.connection === 'online'));
  await page.evaluate(() => {
    window.connStates = [];
    new MutationObserver(() => {
      window.firstReason ??= bandsync.outOfSync;
      window.connStates.push(document.querySelector('#conn').dataset.state);
    }).observe(document.querySelector('#conn'), { attributes: true, attributeFilter: ['data-state'] });
  });
  fake.sockets[0].stalled = true;
  await until('a new socket', () => fake.sockets.length === 2, { timeout: 8000 });
  await until('back live', () => page.evaluate(() => bandsync.connection === 'online'));
  const states = await page.evaluate(() => window.connStates);
  assert.equal(states[0], 'stale', `states: ${states}`);
  assert.equal(await page.evaluate(() => window.firstReason), 'no answer to pings');
  await page.context().close();
});

test('click settings: subdivisions between the beats, no accent, visual only; kept across a reload', async () => {
  const state = () => sessionState({ members: MEMBERS(), leader: 'm-ana', segments: [segment({ anchor_time: Math.round(nowUs() - 1e6), playing: true, tempo_bpm: 120 })] });
  const { page } = await open(LAPTOP, 'm-ben', state);
  await page.click('#click-settings summary');
  await page.selectOption('#click-sub', '2');
  await page.uncheck('#click-accent');
  await page.click('#sound-btn');
  await until('clicks with subdivisions', () => page.evaluate(() => bandsync.clicks.filter((c) => c.sub).length >= 3));
  const clicks = await page.evaluate(() => bandsync.clicks.slice(-8));
  const subs = clicks.filter((c) => c.sub);
  assert.ok(subs.every((c) => !c.accent), 'subdivisions are never accented');
  // Each subdivision is half a beat (250 ms at 120 BPM) after its beat.
  const beats = new Map(clicks.filter((c) => !c.sub).map((c) => [c.beat, c.t]));
  assert.ok(subs.some((c) => beats.has(c.beat) && c.t - beats.get(c.beat) === 250_000), JSON.stringify(clicks));
  await page.reload();
  await until('online', () => page.evaluate(() => bandsync.connection === 'online'));
  assert.equal(await page.inputValue('#click-sub'), '2');
  assert.equal(await page.isChecked('#click-accent'), false);
  // Visual only: nothing sounds, the panel flashes on the beat.
  await page.click('#click-settings summary');
  await page.check('#click-visual');
  await page.click('#sound-btn');
  await until('the panel flashes', () => page.$eval('.now', (e) => e.classList.contains('beat-flash')));
  assert.deepEqual(await page.evaluate(() => bandsync.clicks), [], 'no click scheduled');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

// Headless Chromium has no silent switch, no vibration motor and no Bluetooth
// output: the page is handed the platform's APIs as a phone would have them.
function phoneAudio() {
  window.vibrations = [];
  Object.defineProperty(navigator, 'vibrate', { value: (ms) => window.vibrations.push(ms) > 0, configurable: true });
  Object.defineProperty(navigator, 'audioSession', { value: { type: 'auto' }, configurable: true });
  Object.defineProperty(AudioContext.prototype, 'outputLatency', { get: () => 0.12, configurable: true });
}

test('on a phone the click plays through the silent switch, vibrates on the beat (longer on beat 1), and a Bluetooth-slow output is named', async () => {
  const state = () => sessionState({ members: MEMBERS(), leader: 'm-ana', segments: [segment({ anchor_time: Math.round(nowUs() - 1e6), playing: true, tempo_bpm: 240 })] });
  const { page } = await open(PHONE, 'm-ben', state, {}, phoneAudio);
  await page.click('#click-settings summary');
  assert.ok(await visible(page, '#click-vibrate-row'));
  await page.check('#click-vibrate');
  assert.ok(!(await visible(page, '#click-latency-warning')), 'no warning before the click sounds');
  await page.click('#sound-btn');
  assert.equal(await page.evaluate(() => navigator.audioSession.type), 'playback');
  assert.match(await text(page, '#click-latency-warning'), /120 ms late/);
  assert.ok(await visible(page, '#click-latency-warning'));
  // Two bar lines (45 ms) with the bar's three other beats (20 ms) between them.
  await until('a whole bar of vibrations', () => page.evaluate(() => vibrations.filter((v) => v === 45).length >= 2));
  const v = await page.evaluate(() => vibrations);
  const first = v.indexOf(45);
  assert.deepEqual(v.slice(first, first + 5), [45, 20, 20, 20, 45], JSON.stringify(v));
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('the leader\'s quick bar on a phone: what is next, and next/previous song when not playing', async () => {
  const setlist = [{ title: 'Opener' }, { title: 'Second' }, { title: 'Closer' }];
  const state = () => sessionState({ members: MEMBERS(), leader: 'm-ana', segments: [segment({})], setlist, song: 0 });
  const { page, fake } = await open(PHONE, 'm-ana', state);
  await until('the quick bar', () => visible(page, '#quickbar'));
  assert.equal(await text(page, '#q-next-title'), 'Next: Second');
  assert.equal(await page.isDisabled('#q-prev'), true, 'no song before the first');
  await page.click('#q-next');
  await until('song 2 asked for', () => commands(fake, 'song').length === 1);
  assert.equal(commands(fake, 'song')[0].index, 1);
  await page.context().close();
});

test('a resume after a pause longer than the tick silence limit is not taken for a stall', async () => {
  const playing = { segments: [segment({ anchor_time: Math.round(nowUs() - 2e6), playing: true })] };
  let timeline = playing;
  let seq = 5;
  const state = () => sessionState({ members: MEMBERS(), leader: 'm-ana', segments: timeline.segments, seq });
  const { page, fake } = await open(PHONE, 'm-ben', state);
  let tickSeq = 1000;
  // Ticks only while playing, as the server sends them.
  const ticker = setInterval(() => {
    tickSeq += 1;
    if (timeline.segments.at(-1).playing) fake.send({ type: 'tick', seq: tickSeq, epoch: 1, server_time: fake.serverNow(), timeline });
  }, 100);
  const event = () => {
    seq += 1;
    fake.send({ type: 'event', session: 'sess1', seq, epoch: 1, at: fake.serverNow(), cause: { by: 'm-ana' }, changes: [], state: state() });
  };
  try {
    await until('hearing ticks', () => page.evaluate(() => bandsync.tickPeriodMs !== null));
    timeline = { segments: [segment({ anchor_time: fake.serverNow(), anchor_beat: 4 })] };
    event();
    await until('paused', async () => (await text(page, '#status')) === 'Paused');
    const pausedAt = await page.evaluate(() => performance.now());
    // Paused for longer than the silence that means a stall while playing (1.2 s).
    await until('1.5 s of pause on the page\'s clock', () => page.evaluate((t) => performance.now() - t > 1500, pausedAt), { timeout: 5000 });
    const resume = fake.serverNow() + 150_000;
    timeline = { segments: [segment({ anchor_time: resume, anchor_beat: 4, playing: true })] };
    event();
    await until('playing half a second', () => page.evaluate((r) => bandsync.serverNow() > r + 500_000 && bandsync.describe().mode === 'playing', resume));
    assert.equal(fake.sockets.length, 1, 'no reconnect');
    assert.equal(await page.evaluate(() => bandsync.outOfSync), null);
    assert.equal(await page.evaluate(() => bandsync.connection), 'online');
  } finally {
    clearInterval(ticker);
  }
  await page.context().close();
});

test('tap-along calibration sets the latency offset from eight taps', async () => {
  const state = () => sessionState({ members: MEMBERS(), leader: 'm-ana', segments: [segment({ anchor_time: Math.round(nowUs() - 1e6), playing: true, tempo_bpm: 120 })] });
  const { page } = await open(LAPTOP, 'm-ben', state);
  await page.click('#sound-btn');
  await page.click('#click-settings summary');
  await page.click('#click-calibrate'); // starts
  for (let i = 0; i < 8; i++) await page.click('#click-calibrate');
  await until('set', async () => /^Latency offset set to -?\d+ ms\.$/.test(await text(page, '#click-calibrate-hint')));
  const ms = Number(await page.inputValue('#click-latency'));
  assert.ok(ms >= -300 && ms <= 300 && Number.isInteger(ms), String(ms));
  assert.equal(await page.evaluate(() => JSON.parse(localStorage.getItem('bandsync.view')).click.latencyMs), ms);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
