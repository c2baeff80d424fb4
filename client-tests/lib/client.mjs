// Socket.IO client helpers: connecting to the `/realtime` namespace, acks with timeouts, waiting
// for (or asserting the absence of) events, and tracking sockets so a test file can close them all.
import { randomBytes } from 'node:crypto';
import { io } from 'socket.io-client';

export const NAMESPACE = '/realtime';
const DEFAULT_READY_TIMEOUT_MS = 10_000;

const openSockets = new Set();
let counter = 0;

/** A unique user id (well under the 128-char limit). */
export function uid(prefix = 'user') {
  counter += 1;
  return `${prefix}-${process.pid}-${counter}-${randomBytes(3).toString('hex')}`;
}

/** The integers from..to, inclusive (e.g. expected seqs). */
export const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** A syntactically valid UUID v7 that names nothing on the server. */
export function fakeId() {
  const hex = randomBytes(16).toString('hex').split('');
  const ms = Date.now().toString(16).padStart(12, '0');
  for (let i = 0; i < 12; i += 1) hex[i] = ms[i];
  hex[12] = '7';
  hex[16] = '89ab'[parseInt(hex[16], 16) % 4];
  const s = hex.join('');
  return `${s.slice(0, 8)}-${s.slice(8, 12)}-${s.slice(12, 16)}-${s.slice(16, 20)}-${s.slice(20)}`;
}

// Sockets of a cluster (a server with `nodes`) go to its live nodes in turn: a process-wide
// counter, so the spread is the same on every run and a test's sockets never all share a node.
let spread = 0;

/** The base URL the next socket to `server` connects to. */
export function socketUrl(server) {
  const live = server.nodes?.filter((n) => !n.exited);
  if (!live || live.length === 0) return server.url;
  const node = live[spread % live.length];
  spread += 1;
  return node.url;
}

/**
 * Creates a socket on `/realtime` without waiting for anything. `token` (if given) goes into
 * `auth.token`; `opts` are socket.io-client options and override the defaults
 * (websocket only, forceNew, no reconnection). For a cluster, the node is picked round-robin;
 * pass one of `cluster.nodes` as `server` to choose it.
 */
export function createSocket(server, token, opts = {}) {
  const socket = io(socketUrl(server) + NAMESPACE, {
    path: '/socket.io/',
    transports: ['websocket'],
    forceNew: true,
    reconnection: false,
    ...(token ? { auth: { token } } : {}),
    ...opts,
  });
  openSockets.add(socket);
  socket.on('disconnect', () => openSockets.delete(socket));
  return socket;
}

/** Resolves with the `session:ready` payload once the socket is connected and ready. */
export function waitReady(socket, timeoutMs = DEFAULT_READY_TIMEOUT_MS) {
  return new Promise((resolve, reject) => {
    let connected = socket.connected;
    let ready = null;
    const done = (err, value) => {
      clearTimeout(timer);
      socket.off('connect', onConnect);
      socket.off('session:ready', onReady);
      socket.off('connect_error', onError);
      if (err) reject(err);
      else resolve(value);
    };
    const check = () => {
      if (connected && ready) done(null, ready);
    };
    const onConnect = () => {
      connected = true;
      check();
    };
    const onReady = (payload) => {
      ready = payload;
      check();
    };
    const onError = (err) => done(new Error(`connect_error: ${err.message}`, { cause: err }));
    const timer = setTimeout(
      () => done(new Error(`no connect + session:ready within ${timeoutMs} ms (connected=${connected}, ready=${Boolean(ready)})`)),
      timeoutMs,
    );
    socket.on('connect', onConnect);
    socket.on('session:ready', onReady);
    socket.on('connect_error', onError);
  });
}

/**
 * Connects and resolves `{ socket, ready }` once both `connect` and `session:ready` happened.
 * `opts.readyTimeoutMs` bounds the wait; other `opts` go to socket.io-client.
 */
