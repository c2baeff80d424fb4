// Limits and back-pressure: a socket that stops reading is dropped with SLOW_CONSUMER without
// costing anyone else a duplicate or a lost message, and a socket flooding any event is refused
// with RATE_LIMITED and then disconnected, while other clients' acks keep coming.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import WebSocket from 'ws';
import { ackError, ackOk } from '../lib/assertions.mjs';
import { createGroup, sendRest } from '../lib/chat.mjs';
import { NAMESPACE, emitAck, eventually, once, range, record, socketUrl } from '../lib/client.mjs';
import { makeUser, makeUsers, nodesOf, useServer } from '../lib/harness.mjs';

/**
 * A bare Engine.IO/Socket.IO client over `ws`, so the test can stop reading from the TCP
 * connection (`pause()`), which socket.io-client cannot. It answers pings while it reads.
 */
async function rawSocket(server, token) {
  const url = `${socketUrl(server).replace(/^http/, 'ws')}/socket.io/?EIO=4&transport=websocket`;
  const ws = new WebSocket(url);
  const frames = [];
  const waiters = new Set();
  ws.on('message', (data) => {
    const frame = data.toString();
    if (frame === '2') ws.send('3');
    frames.push(frame);
    for (const w of waiters) w();
  });
  const closed = new Promise((resolve) => ws.on('close', resolve));
  ws.on('error', () => {});
  /** Resolves with the first frame (from the start) matching `pred`. */
  const frame = (pred, timeoutMs = 10_000) =>
    new Promise((resolve, reject) => {
      const check = () => {
        const found = frames.find(pred);
        if (found === undefined) return;
        clearTimeout(timer);
        waiters.delete(check);
        resolve(found);
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`no matching frame within ${timeoutMs} ms (have ${frames.length})`));
      }, timeoutMs);
      waiters.add(check);
      check();
    });
  await frame((f) => f.startsWith('0{'));
  ws.send(`40${NAMESPACE},${JSON.stringify({ token })}`);
  await frame((f) => f.startsWith(`42${NAMESPACE},["session:ready"`));
  /** Payloads of `event` received so far. */
  const events = (event) =>
    frames
      .filter((f) => f.startsWith(`42${NAMESPACE},["${event}"`))
      .map((f) => JSON.parse(f.slice(`42${NAMESPACE},`.length))[1]);
  return {
    frame,
    events,
    closed,
    pause: () => ws._socket.pause(),
    resume: () => ws._socket.resume(),
    close: () => ws.terminate(),
  };
}

