// Junk payloads for every client event (contract §2–§6): a small seeded generator sends arbitrary
// JSON (and binary, and nothing at all) to each event, mostly as a valid payload with one to three
// fields changed. Every ack must be `{ ok: true, ... }` or `{ ok: false, error: { code, message } }`
// with a contract code, a refused chat:message must take no seq, and the socket must stay
// connected and responsive throughout. SEED and CASES_PER_EVENT reproduce or widen a run.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createGroup } from '../lib/chat.mjs';
import { emitAck } from '../lib/client.mjs';
import { makeUsers, useServer } from '../lib/harness.mjs';

const SEED = Number(process.env.SEED ?? 20261201);
const CASES_PER_EVENT = Number(process.env.CASES_PER_EVENT ?? 24);

const CODES = ['INVALID_PAYLOAD', 'UNAUTHORIZED', 'FORBIDDEN', 'NOT_FOUND', 'CONFLICT', 'RATE_LIMITED', 'PAYLOAD_TOO_LARGE', 'INTERNAL'];

const FIELDS = [
  'roomId', 'message', 'type', 'replyToId', 'clientMessageId', 'isTyping', 'upToSeq', 'afterSeq', 'limit',
  'activity', 'metadata', 'status', 'notificationIds', 'all', 'followingOnly', '__proto__', 'constructor',
];

const STRINGS = [
  '', ' ', 'text', 'image', 'system', 'online', 'away', 'busy', 'offline', 'viewing:post:1', '\u0000', 'a\u0000b',
  '\n', '<script>', '"', '🙂', '00000000-0000-7000-8000-000000000000', 'x'.repeat(65), 'y'.repeat(4001),
];

/** mulberry32: tiny, seedable, good enough to pick junk. */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function generator(seed) {
  const next = rng(seed);
  const int = (n) => Math.floor(next() * n);
  const pick = (list) => list[int(list.length)];
  const randomString = () => {
    const n = int(40);
    let s = '';
    for (let i = 0; i < n; i += 1) s += String.fromCodePoint(pick([int(32), 32 + int(95), 0x80 + int(0x780), 0x1f600 + int(64)]));
    return s;
  };
  const value = (depth = 0) => {
    switch (int(depth >= 3 ? 6 : 8)) {
      case 0: return null;
      case 1: return next() < 0.5;
      case 2: return pick([0, 1, -1, 1.5, 100, 101, 2 ** 53, -(2 ** 63), 1e308]);
      case 3: return pick(STRINGS);
      case 4: return randomString();
      case 5: return int(1000);
      case 6: return Array.from({ length: int(5) }, () => value(depth + 1));
      default: {
        const o = {};
        for (let i = int(5); i > 0; i -= 1) o[next() < 0.75 ? pick(FIELDS) : randomString()] = value(depth + 1);
        return o;
      }
    }
  };
  /** A payload for `template`: usually the template with some fields changed or dropped. */
  const payload = (template) => {
    const r = next();
    if (r < 0.05) return undefined; // no payload argument at all
    if (r < 0.1) return Buffer.from(randomString()); // a binary attachment
    if (r < 0.3) return value();
    const p = { ...template };
    for (let i = 1 + int(3); i > 0; i -= 1) {
      const keys = Object.keys(p);
      const key = keys.length && next() < 0.7 ? pick(keys) : pick(FIELDS);
      if (next() < 0.2) delete p[key];
      else p[key] = value(1);
    }
    return p;
  };
  return { payload };
}

function assertWellFormed(event, payload, ack) {
  const shown = () => `${event} ${JSON.stringify(payload)?.slice(0, 300)} -> ${JSON.stringify(ack)?.slice(0, 300)}`;
  assert.equal(typeof ack, 'object', `ack must be an object: ${shown()}`);
  assert.notEqual(ack, null, `ack must be an object: ${shown()}`);
  if (ack.ok === true) return;
  assert.equal(ack.ok, false, `ack.ok must be a boolean: ${shown()}`);
  assert.ok(CODES.includes(ack.error?.code), `unknown code: ${shown()}`);
  assert.notEqual(ack.error.code, 'INTERNAL', `junk must never be an internal error: ${shown()}`);
  assert.equal(typeof ack.error.message, 'string', `error.message must be a string: ${shown()}`);
}

