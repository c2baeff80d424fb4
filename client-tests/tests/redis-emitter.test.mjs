// `@socket.io/redis-emitter` (the real npm package, 5.x) publishing into the cluster's Redis:
// what a Node backend emits reaches Switchboard's sockets unchanged, on every node, exactly
// once — by user room, by chat room with `except`, namespace-wide — and nothing for another
// namespace. `socketsJoin` and `disconnectSockets` work too. `REDIS_EMITTER_ENABLED=false` turns
// it off; `REDIS_EMITTER_KEY` follows the emitter's `key` option.
//
// Exactly once without sleeping: after the event under test, the same emitter publishes a
// marker to everyone. Redis delivers one connection's messages in order and each node handles
// them in order, so once a socket has the marker, any duplicate would already have arrived.
//
// Runs with SWITCHBOARD_NODES set (`npm run test:cluster`); each block starts its own cluster.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Emitter } from '@socket.io/redis-emitter';
import { createClient } from 'redis';
import { createGroup } from '../lib/chat.mjs';
import { startCluster } from '../lib/cluster.mjs';
import { closeAll, connect, eventually, none, once, record, uid } from '../lib/client.mjs';
import { CLUSTER_MODE, makeUser, makeUsers } from '../lib/harness.mjs';

const SKIP = CLUSTER_MODE ? false : 'multi-node tests: set SWITCHBOARD_NODES (npm run test:cluster)';
const QUIET_MS = 800;

/** A cluster and a Redis client for the emitter, for the enclosing describe. */
function useEmitterCluster(nodes, env = {}) {
  const ctx = { cluster: null, redis: null };
  before(async () => {
    ctx.cluster = await startCluster({ nodes, env });
    ctx.redis = createClient({ url: ctx.cluster.redis.url });
    // It reconnects by itself when the Redis-restart test restarts Redis; without a listener
    // its connection errors would be thrown.
    ctx.redis.on('error', () => {});
    await ctx.redis.connect();
  });
  after(async () => {
    closeAll();
    await ctx.redis?.quit().catch(() => {});
    await ctx.cluster?.stop();
  });
  return ctx;
}

const socketOn = async (cluster, i, user) => (await connect(cluster.nodes[i], user.token)).socket;

/** Emits a marker to the whole namespace and resolves once every socket in `sockets` has it. */
async function marker(emitter, sockets) {
  const id = uid('marker');
  const seen = sockets.map((s) => once(s, 'test:marker', 5000, (p) => p?.id === id));
  emitter.emit('test:marker', { id });
  await Promise.all(seen);
}

