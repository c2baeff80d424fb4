// Starts a real Switchboard binary on a free port with a throw-away SQLite database, and offers
// the small tools every test file needs around it: signing user JWTs and calling the REST API.
import { existsSync, rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import jwt from 'jsonwebtoken';
import { freePort, onProcessExit, spawnTied } from './infra.mjs';

export const JWT_SECRET = 'client-test-secret';
export const SERVICE_API_KEY = 'client-test-key';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const HEALTH_TIMEOUT_MS = 30_000;
const STOP_GRACE_MS = 5_000;
const STDERR_KEEP = 64 * 1024;

export function binaryPath() {
  if (process.env.SWITCHBOARD_BIN) return process.env.SWITCHBOARD_BIN;
  const target = process.env.CARGO_TARGET_DIR || path.join(REPO, 'target');
  return path.join(target, 'release', 'switchboard');
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function base64url(value) {
  return Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
}

/** A JWT with `alg: none` and an empty signature, which the server must refuse. */
export function unsignedToken(payload) {
  return `${base64url({ alg: 'none', typ: 'JWT' })}.${base64url(payload)}.`;
}

/**
 * An HS256 JWT for `userId`. Options: `name` (default userId), `ttlSec` (default 3600, negative
 * for an expired token), `secret` (default the server's), and any raw claims, which override the
 * computed ones; a claim set to `undefined` is left out (e.g. `{ exp: undefined }`).
 */
export function signToken(userId, { name, ttlSec = 3600, secret = JWT_SECRET, ...claims } = {}) {
  const payload = {
    sub: userId,
    name: name ?? userId,
    exp: Math.floor(Date.now() / 1000) + ttlSec,
    ...claims,
  };
  for (const key of Object.keys(payload)) if (payload[key] === undefined) delete payload[key];
  return jwt.sign(payload, secret, { algorithm: 'HS256' });
}

async function httpCall(baseUrl, method, urlPath, { token, body, rawBody, apiKey, headers = {} } = {}) {
  const h = { ...headers };
  if (token) h.Authorization = `Bearer ${token}`;
  if (apiKey) h['X-Api-Key'] = apiKey;
  let payload;
  if (rawBody !== undefined) {
    payload = rawBody;
    h['Content-Type'] ??= 'application/json';
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    h['Content-Type'] ??= 'application/json';
  }
  const res = await fetch(baseUrl + urlPath, { method, headers: h, body: payload });
  const text = await res.text();
  let parsed = text;
  if (text.length > 0) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = text;
    }
  } else {
    parsed = null;
  }
  return { status: res.status, headers: res.headers, body: parsed };
}

/**
 * Spawns `switchboard serve` (SQLite in a temp dir, no Redis, unless `envOverrides` say otherwise)
 * and resolves once `GET /health` answers 200. `label` prefixes the
 * server's output when TEST_LOG is set (e.g. `node1`).
 * Returns `{ url, port, env, pid, stop(), kill(signal), token(userId, opts), api(method, path, opts),
 * service(method, path, body) }`.
 */
export async function startServer(envOverrides = {}, { label: name } = {}) {
  const bin = binaryPath();
  if (!existsSync(bin)) {
    throw new Error(`switchboard binary not found at ${bin} (build it, or set SWITCHBOARD_BIN / CARGO_TARGET_DIR)`);
  }
  const port = await freePort();
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'switchboard-test-'));
  const verbose = Boolean(process.env.TEST_LOG);
  const env = {
    HOST: '127.0.0.1',
    PORT: String(port),
    DATABASE_URL: `sqlite://${tmp}/sb.db?mode=rwc`,
    // A single node unless told otherwise: a REDIS_URL exported for cluster runs is not inherited.
    REDIS_URL: undefined,
    REDIS_KEY_PREFIX: undefined,
    JWT_SECRET,
    SERVICE_API_KEY,
    RUST_LOG: process.env.TEST_LOG || 'warn',
    PRESENCE_GRACE_MS: '300',
    TYPING_TIMEOUT_MS: '600',
    TYPING_THROTTLE_MS: '2000',
    IDLE_TIMEOUT_MS: '300000',
    ...envOverrides,
  };
  // Killed if still running when the test process exits, however it exits.
  const child = spawnTied(bin, ['serve'], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const label = name ? `[${name}] ` : '';
  let stderr = '';
  child.stderr.on('data', (chunk) => {
    stderr = (stderr + chunk.toString()).slice(-STDERR_KEEP);
    if (verbose) process.stderr.write(label + chunk);
  });
  child.stdout.on('data', (chunk) => {
    if (verbose) process.stderr.write(label + chunk);
  });
  let exited = null;
  const exitPromise = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      resolve(exited);
    });
    child.on('error', (err) => {
      exited = { code: null, signal: null, error: err };
      resolve(exited);
    });
  });

  const url = `http://127.0.0.1:${port}`;
  const forgetTmp = onProcessExit(() => rmSync(tmp, { recursive: true, force: true }));
  const cleanup = async () => {
    await rm(tmp, { recursive: true, force: true });
    forgetTmp();
  };

  const deadline = Date.now() + HEALTH_TIMEOUT_MS;
  for (;;) {
    if (exited) {
      await cleanup();
      const why = exited.error ? exited.error.message : `code ${exited.code}, signal ${exited.signal}`;
      throw new Error(`switchboard exited before becoming healthy (${why}):\n${stderr}`);
    }
    try {
      const res = await fetch(`${url}/health`);
      await res.arrayBuffer();
      if (res.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      await exitPromise;
      await cleanup();
      throw new Error(`switchboard did not answer GET /health with 200 within ${HEALTH_TIMEOUT_MS} ms:\n${stderr}`);
    }
    await sleep(50);
  }

  let stopped = null;
  const stop = () => {
    stopped ??= (async () => {
      if (!exited) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
        await exitPromise;
        clearTimeout(timer);
      }
      await cleanup();
      return exited;
    })();
    return stopped;
  };

  /** Sends `signal` (default SIGKILL: no goodbye) and resolves once the process is gone. */
  const kill = async (signal = 'SIGKILL') => {
    if (!exited) child.kill(signal);
    return exitPromise;
  };

  const api = (method, urlPath, opts) => httpCall(url, method, urlPath, opts);

  return {
    url,
    port,
    env,
    pid: child.pid,
    stop,
    kill,
    /** Resolves `{ code, signal }` once the process has ended, however it ended. */
    done: exitPromise,
    token: signToken,
    api,
    /** Service API call (`/api/v1/internal` + path) with the right `X-Api-Key`. */
    service: (method, urlPath, body) => api(method, `/api/v1/internal${urlPath}`, { apiKey: SERVICE_API_KEY, body }),
    get stderr() {
      return stderr;
    },
    /** How the process ended (`{ code, signal }`), or null while it runs. */
    get exited() {
      return exited;
    },
  };
}
