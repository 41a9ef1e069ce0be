// The whole system as a band uses it: a real nats-server, ticker and two
// gateways; the leader's laptop talks to gateway A, the follower's phone to
// gateway B, and both must show and click the same beat at the same instant.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { LAPTOP, PHONE, device, screenshot, sleep, text, until, visible } from './lib/browser.mjs';
import { realStack, replaceGateway } from './lib/stack.mjs';

const CHART = [
  '| G    | G    | C    | G    |',
  '| G    | G    | D    | D    |',
  '| Em   | C    | G    | D    |',
  '| G    | C    | G    | G    |',
  '| C    | C    | G    | G    |',
  '| Am   | D    | G    | G    |',
].join('\n');

let leader; // page on gateway A
let follower; // page on gateway B

const bs = (page, fn, arg) => page.evaluate(fn, arg);

/** Both pages' positions at one local instant (same machine, same local clock). */
async function positionsAtSameInstant() {
  const localUs = Date.now() * 1000 + 20_000;
  const at = (page) => bs(page, (t) => ({ pos: bandsync.position(t + bandsync.offsetUs), d: bandsync.describe(t + bandsync.offsetUs) }), localUs);
  const [a, b] = await Promise.all([at(leader), at(follower)]);
  return { a, b };
}

const band = realStack({ gateways: 2, pages: () => [leader, follower] });

