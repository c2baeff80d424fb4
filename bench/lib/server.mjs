// The server under test. Either spawns the release binary (like client-tests/lib/server.mjs
// `startServer`, on 127.0.0.1, a free port and a throw-away SQLite file, but keeping the child
// process so the bench can read its RSS and CPU time from /proc), or describes an already
// running server given by SWITCHBOARD_URL (+ JWT_SECRET, optionally SWITCHBOARD_PID).
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import jwt from 'jsonwebtoken';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const HEALTH_TIMEOUT_MS = 30_000;
const STOP_GRACE_MS = 5_000;
const STDERR_KEEP = 256 * 1024;
const BENCH_SECRET = 'bench-secret-not-for-production';

/** The servers the bench can start: Switchboard itself and the two references it is compared with. */
export const SERVER_KINDS = ['switchboard', 'socketioxide', 'node'];

/**
 * REFERENCE_SOCKETIOXIDE_BIN, else $CARGO_TARGET_DIR/release, else next to the switchboard
 * binary (`cargo build --release -p reference-socketioxide`).
 */
export function referenceBinaryPath() {
  if (process.env.REFERENCE_SOCKETIOXIDE_BIN) return process.env.REFERENCE_SOCKETIOXIDE_BIN;
  if (process.env.CARGO_TARGET_DIR) return path.join(process.env.CARGO_TARGET_DIR, 'release', 'reference-socketioxide');
  return path.join(path.dirname(binaryPath()), 'reference-socketioxide');
}