describe('junk payloads for every client event', () => {
  const ctx = useServer({
    RATE_LIMIT_PER_MINUTE: '100000',
    // Many events in quick succession: the per-socket budget must not cut the fuzz short.
    SOCKET_EVENT_BURST: '100000',
    SOCKET_EVENTS_PER_SECOND: '100000',
    SOCKET_FLOOD_REJECTIONS: '100000',
  });

  it('every ack is well formed, refused messages take no seq, the socket stays up', { timeout: 60_000 }, async () => {
    const [a, b] = await makeUsers(ctx.server, 2, 'fuzz');
    const room = await createGroup(a, [b], 'fuzz');
    const { socket } = await a.connect();
    const templates = {
      'chat:join': { roomId: room.id },
      'chat:leave': { roomId: room.id },
      'chat:message': { roomId: room.id, message: 'hi', type: 'text', clientMessageId: 'c-1' },
      'chat:typing': { roomId: room.id, isTyping: true },
      'chat:read': { roomId: room.id, upToSeq: 1 },
      'chat:delivered': { roomId: room.id, upToSeq: 1 },
      'chat:sync': { roomId: room.id, afterSeq: 0, limit: 10 },
      'presence:activity': { activity: 'viewing:post:1', metadata: { postId: 1 } },
      'presence:status': { status: 'busy' },
      'notifications:subscribe': {},
      'notifications:mark_read': { notificationIds: ['00000000-0000-7000-8000-000000000000'] },
      'feed:subscribe': { followingOnly: true },
      'feed:unsubscribe': {},
      'no:such_event': { anything: 1 },
    };
    const gen = generator(SEED);
    const lastSeq = async () => (await a.api('GET', `/chat/rooms/${room.id}`)).body.lastSeq;
    for (const [event, template] of Object.entries(templates)) {
      for (let i = 0; i < CASES_PER_EVENT; i += 1) {
        const payload = gen.payload(template);
        const before = event === 'chat:message' ? await lastSeq() : null;
        const ack = await emitAck(socket, event, payload);
        assertWellFormed(event, payload, ack);
        if (event === 'chat:message' && ack.ok === false) {
          assert.equal(await lastSeq(), before, `a refused message took a seq: ${JSON.stringify(payload)}`);
        }
        // Without a callback too: it must take effect or be dropped quietly, never hurt the socket.
        if (i % 4 === 0) {
          socket.emit(event, payload);
          // A socket's events run in arrival order: this ack means the one above is done too.
          assertWellFormed('notifications:subscribe', {}, await emitAck(socket, 'notifications:subscribe', {}));
        }
      }
      assert.ok(socket.connected, `the socket was dropped by junk for ${event}`);
    }
    // NUL characters cannot be stored (PostgreSQL refuses them): refused up front, on every backend.
    for (const [event, payload] of [
      ['chat:join', { roomId: 'a\u0000' }],
      ['chat:message', { roomId: room.id, message: 'hi', clientMessageId: 'c\u0000' }],
      ['presence:activity', { activity: 'x', metadata: { k: '\u0000' } }],
    ]) {
      const ack = await emitAck(socket, event, payload);
      assert.equal(ack.error?.code, 'INVALID_PAYLOAD', `${event} with a NUL: ${JSON.stringify(ack)}`);
    }
    const still = await emitAck(socket, 'notifications:subscribe', {});
    assert.equal(still.ok, true, `the socket still answers: ${JSON.stringify(still)}`);
    assert.ok(socket.connected);
  });
});
