// ChordPro charts in the browser, against the stand-in gateway: sections and
// grids render with the documented bar rule, the current bar lights up,
// chords sit over their syllables, and each device's view (transpose, capo,
// lyrics only, text size) is its own and survives a reload.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LAPTOP, PHONE, device, screenshot, until } from './lib/browser.mjs';
import { fakeSocket, member, nowUs, segment, sessionState, standIn } from './lib/fake.mjs';
import { SONG } from './lib/songs.mjs';


const stand = standIn();

async function follower(profile, state) {
  const page = await device(stand.browser, profile);
  const fake = await fakeSocket(page, { welcome: () => ({ member: 'm-ben', state: typeof state === 'function' ? state() : state }) });
  await page.addInitScript(() => {
    if (!sessionStorage.getItem('bandsync.auth')) {
      sessionStorage.setItem('bandsync.auth', JSON.stringify({ session: 'sess1', code: 'K7MQ2X', member: 'm-ben', token: 'tok-ben', name: 'Ben' }));
    }
  });
  await page.goto(stand.web.url);
  return { page, fake };
}

const playingFrom = (start, bpm = 96) => () => sessionState({
  members: [member('m-ana', 'Ana'), member('m-ben', 'Ben')],
  leader: 'm-ana',
  segments: [segment({ anchor_time: start, playing: true, tempo_bpm: bpm, beats_per_bar: 3 })],
  setlist: [{ title: 'Amazing Grace', tempo_bpm: 96, beats_per_bar: 3, chart: SONG }],
  song: 0,
});