describe('a band on the real stack (nats-server, ticker, two gateways)', () => {
  test('the leader creates a session on gateway A', async () => {
    leader = await device(band.browser, LAPTOP);
    await leader.goto(band.stack.gateways[0].url);
    await leader.fill('#create-name', 'Ana');
    await leader.click('#create-btn');
    await until('session screen', () => visible(leader, '#session'), { timeout: 10_000 });
    await until('welcome', () => bs(leader, () => bandsync.state !== null));
    const code = await bs(leader, () => bandsync.state.code);
    assert.match(code, /^[A-Z2-9]{8}$/);
    assert.equal(await text(leader, '#join-code-big'), `${code.slice(0, 4)}-${code.slice(4)}`);
    await until('leader role', async () => (await text(leader, '#role')) === 'Leader');
    await until('online', () => bs(leader, () => bandsync.connection === 'online'));
  });

  test('the follower joins with the code, typed loosely, on gateway B', async () => {
    const code = await bs(leader, () => bandsync.state.code);
    follower = await device(band.browser, PHONE);
    await follower.goto(band.stack.gateways[1].url);
    await follower.fill('#join-code', `${code.slice(0, 4).toLowerCase()}-${code.slice(4).toLowerCase()}`);
    await follower.fill('#join-name', 'Ben');
    await follower.click('#join-btn');
    await until('follower welcomed', () => bs(follower, () => bandsync.state !== null), { timeout: 10_000 });
    await until('follower role', async () => (await text(follower, '#role')) === 'Follower');
    for (const page of [leader, follower]) {
      await until('two members online', async () => (await text(page, '#member-count')) === '2/2 online', { timeout: 10_000 });
    }
    assert.equal(await bs(follower, () => bandsync.state.leader), await bs(leader, () => bandsync.me));
  });

  test('both clocks are synced to the servers within a millisecond or two', async () => {
    for (const page of [leader, follower]) {
      await until('synced', () => bs(page, () => bandsync.synced && bandsync.rttUs !== null));
    }
    await sleep(1000); // the burst of 8 pings is done
    const [a, b] = await Promise.all([leader, follower].map((p) => bs(p, () => ({ offset: bandsync.offsetUs, rtt: bandsync.rttUs }))));
    // Gateways and browser share this machine's clock: the true offset is about 0.
    // An exchange can only place it within half its round trip, which a busy
    // machine (CI beside other work) stretches: the bound allows for that.
    const bound = (rtt) => Math.max(3000, rtt / 2 + 1000);
    assert.ok(Math.abs(a.offset) < bound(a.rtt) && Math.abs(b.offset) < bound(b.rtt), `offsets ${a.offset} ${b.offset} (rtts ${a.rtt} ${b.rtt})`);
    assert.ok(Math.abs(a.offset - b.offset) < bound(a.rtt) + bound(b.rtt) - 4000, `offsets differ: ${a.offset} vs ${b.offset} (rtts ${a.rtt} ${b.rtt})`);
    assert.ok(a.rtt < 50_000 && b.rtt < 50_000, `rtts ${a.rtt} ${b.rtt}`);
  });

  test('the leader builds a setlist and loads a song; the follower sees its chart', async () => {
    await leader.click('#song-editor summary');
    await leader.fill('#song-title-in', 'Country Roads');
    await leader.fill('#song-bpm', '82');
    await leader.fill('#song-chart', CHART);
    await leader.click('#song-save');
    await leader.fill('#song-title-in', 'Blackbird');
    await leader.fill('#song-bpm', '94');
    await leader.fill('#song-bpb', '3');
    await leader.fill('#song-chart', 'G  Am7  G/B  G\nC  A7/C#  D  B7/D#');
    await leader.click('#song-save');
    await until('setlist on follower', async () => (await follower.$$('#setlist li')).length === 2, { timeout: 5000 });
    await leader.click('#setlist li:nth-child(1) .load');
    for (const page of [leader, follower]) {
      await until('song loaded', async () => (await text(page, '#song-title')) === 'Country Roads', { timeout: 5000 });
      await until('chart shown', async () => (await page.$$('#chart li')).length === 6);
      await until('song tempo', async () => (await text(page, '#tempo')) === '82');
    }
  });

  test('the leader sets the tempo; both show it', async () => {
    await leader.fill('#tempo-input', '150');
    await leader.click('#tempo-set');
    for (const page of [leader, follower]) {
      await until('150 BPM', async () => (await text(page, '#tempo')) === '150', { timeout: 5000 });
    }
  });

  test('play with a one-bar count-in: same bar:beat and the same position within a few ms', async () => {
    await leader.selectOption('#count-in', '1');
    await leader.click('#play-btn');
    for (const page of [leader, follower]) {
      await until('count-in', async () => (await text(page, '#status')) === 'Count-in', { timeout: 3000, every: 10 });
    }
    await screenshot(follower, 'stack-follower-phone-count-in');
    const seg = await bs(follower, () => bandsync.timeline.segments.at(-1));
    assert.equal(seg.playing, true);
    assert.equal(seg.count_in_until, 0);
    assert.equal(seg.anchor_beat, -4, 'one bar of 4/4 before beat 0');
    for (const page of [leader, follower]) {
      await until('playing', async () => (await text(page, '#status')) === 'Playing', { timeout: 4000, every: 20 });
    }
    await sleep(1200); // into bar 2
    const diffs = [];
    for (let i = 0; i < 10; i++) {
      const { a, b } = await positionsAtSameInstant();
      assert.equal(a.d.text, b.d.text, 'same bar:beat at the same instant');
      assert.equal(a.d.mode, 'playing');
      diffs.push(Math.abs(a.pos - b.pos) * (60e6 / 150)); // beats → µs at 150 BPM
      await sleep(97);
    }
    const worst = Math.max(...diffs);
    console.log(`position difference between the two devices: worst ${(worst / 1000).toFixed(3)} ms`);
    assert.ok(worst < 3000, `positions differ by up to ${worst} µs`);
    // What is on screen, read at (nearly) the same moment, away from a beat boundary.
    await until('same display on both', async () => {
      const frac = await bs(leader, () => bandsync.describe().frac);
      if (frac < 0.2 || frac > 0.8) return false;
      const [x, y] = await Promise.all([text(leader, '#position'), text(follower, '#position')]);
      return x === y && x;
    }, { timeout: 3000, every: 15 });
    const { a } = await positionsAtSameInstant();
    for (const page of [leader, follower]) {
      const bar = a.d.bar - 1;
      await until('chart line of the current bar', () => page.$eval(`#chart li[data-bar="${bar}"]`, (e) => e.classList.contains('current')).catch(() => false), { timeout: 1000, every: 20 });
    }
    for (const page of [leader, follower]) {
      await until('current line scrolled into view', () => page.$eval('#chart li.current', (li) => {
        const a = li.getBoundingClientRect();
        const b = li.parentElement.getBoundingClientRect();
        return a.top >= b.top && a.bottom <= b.bottom;
      }).catch(() => false), { timeout: 3000 });
    }
    await screenshot(leader, 'stack-leader-laptop-playing');
    await screenshot(follower, 'stack-follower-phone-playing');
  });

  test('both devices schedule their clicks at the same server times', async () => {
    await leader.click('#sound-btn');
    await follower.click('#sound-btn');
    await sleep(1500);
    const [ca, cb] = await Promise.all([leader, follower].map((p) => bs(p, () => bandsync.clicks)));
    const common = ca.filter((x) => cb.some((y) => y.beat === x.beat));
    assert.ok(common.length >= 3, `common clicks: ${JSON.stringify({ ca, cb })}`);
    for (const x of common) {
      const y = cb.find((c) => c.beat === x.beat);
      assert.ok(Math.abs(x.t - y.t) < 1, `beat ${x.beat}: ${x.t} vs ${y.t}`);
    }
    await leader.click('#sound-btn');
    await follower.click('#sound-btn');
  });

  test('pause: both stop at the same position', async () => {
    await leader.click('#pause-btn');
    for (const page of [leader, follower]) {
      await until('paused', async () => (await text(page, '#status')) === 'Paused', { timeout: 3000, every: 10 });
    }
    const [pa, pb] = await Promise.all([leader, follower].map((p) => bs(p, () => bandsync.position())));
    assert.equal(pa, pb, 'the same paused position');
    assert.ok(pa > 4, `paused after some music: ${pa}`);
    assert.equal(await text(leader, '#position'), await text(follower, '#position'));
    await sleep(300);
    assert.equal(await bs(follower, () => bandsync.position()), pb, 'it stays put');
  });

  test("a follower's leader action is refused with not_leader", async () => {
    await bs(follower, () => bandsync.send({ type: 'tempo', bpm: 90 }));
    await until('error banner', () => visible(follower, '#error'), { timeout: 5000 });
    assert.equal(await text(follower, '#error .error-code'), 'not_leader');
    assert.ok((await text(follower, '#error .error-message')).length > 10);
    await screenshot(follower, 'stack-follower-phone-not-leader');
    assert.equal(await text(leader, '#tempo'), '150', 'nothing changed');
    assert.ok(!(await visible(leader, '#error')), 'only the sender is told');
  });

  test('seek to a bar lands both on it', async () => {
    await leader.fill('#seek-bar', '5');
    await leader.click('#seek-form button');
    for (const page of [leader, follower]) {
      await until('bar 5', async () => (await text(page, '#position')) === '5:1', { timeout: 3000 });
    }
  });

  test('the follower asks to lead, the leader hands over', async () => {
    await follower.click('#request-btn');
    await until('request shown to the leader', () => visible(leader, '#request-banner'), { timeout: 5000 });
    assert.match(await text(leader, '#request-text'), /Ben asks to lead/);
    await screenshot(leader, 'stack-leader-laptop-request');
    await leader.click('#request-accept');
    await until('follower leads', async () => (await text(follower, '#role')) === 'Leader', { timeout: 5000 });
    await until('leader follows', async () => (await text(leader, '#role')) === 'Follower', { timeout: 5000 });
    // and back, with the member list's button
    const ana = await bs(leader, () => bandsync.me);
    await follower.click(`#members li[data-member="${ana}"] .hand`);
    await until('Ana leads again', async () => (await text(leader, '#role')) === 'Leader', { timeout: 5000 });
  });

  test('a reload rejoins as the same member', async () => {
    const me = await bs(follower, () => bandsync.me);
    await follower.reload();
    await until('welcomed again', () => bs(follower, () => bandsync.state !== null && bandsync.connection === 'online'), { timeout: 10_000 });
    assert.equal(await bs(follower, () => bandsync.me), me);
    await until('still two members', async () => (await text(leader, '#member-count')) === '2/2 online', { timeout: 5000 });
  });

  test('the same member in a second tab: the first tab is told and does not take it back', async () => {
    const tab = await follower.context().newPage();
    await tab.goto(band.stack.gateways[1].url);
    await until('rejoin offered', () => visible(tab, '#rejoin'));
    await tab.click('#rejoin-btn');
    await until('second tab online', () => bs(tab, () => bandsync.connection === 'online'), { timeout: 10_000 });
    await until('first tab told', async () => (await text(follower, '#conn-text')).includes('another tab'), { timeout: 5000 });
    await sleep(1500);
    assert.equal(await bs(follower, () => bandsync.connection), 'offline', 'the first tab does not reconnect by itself');
    assert.equal(await text(leader, '#member-count'), '2/2 online', 'the band saw no one leave');
    await screenshot(follower, 'replaced-first-tab');
    await tab.close();
    await follower.reload(); // this tab takes the membership back for the tests after
    await until('welcomed again', () => bs(follower, () => bandsync.connection === 'online'), { timeout: 10_000 });
    await until('two online again', async () => (await text(leader, '#member-count')) === '2/2 online', { timeout: 10_000 });
  });

  test('a gateway restart: the follower is told to reconnect and comes back as the same member', async () => {
    const me = await bs(follower, () => bandsync.me);
    await leader.click('#play-btn');
    await until('playing', async () => (await text(follower, '#status')) === 'Playing', { timeout: 5000 });
    const gwB = band.stack.gateways[1];
    await gwB.stop();
    await until('follower offline', () => bs(follower, () => bandsync.connection === 'offline'), { timeout: 5000 });
    // The follower keeps counting on its own timeline meanwhile.
    const during = await bs(follower, () => bandsync.describe().mode);
    assert.equal(during, 'playing');
    await replaceGateway(band.stack, gwB);
    await until('follower back online', () => bs(follower, () => bandsync.connection === 'online'), { timeout: 20_000 });
    assert.equal(await bs(follower, () => bandsync.me), me);
    assert.ok((await bs(follower, () => bandsync.reconnects)).length >= 1, 'told to reconnect by the departing gateway');
    await until('two members online', async () => (await text(leader, '#member-count')) === '2/2 online', { timeout: 5000 });
    const { a, b } = await positionsAtSameInstant();
    assert.ok(Math.abs(a.pos - b.pos) * (60e6 / 150) < 3000, `positions ${a.pos} ${b.pos}`);
    await leader.click('#stop-btn');
    for (const page of [leader, follower]) {
      await until('stopped', async () => (await text(page, '#status')) === 'Stopped', { timeout: 3000 });
    }
  });

  test('the leader drops out: after the grace period the follower leads; back, the leader reclaims it', async () => {
    const url = leader.url();
    await leader.goto('about:blank'); // the leader's phone died
    await until('leader shown away', async () => (await text(follower, '#member-count')) === '1/2 online', { timeout: 5000 });
    await until('follower leads after the grace period', async () => (await text(follower, '#role')) === 'Leader', { timeout: 12_000 });
    assert.match(await text(follower, '#request-text'), /You are the leader now/);
    await screenshot(follower, 'stack-follower-phone-now-leader');
    await leader.goto(url); // back, same tab: the stored token rejoins
    await until('back as a follower', async () => (await text(leader, '#role')) === 'Follower', { timeout: 10_000 });
    await leader.click('#request-btn');
    await until('reclaimed at once', async () => (await text(leader, '#role')) === 'Leader', { timeout: 5000 });
    await until('the stand-in follows again', async () => (await text(follower, '#role')) === 'Follower', { timeout: 5000 });
    assert.deepEqual(leader.errors.filter((e) => !/WebSocket/.test(e)), []);
    assert.deepEqual(follower.errors.filter((e) => !/WebSocket|ERR_CONNECTION_REFUSED/.test(e)), []);
  });
});