describe('redis-emitter: delivery across the cluster', { skip: SKIP }, () => {
  const ctx = useEmitterCluster(2);

  it('.to("user:X") reaches X on both nodes exactly once, payload unchanged, and nobody else', async () => {
    const [x, y] = await makeUsers(ctx.cluster, 2, 'emit-user');
    const xa = await socketOn(ctx.cluster, 0, x);
    const xb = await socketOn(ctx.cluster, 1, x);
    const ya = await socketOn(ctx.cluster, 0, y);
    const recs = [xa, xb, ya].map((s) => record(s, 'notification:new'));
    const emitter = new Emitter(ctx.redis).of('/realtime');

    const payload = { id: uid('n'), type: 'system', title: 'Hello', data: { nested: [1, 'two', null, true] } };
    emitter.to(`user:${x.id}`).emit('notification:new', payload);
    await marker(emitter, [xa, xb, ya]);

    assert.deepEqual(recs[0].items, [payload]);
    assert.deepEqual(recs[1].items, [payload]);
    assert.deepEqual(recs[2].items, []);
  });

  it('.to("chat:<roomId>").except("user:Y") reaches the other members only', async () => {
    const [x, y, z, outsider] = await makeUsers(ctx.cluster, 4, 'emit-chat');
    const room = await createGroup(x, [y, z], 'emitter room');
    const sockets = [
      await socketOn(ctx.cluster, 0, x),
      await socketOn(ctx.cluster, 1, y),
      await socketOn(ctx.cluster, 1, z),
      await socketOn(ctx.cluster, 0, outsider),
    ];
    const recs = sockets.map((s) => record(s, 'chat:new_message'));
    const emitter = new Emitter(ctx.redis).of('/realtime');

    const message = { roomId: room.id, content: 'from the backend', n: 1.5 };
    emitter.to(`chat:${room.id}`).except(`user:${y.id}`).emit('chat:new_message', message);
    await marker(emitter, sockets);

    assert.deepEqual(recs.map((r) => r.items.length), [1, 0, 1, 0]);
    assert.deepEqual(recs[0].items[0], message);
  });

  it('namespace-wide .emit() reaches everyone once; another namespace reaches nobody', async () => {
    const users = await makeUsers(ctx.cluster, 2, 'emit-all');
    const sockets = [await socketOn(ctx.cluster, 0, users[0]), await socketOn(ctx.cluster, 1, users[1])];
    const tag = uid('all');
    const recs = sockets.map((s) => record(s, 'announcement', (p) => p?.tag === tag));
    const emitter = new Emitter(ctx.redis);

    emitter.of('/other').emit('announcement', { tag, other: true });
    emitter.of('/').emit('announcement', { tag, root: true });
    emitter.of('/realtime').emit('announcement', { tag });
    await marker(emitter.of('/realtime'), sockets);

    for (const r of recs) assert.deepEqual(r.items, [{ tag }]);
  });

  it('several arguments and binary arrive as separate arguments; a Date as its JSON string', async () => {
    const user = await makeUser(ctx.cluster, 'emit-args');
    const sockets = [await socketOn(ctx.cluster, 0, user), await socketOn(ctx.cluster, 1, user)];
    const got = sockets.map((s) => new Promise((resolve) => s.once('multi', (...args) => resolve(args))));
    const when = new Date(1700000000123);
    new Emitter(ctx.redis).of('/realtime').to(`user:${user.id}`).emit('multi', { a: 1 }, 'two', Buffer.from([1, 2, 3]), when);
    for (const args of await Promise.all(got)) {
      assert.equal(args.length, 4);
      assert.deepEqual(args[0], { a: 1 });
      assert.equal(args[1], 'two');
      assert.deepEqual([...new Uint8Array(args[2])], [1, 2, 3]);
      assert.equal(args[3], when.toJSON());
    }
  });

  it('socketsJoin makes a user\'s sockets on every node join a room; disconnectSockets drops them', async () => {
    const [x, y] = await makeUsers(ctx.cluster, 2, 'emit-join');
    const sockets = [await socketOn(ctx.cluster, 0, x), await socketOn(ctx.cluster, 1, x), await socketOn(ctx.cluster, 1, y)];
    const emitter = new Emitter(ctx.redis).of('/realtime');
    const custom = `custom:${uid('room')}`;
    const recs = sockets.map((s) => record(s, 'custom:event'));

    emitter.in(`user:${x.id}`).socketsJoin(custom);
    emitter.to(custom).emit('custom:event', { hello: 1 });
    await marker(emitter, sockets);
    assert.deepEqual(recs.map((r) => r.items.length), [1, 1, 0]);

    const gone = sockets.slice(0, 2).map((s) => once(s, 'disconnect'));
    emitter.in(`user:${x.id}`).disconnectSockets();
    assert.deepEqual(await Promise.all(gone), ['io server disconnect', 'io server disconnect']);
    assert.ok(sockets[2].connected, "the other user's socket stays");
  });

  it('one publisher\'s room emits, namespace-wide emits and socketsLeave keep their order', async () => {
    const user = await makeUser(ctx.cluster, 'emit-order');
    const sockets = [await socketOn(ctx.cluster, 0, user), await socketOn(ctx.cluster, 1, user)];
    const tag = uid('order');
    const seen = sockets.map((s) => {
      const order = [];
      s.onAny((event, p) => {
        if (p?.tag === tag) order.push(`${event}:${p.i}`);
      });
      return order;
    });
    const emitter = new Emitter(ctx.redis).of('/realtime');
    const custom = `custom:${uid('room')}`;
    emitter.in(`user:${user.id}`).socketsJoin(custom);
    const expected = [];
    // Room emits go through the dispatcher, namespace-wide ones straight to the sockets: one
    // must not overtake the other. 40 pairs stay well inside a socket's outgoing buffer (128
    // packets), past which the socket would be dropped as a slow consumer.
    for (let i = 0; i < 40; i++) {
      emitter.to(`user:${user.id}`).emit('ordered:room', { tag, i });
      emitter.emit('ordered:all', { tag, i });
      expected.push(`ordered:room:${i}`, `ordered:all:${i}`);
    }
    // Published after the last room emit, the leave must not take effect before it.
    emitter.to(custom).emit('ordered:custom', { tag, i: 0 });
    emitter.in(`user:${user.id}`).socketsLeave(custom);
    emitter.to(custom).emit('ordered:custom', { tag, i: 1 });
    expected.push('ordered:custom:0');
    await marker(emitter, sockets);
    for (const order of seen) assert.deepEqual(order, expected);
  });

  it('a garbage frame is counted and does not stop later deliveries', async () => {
    const user = await makeUser(ctx.cluster, 'emit-bad');
    const sockets = [await socketOn(ctx.cluster, 0, user), await socketOn(ctx.cluster, 1, user)];
    await ctx.redis.publish(`socket.io#/realtime#user:${user.id}#`, Buffer.from([0x93, 0xff, 0x00]));
    await ctx.redis.publish('socket.io-request#/realtime#', '{not json');
    await marker(new Emitter(ctx.redis).of('/realtime'), sockets);
    for (const node of ctx.cluster.nodes) {
      const text = (await node.api('GET', '/metrics')).body;
      assert.match(text, /switchboard_redis_emitter_messages_total\{kind="broadcast",outcome="invalid"\} 1/);
      assert.match(text, /switchboard_redis_emitter_messages_total\{kind="request",outcome="invalid"\} 1/);
    }
  });
});

