// A phone on the band's Wi-Fi opens the laptop's gateway by its LAN name: over
// plain HTTP that page is not a secure context (no screen wake lock), over
// the gateway's own HTTPS it is, and its socket is wss://. The name is mapped
// to loopback inside Chromium (localhost and 127.0.0.1 count as secure even
// over HTTP, so they would prove nothing); --ignore-certificate-errors stands
// for the phone's owner accepting the self-signed certificate.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { PHONE, device, launch, screenshot, until } from './lib/browser.mjs';
import { freePort, startGateway, startStack } from './lib/stack.mjs';

const LAN_NAME = 'bandsync-laptop.test';

let stack;
let browser;
let secure; // the HTTPS gateway

before(async () => {
  stack = await startStack({ gateways: 1 });
  secure = await startGateway(stack, 'gw-tls', await freePort(), { tlsDir: join(stack.dir, 'tls') });
  stack.procs.push(secure);
  browser = await launch(['--ignore-certificate-errors', `--host-resolver-rules=MAP ${LAN_NAME} 127.0.0.1`]);
});

after(async () => {
  await browser?.close().catch(() => {});
  await stack?.stop();
});

test('over plain HTTP by its LAN name the page is not a secure context', async () => {
  const page = await device(browser, PHONE);
  await page.goto(`http://${LAN_NAME}:${stack.gateways[0].port}/`);
  assert.equal(await page.evaluate(() => window.isSecureContext), false);
  assert.equal(await page.evaluate(() => 'wakeLock' in navigator), false, 'no wake lock outside a secure context');
  await page.context().close();
});

test('over the gateway\'s HTTPS it is, and the band connects over wss', async () => {
  const page = await device(browser, PHONE);
  const sockets = [];
  page.on('websocket', (ws) => sockets.push(ws.url()));
  const origin = `https://${LAN_NAME}:${secure.port}`;
  await page.goto(`${origin}/`);
  assert.equal(await page.evaluate(() => location.protocol), 'https:');
  assert.equal(await page.evaluate(() => window.isSecureContext), true);
  assert.equal(await page.evaluate(() => 'wakeLock' in navigator), true, 'the wake lock is offered');

  await page.fill('#create-name', 'Ana');
  await page.click('#create-btn');
  await until('online over wss', () => page.evaluate(() => bandsync.connection === 'online'), { timeout: 10_000 });
  assert.ok(sockets.length >= 1, 'a socket was opened');
  assert.ok(sockets.every((u) => u.startsWith(`wss://${LAN_NAME}:${secure.port}/ws`)), `sockets: ${sockets}`);
  assert.deepEqual(page.errors, []);
  await screenshot(page, 'tls-phone-session');
  await page.context().close();
});
