// Resuming receivers for the resume tests, two ways behind one interface: `plainReceiver`
// follows the documented procedure with stock socket.io-client (an auth callback sending the
// last cursor; the cursor read from each journaled event's trailing argument and from
// `session:ready`), `helperReceiver` uses the built `@switchboard/client` package. Both keep a
// log of every journaled event and `session:ready`, so a test can cut it at a reconnect.
import assert from 'node:assert/strict';
import { connect as helperConnect } from '@switchboard/client';
import { NAMESPACE, createSocket, socketUrl } from './client.mjs';

/** Server events that reflect persisted state: each must arrive as `(payload, cursor)`. */
export const JOURNALED = [
  'chat:new_message',
  'chat:message_updated',
  'chat:messages_read',
  'chat:messages_delivered',
  'chat:room_updated',
  'notification:new',
  'notification:read',
  'feed:new_post',
  'feed:new_comment',
  'feed:activity',
];

const CURSOR_RE = /^[A-Za-z0-9]+:\d+$/;

/** Every helper client made here, so a test file can close them all (`closeHelpers`). */
const helpers = new Set();

/** Closes every `@switchboard/client` socket `helperReceiver` opened. */
export function closeHelpers() {
  for (const client of helpers) client.close();
  helpers.clear();
}

/** The id part of a cursor, for order checks. */
export const cursorId = (cursor) => Number(cursor.slice(cursor.lastIndexOf(':') + 1));

/** A compact, comparable description of a journaled event: what the tests expect. */
export function describeEvent(event, p) {
  switch (event) {
    case 'chat:new_message':
      return `${event} ${p.roomId} #${p.message?.seq} ${p.message?.content}`;
    case 'chat:message_updated':
      return `${event} ${p.roomId} #${p.message?.seq} ${p.message?.deleted ? 'deleted' : p.message?.content}`;
    case 'chat:messages_read':
    case 'chat:messages_delivered':
      return `${event} ${p.roomId} ${p.userId} ${p.upToSeq}`;
    case 'chat:room_updated':
      return `${event} ${p.room?.id} ${p.change}${p.change === 'renamed' ? ` ${p.room?.name}` : ''}`;
    case 'notification:new':
      return `${event} ${p.id} ${p.title}`;
    case 'notification:read':
      return `${event} ${p.all ? 'all' : [...(p.notificationIds ?? [])].sort().join(',')} unread=${p.unreadCount}`;
    default:
      return `${event} ${p?.id} ${p?.activityType}`;
  }
}

/**
 * The log shared by both receivers: `entries` are `{ event, payload, cursor }` for journaled
 * events and `{ event: 'session:ready', payload }`. `sinceReady()` is what came after the last
 * `session:ready`; `until(pred)` waits for the log to satisfy `pred`.
 */