/** SWITCHBOARD_BIN, else $CARGO_TARGET_DIR/release, else <repo>/target/release, else ../target/release. */
export function binaryPath() {
  if (process.env.SWITCHBOARD_BIN) return process.env.SWITCHBOARD_BIN;
  if (process.env.CARGO_TARGET_DIR) return path.join(process.env.CARGO_TARGET_DIR, 'release', 'switchboard');
  const candidates = [path.join(REPO, 'target'), path.join(REPO, '..', 'target')].map((t) =>
    path.join(t, 'release', 'switchboard'),
  );
  return candidates.find((c) => existsSync(c)) ?? candidates[0];
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function signer(secret) {
  return (userId, { name = userId, ttlSec = 6 * 3600 } = {}) =>
    jwt.sign({ sub: userId, name, exp: Math.floor(Date.now() / 1000) + ttlSec }, secret, { algorithm: 'HS256' });
}

async function waitHealthy(url, isDead, stderr) {
  const deadline = Date.now() + HEALTH_TIMEOUT_MS;
  for (;;) {
    const dead = isDead();
    if (dead) throw new Error(`switchboard exited before becoming healthy (${dead}):\n${stderr()}`);
    try {
      const res = await fetch(`${url}/health`);
      await res.arrayBuffer();
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`no healthy GET /health within ${HEALTH_TIMEOUT_MS} ms:\n${stderr()}`);
    await sleep(50);
  }
}

/** An already running server (SWITCHBOARD_URL, JWT_SECRET, optional SWITCHBOARD_PID). */
export async function externalServer() {
  const url = process.env.SWITCHBOARD_URL.replace(/\/+$/, '');
  const secret = process.env.JWT_SECRET;
  if (!secret) throw new Error('SWITCHBOARD_URL needs JWT_SECRET (the server\'s HS256 secret)');
  await waitHealthy(url, () => null, () => '');
  const pid = process.env.SWITCHBOARD_PID ? Number(process.env.SWITCHBOARD_PID) : null;
  return {
    url,
    pid,
    external: true,
    token: signer(secret),
    stderr: '',
    stop: async () => {},
  };
}

/**
 * Spawns `switchboard serve` with bench-friendly settings (`envOverrides` win) and resolves once
 * `GET /health` answers 200. Returns `{ url, pid, token(userId), stop(), stderr }`.
 */
export async function spawnServer(envOverrides = {}, kind = 'switchboard') {
  let bin = binaryPath();
  let args = ['serve'];
  if (kind === 'socketioxide') {
    bin = referenceBinaryPath();
    args = [];
    if (!existsSync(bin)) {
      throw new Error(`reference binary not found at ${bin}: run \`cargo build --release -p reference-socketioxide\` (or set REFERENCE_SOCKETIOXIDE_BIN)`);
    }
  } else if (kind === 'node') {
    bin = process.execPath;
    args = [path.join(REPO, 'bench', 'reference-node', 'server.mjs')];
    if (!existsSync(path.join(REPO, 'bench', 'reference-node', 'node_modules', 'socket.io'))) {
      throw new Error('reference-node has no socket.io: run `npm ci` in bench/reference-node');
    }
  } else if (!existsSync(bin)) {
    throw new Error(`switchboard binary not found at ${bin}: run \`cargo build --release\` (or set SWITCHBOARD_BIN / CARGO_TARGET_DIR)`);
  }
  const port = await freePort();
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'switchboard-bench-'));
  const env = {
    HOST: '127.0.0.1',
    PORT: String(port),
    DATABASE_URL: `sqlite://${tmp}/sb.db?mode=rwc`,
    JWT_SECRET: BENCH_SECRET,
    RUST_LOG: 'warn,switchboard::startup=info',
    NO_COLOR: '1',
    RATE_LIMIT_PER_MINUTE: '1000000',
    ...envOverrides,
  };
  const url = `http://127.0.0.1:${port}`;
  const cleanup = () => rm(tmp, { recursive: true, force: true });
  let stderr = '';
  let stopping = false;
  let restarting = false;
  let proc = null; // { child, exited, exitPromise }
  /** Starts the binary (again: same port, same database) and waits for it to be healthy. */
  const launch = async () => {
    // BENCH_SERVER_CPUS pins the server (taskset exec()s it, so the pid is the server's).
    const pin = process.env.BENCH_SERVER_CPUS;
    const [cmd, argv] = pin ? ['taskset', ['-c', pin, bin, ...args]] : [bin, args];
    const child = spawn(cmd, argv, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const startedAt = Date.now();
    const keep = (chunk) => {
      stderr = (stderr + chunk.toString()).slice(-STDERR_KEEP);
      if (process.env.BENCH_SERVER_LOG) process.stderr.write(chunk);
    };
    child.stderr.on('data', keep);
    child.stdout.on('data', keep);
    const me = { child, exited: null, exitPromise: null };
    me.exitPromise = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        me.exited = { code, signal, afterMs: Date.now() - startedAt };
        if (!stopping && !restarting) {
          const why = /shutting down/.test(stderr) ? ' after a graceful shutdown (it was sent SIGTERM/SIGINT)' : '';
          console.error(`\nWARNING: switchboard (pid ${child.pid}) exited unexpectedly: ${JSON.stringify(me.exited)}${why}`);
        }
        resolve(me.exited);
      });
      child.on('error', (error) => resolve((me.exited = { code: null, signal: null, error })));
    });
    proc = me;
    try {
      await waitHealthy(
        url,
        () => me.exited && (me.exited.error ? me.exited.error.message : `code ${me.exited.code}, signal ${me.exited.signal}`),
        () => stderr,
      );
    } catch (err) {
      child.kill('SIGKILL');
      await me.exitPromise;
      throw err;
    }
  };
  /** Ends the current process with `signal`, SIGKILL after the grace period. */
  const end = async (signal) => {
    const me = proc;
    if (!me || me.exited) return me?.exited;
    me.child.kill(signal);
    const timer = setTimeout(() => me.child.kill('SIGKILL'), STOP_GRACE_MS);
    await me.exitPromise;
    clearTimeout(timer);
    return me.exited;
  };
  try {
    await launch();
  } catch (err) {
    await cleanup();
    throw err;
  }
  let stopped = null;
  return {
    url,
    get pid() {
      return proc.child.pid;
    },
    kind,
    external: false,
    env,
    token: signer(env.JWT_SECRET),
    get stderr() {
      return stderr;
    },
    get exited() {
      return restarting ? null : proc.exited;
    },
    /**
     * Stops the process with `signal` (SIGTERM: a graceful shutdown, as a deploy does; SIGKILL: a
     * crash) and starts it again on the same port with the same database; resolves
     * `{ exited, downMs }` once it is healthy again.
     */
    async restart({ signal = 'SIGTERM' } = {}) {
      restarting = true;
      const t0 = Date.now();
      try {
        const exited = await end(signal);
        await launch();
        return { exited, downMs: Date.now() - t0 };
      } finally {
        restarting = false;
      }
    },
    stop() {
      stopping = true;
      stopped ??= (async () => {
        const exited = await end('SIGTERM');
        await cleanup();
        return exited;
      })();
      return stopped;
    },
    /** Synchronous last-resort kill (process 'exit' handler). */
    killNow() {
      stopping = true;
      if (proc && !proc.exited) proc.child.kill('SIGKILL');
    },
  };
}

/** JSON REST call; resolves `{ status, body }`. */
export async function api(baseUrl, method, urlPath, { token, body } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(baseUrl + urlPath, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed = null;
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = text;
    }
  }
  return { status: res.status, body: parsed };
}
