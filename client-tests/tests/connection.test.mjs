// Foundation: connecting to /realtime (token locations, transports, rejections, per-user limit),
// the session:ready greeting, malformed and unknown events (always answered, never fatal), a burst
// of 500 sockets, and the plain HTTP surface (/health, /metrics, 404/401/400 error shapes).
import assert from 'node:assert/strict';
import { describe, it, before } from 'node:test';
import { ackError, ackOk, assertIncludes, httpError, httpStatus, rfc3339 } from '../lib/assertions.mjs';
import { createGroup } from '../lib/chat.mjs';
import {
  connect,
  connectError,
  createSocket,
  emitAck,
  eventually,
  fakeId,
  once,
  uid,
  waitReady,
} from '../lib/client.mjs';
import { CLUSTER_MODE, REST, makeUser, nodesOf, useServer } from '../lib/harness.mjs';
import { unsignedToken } from '../lib/server.mjs';

/** Sockets connected to the server: `/health` `connections` summed over every node of a cluster. */
async function connections(server) {
  const counts = await Promise.all(
    nodesOf(server).map(async (node) => httpStatus(await node.api('GET', '/health'), 200).connections),
  );
  return counts.reduce((sum, n) => sum + n, 0);
}

function assertUnauthorized(err) {
  assert.equal(err.message, 'UNAUTHORIZED');
  if (err.data != null) assert.equal(err.data.code, 'UNAUTHORIZED');
}

describe('connection: authentication and transports', () => {
  const ctx = useServer();

  it('accepts the token in auth.token', async () => {
    const id = uid('auth');
    const { socket, ready } = await connect(ctx.server, ctx.server.token(id));
    assert.equal(ready.userId, id);
    socket.close();
  });

  it('accepts the token in the ?token= query parameter', async () => {
    const id = uid('query');
    const { socket, ready } = await connect(ctx.server, null, { query: { token: ctx.server.token(id) } });
    assert.equal(ready.userId, id);
    socket.close();
  });

  for (const transport of ['polling', 'websocket']) {
    it(`accepts an Authorization: Bearer header (${transport})`, async () => {
      const id = uid('header');
      const { socket, ready } = await connect(ctx.server, null, {
        transports: [transport],
        extraHeaders: { Authorization: `Bearer ${ctx.server.token(id)}` },
      });
      assert.equal(ready.userId, id);
      socket.close();
    });
  }

  it('works websocket-only (React Native style)', async () => {
    const { socket } = await connect(ctx.server, ctx.server.token(uid('ws')), { transports: ['websocket'] });
    assert.equal(socket.io.engine.transport.name, 'websocket');
    socket.close();
  });

  it('starts on polling and upgrades to websocket', async () => {
    const socket = createSocket(ctx.server, ctx.server.token(uid('upgrade')), { transports: ['polling', 'websocket'] });
    const engine = socket.io.engine;
    assert.equal(engine.transport.name, 'polling');
    const upgraded = once(engine, 'upgrade', 10_000);
    await waitReady(socket);
    await upgraded;
    assert.equal(socket.io.engine.transport.name, 'websocket');
    // still usable after the upgrade
    ackOk(await emitAck(socket, 'feed:subscribe', {}));
    socket.close();
  });

  it('accepts a 128-character user id', async () => {
    const id = 'u'.repeat(128);
    const { socket, ready } = await connect(ctx.server, ctx.server.token(id));
    assert.equal(ready.userId, id);
    socket.close();
  });

  describe('rejections are connect_error UNAUTHORIZED', () => {
    const nowSec = () => Math.floor(Date.now() / 1000);
    const cases = {
      'no token at all': () => ({}),
      'a garbage token': () => ({ auth: { token: 'not-a-jwt' } }),
      'an expired token': (s) => ({ auth: { token: s.token(uid('exp'), { ttlSec: -600 }) } }),
      'a token signed with another secret': (s) => ({ auth: { token: s.token(uid('sec'), { secret: 'wrong-secret' }) } }),
      'a token without exp': (s) => ({ auth: { token: s.token(uid('noexp'), { exp: undefined }) } }),
      'an alg:none token': () => ({
        auth: { token: unsignedToken({ sub: uid('none'), name: 'x', exp: nowSec() + 3600 }) },
      }),
      'an empty sub': (s) => ({ auth: { token: s.token('') } }),
      'a sub of 129 characters': (s) => ({ auth: { token: s.token('x'.repeat(129)) } }),
      'an invalid auth.token even with a valid query token (first location wins)': (s) => ({
        auth: { token: 'garbage' },
        query: { token: s.token(uid('second')) },
      }),
    };
    for (const [name, opts] of Object.entries(cases)) {
      it(`refuses ${name}`, async () => {
        assertUnauthorized(await connectError(ctx.server, opts(ctx.server)));
      });
    }
  });

  it('session:ready is { userId, rooms: [], unreadNotifications: 0, serverTime } for a new user', async () => {
    const id = uid('ready');
    const { socket, ready } = await connect(ctx.server, ctx.server.token(id));
    assertIncludes(ready, { userId: id, rooms: [], unreadNotifications: 0 }, 'session:ready');
    const serverMs = rfc3339(ready.serverTime, 'serverTime');
    assert.ok(Math.abs(serverMs - Date.now()) < 5000, `serverTime ${ready.serverTime} is not close to now`);
    socket.close();
  });
});

