// Accessibility: axe-core finds no violation (WCAG 2.1 A/AA, best practices,
// contrast at least 4.5:1 included) on the landing screen, the leader's
// laptop and the follower's phone, playing a ChordPro chart with a cue,
// past lines, the help open and an error shown.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LAPTOP, PHONE, device, until } from './lib/browser.mjs';
import { axeViolations } from './lib/axe.mjs';
import { fakeSocket, member, nowUs, segment, sessionState, standIn } from './lib/fake.mjs';
import { SONG } from './lib/songs.mjs';

const stand = standIn(() => [404, { code: 'unknown_session', message: 'no session has that code' }]);

const noViolations = async (page, where) => {
  const v = await axeViolations(page);
  assert.deepEqual(v, [], `${where}: ${JSON.stringify(v, null, 1)}`);
};

async function inSession(profile, me, state) {
  const page = await device(stand.browser, profile);
  const fake = await fakeSocket(page, { welcome: () => ({ member: me, state: state() }) });
  page.fake = fake;
  await page.addInitScript((auth) => {
    if (!sessionStorage.getItem('bandsync.auth')) sessionStorage.setItem('bandsync.auth', JSON.stringify(auth));
  }, { session: 'sess1', code: 'K7MQ2X', member: me, token: `tok-${me}`, name: me });
  await page.goto(stand.web.url);
  await until('online', () => page.evaluate(() => bandsync.connection === 'online'));
  return page;
}

// Two bars into the song, so that there are past lines and a current one.
const playing = () => sessionState({
  members: [{ ...member('m-ana', 'Ana', true, 600), rtt_ms: 40, clock_error_ms: 1 }, { ...member('m-ben', 'Ben', true, 300), rtt_ms: 300, clock_error_ms: 60 }, member('m-cy', 'Cy', false, 100)],
  leader: 'm-ana',
  segments: [segment({ anchor_time: Math.round(nowUs() - 3 * 1875_000 - 300_000), playing: true, tempo_bpm: 96, beats_per_bar: 3 })],
  setlist: [{ title: 'Amazing Grace', tempo_bpm: 96, beats_per_bar: 3, chart: SONG }, { title: 'Blackbird', tempo_bpm: 94 }],
  song: 0,
  cue: { text: 'Last chorus', by: 'm-ana', at: Math.round(nowUs()) },
});

test('the landing screen, with an error', async () => {
  const page = await device(stand.browser, PHONE);
  await page.goto(stand.web.url);
  await noViolations(page, 'landing');
  await page.fill('#join-code', 'ZZZZ-ZZZZ');
  await page.fill('#join-name', 'Ben');
  await page.click('#join-btn');
  await until('the error', () => page.$eval('#landing-error', (e) => !e.hidden));
  await noViolations(page, 'landing with an error');
  await page.context().close();
});

test('the leader on a laptop: playing a ChordPro chart with a cue, the help open, an error shown', async () => {
  const page = await inSession(LAPTOP, 'm-ana', playing);
  await until('past lines', () => page.$$eval('#chart li.past', (l) => l.length >= 2));
  await until('the cue', () => page.$eval('#cue', (e) => !e.hidden));
  assert.equal(await page.$$eval('h1', (h) => h.filter((e) => e.getClientRects().length).length), 1, 'one visible level-one heading');
  await page.click('#help summary');
  await page.click('#song-editor summary');
  await page.click('#chart-tools summary');
  await page.click('#library summary');
  await page.click('#click-settings summary');
  page.fake.send({ type: 'error', code: 'invalid', message: 'bpm must be within 20..=400' });
  await until('the error', () => page.$eval('#error', (e) => !e.hidden));
  await noViolations(page, 'leader laptop');
  await page.context().close();
});

test('a follower on a phone: playing, browsing ahead', async () => {
  const page = await inSession(PHONE, 'm-ben', playing);
  await until('past lines', () => page.$$eval('#chart li.past', (l) => l.length >= 2));
  await noViolations(page, 'follower phone');
  await page.click('#setlist li:nth-child(2) .song-name');
  await noViolations(page, 'follower phone browsing');
  await page.context().close();
});
