// Starts the real BandSync stack on free loopback ports: a nats-server with
// JetStream in a temporary directory, one ticker and N gateways. Everything is
// killed by stop(), and by a process exit hook should a test die half-way.
// NATS runs with the deployment's users and permissions (deploy/nats-auth.conf),
// random passwords, and each service logs in as its own user.
import { after, before } from 'node:test';
import { spawn, spawnSync } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { copyFileSync, createWriteStream, existsSync, mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch } from './browser.mjs';

export const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const LOGS = join(REPO, 'web-tests', 'logs');

const TOKEN_SECRET = 'web-tests-secret-0123456789-abcdefghij';

export function natsServerPath() {
  const p = process.env.BANDSYNC_NATS_SERVER || join(homedir(), '.cache/bandsync/nats-server-2.15.1/nats-server');
  if (!existsSync(p)) {
    throw new Error(`nats-server not found at ${p}: run scripts/install-nats-server (Debian's 2.9 in /usr/sbin is too old)`);
  }
  if (p === '/usr/sbin/nats-server') throw new Error('refusing /usr/sbin/nats-server: BandSync needs 2.11+');
  return p;
}

/**
 * The directory holding bandsync-gateway and bandsync-ticker. Without
 * BANDSYNC_BIN_DIR the binaries are (re)built first: the gateway embeds
 * gateway/web/*, so a stale binary would serve a stale client.
 */