test('a ChordPro chart: headers and comments hold no bar, the grid one per cell, the current bar lit', async () => {
  // Bar 4 (0-based) is the grid's second cell: 4 bars × 3 beats at 96 BPM = 7.5 s ago.
  const start = Math.round(nowUs() - 4 * 3 * 625_000 - 200_000);
  const { page } = await follower(LAPTOP, playingFrom(start));
  await until('chart rendered', () => page.$$eval('#chart li', (l) => l.length > 5));
  const rows = await page.$$eval('#chart li', (l) => l.map((li) => [li.className.split(' ')[0], li.dataset.bar ?? null, li.dataset.bars ?? null]));
  assert.deepEqual(rows.filter(([, bar]) => bar !== null).map(([k, b, n]) => `${k}:${b}+${n}`), [
    'line:0+1', 'line:1+1', 'line:2+1', 'line:3+4', 'line:7+1',
  ]);
  assert.ok(rows.some(([k, bar]) => k === 'section' && bar === null), 'a section header holds no bar');
  assert.ok(rows.some(([k, bar]) => k === 'comment' && bar === null), 'a comment holds no bar');
  await until('the grid cell of bar 5 lit', () => page.$eval('#chart .cell[data-bar="4"]', (c) => c.classList.contains('current')));
  assert.equal(await page.$eval('#chart li.current', (li) => li.dataset.bar), '3');
  // Scrolled into view at once (not only after the 4 s left to a hand scroll).
  await until('the current line in view', () => page.$eval('#chart', (ol) => {
    const li = ol.querySelector('li.current');
    return ol.scrollTop > 0 && li.offsetTop - ol.scrollTop >= 0 && li.offsetTop - ol.scrollTop + li.offsetHeight <= ol.clientHeight;
  }), { timeout: 2000 });
  assert.equal(await page.$eval('#chart li.current', (li) => li.getAttribute('aria-current')), 'true');
  // A chord sits over the start of its syllable.
  const [chord, lyric] = await page.$$eval('#chart li[data-bar="0"] .seg:nth-child(2) > *', (els) => els.map((e) => e.getBoundingClientRect().toJSON()));
  assert.ok(chord.bottom <= lyric.top + 1 && Math.abs(chord.left - lyric.left) < 1, `chord ${JSON.stringify(chord)} over lyric ${JSON.stringify(lyric)}`);
  assert.match(await page.textContent('#chart-meta'), /John Newton · Key G · Capo 2/);
  assert.equal(await page.textContent('#meter'), '3/4');
  await screenshot(page, 'chordpro-laptop');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('transpose and capo on this device only, shown concert and capo shapes side by side, kept across a reload', async () => {
  const { page } = await follower(PHONE, playingFrom(Math.round(nowUs() - 1e6)));
  await until('chart rendered', () => page.$$eval('#chart li[data-bar]', (l) => l.length > 3));
  const chords = () => page.$$eval('#chart li[data-bar="0"] .chord:not(.empty)', (c) => c.map((e) => e.textContent));
  // Capo 2 from the chart: concert G, shape F.
  assert.deepEqual(await chords(), ['GF', 'G7F7', 'CBb', 'GF']);
  await page.click('#chart-tools summary');
  await page.click('#tr-up');
  await page.click('#tr-up');
  await page.selectOption('#capo-sel', '0');
  await until('transposed to A, no capo', async () => { const c = await chords(); return JSON.stringify(c) === JSON.stringify(['A', 'A7', 'D', 'A']); });
  await page.selectOption('#show-sel', 'lyrics');
  await page.click('#font-up');
  await page.reload();
  await until('chart rendered again', () => page.$$eval('#chart li[data-bar]', (l) => l.length > 3));
  assert.deepEqual(await chords(), ['A', 'A7', 'D', 'A']);
  assert.equal(await page.$eval('#chart', (c) => c.dataset.show), 'lyrics');
  assert.equal(await page.$eval('#chart .chord:not(.empty)', (c) => getComputedStyle(c).display), 'none');
  assert.equal(await page.$eval('#chart', (c) => c.style.getPropertyValue('--chart-scale')), '1.1');
  assert.match(await page.textContent('#chart-meta'), /Key A · transposed \+2/);
  await screenshot(page, 'chordpro-phone-lyrics');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('the leader\'s library: import ChordPro files, save the setlist in this browser, use it again after a reload, export it', async () => {
  const page = await device(stand.browser, LAPTOP);
  let setlist = [];
  let seq = 5;
  const state = () => sessionState({ members: [member('m-ana', 'Ana')], leader: 'm-ana', segments: [segment({})], setlist, seq });
  const fake = await fakeSocket(page, { welcome: () => ({ member: 'm-ana', state: state() }) });
  // The stand-in applies a setlist as the owner would.
  fake.onCommand = (msg) => {
    if (msg.type !== 'setlist') return;
    setlist = msg.songs;
    seq += 1;
    fake.send({ type: 'event', session: 'sess1', seq, epoch: 1, at: fake.serverNow(), cause: { by: 'm-ana' }, changes: [], setlist, state: { ...state(), setlist_rev: seq } });
  };
  await page.addInitScript(() => {
    if (!sessionStorage.getItem('bandsync.auth')) sessionStorage.setItem('bandsync.auth', JSON.stringify({ session: 'sess1', code: 'K7MQ2X', member: 'm-ana', token: 'tok-ana', name: 'Ana' }));
  });
  await page.goto(stand.web.url);
  await until('welcomed', () => page.evaluate(() => bandsync.state !== null));
  await page.click('#library summary');
  await page.setInputFiles('#library-import', [
    { name: 'two-songs.cho', mimeType: 'text/plain', buffer: Buffer.from('{title: One}\n{tempo: 100}\n[C]la\n{new_song}\n{title: Two}\n[G]lo\n') },
    { name: 'grace.cho', mimeType: 'text/plain', buffer: Buffer.from(SONG) },
  ]);
  await until('three songs', async () => (await page.$$('#setlist li')).length === 3);
  assert.deepEqual(setlist.map((s) => [s.title, s.tempo_bpm ?? null]), [['One', 100], ['Two', null], ['Amazing Grace', 96]]);
  await page.fill('#library-name', 'Friday');
  await page.click('#library-save');
  await until('saved', async () => (await page.$$eval('#library-list .name', (l) => l.map((e) => e.textContent))).includes('Friday'));
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#library-export')]);
  const exported = await new Promise((resolve, reject) => {
    download.createReadStream().then((s) => { let t = ''; s.on('data', (c) => (t += c)); s.on('end', () => resolve(t)); s.on('error', reject); }, reject);
  });
  assert.equal(download.suggestedFilename(), 'setlist.cho');
  assert.equal(exported.split('{new_song}').length, 3);
  assert.match(exported, /^\{title: One\}/);

  // The session's setlist is replaced; the library keeps Friday across a reload.
  fake.onCommand({ type: 'setlist', songs: [] });
  await page.reload();
  await until('welcomed', () => page.evaluate(() => bandsync.state !== null));
  await page.click('#library summary');
  await page.click('#library-list li:has-text("Friday") button:has-text("Use")');
  await until('Friday back', async () => (await page.$$('#setlist li')).length === 3);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
