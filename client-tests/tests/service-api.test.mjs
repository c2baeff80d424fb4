// The service API for the app's backend (contract §8): X-Api-Key authentication (never a user
// JWT), field-level validation, user profile upserts, the follow graph (idempotent PUT/DELETE)
// and POST /broadcast to rooms, users and exceptions.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ackOk, httpError, httpStatus } from '../lib/assertions.mjs';
import { createGroup, getRoom } from '../lib/chat.mjs';
import { emitAck, none, once, uid } from '../lib/client.mjs';
import { makeUser, makeUsers, useServer } from '../lib/harness.mjs';
import { SERVICE_API_KEY, startServer } from '../lib/server.mjs';

const INTERNAL = '/api/v1/internal';
const QUIET_MS = 700;

/** Every service route with a body that would be valid, for the authentication checks. */
function routes() {
  const a = uid('svc');
  const b = uid('svc');
  return [
    ['PUT', `/users/${a}`, { name: 'A' }],
    ['PUT', '/follows', { followerId: a, followeeId: b }],
    ['DELETE', '/follows', { followerId: a, followeeId: b }],
    ['POST', '/notifications', { userIds: [a], type: 'system', title: 't', message: 'm' }],
    ['POST', '/feed/activities', { activityType: 'post', actorId: a, targetId: 't', targetType: 'post' }],
    ['POST', '/broadcast', { event: 'x', data: {}, userIds: [a] }],
  ];
}

const call = (server, method, path, body, opts = {}) => server.api(method, INTERNAL + path, { body, ...opts });

describe('service API: authentication', () => {
  const ctx = useServer();

  it('answers 401 without a key, with a wrong key and with a user JWT as Bearer', async () => {
    const user = await makeUser(ctx.server, 'jwt');
    for (const [method, path, body] of routes()) {
      httpError(await call(ctx.server, method, path, body), 401, 'UNAUTHORIZED');
      httpError(await call(ctx.server, method, path, body, { apiKey: 'wrong-key' }), 401, 'UNAUTHORIZED');
      httpError(await call(ctx.server, method, path, body, { apiKey: `${SERVICE_API_KEY}x` }), 401, 'UNAUTHORIZED');
      httpError(await call(ctx.server, method, path, body, { token: user.token }), 401, 'UNAUTHORIZED');
    }
  });

  it('accepts the right key', async () => {
    for (const [method, path, body] of routes()) {
      const res = await call(ctx.server, method, path, body, { apiKey: SERVICE_API_KEY });
      assert.ok(res.status < 300, `${method} ${path} with the key: ${res.status} ${JSON.stringify(res.body)}`);
    }
  });
});

describe('service API: disabled without SERVICE_API_KEY', () => {
  const ctx = useServer({ SERVICE_API_KEY: undefined });

  it('answers 401 to every call, with or without a key', async () => {
    for (const [method, path, body] of routes()) {
      httpError(await call(ctx.server, method, path, body), 401, 'UNAUTHORIZED');
      httpError(await call(ctx.server, method, path, body, { apiKey: SERVICE_API_KEY }), 401, 'UNAUTHORIZED');
    }
  });
});

describe('service API: SERVICE_API_KEY set but empty', () => {
  // An empty key must not turn into "no key needed": either the server refuses to start, or
  // the service API stays disabled.
  it('never accepts a call without a real key', async () => {
    let server;
    try {
      server = await startServer({ SERVICE_API_KEY: '' });
    } catch {
      return; // refused to start: fine
    }
    try {
      for (const [method, path, body] of routes()) {
        httpError(await call(server, method, path, body), 401, 'UNAUTHORIZED');
        httpError(await call(server, method, path, body, { headers: { 'X-Api-Key': '' } }), 401, 'UNAUTHORIZED');
      }
    } finally {
      await server.stop();
    }
  });
});

