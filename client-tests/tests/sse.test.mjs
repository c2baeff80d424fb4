// SSE (`GET /api/v1/realtime/stream`), read with fetch as an EventSource would: 401 in the
// contract's shape before the stream, session:ready first (with the retry hint and the resume
// cursor as its id), live events caused over REST and Socket.IO (chat, typing, receipts,
// notifications, presence, feed, membership), Last-Event-ID resume after a gap, room streams,
// the per-user limit over sockets and streams together, and on a cluster a stream on one node
// fed by actions on another.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ackOk } from '../lib/assertions.mjs';
import { createDirect, createGroup, sendRest } from '../lib/chat.mjs';
import { connectError, emitAck } from '../lib/client.mjs';
import { CLUSTER_MODE, makeUser, nodesOf, useServer } from '../lib/harness.mjs';
import { STREAM, openStream } from '../lib/sse.mjs';

const openFor = (server, user, opts = {}) => openStream(server.url, STREAM, { token: user.token, ...opts });

describe('SSE stream', () => {
  const ctx = useServer({ SSE_KEEPALIVE_MS: '200', TYPING_THROTTLE_MS: '0', MAX_CONNECTIONS_PER_USER: '3' });

  it('refuses a missing or bad token with 401 before streaming', async () => {
    for (const opts of [{}, { token: 'nope' }, { bearer: 'nope' }]) {
      const refused = await openStream(ctx.server.url, STREAM, opts);
      assert.equal(refused.status, 401, JSON.stringify(opts));
      assert.equal(refused.body.error.code, 'UNAUTHORIZED');
    }
  });

  it('starts with session:ready, then delivers chat, typing and receipts from REST and sockets', async () => {
    const [a, b, c] = [await makeUser(ctx.server, 'a'), await makeUser(ctx.server, 'b'), await makeUser(ctx.server, 'c')];
    const room = await createGroup(a, [b, c]);
    const stream = await openFor(ctx.server, b);
    assert.equal(stream.status, 200);
    assert.match(stream.headers.get('content-type'), /^text\/event-stream/);
    const ready = await stream.next();
    assert.equal(ready.event, 'session:ready');
    assert.equal(ready.retry, 3000);
    assert.equal(ready.data.userId, b.id);
    assert.deepEqual(ready.data.rooms, [room.id]);
    assert.equal(ready.id, ready.data.cursor);

    const sent = await sendRest(a, room.id, 'over REST');
    const msg = await stream.named('chat:new_message');
    assert.equal(msg.data.message.id, sent.id);
    assert.ok(msg.id, 'journaled events carry their cursor');

    const { socket } = await a.connect();
    ackOk(await emitAck(socket, 'chat:message', { roomId: room.id, message: 'over the socket' }));
    assert.equal((await stream.named('chat:new_message')).data.message.content, 'over the socket');

    const typing = await a.api('POST', `/chat/rooms/${room.id}/typing`, { body: { isTyping: true } });
    assert.equal(typing.status, 200);
    const t = await stream.named('chat:user_typing');
    assert.deepEqual(t.data, { roomId: room.id, userId: a.id, isTyping: true });
    assert.equal(t.id, null, 'ephemeral events have no id');

    ackOk(await emitAck(socket, 'chat:typing', { roomId: room.id, isTyping: false }));
    assert.equal((await stream.named('chat:user_typing')).data.isTyping, false);

    const delivered = await c.api('POST', `/chat/rooms/${room.id}/delivered`, { body: { upToSeq: sent.seq } });
    assert.equal(delivered.status, 200);
    assert.equal((await stream.named('chat:messages_delivered')).data.userId, c.id);
    const read = await c.api('POST', `/chat/rooms/${room.id}/read`, { body: { upToSeq: sent.seq + 1 } });
    assert.equal(read.status, 200);
    assert.equal(read.body.unreadCount, 0);
    assert.equal((await stream.named('chat:messages_read')).data.userId, c.id);
    stream.close();
  });

  it('delivers notifications, presence, feed activities and membership changes', async () => {
    const [a, b] = [await makeUser(ctx.server, 'a'), await makeUser(ctx.server, 'b')];
    const stream = await openFor(ctx.server, b, { query: 'feed=all' });
    await stream.named('session:ready');

    const room = await createDirect(a, b);
    assert.equal((await stream.named('chat:room_updated')).data.room.id, room.id);

    const res = await ctx.server.service('POST', '/notifications', { userIds: [b.id], type: 'system', title: 'Hi', message: 'there' });
    assert.equal(res.status, 201);
    const n = await stream.named('notification:new');
    assert.equal(n.data.title, 'Hi');
    assert.ok(n.id);

    const { socket } = await a.connect();
    assert.equal((await stream.named('presence:update', 5000, (p) => p.userId === a.id && p.status === 'online')).data.userId, a.id);
    const status = await a.api('PUT', '/presence/status', { body: { status: 'busy' } });
    assert.equal(status.status, 200);
    await stream.named('presence:update', 5000, (p) => p.userId === a.id && p.status === 'busy');
    socket.close();

    const act = await ctx.server.service('POST', '/feed/activities', {
      activityType: 'post', actorId: a.id, targetId: 'x', targetType: 'post', audience: 'public',
    });
    assert.equal(act.status, 201);
    assert.equal((await stream.named('feed:new_post')).data.actorId, a.id);
    stream.close();
  });

  it('resumes from Last-Event-ID after a gap: exactly the missed events, then live', async () => {
    const [a, b] = [await makeUser(ctx.server, 'a'), await makeUser(ctx.server, 'b')];
    const room = await createGroup(a, [b]);
    let stream = await openFor(ctx.server, b);
    await stream.named('session:ready');
    await sendRest(a, room.id, 'one');
    const last = await stream.named('chat:new_message');
    stream.close();

    await sendRest(a, room.id, 'two');
    await sendRest(a, room.id, 'three');
    stream = await openFor(ctx.server, b, { lastEventId: last.id });
    const ready = await stream.next();
    assert.equal(ready.event, 'session:ready');
    assert.equal(ready.data.recovered, true);
    assert.deepEqual(ready.data.reset, []);
    assert.equal(ready.data.replayed, 2);
    assert.deepEqual([(await stream.next()).data.message.content, (await stream.next()).data.message.content], ['two', 'three']);
    await sendRest(a, room.id, 'four');
    assert.equal((await stream.next()).data.message.content, 'four');
    stream.close();
  });

  it('streams one room to its members only', async () => {
    const [a, b, c] = [await makeUser(ctx.server, 'a'), await makeUser(ctx.server, 'b'), await makeUser(ctx.server, 'c')];
    const room = await createGroup(a, [b]);
    const other = await createGroup(a, [b]);
    const refused = await openStream(ctx.server.url, `${STREAM}/rooms/${room.id}`, { token: c.token });
    assert.equal(refused.status, 403);
    assert.equal(refused.body.error.code, 'FORBIDDEN');
    const stream = await openStream(ctx.server.url, `${STREAM}/rooms/${room.id}`, { token: b.token });
    await stream.named('session:ready');
    await sendRest(a, other.id, 'elsewhere');
    await sendRest(a, room.id, 'here');
    assert.equal((await stream.named('chat:new_message')).data.message.content, 'here');
    stream.close();
  });

  it('counts streams and sockets against one per-user limit', async () => {
    const u = await makeUser(ctx.server, 'limit');
    const { socket } = await u.connect();
    const s1 = await openFor(ctx.server, u);
    const s2 = await openFor(ctx.server, u);
    assert.equal(s1.status, 200);
    assert.equal(s2.status, 200);
    const refused = await openFor(ctx.server, u);
    assert.equal(refused.status, 429);
    assert.equal(refused.body.error.code, 'TOO_MANY_CONNECTIONS');
    const err = await connectError(ctx.server, { auth: { token: u.token } });
    assert.equal(err.message, 'TOO_MANY_CONNECTIONS');
    const status = await u.api('GET', '/status');
    assert.equal(status.body.byTransport.sse, 2);
    s1.close();
    s2.close();
    socket.close();
  });

  it('reports sessions per transport in /health and /metrics', async () => {
    const u = await makeUser(ctx.server, 'count');
    const stream = await openFor(ctx.server, u);
    await stream.named('session:ready');
    const health = await (await fetch(`${nodesOf(ctx.server)[0].url}/health`)).json();
    assert.equal(typeof health.transports.sse, 'number');
    assert.ok(CLUSTER_MODE || health.transports.sse >= 1, JSON.stringify(health));
    const metrics = await (await fetch(`${ctx.server.url}/metrics`)).text();
    assert.match(metrics, /switchboard_sessions\{transport="sse"\}/);
    stream.close();
  });
});

describe('SSE on a cluster', { skip: CLUSTER_MODE ? false : 'needs SWITCHBOARD_NODES' }, () => {
  const ctx = useServer();

  it('a stream on one node gets what is done on another, and resumes on either', async () => {
    const [n0, n1] = nodesOf(ctx.server);
    const [a, b] = [await makeUser(ctx.server, 'a'), await makeUser(ctx.server, 'b')];
    const room = await createGroup(a, [b]);
    const stream = await openStream(n1.url, STREAM, { token: b.token });
    await stream.named('session:ready');
    const res = await n0.api('POST', `/api/v1/realtime/chat/rooms/${room.id}/messages`, { token: a.token, body: { message: 'from n0' } });
    assert.equal(res.status, 201);
    const got = await stream.named('chat:new_message');
    assert.equal(got.data.message.content, 'from n0');
    stream.close();
    await n1.api('POST', `/api/v1/realtime/chat/rooms/${room.id}/messages`, { token: a.token, body: { message: 'missed' } });
    const again = await openStream(n0.url, STREAM, { token: b.token, lastEventId: got.id });
    assert.equal((await again.next()).data.recovered, true);
    assert.equal((await again.next()).data.message.content, 'missed');
    again.close();
  });
});