describe('connection: per-user connection limit', () => {
  const ctx = useServer({ MAX_CONNECTIONS_PER_USER: '3' });

  it('accepts 3 sockets, refuses the 4th with TOO_MANY_CONNECTIONS, accepts again after one leaves', async () => {
    const token = ctx.server.token(uid('limit'));
    const sockets = [];
    for (let i = 0; i < 3; i += 1) sockets.push((await connect(ctx.server, token)).socket);

    const err = await connectError(ctx.server, { auth: { token } });
    assert.equal(err.message, 'TOO_MANY_CONNECTIONS');
    if (err.data != null) assert.equal(err.data.code, 'TOO_MANY_CONNECTIONS');

    // another user is not affected
    (await connect(ctx.server, ctx.server.token(uid('other')))).socket.close();

    sockets.pop().close();
    // the server notices the disconnect asynchronously: retry a few times, bounded
    const { socket } = await eventually(() => connect(ctx.server, token, { readyTimeoutMs: 2000 }), {
      timeoutMs: 5000,
      intervalMs: 100,
    });
    assert.ok(socket.connected);
  });
});

describe('connection: malformed payloads and unknown events', () => {
  const ctx = useServer();
  let user;
  let socket;
  let room;

  before(async () => {
    user = await makeUser(ctx.server, 'malformed');
    const other = await makeUser(ctx.server, 'other');
    room = await createGroup(user, [other], 'malformed-payloads');
    ({ socket } = await user.connect());
  });

  // For each event: an object whose one wrong-typed field must be named in error.details.
  const wrongFields = {
    'chat:message': () => [{ roomId: room.id, message: 42 }, 'message'],
    'chat:join': () => [{ roomId: 42 }, 'roomId'],
    'chat:typing': () => [{ roomId: room.id, isTyping: 'yes' }, 'isTyping'],
    'chat:read': () => [{ roomId: room.id, upToSeq: 'ten' }, 'upToSeq'],
    'chat:sync': () => [{ roomId: room.id, afterSeq: 'zero' }, 'afterSeq'],
    'presence:status': () => [{ status: 7 }, 'status'],
    'notifications:mark_read': () => [{ notificationIds: 'abc' }, 'notificationIds'],
  };

  for (const [event, wrong] of Object.entries(wrongFields)) {
    describe(event, () => {
      it('answers a string payload with INVALID_PAYLOAD', async () => {
        ackError(await emitAck(socket, event, 'hello'), 'INVALID_PAYLOAD');
      });
      it('answers a number payload with INVALID_PAYLOAD', async () => {
        ackError(await emitAck(socket, event, 12345), 'INVALID_PAYLOAD');
      });
      it('answers a missing payload with INVALID_PAYLOAD', async () => {
        ackError(await emitAck(socket, event, undefined), 'INVALID_PAYLOAD');
      });
      it('answers wrong field types with INVALID_PAYLOAD naming the field', async () => {
        const [payload, field] = wrong();
        ackError(await emitAck(socket, event, payload), 'INVALID_PAYLOAD', { field });
      });
    });
  }

  it('malformed events without an ack callback are harmless', async () => {
    socket.emit('chat:message', 'no ack here');
    socket.emit('chat:message');
    socket.emit('chat:typing', { roomId: [], isTyping: {} });
    // the socket must still answer the next event
    ackOk(await emitAck(socket, 'feed:subscribe', {}));
  });

  it('the socket is still connected and working after all that', async () => {
    assert.equal(socket.connected, true);
    ackError(await emitAck(socket, 'chat:sync', { roomId: fakeId(), afterSeq: 0 }), ['NOT_FOUND', 'FORBIDDEN']);
    ackOk(await emitAck(socket, 'chat:sync', { roomId: room.id, afterSeq: 0 }));
  });

  for (const event of ['notifications:subscribe', 'feed:subscribe', 'feed:unsubscribe']) {
    it(`${event} (all fields optional) accepts a missing payload`, async () => {
      ackOk(await emitAck(socket, event, undefined));
    });
  }

  // The contract does not name this case; a caller that asked for an ack must get one, and
  // "no such event" maps most naturally to NOT_FOUND.
  it('an unknown event with an ack is answered { ok: false, error: { code: NOT_FOUND } }', async () => {
    ackError(await emitAck(socket, 'chat:does_not_exist', { roomId: room.id }), 'NOT_FOUND');
    assert.equal(socket.connected, true);
  });
});