describe('service API: users and follows', () => {
  const ctx = useServer();

  it('validates bodies with field-level errors', async () => {
    const s = ctx.server;
    httpError(await s.service('PUT', `/users/${uid('v')}`, { name: '' }), 400, 'INVALID_PAYLOAD', { field: 'name' });
    httpError(await s.service('PUT', `/users/${uid('v')}`, { name: 'ok', avatarUrl: 'not a url' }), 400, 'INVALID_PAYLOAD', {
      field: 'avatarUrl',
    });
    httpError(await s.service('PUT', `/users/${'x'.repeat(129)}`, { name: 'ok' }), 400, 'INVALID_PAYLOAD', { field: 'userId' });
    httpError(await s.service('PUT', '/follows', { followerId: 'a' }), 400, 'INVALID_PAYLOAD', { field: 'followeeId' });
    const err = httpError(await s.service('PUT', '/follows', { followerId: '', followeeId: 'x'.repeat(129) }), 400, 'INVALID_PAYLOAD');
    assert.deepEqual(err.details.map((d) => d.field).sort(), ['followeeId', 'followerId']);
    httpError(await s.service('PUT', '/follows', { followerId: 'same', followeeId: 'same' }), 400, 'INVALID_PAYLOAD', {
      field: 'followeeId',
    });
    httpError(await s.api('PUT', `${INTERNAL}/follows`, { apiKey: SERVICE_API_KEY, rawBody: '[1]' }), 400, 'INVALID_PAYLOAD');
    httpError(await s.api('PUT', `${INTERNAL}/follows`, { apiKey: SERVICE_API_KEY, rawBody: '{"followerId":' }), 400, 'INVALID_PAYLOAD');
  });

  it('a profile upsert renames the user as other members see them', async () => {
    const [owner, member] = await makeUsers(ctx.server, 2, 'prof');
    const room = await createGroup(owner, [member], 'profiles');
    const res = await ctx.server.service('PUT', `/users/${member.id}`, { name: 'Renamed Member', avatarUrl: 'https://example.com/a.png' });
    httpStatus(res, 200);
    assert.equal(res.body.name, 'Renamed Member');
    const seen = await getRoom(owner, room.id);
    assert.equal(seen.members.find((m) => m.userId === member.id)?.name, 'Renamed Member');
  });

  it('PUT and DELETE /follows are idempotent and drive feed delivery', async () => {
    const [fan, star] = await makeUsers(ctx.server, 2, 'flw');
    const body = { followerId: fan.id, followeeId: star.id };
    for (let i = 0; i < 2; i += 1) {
      const res = await ctx.server.service('PUT', '/follows', body);
      assert.deepEqual(httpStatus(res, 200), body);
    }
    const { socket } = await fan.connect();
    ackOk(await emitAck(socket, 'feed:subscribe', { followingOnly: true }));
    const targetId = uid('t');
    const got = once(socket, 'feed:new_post', 5000, (p) => p?.targetId === targetId);
    httpStatus(await ctx.server.service('POST', '/feed/activities', { activityType: 'post', actorId: star.id, targetId, targetType: 'post' }), 201);
    await got;

    for (let i = 0; i < 2; i += 1) {
      const res = await ctx.server.service('DELETE', '/follows', body);
      httpStatus(res, 204);
    }
    const quiet = none(socket, 'feed:new_post', QUIET_MS);
    httpStatus(await ctx.server.service('POST', '/feed/activities', { activityType: 'post', actorId: star.id, targetId: 'x', targetType: 'post' }), 201);
    assert.ok(await quiet, 'an unfollowed user\'s activity was delivered');
  });

  it('following an unknown user creates it', async () => {
    const fan = await makeUser(ctx.server, 'new');
    const ghost = uid('ghost');
    httpStatus(await ctx.server.service('PUT', '/follows', { followerId: fan.id, followeeId: ghost }), 200);
    // The ghost now exists as a user: it can be put in a room by id and is named after its id.
    const room = await createGroup(fan, [ghost], 'ghosts');
    assert.equal(room.members.find((m) => m.userId === ghost)?.name, ghost);
  });
});