describe('redis-emitter: REDIS_EMITTER_KEY', { skip: SKIP }, () => {
  const ctx = useEmitterCluster(2, { REDIS_EMITTER_KEY: 'backend-events' });

  it('the configured key is delivered, the default key is not', async () => {
    const user = await makeUser(ctx.cluster, 'emit-key');
    const sockets = [await socketOn(ctx.cluster, 0, user), await socketOn(ctx.cluster, 1, user)];
    const recs = sockets.map((s) => record(s, 'keyed'));
    new Emitter(ctx.redis).of('/realtime').to(`user:${user.id}`).emit('keyed', { key: 'default' });
    const keyed = new Emitter(ctx.redis, { key: 'backend-events' }).of('/realtime');
    keyed.to(`user:${user.id}`).emit('keyed', { key: 'configured' });
    await marker(keyed, sockets);
    for (const r of recs) assert.deepEqual(r.items, [{ key: 'configured' }]);
  });
});

describe('redis-emitter: REDIS_EMITTER_ENABLED=false', { skip: SKIP }, () => {
  const ctx = useEmitterCluster(1, { REDIS_EMITTER_ENABLED: 'false' });

  it('nothing published with the emitter is delivered', async () => {
    const user = await makeUser(ctx.cluster, 'emit-off');
    const socket = await socketOn(ctx.cluster, 0, user);
    const quiet = none(socket, 'notification:new', QUIET_MS);
    const emitter = new Emitter(ctx.redis).of('/realtime');
    emitter.to(`user:${user.id}`).emit('notification:new', { id: 'x' });
    emitter.emit('notification:new', { id: 'y' });
    assert.ok(await quiet, 'an emitter event was delivered with REDIS_EMITTER_ENABLED=false');
    const patterns = await ctx.redis.sendCommand(['PUBSUB', 'NUMPAT']);
    assert.equal(patterns, 0, 'the emitter pattern is still subscribed');
  });
});

const EXTERNAL_REDIS = process.env.REDIS_URL ? 'REDIS_URL names an external Redis, which the tests cannot restart' : false;

describe('redis-emitter: Redis restarted', { skip: SKIP || EXTERNAL_REDIS }, () => {
  const ctx = useEmitterCluster(2);

  it('the nodes subscribe again and deliver exactly once, without a restart', { timeout: 40_000 }, async () => {
    const user = await makeUser(ctx.cluster, 'emit-restart');
    const sockets = [await socketOn(ctx.cluster, 0, user), await socketOn(ctx.cluster, 1, user)];
    await ctx.cluster.redis.restart();
    // The sockets stay connected; the nodes resubscribe after their reconnect backoff (≤ 5 s).
    const emitter = new Emitter(ctx.redis).of('/realtime');
    await eventually(
      async () => {
        const id = uid('probe');
        const seen = Promise.all(sockets.map((s) => once(s, 'probe', 1000, (p) => p?.id === id).then(() => true, () => false)));
        emitter.to(`user:${user.id}`).emit('probe', { id });
        const got = await seen;
        if (!got.every(Boolean)) throw new Error(`probe reached ${JSON.stringify(got)} since Redis came back`);
        return true;
      },
      { timeoutMs: 25_000, intervalMs: 250 },
    );
    const recs = sockets.map((s) => record(s, 'after-restart'));
    emitter.to(`user:${user.id}`).emit('after-restart', { n: 1 });
    await marker(emitter, sockets);
    for (const r of recs) assert.deepEqual(r.items, [{ n: 1 }]);
  });
});