export async function connect(server, token, { readyTimeoutMs, ...opts } = {}) {
  const socket = createSocket(server, token, opts);
  try {
    const ready = await waitReady(socket, readyTimeoutMs);
    return { socket, ready };
  } catch (err) {
    socket.close();
    throw err;
  }
}

/** Resolves with the Error of `connect_error`; rejects if the socket connects instead. */
export function connectError(server, opts = {}, timeoutMs = DEFAULT_READY_TIMEOUT_MS) {
  const socket = createSocket(server, null, opts);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.close();
      reject(new Error(`no connect_error within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('connect_error', (err) => {
      clearTimeout(timer);
      socket.close();
      openSockets.delete(socket);
      resolve(err);
    });
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.close();
      reject(new Error('expected connect_error, but the socket connected'));
    });
  });
}

/**
 * Emits with an ack and resolves with the ack payload (rejects after `timeoutMs`).
 * Pass `payload === undefined` to emit the event with no payload argument at all.
 */
export function emitAck(socket, event, payload, timeoutMs = 5000) {
  const s = socket.timeout(timeoutMs);
  return payload === undefined ? s.emitWithAck(event) : s.emitWithAck(event, payload);
}

/**
 * Resolves with the next payload of `event` on `emitter` (a socket, or e.g. `socket.io.engine`)
 * for which `filter(payload)` is true; rejects after `timeoutMs`.
 */
export function once(emitter, event, timeoutMs = 5000, filter = () => true) {
  return new Promise((resolve, reject) => {
    const handler = (payload) => {
      if (!filter(payload)) return;
      clearTimeout(timer);
      emitter.off(event, handler);
      resolve(payload);
    };
    const timer = setTimeout(() => {
      emitter.off(event, handler);
      reject(new Error(`timed out after ${timeoutMs} ms waiting for '${event}'`));
    }, timeoutMs);
    emitter.on(event, handler);
  });
}

/**
 * Resolves `true` if no `event` (matching `filter`) arrives within `ms`, `false` as soon as one
 * does. The only kind of wait without an event these tests use: asserting absence.
 */
export function none(emitter, event, ms = 500, filter = () => true) {
  return new Promise((resolve) => {
    const handler = (payload) => {
      if (!filter(payload)) return;
      clearTimeout(timer);
      emitter.off(event, handler);
      resolve(false);
    };
    const timer = setTimeout(() => {
      emitter.off(event, handler);
      resolve(true);
    }, ms);
    emitter.on(event, handler);
  });
}

/**
 * Records every payload of `event` from now on. `until(pred, timeoutMs)` resolves with the list
 * once `pred(list)` holds; `count(n)` is `until(list => list.length >= n)`; `stop()` detaches.
 */
export function record(emitter, event, filter = () => true) {
  const items = [];
  const waiters = new Set();
  const handler = (payload) => {
    if (!filter(payload)) return;
    items.push(payload);
    for (const w of waiters) w();
  };
  emitter.on(event, handler);
  return {
    items,
    until(pred, timeoutMs = 5000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (!pred(items)) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve(items);
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`timed out after ${timeoutMs} ms waiting on '${event}' (have ${items.length})`));
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
    count(n, timeoutMs = 5000) {
      return this.until((list) => list.length >= n, timeoutMs);
    },
    stop() {
      emitter.off(event, handler);
    },
  };
}

/** Polls `fn` until it returns a truthy value (or stops throwing); bounded by `timeoutMs`. */
export async function eventually(fn, { timeoutMs = 5000, intervalMs = 50, backoff = 1.5 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let delay = intervalMs;
  let lastErr;
  for (;;) {
    try {
      const value = await fn();
      if (value) return value;
      lastErr = new Error('condition not met');
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() + delay > deadline) throw lastErr;
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * backoff, 1000);
  }
}

/** Closes every socket created through these helpers that is still open. */
export function closeAll() {
  for (const socket of openSockets) socket.close();
  openSockets.clear();
}