function journalLog() {
  const entries = [];
  const waiters = new Set();
  const log = {
    entries,
    push(entry) {
      entries.push(entry);
      for (const w of [...waiters]) w();
    },
    /** Journaled entries after the last session:ready. */
    sinceReady() {
      let i = entries.length - 1;
      while (i >= 0 && entries[i].event !== 'session:ready') i -= 1;
      return entries.slice(i + 1);
    },
    /** Every journaled entry so far. */
    journaled() {
      return entries.filter((e) => e.event !== 'session:ready');
    },
    until(pred, timeoutMs = 8000, what = 'events') {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (!pred(log)) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve(log);
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          const seen = log.sinceReady().map((e) => describeEvent(e.event, e.payload));
          reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; since the last session:ready: ${JSON.stringify(seen)}`));
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
  };
  return log;
}

function nextReady(socket, timeoutMs = 10_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.off('session:ready', onReady);
      reject(new Error(`no session:ready within ${timeoutMs} ms`));
    }, timeoutMs);
    const onReady = (p) => {
      clearTimeout(timer);
      socket.off('connect_error', onError);
      resolve(p);
    };
    const onError = (err) => {
      clearTimeout(timer);
      socket.off('session:ready', onReady);
      reject(new Error(`connect_error: ${err.message}`));
    };
    socket.once('session:ready', onReady);
    socket.once('connect_error', onError);
  });
}

/**
 * The documented procedure with stock socket.io-client: a socket per connection (so a
 * reconnect may go to another node), `auth` a callback that sends the last cursor. The cursor
 * is the trailing argument of the last journaled event; `session:ready.cursor` once the
 * `replayed` events that follow it are in.
 */
export function plainReceiver(server, user, { feed } = {}) {
  const log = journalLog();
  const state = { cursor: undefined, socket: null, replayLeft: 0, replayEnd: null, sessions: [] };
  const open = async (node) => {
    const socket = createSocket(node ?? server, null, {
      auth: (cb) => cb({ token: user.token, ...(state.cursor ? { cursor: state.cursor } : {}), ...(feed ? { feed } : {}) }),
    });
    state.socket = socket;
    socket.onAny((event, ...args) => {
      if (event === 'session:ready') {
        const p = args[0];
        state.sessions.push(p);
        log.push({ event, payload: p });
        state.replayLeft = p.replayed ?? 0;
        state.replayEnd = p.cursor;
        if (state.replayLeft === 0 && p.cursor) state.cursor = p.cursor;
        return;
      }
      const cursor = args.length >= 2 ? args[args.length - 1] : undefined;
      if (JOURNALED.includes(event)) {
        assert.ok(typeof cursor === 'string' && CURSOR_RE.test(cursor), `${event} without a trailing cursor: ${JSON.stringify(args)}`);
      }
      if (typeof cursor !== 'string' || !CURSOR_RE.test(cursor)) return;
      log.push({ event, payload: args[0], cursor });
      state.cursor = cursor;
      if (state.replayLeft > 0) {
        state.replayLeft -= 1;
        if (state.replayLeft === 0 && state.replayEnd) state.cursor = state.replayEnd;
      }
    });
    socket.on('disconnect', () => {
      state.replayLeft = 0;
    });
    return nextReady(socket);
  };
  return {
    kind: 'plain',
    log,
    state,
    get cursor() {
      return state.cursor;
    },
    get socket() {
      return state.socket;
    },
    /** Connects (to `node`, default the next one), resolving with `session:ready`. */
    connect: (node) => open(node),
    /** Closes the connection (the cursor stays). */
    disconnect() {
      state.socket?.close();
    },
    /** A new connection with the kept cursor, to `node` (default: the next node in turn). */
    reconnect: (node) => open(node),
    close() {
      state.socket?.close();
    },
  };
}

/**
 * The `@switchboard/client` helper: one socket that reconnects itself; `disconnect()` /
 * `reconnect()` close and reopen it (the auth callback runs again), `drop()` cuts the
 * transport so socket.io-client reconnects by itself with its backoff.
 */
export function helperReceiver(server, user, { feed, node, reconnection = false, ...socketOptions } = {}) {
  const log = journalLog();
  const client = helperConnect(socketUrl(node ?? server), {
    token: user.token,
    feed,
    path: '/socket.io/',
    transports: ['websocket'],
    forceNew: true,
    reconnection,
    autoConnect: false,
    ...socketOptions,
  });
  assert.equal(client.socket.nsp, NAMESPACE);
  helpers.add(client);
  client.on('session:ready', (p) => log.push({ event: 'session:ready', payload: p }));
  for (const event of JOURNALED) client.on(event, (payload, cursor) => log.push({ event, payload, cursor }));
  const open = () => {
    const ready = nextReady(client.socket);
    client.socket.connect();
    return ready;
  };
  return {
    kind: 'helper',
    log,
    client,
    get cursor() {
      return client.lastCursor;
    },
    get socket() {
      return client.socket;
    },
    connect: () => open(),
    disconnect() {
      client.socket.disconnect();
    },
    reconnect: () => open(),
    /** Cuts the connection under socket.io-client: it reconnects on its own (reconnection: true). */
    drop() {
      client.socket.io.engine?.close();
    },
    close() {
      client.close();
    },
  };
}
