// The band talking to itself, against the stand-in gateway (which plays the
// server's part of docs/protocol.md's cue, message and report additions):
// the leader's cue shown large on every device, messages, each member's
// round trip and clock quality, the 5-second report, the ex-leader notice.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LAPTOP, PHONE, device, screenshot, text, until, visible } from './lib/browser.mjs';
import { fakeSocket, member, nowUs, segment, sessionState, standIn } from './lib/fake.mjs';

const stand = standIn();

async function open(profile, me, state) {
  const page = await device(stand.browser, profile);
  const fake = await fakeSocket(page, { welcome: () => ({ member: me, state: state() }) });
  await page.addInitScript((auth) => {
    if (!sessionStorage.getItem('bandsync.auth')) sessionStorage.setItem('bandsync.auth', JSON.stringify(auth));
  }, { session: 'sess1', code: 'K7MQ2X', member: me, token: `tok-${me}`, name: me });
  await page.goto(stand.web.url);
  await until('online', () => page.evaluate(() => bandsync.connection === 'online'));
  return { page, fake };
}

test('a cue from the leader shows large on a follower; a message from the follower reaches the leader', async () => {
  let seq = 5;
  let cue = null;
  const members = [member('m-ana', 'Ana', true, 600), member('m-ben', 'Ben', true, 300)];
  const state = () => sessionState({ members, leader: 'm-ana', segments: [segment({ anchor_time: Math.round(nowUs() - 1e6), playing: true })], seq, ...(cue ? { cue } : {}) });
  const lead = await open(LAPTOP, 'm-ana', state);
  const ben = await open(PHONE, 'm-ben', state);
  // The stand-in relays what the owner would: a cue into the state, a message as a change only.
  const relay = (msg, from) => {
    seq += 1;
    let change;
    if (msg.type === 'cue') {
      cue = msg.text ? { text: msg.text, by: from, at: Math.round(nowUs()) } : null;
      change = { kind: 'cue', text: msg.text, by: from };
    } else if (msg.type === 'message') {
      change = { kind: 'message', from, text: msg.text };
    } else {
      return;
    }
    const event = { type: 'event', session: 'sess1', seq, epoch: 1, at: Math.round(nowUs()), cause: { by: from }, changes: [change], state: state() };
    lead.fake.send(event);
    ben.fake.send(event);
  };
  lead.fake.onCommand = (msg) => relay(msg, 'm-ana');
  ben.fake.onCommand = (msg) => relay(msg, 'm-ben');

  assert.ok(await visible(lead.page, '#cue-controls'), 'the leader has cue controls');
  assert.ok(!(await visible(ben.page, '#cue-controls')), 'a follower has none');
  await lead.page.click('#cue-controls [data-cue="Last chorus"]');
  await until('the cue on the follower', () => visible(ben.page, '#cue'));
  assert.equal(await text(ben.page, '#cue-text'), 'Last chorus');
  assert.equal(await text(ben.page, '#cue-by'), 'cue from m-ana'.replace('m-ana', 'Ana'));
  const size = await ben.page.$eval('#cue-text', (e) => parseFloat(getComputedStyle(e).fontSize));
  assert.ok(size >= 28, `large: ${size}px`);
  await until('announced', async () => (await text(ben.page, '#announce')) === 'Cue: Last chorus');
  await screenshot(ben.page, 'band-cue-phone');

  await ben.page.fill('#message-input', 'capo 2 please');
  await ben.page.press('#message-input', 'Enter');
  await until('the message at the leader', async () => (await lead.page.$$eval('#messages .message', (l) => l.map((m) => m.textContent))).includes('Bencapo 2 please'));
  assert.equal(await ben.page.inputValue('#message-input'), '');

  await lead.page.click('#cue-clear');
  await until('the cue gone', async () => !(await visible(ben.page, '#cue')));
  assert.deepEqual([...lead.page.errors, ...ben.page.errors], []);
  await lead.page.context().close();
  await ben.page.context().close();
});

test('presence: each member\'s round trip and clock error; this device reports its own every 5 s', async () => {
  const members = [
    { ...member('m-ana', 'Ana', true, 600), rtt_ms: 42.5, clock_error_ms: 1.2 },
    { ...member('m-ben', 'Ben', true, 300), rtt_ms: 480, clock_error_ms: 140 },
    member('m-cy', 'Cy', true, 100),
  ];
  const state = () => sessionState({ members, leader: 'm-ana', segments: [segment({})] });
  const { page, fake } = await open(LAPTOP, 'm-cy', state);
  const q = (id) => page.$eval(`#members li[data-member="${id}"] .quality`, (e) => [e.textContent, e.className]).catch(() => null);
  assert.deepEqual(await q('m-ana'), ['43 ms · ±1.2 ms', 'quality good']);
  assert.deepEqual(await q('m-ben'), ['480 ms · ±140 ms', 'quality poor']);
  assert.equal(await q('m-cy'), null, 'nothing before a report');
  await until('a report', () => fake.received.some((m) => m.type === 'report'), { timeout: 8000 });
  const r = fake.received.find((m) => m.type === 'report');
  assert.ok(r.rtt_ms >= 0 && r.rtt_ms < 1000, JSON.stringify(r));
  assert.ok(r.clock_error_ms >= 0 && r.clock_error_ms < 1000, JSON.stringify(r));
  assert.deepEqual(Object.keys(r).sort(), ['clock_error_ms', 'id', 'rtt_ms', 'type']);
  // An older server refuses the type: that is not shown.
  fake.send({ type: 'error', id: r.id, code: 'unknown_type', message: 'unknown message type "report"' });
  // Messages are handled in order: once this event shows, the error before it was handled.
  members.pop();
  fake.send({ type: 'event', session: 'sess1', seq: 9, epoch: 1, at: fake.serverNow(), cause: { by: 'm-ana' }, changes: [], members, state: state() });
  await until('the event handled', async () => (await text(page, '#member-count')) === '2/2 online');
  assert.ok(!(await visible(page, '#error')), 'the refused report is not shown');
  await page.context().close();
});

test('a returning ex-leader is told that leadership moved, and can take it back', async () => {
  const members = [member('m-ana', 'Ana', true, 600), member('m-ben', 'Ben', true, 300)];
  const state = () => sessionState({ members, leader: 'm-ben', displaced_leader: 'm-ana', segments: [segment({})] });
  const { page, fake } = await open(PHONE, 'm-ana', state);
  await until('the notice', () => visible(page, '#displaced'));
  assert.equal(await text(page, '#displaced-text'), 'While you were away, Ben took over as leader.');
  await page.click('#displaced-take');
  await until('request sent', () => fake.received.some((m) => m.type === 'request_leadership'));
  await page.context().close();
});