/** The `switchboard_sockets_dropped_total` count for `reason`, summed over the nodes. */
async function dropped(server, reason) {
  let total = 0;
  for (const node of nodesOf(server)) {
    const text = await (await fetch(`${node.url}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith('switchboard_sockets_dropped_total') && l.includes(`reason="${reason}"`));
    if (line) total += Number(line.trim().split(/\s+/).pop());
  }
  return total;
}

describe('a socket that stops reading', () => {
  const ctx = useServer({
    SOCKET_BUFFER_SIZE: '8',
    SLOW_SOCKET_CHECK_MS: '100',
    MAX_MESSAGE_LENGTH: '60000',
    RATE_LIMIT_PER_MINUTE: '10000',
  });

  test('is dropped with SLOW_CONSUMER while the others get every message exactly once', async () => {
    const [sender, healthy, stuck] = await makeUsers(ctx.server, 3, 'slow');
    const room = await createGroup(sender, [healthy, stuck], 'slow readers');
    const { socket: good } = await healthy.connect();
    const seen = record(good, 'chat:new_message', (p) => p?.roomId === room.id);
    const raw = await rawSocket(ctx.server, stuck.token);
    raw.pause();

    // Enough large messages (15 MB) to fill the stuck connection's TCP buffers (a few MB on
    // loopback) and then its packet buffer, even a default one of 128.
    const total = 260;
    const filler = 'x'.repeat(59_990);
    for (const i of range(1, total)) await sendRest(sender, room.id, `${i} ${filler}`);
    await seen.count(total, 60_000);
    // A last small message: anything duplicated would have arrived before it.
    await sendRest(sender, room.id, 'last');
    await seen.until((list) => list.some((p) => p.message.content === 'last'), 10_000);
    assert.deepEqual(seen.items.map((p) => p.message.seq), range(1, total + 1), 'each message exactly once, in order');

    // The node holding the stuck socket found its buffer full (at once on the emitting node,
    // within SLOW_SOCKET_CHECK_MS on another).
    await eventually(async () => (await dropped(ctx.server, 'slow_consumer')) >= 1, { timeoutMs: 10_000 });

    // Once it reads again it learns why, and is disconnected.
    raw.resume();
    const error = await raw.frame((f) => f.startsWith(`42${NAMESPACE},["session:error"`), 15_000);
    assert.equal(JSON.parse(error.slice(`42${NAMESPACE},`.length))[1].code, 'SLOW_CONSUMER');
    await raw.frame((f) => f.startsWith(`41${NAMESPACE}`), 15_000);
    const got = raw.events('chat:new_message').map((p) => p.message.seq);
    assert.ok(got.length < total + 1, 'the stuck socket left its rooms: it missed the rest');
    assert.equal(new Set(got).size, got.length, 'and got nothing twice');
    raw.close();

    // Everyone else is unaffected.
    ackOk(await emitAck(good, 'chat:sync', { roomId: room.id, afterSeq: total }));
  });
});

describe('a socket flooding events', () => {
  // The budget is never stricter than the message rate limit, so that is lowered too.
  const ctx = useServer({
    RATE_LIMIT_PER_MINUTE: '10',
    SOCKET_EVENTS_PER_SECOND: '5',
    SOCKET_EVENT_BURST: '10',
    SOCKET_FLOOD_REJECTIONS: '40',
  });

  const payloads = (roomId) => ({
    'chat:typing': { roomId, isTyping: true },
    'chat:sync': { roomId, afterSeq: 0 },
    'chat:read': { roomId, upToSeq: 0 },
    'presence:activity': { activity: 'viewing:post:1' },
    'notifications:subscribe': {},
    'feed:subscribe': {},
    'no:such_event': {},
  });

  test('gets RATE_LIMITED for every event type, then is disconnected; others are answered', async () => {
    const owner = await makeUser(ctx.server, 'flood-owner');
    const bystander = await makeUser(ctx.server, 'bystander');
    const { socket: calm } = await bystander.connect();
    for (const [event, payload] of Object.entries(payloads('unused'))) {
      const flooder = await makeUser(ctx.server, 'flooder');
      const room = await createGroup(owner, [flooder], `flood ${event}`);
      const body = payloads(room.id)[event] ?? payload;
      const { socket } = await flooder.connect();
      const told = once(socket, 'session:error', 15_000);
      const gone = once(socket, 'disconnect', 15_000);

      // A burst over the budget: the first ones are handled, the rest refused at once.
      const acks = await Promise.all(range(1, 20).map(() => emitAck(socket, event, body)));
      const refused = acks.filter((a) => a?.ok === false && a.error?.code === 'RATE_LIMITED');
      assert.ok(refused.length >= 5, `${event}: expected refusals, got ${JSON.stringify(acks.slice(-3))}`);
      for (const ack of refused) {
        ackError(ack, 'RATE_LIMITED');
        assert.ok(ack.error.retryAfterMs > 0, `${event}: retryAfterMs in ${JSON.stringify(ack)}`);
      }

      // Meanwhile another client is answered as usual.
      ackOk(await emitAck(calm, 'notifications:subscribe', {}));

      // Keeping on flooding ends in a disconnect with a reason.
      for (let i = 0; i < 100 && socket.connected; i += 1) socket.emit(event, body);
      assert.equal((await told).code, 'RATE_LIMITED', `${event}: session:error code`);
      assert.equal(await gone, 'io server disconnect', `${event}: disconnect reason`);
      ackOk(await emitAck(calm, 'notifications:subscribe', {}));
    }
    assert.ok((await dropped(ctx.server, 'flood')) >= 7);
  });
});
