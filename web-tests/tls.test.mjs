// A phone on the band's Wi-Fi opens the laptop's gateway by its LAN name: over
// plain HTTP that page is not a secure context (no screen wake lock), over
// the gateway's own HTTPS it is, and its socket is wss://. The name is mapped
// to loopback inside Chromium (localhost and 127.0.0.1 count as secure even
// over HTTP, so they would prove nothing); --ignore-certificate-errors stands
// for the phone's owner accepting the self-signed certificate.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { PHONE, device, launch, screenshot, until } from './lib/browser.mjs';
import { Proc, REPO, freePort, startGateway, startStack, tcpOpen } from './lib/stack.mjs';

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

const NGINX = '/usr/sbin/nginx';

/**
 * deploy/nginx-tls.conf as deployed, with its certificate (the gateway's
 * self-signed one), its gateways (`upstream`) and its ports made local, and
 * its files under `dir`. Fails if the file no longer has what is replaced.
 */
function nginxTlsConf(dir, tlsDir, upstream, httpPort, httpsPort) {
  let conf = readFileSync(join(REPO, 'deploy', 'nginx-tls.conf'), 'utf8');
  const swaps = [
    [/\/etc\/nginx\/tls\/fullchain\.pem/g, join(tlsDir, 'cert.pem')],
    [/\/etc\/nginx\/tls\/privkey\.pem/g, join(tlsDir, 'key.pem')],
    [/gateway-[12]:8080/g, upstream],
    [/listen 80;/g, `listen 127.0.0.1:${httpPort};`],
    [/listen 443 ssl;/g, `listen 127.0.0.1:${httpsPort} ssl;`],
    [/^\s*listen \[::\].*$/gm, ''],
    [/root \/var\/www\/acme;/g, `root ${dir};`],
    [/^http \{/m, `http {\n    access_log ${dir}/access.log;\n    client_body_temp_path ${dir}/tmp;\n    proxy_temp_path ${dir}/tmp;\n    fastcgi_temp_path ${dir}/tmp;\n    uwsgi_temp_path ${dir}/tmp;\n    scgi_temp_path ${dir}/tmp;`],
  ];
  for (const [pattern, replacement] of swaps) {
    assert.match(conf, pattern, `deploy/nginx-tls.conf has no ${pattern}`);
    conf = conf.replace(pattern, replacement);
  }
  return `daemon off;\nworker_processes 1;\npid ${dir}/nginx.pid;\nerror_log ${dir}/error.log warn;\n${conf}`;
}

/** GET over plain HTTP with a Host header: [status, headers]. */
function plainGet(port, path, host) {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, headers: { host } }, (res) => {
      res.resume();
      resolve([res.statusCode, res.headers]);
    });
    req.on('error', reject);
    req.end();
  });
}

test('deploy/nginx-tls.conf in front of a gateway: HTTP redirects, HTTPS with HSTS, the band over wss', async () => {
  if (!existsSync(NGINX)) throw new Error(`${NGINX} is missing: apt-get install -y nginx-light`);
  const dir = join(stack.dir, 'nginx');
  mkdirSync(join(dir, 'tmp'), { recursive: true });
  const [httpPort, httpsPort] = [await freePort(), await freePort()];
  const conf = join(dir, 'nginx.conf');
  writeFileSync(conf, nginxTlsConf(dir, join(stack.dir, 'tls'), `127.0.0.1:${stack.gateways[0].port}`, httpPort, httpsPort));
  const nginx = new Proc('nginx-tls', NGINX, ['-p', dir, '-c', conf, '-e', join(dir, 'error.log')]);
  stack.procs.push(nginx);
  await until('nginx listening', () => tcpOpen(httpsPort), { timeout: 10_000 });

  const [status, headers] = await plainGet(httpPort, '/?x=1', LAN_NAME);
  assert.equal(status, 301);
  assert.equal(headers.location, `https://${LAN_NAME}/?x=1`);

  const page = await device(browser, PHONE);
  const sockets = [];
  page.on('websocket', (ws) => sockets.push(ws.url()));
  const response = await page.goto(`https://${LAN_NAME}:${httpsPort}/`);
  assert.equal(response.status(), 200);
  assert.match(response.headers()['strict-transport-security'] || '', /max-age=\d{7,}/);
  assert.equal(await page.evaluate(() => window.isSecureContext), true);
  await page.fill('#create-name', 'Ana');
  await page.click('#create-btn');
  await until('online through nginx', () => page.evaluate(() => bandsync.connection === 'online'), { timeout: 10_000 });
  assert.ok(sockets.length >= 1 && sockets.every((u) => u.startsWith(`wss://${LAN_NAME}:${httpsPort}/ws`)), `sockets: ${sockets}`);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