describe('service API: broadcast', () => {
  const ctx = useServer();

  const broadcast = (body) => ctx.server.service('POST', '/broadcast', body);

  it('emits to rooms, to users and skips except', async () => {
    const [a, b, c] = await makeUsers(ctx.server, 3, 'bc');
    const room = await createGroup(a, [b, c], 'broadcast room');
    const [as, bs, cs] = await Promise.all([a, b, c].map(async (u) => (await u.connect()).socket));

    const toRoom = [as, bs, cs].map((s) => once(s, 'promo', 5000));
    const res = await broadcast({ event: 'promo', data: { n: 1 }, rooms: [`chat:${room.id}`] });
    assert.deepEqual(httpStatus(res, [200, 202]), { delivered: true });
    for (const p of await Promise.all(toRoom)) assert.deepEqual(p, { n: 1 });

    const toUser = once(bs, 'direct', 5000);
    const notA = none(as, 'direct', QUIET_MS);
    httpStatus(await broadcast({ event: 'direct', data: 'just b', userIds: [b.id] }), [200, 202]);
    assert.equal(await toUser, 'just b');
    assert.ok(await notA);

    const toC = once(cs, 'some', 5000);
    const skipped = [none(as, 'some', QUIET_MS), none(bs, 'some', QUIET_MS)];
    httpStatus(
      await broadcast({ event: 'some', data: [1, 2], rooms: [`chat:${room.id}`], except: [`user:${a.id}`, `user:${b.id}`] }),
      [200, 202],
    );
    assert.deepEqual(await toC, [1, 2]);
    assert.deepEqual(await Promise.all(skipped), [true, true], 'a socket in except got the event');
  });

  it('delivers once to a socket named by several targets', async () => {
    const [a, b] = await makeUsers(ctx.server, 2, 'dup');
    const room = await createGroup(a, [b], 'dup room');
    const { socket } = await b.connect();
    const seen = [];
    socket.on('twice', (p) => seen.push(p));
    const first = once(socket, 'twice', 5000);
    httpStatus(await broadcast({ event: 'twice', data: null, rooms: [`chat:${room.id}`, `user:${b.id}`], userIds: [b.id] }), [200, 202]);
    await first;
    await new Promise((r) => setTimeout(r, QUIET_MS));
    assert.equal(seen.length, 1);
  });

  it('reaches feed:public subscribers', async () => {
    const reader = await makeUser(ctx.server, 'fp');
    const { socket } = await reader.connect();
    ackOk(await emitAck(socket, 'feed:subscribe'));
    const got = once(socket, 'announcement', 5000);
    httpStatus(await broadcast({ event: 'announcement', data: { hi: true }, rooms: ['feed:public'] }), [200, 202]);
    assert.deepEqual(await got, { hi: true });
  });

  it('refuses reserved event names, missing targets and bad fields', async () => {
    for (const event of ['connect', 'connect_error', 'disconnect', 'disconnecting', 'newListener', 'removeListener']) {
      httpError(await broadcast({ event, data: {}, userIds: ['u'] }), 400, 'INVALID_PAYLOAD', { field: 'event' });
    }
    httpError(await broadcast({ event: '', data: {}, userIds: ['u'] }), 400, 'INVALID_PAYLOAD', { field: 'event' });
    httpError(await broadcast({ event: 'x'.repeat(65), data: {}, userIds: ['u'] }), 400, 'INVALID_PAYLOAD', { field: 'event' });
    httpError(await broadcast({ event: 'ok', data: {} }), 400, 'INVALID_PAYLOAD', { field: 'rooms' });
    httpError(await broadcast({ event: 'ok', data: {}, rooms: [], userIds: [] }), 400, 'INVALID_PAYLOAD', { field: 'rooms' });
    httpError(await broadcast({ event: 'ok', data: {}, userIds: [''] }), 400, 'INVALID_PAYLOAD', { field: 'userIds' });
    httpError(await broadcast({ event: 'ok', data: {}, rooms: [''] }), 400, 'INVALID_PAYLOAD', { field: 'rooms' });
    httpError(await broadcast({ event: 'ok', rooms: ['feed:public'] }), 400, 'INVALID_PAYLOAD', { field: 'data' });
    httpError(await broadcast({ event: 'ok', data: {}, rooms: 'feed:public' }), 400, 'INVALID_PAYLOAD', { field: 'rooms' });
  });
});