describe('connection: burst of 500 sockets', () => {
  const ctx = useServer();

  it('50 users x 10 websocket sockets all reach session:ready', { timeout: 60_000 }, async () => {
    const userIds = Array.from({ length: 50 }, () => uid('burst'));
    const attempts = userIds.flatMap((id) => {
      const token = ctx.server.token(id);
      return Array.from({ length: 10 }, () => connect(ctx.server, token, { readyTimeoutMs: 45_000, timeout: 45_000 }));
    });
    const results = await Promise.allSettled(attempts);
    const failed = results.filter((r) => r.status === 'rejected');
    const sockets = results.filter((r) => r.status === 'fulfilled').map((r) => r.value.socket);
    try {
      assert.equal(failed.length, 0, `${failed.length} of 500 failed, e.g. ${failed[0]?.reason?.message}`);
      results.forEach((r, i) => assert.equal(r.value.ready.userId, userIds[Math.floor(i / 10)]));
      const total = await connections(ctx.server);
      assert.ok(total >= 500, `/health connections ${total} < 500`);
    } finally {
      for (const s of sockets) s.close();
    }
    // and the server notices they are gone
    await eventually(async () => (await connections(ctx.server)) === 0, {
      timeoutMs: 15_000,
      intervalMs: 100,
    });
  });
});

describe('connection: HTTP surface', () => {
  const ctx = useServer();

  it('GET /health reports status, services and this node\'s socket count', async () => {
    const user = await makeUser(ctx.server, 'health');
    const a = await user.connect();
    const b = await user.connect();
    const body = httpStatus(await ctx.server.api('GET', '/health'), 200);
    assert.equal(body.status, 'ok');
    rfc3339(body.timestamp, 'timestamp');
    assert.equal(typeof body.connections, 'number');
    // each node counts its own sockets: on a cluster the two are spread, so add the nodes up
    const total = await connections(ctx.server);
    assert.ok(total >= 2, `connections ${total} < 2`);
    assert.deepEqual(body.services, { database: 'ok', redis: CLUSTER_MODE ? 'ok' : 'disabled' });
    a.socket.close();
    b.socket.close();
  });

  it('GET /metrics is Prometheus text', async () => {
    const res = await ctx.server.api('GET', '/metrics');
    assert.equal(res.status, 200);
    assert.equal(typeof res.body, 'string');
    assert.match(res.body, /# TYPE /);
  });

  it('an unknown path is 404 in the error shape', async () => {
    const user = await makeUser(ctx.server, 'nope');
    httpError(await user.api('GET', '/nope'), 404, 'NOT_FOUND');
  });

  it('REST without a token is 401 UNAUTHORIZED', async () => {
    httpError(await ctx.server.api('GET', `${REST}/chat/rooms`), 401, 'UNAUTHORIZED');
  });

  it('REST with a bad token is 401 UNAUTHORIZED', async () => {
    httpError(await ctx.server.api('GET', `${REST}/chat/rooms`, { token: 'garbage' }), 401, 'UNAUTHORIZED');
    const expired = ctx.server.token(uid('expired'), { ttlSec: -600 });
    httpError(await ctx.server.api('GET', `${REST}/chat/rooms`, { token: expired }), 401, 'UNAUTHORIZED');
  });

  it('a malformed JSON body is 400 INVALID_PAYLOAD', async () => {
    const user = await makeUser(ctx.server, 'badjson');
    httpError(await user.api('POST', '/chat/rooms', { rawBody: '{"participants": [' }), 400, 'INVALID_PAYLOAD');
  });

  it('a JSON array body is 400 INVALID_PAYLOAD', async () => {
    const user = await makeUser(ctx.server, 'array');
    httpError(await user.api('POST', '/chat/rooms', { rawBody: '[]' }), 400, 'INVALID_PAYLOAD');
  });

  it('the service API refuses a missing or wrong key, and user JWTs', async () => {
    const path = `/api/v1/internal/users/${uid('svc')}`;
    const body = { name: 'x' };
    httpError(await ctx.server.api('PUT', path, { body }), 401, 'UNAUTHORIZED');
    httpError(await ctx.server.api('PUT', path, { body, apiKey: 'wrong-key' }), 401, 'UNAUTHORIZED');
    httpError(await ctx.server.api('PUT', path, { body, token: ctx.server.token(uid('jwt')) }), 401, 'UNAUTHORIZED');
    httpStatus(await ctx.server.service('PUT', path.replace('/api/v1/internal', ''), body), [200, 201, 204]);
  });
});
