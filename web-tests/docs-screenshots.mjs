// Renders the screenshots in docs/screenshots/ (shown in the README) with the
// stand-in gateway: `node docs-screenshots.mjs` from web-tests/. Not a test;
// run it after a design change and look at the pictures.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { LAPTOP, PHONE, PHONE_LANDSCAPE, TABLET, device, launch, until } from './lib/browser.mjs';
import { fakeSocket, member, nowUs, segment, serveWeb, sessionState } from './lib/fake.mjs';
import { REPO } from './lib/stack.mjs';
import { SONG } from './lib/songs.mjs';

const OUT = join(REPO, 'docs', 'screenshots');
mkdirSync(OUT, { recursive: true });

const browser = await launch();
const web = await serveWeb(() => [404, {}]);
const state = () => sessionState({
  members: [
    { ...member('m-ana', 'Ana', true, 600), rtt_ms: 38, clock_error_ms: 0.9 },
    { ...member('m-ben', 'Ben', true, 300), rtt_ms: 95, clock_error_ms: 3.4 },
    { ...member('m-cy', 'Cy', true, 200), rtt_ms: 310, clock_error_ms: 42 },
  ],
  leader: 'm-ana',
  // Into the chorus: 2 bars of 3/4 at 96 BPM and a bit.
  segments: [segment({ anchor_time: Math.round(nowUs() - 2 * 1875_000 - 900_000), playing: true, tempo_bpm: 96, beats_per_bar: 3 })],
  setlist: [
    { title: 'Amazing Grace', tempo_bpm: 96, beats_per_bar: 3, chart: SONG },
    { title: 'Country Roads', tempo_bpm: 82, chart: '| G | G | C | G |\n| G | G | D | D |' },
    { title: 'Blackbird', tempo_bpm: 94, beats_per_bar: 3 },
  ],
  song: 0,
  cue: { text: 'Last chorus', by: 'm-ana', at: Math.round(nowUs()) },
});

async function shoot(name, profile, me, prepare) {
  const page = await device(browser, profile);
  await fakeSocket(page, { welcome: () => ({ member: me, state: state() }) });
  await page.addInitScript((auth) => sessionStorage.setItem('bandsync.auth', JSON.stringify(auth)),
    { session: 'sess1', code: 'K7MQ2XBD', member: me, token: `tok-${me}`, name: me });
  await page.goto(web.url);
  await until('online', () => page.evaluate(() => bandsync.connection === 'online'));
  await until('a current line', () => page.$eval('#chart li.current', () => true).catch(() => false));
  if (prepare) await prepare(page);
  // The chart scrolls (smoothly) to keep the current line in view: wait until it is in place.
  await until('the current line scrolled into view', () => page.$eval('#chart', (ol) => {
    const li = ol.querySelector('li.current');
    const top = li.offsetTop - ol.scrollTop;
    return top >= 0 && top + li.offsetHeight <= ol.clientHeight;
  }));
  await page.evaluate(() => document.fonts.ready);
  await page.screenshot({ path: join(OUT, `${name}.png`) });
  await page.context().close();
  console.log(`docs/screenshots/${name}.png`);
}

await shoot('laptop-leader', LAPTOP, 'm-ana');
await shoot('tablet-follower', TABLET, 'm-ben', async (page) => {
  await page.click('#chart-tools summary');
  await page.click('#tr-up');
  await page.click('#tr-up');
});
await shoot('phone-portrait-follower', PHONE, 'm-ben');
await shoot('phone-landscape-follower', PHONE_LANDSCAPE, 'm-cy');
await browser.close();
await web.close();