export function binDir() {
  if (process.env.BANDSYNC_BIN_DIR) return process.env.BANDSYNC_BIN_DIR;
  const target = process.env.CARGO_TARGET_DIR || '/var/cache/bandsync/target';
  const res = spawnSync('cargo', ['build', '-q', '-p', 'bandsync-gateway', '-p', 'bandsync-ticker'], {
    cwd: REPO,
    env: { ...process.env, CARGO_TARGET_DIR: target },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  if (res.error) throw new Error(`cannot run cargo: ${res.error.message}`);
  if (res.status !== 0) throw new Error(`cargo build -p bandsync-gateway -p bandsync-ticker failed (exit ${res.status})`);
  return join(target, 'debug');
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export function tcpOpen(port) {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const live = new Set();
process.on('exit', () => {
  for (const p of live) {
    try {
      p.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
});

/** 32 random letters (nats-server parses the variable it reads a password from). */
function password() {
  const letters = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ';
  return Array.from({ length: 32 }, () => letters[randomInt(letters.length)]).join('');
}

/** `--nats-url`, `--nats-user` and `--nats-password-file` for a service logging in as `user`. */
function busArgs(stack, user) {
  return ['--nats-url', stack.natsUrl, '--nats-user', user, '--nats-password-file', join(stack.dir, 'nats-auth', user)];
}

export class Proc {
  constructor(name, cmd, args, env = {}) {
    mkdirSync(LOGS, { recursive: true });
    this.name = name;
    Proc.count = (Proc.count || 0) + 1;
    this.logPath = join(LOGS, `${String(Proc.count).padStart(2, '0')}-${name}.log`);
    const log = createWriteStream(this.logPath);
    log.write(`$ ${cmd} ${args.join(' ')}\n`);
    this.child = spawn(cmd, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env, RUST_LOG: process.env.RUST_LOG || 'info', NO_COLOR: '1' },
    });
    this.child.stdout.pipe(log, { end: false });
    this.child.stderr.pipe(log, { end: false });
    this.exited = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve({ code, signal })));
    this.exitInfo = null;
    this.exited.then((info) => {
      this.exitInfo = info;
      live.delete(this.child);
    });
    live.add(this.child);
  }
  alive() {
    return this.exitInfo === null;
  }
  /** SIGTERM, then SIGKILL if it lingers. */
  async stop(graceMs = 6000) {
    if (!this.alive()) return;
    this.child.kill('SIGTERM');
    const done = await Promise.race([this.exited.then(() => true), sleep(graceMs).then(() => false)]);
    if (!done) {
      this.child.kill('SIGKILL');
      await this.exited;
    }
  }
  tail(lines = 30) {
    try {
      return readFileSync(this.logPath, 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  }
}

async function waitFor(what, proc, check, timeoutMs) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (!proc.alive()) throw new Error(`${proc.name} exited (${JSON.stringify(proc.exitInfo)}) before ${what}:\n${proc.tail()}`);
    if (await check()) return;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}:\n${proc.tail()}`);
}

/**
 * Starts a gateway on `port`. With `tlsDir` it serves HTTPS with a self-signed
 * certificate it keeps there (its URL is then https://localhost:port).
 */
export async function startGateway(stack, id, port, { tlsDir } = {}) {
  const tls = tlsDir ? ['--tls', 'self-signed', '--tls-dir', tlsDir] : [];
  const gw = new Proc(`gateway-${id}`, join(stack.bin, 'bandsync-gateway'), [
    ...busArgs(stack, 'gateway'),
    '--listen', `127.0.0.1:${port}`,
    '--ops-listen', '127.0.0.1:0',
    '--gateway-id', id,
    '--token-secret', TOKEN_SECRET,
    ...tls,
  ]);
  const url = tlsDir ? `https://localhost:${port}` : `http://127.0.0.1:${port}`;
  gw.url = url;
  gw.port = port;
  await waitFor(`gateway ${id} serving /`, gw, async () => {
    // The public port listens once the gateway has its bus; fetch() would
    // refuse the self-signed certificate.
    if (tlsDir) return tcpOpen(port);
    try {
      return (await fetch(`${url}/`)).ok;
    } catch {
      return false;
    }
  }, 30_000);
  return gw;
}

/** Starts nats-server, a ticker and `gateways` gateways; resolves once a session can be created. */
export async function startStack({ gateways = 2 } = {}) {
  const stack = { procs: [], gateways: [] };
  stack.stop = async () => {
    await Promise.all(stack.procs.filter((p) => p.name !== 'nats').map((p) => p.stop()));
    await Promise.all(stack.procs.filter((p) => p.name === 'nats').map((p) => p.stop()));
    if (stack.dir) rmSync(stack.dir, { recursive: true, force: true });
  };
  stack.tails = () => stack.procs.map((p) => `--- ${p.name} (${p.logPath})\n${p.tail(15)}`).join('\n');
  try {
    stack.bin = binDir();
    for (const b of ['bandsync-gateway', 'bandsync-ticker']) {
      if (!existsSync(join(stack.bin, b))) throw new Error(`${b} not found in ${stack.bin}`);
    }
    rmSync(LOGS, { recursive: true, force: true });
    stack.dir = mkdtempSync(join(tmpdir(), 'bandsync-web-'));
    const natsPort = await freePort();
    // The users and permissions every deployment runs with; a password each.
    const env = {};
    mkdirSync(join(stack.dir, 'nats-auth'), { mode: 0o700 });
    for (const user of ['gateway', 'ticker', 'store', 'admin']) {
      const pw = password();
      writeFileSync(join(stack.dir, 'nats-auth', user), `${pw}\n`, { mode: 0o600 });
      env[`BANDSYNC_NATS_${user.toUpperCase()}_PASSWORD`] = pw;
    }
    copyFileSync(join(REPO, 'deploy', 'nats-auth.conf'), join(stack.dir, 'nats-auth.conf'));
    writeFileSync(join(stack.dir, 'nats.conf'), 'include nats-auth.conf\n');
    const nats = new Proc('nats', natsServerPath(), ['-c', join(stack.dir, 'nats.conf'), '-a', '127.0.0.1', '-p', String(natsPort), '-js', '-sd', join(stack.dir, 'js')], env);
    stack.procs.push(nats);
    stack.natsUrl = `nats://127.0.0.1:${natsPort}`;
    await waitFor('nats-server', nats, () => tcpOpen(natsPort), 15_000);

    const ticker = new Proc('ticker', join(stack.bin, 'bandsync-ticker'), [...busArgs(stack, 'ticker'), '--listen', '127.0.0.1:0']);
    stack.procs.push(ticker);
    stack.ticker = ticker;

    const ids = ['gw-a', 'gw-b', 'gw-c', 'gw-d'];
    for (let i = 0; i < gateways; i++) {
      const gw = await startGateway(stack, ids[i], await freePort());
      stack.procs.push(gw);
      stack.gateways.push(gw);
    }
    // Ready when an owner answers: creating a session needs the ticker's lease.
    const first = stack.gateways[0];
    await waitFor('a session owner (ticker leases)', ticker, async () => {
      try {
        const r = await fetch(`${first.url}/api/sessions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ name: 'warm-up' }),
        });
        return r.status === 201;
      } catch {
        return false;
      }
    }, 30_000);
    return stack;
  } catch (e) {
    const tails = stack.tails();
    await stack.stop();
    e.message += `\n${tails}`;
    throw e;
  }
}

/**
 * The real stack and a browser for a test file: started before its tests,
 * stopped after them, once the errors logged by `pages()` (the file's pages)
 * are printed. `band.stack` and `band.browser` are set once they run.
 */
export function realStack({ gateways = 2, pages = () => [] } = {}) {
  const band = { stack: null, browser: null };
  before(async () => {
    band.stack = await startStack({ gateways });
    band.browser = await launch();
  });
  after(async () => {
    const errors = pages().flatMap((p) => p?.errors || []);
    if (errors.length) console.log('page errors:', errors);
    await band.browser?.close().catch(() => {});
    await band.stack?.stop();
  });
  return band;
}

/** Starts a new gateway process on a stopped gateway's port, in its place. */
export async function replaceGateway(stack, gw) {
  const fresh = await startGateway(stack, gw.name.replace(/^gateway-/, ''), gw.port);
  stack.procs[stack.procs.indexOf(gw)] = fresh;
  stack.gateways[stack.gateways.indexOf(gw)] = fresh;
  return fresh;
}
