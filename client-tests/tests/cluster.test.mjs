// Many nodes (contract §9): Switchboard processes sharing one Redis and one PostgreSQL behave as
// one server. Every test here places its sockets on chosen nodes (A, B, C = nodes 0, 1, 2) and
// checks what crosses between them: chat, typing, receipts, membership changes, presence (also
// when a node is SIGKILLed), the per-user connection limit and the rate limit (both shared),
// notifications, feed fan-out, service broadcasts, caches invalidated across nodes, and a Redis
// restart in the middle of a run.
//
// Runs with SWITCHBOARD_NODES set (`npm run test:cluster`); each block starts its own cluster.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ackError, ackOk, assertIncludes, httpError, httpStatus } from '../lib/assertions.mjs';
import { createGroup, createPublic, inRoom, sendRest, sendSocket } from '../lib/chat.mjs';
import { NODE_TTL_MS, startCluster } from '../lib/cluster.mjs';
import { freshDatabase, startRedis } from '../lib/infra.mjs';
import { startServer } from '../lib/server.mjs';
import { closeAll, connect, connectError, emitAck, eventually, none, once, range, record } from '../lib/client.mjs';
import { CLUSTER_MODE, makeUser, makeUsers } from '../lib/harness.mjs';

const SKIP = CLUSTER_MODE ? false : 'multi-node tests: set SWITCHBOARD_NODES (npm run test:cluster)';
const QUIET_MS = 800;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Starts a cluster of `nodes` for the enclosing describe; `ctx.cluster` once `before` ran. */
function useCluster(nodes, env = {}) {
  const ctx = { cluster: null };
  before(async () => {
    ctx.cluster = await startCluster({ nodes, env });
  });
  after(async () => {
    closeAll();
    await ctx.cluster?.stop();
  });
  return ctx;
}

/** A socket of `user` on node `i` of the cluster: `{ socket, ready }`. */
const on = (cluster, i, user, opts) => connect(cluster.nodes[i], user.token, opts);
const socketOn = async (cluster, i, user, opts) => (await on(cluster, i, user, opts)).socket;

/** A REST call of `user` (under /api/v1/realtime) on node `i`. */
const restOn = (cluster, i, user, method, path, opts = {}) =>
  cluster.nodes[i].api(method, `/api/v1/realtime${path}`, { token: user.token, ...opts });

const newMessage = (socket, roomId, timeoutMs = 5000) => once(socket, 'chat:new_message', timeoutMs, inRoom(roomId));
const about = (userId, status) => (p) => p?.userId === userId && (status === undefined || p.status === status);

/** Awaits `promise`; a failure names `what` and, when given, what was recorded so far. */
async function expecting(what, promise, recorded) {
  try {
    return await promise;
  } catch (err) {
    const seen = recorded ? `; recorded: ${JSON.stringify(recorded.items.map((p) => [p.userId, p.status]))}` : '';
    throw new Error(`${what}: ${err.message}${seen}`, { cause: err });
  }
}

async function follow(server, follower, followee) {
  const res = await server.service('PUT', '/follows', { followerId: follower.id, followeeId: followee.id });
  httpStatus(res, 200);
}

async function health(node) {
  try {
    return await node.api('GET', '/health');
  } catch (err) {
    return { status: 0, body: { error: err.message } };
  }
}

describe('cluster: three nodes behave as one server', { skip: SKIP }, () => {
  const ctx = useCluster(3, { MAX_CONNECTIONS_PER_USER: '3', RATE_LIMIT_PER_MINUTE: '5' });

  it('every node reports Redis and the database as ok', async () => {
    for (const node of ctx.cluster.nodes) {
      const body = httpStatus(await node.api('GET', '/health'), 200);
      assert.deepEqual(body.services, { database: 'ok', redis: 'ok' });
    }
  });

  it('a message sent on A reaches sockets on A, B and C, never the sending socket', async () => {
    const c = ctx.cluster;
    const [a, b, d] = await makeUsers(c, 3, 'xmsg');
    const room = await createGroup(a, [b, d], 'across nodes');
    const a1 = await socketOn(c, 0, a);
    const a2 = await socketOn(c, 0, a);
    const bs = await socketOn(c, 1, b);
    const ds = await socketOn(c, 2, d);
    const receivers = [a2, bs, ds].map((s) => newMessage(s, room.id));
    const notToSender = none(a1, 'chat:new_message', QUIET_MS, inRoom(room.id));
    const sent = await sendSocket(a1, room.id, 'hello from A');
    for (const p of await Promise.all(receivers)) assert.deepEqual(p.message, sent);
    assert.ok(await notToSender, 'the sending socket got its own message');

    // and back: a REST send on node C reaches every socket, the sender's included
    const all = [a1, a2, bs, ds].map((s) => newMessage(s, room.id));
    const res = await restOn(c, 2, d, 'POST', `/chat/rooms/${room.id}/messages`, { body: { message: 'from C over REST' } });
    const viaRest = httpStatus(res, 201);
    assert.equal(viaRest.seq, sent.seq + 1);
    for (const p of await Promise.all(all)) assert.equal(p.message.id, viaRest.id);
  });

  it('seq stays gapless with senders on every node', { timeout: 30_000 }, async () => {
    const c = ctx.cluster;
    const users = await makeUsers(c, 3, 'xseq');
    const [owner, ...others] = users;
    const room = await createGroup(owner, others, 'seq across nodes');
    const sockets = await Promise.all(users.map((u, i) => socketOn(c, i, u)));
    const observer = record(sockets[0], 'chat:new_message', inRoom(room.id));
    // 3 users x 4 messages: within RATE_LIMIT_PER_MINUTE=5 each
    const sends = sockets.flatMap((s, i) => range(1, 4).map((n) => sendSocket(s, room.id, `node ${i} #${n}`)));
    const messages = await Promise.all(sends);
    assert.deepEqual(messages.map((m) => m.seq).sort((x, y) => x - y), range(1, 12));
    await observer.count(8); // everything but node 0's own 4
    assert.equal(observer.items.length, 8);
  });

  it('typing on A is seen on B, and the automatic isTyping:false arrives on B', async () => {
    const c = ctx.cluster;
    const [a, b] = await makeUsers(c, 2, 'xtyp');
    const room = await createGroup(a, [b], 'typing');
    const as = await socketOn(c, 0, a);
    const aOther = await socketOn(c, 2, a);
    const bs = await socketOn(c, 1, b);
    const typing = (v) => inRoom(room.id, (p) => p.userId === a.id && p.isTyping === v);
    const started = once(bs, 'chat:user_typing', 5000, typing(true));
    const stopped = once(bs, 'chat:user_typing', 5000, typing(false));
    const notOwn = none(aOther, 'chat:user_typing', QUIET_MS);
    ackOk(await emitAck(as, 'chat:typing', { roomId: room.id, isTyping: true }));
    assertIncludes(await started, { roomId: room.id, userId: a.id, isTyping: true });
    assertIncludes(await stopped, { roomId: room.id, userId: a.id, isTyping: false });
    assert.ok(await notOwn, 'the typing user\'s socket on another node got chat:user_typing');
  });

  it('read and delivered receipts sent on B reach A and C', async () => {
    const c = ctx.cluster;
    const [a, b, d] = await makeUsers(c, 3, 'xrcpt');
    const room = await createGroup(a, [b, d], 'receipts');
    const as = await socketOn(c, 0, a);
    const bs = await socketOn(c, 1, b);
    const ds = await socketOn(c, 2, d);
    for (const n of range(1, 3)) await sendRest(a, room.id, `m${n}`);
    const read = [as, ds].map((s) => once(s, 'chat:messages_read', 5000, inRoom(room.id)));
    const delivered = once(as, 'chat:messages_delivered', 5000, inRoom(room.id));
    ackOk(await emitAck(bs, 'chat:delivered', { roomId: room.id, upToSeq: 3 }));
    assert.equal(ackOk(await emitAck(bs, 'chat:read', { roomId: room.id, upToSeq: 2 })).unreadCount, 1);
    for (const p of await Promise.all(read)) assertIncludes(p, { roomId: room.id, userId: b.id, upToSeq: 2 });
    assertIncludes(await delivered, { roomId: room.id, userId: b.id, upToSeq: 3 });
    // the stored watermark is the same whichever node answers
    for (const i of [0, 1, 2]) {
      const room1 = httpStatus(await restOn(c, i, b, 'GET', `/chat/rooms/${room.id}`), 200);
      assert.equal(room1.unreadCount, 1, `unreadCount on node ${i}`);
    }
  });

  it('a member added over REST on A: their socket on B gets member_added and the room\'s messages at once', async () => {
    const c = ctx.cluster;
    const [a, b, d] = await makeUsers(c, 3, 'xadd');
    const room = await createGroup(a, [b], 'grows');
    const bs = await socketOn(c, 2, b);
    const ds = await socketOn(c, 1, d);
    // warm every node's membership cache for this room first
    await sendSocket(bs, room.id, 'before d');
    const added = once(ds, 'chat:room_updated', 5000, (p) => p?.room?.id === room.id && p.change === 'member_added');
    httpStatus(await restOn(c, 0, a, 'POST', `/chat/rooms/${room.id}/members`, { body: { userIds: [d.id] } }), [200, 201]);
    await added;
    const incoming = newMessage(ds, room.id);
    const sent = await sendSocket(bs, room.id, 'welcome d');
    assert.equal((await incoming).message.id, sent.id);
    // d may now send from node B (its membership is known there too)
    const toB = newMessage(bs, room.id);
    const fromD = await sendSocket(ds, room.id, 'thanks');
    assert.equal((await toB).message.id, fromD.id);
  });

  it('a member removed over REST on C: their socket on B stops receiving and is refused at once', async () => {
    const c = ctx.cluster;
    const [a, b, d] = await makeUsers(c, 3, 'xrm');
    const room = await createGroup(a, [b, d], 'shrinks');
    const as = await socketOn(c, 0, a);
    const ds = await socketOn(c, 1, d);
    await sendSocket(ds, room.id, 'd was here'); // warm node B's cache with d as a member
    const removed = once(ds, 'chat:room_updated', 5000, (p) => p?.room?.id === room.id && p.change === 'member_removed');
    assert.equal((await restOn(c, 2, a, 'DELETE', `/chat/rooms/${room.id}/members/${encodeURIComponent(d.id)}`)).status, 204);
    await removed;
    const quiet = none(ds, 'chat:new_message', QUIET_MS, inRoom(room.id));
    await sendSocket(as, room.id, 'd must not see this');
    assert.ok(await quiet, 'a removed member\'s socket on another node still got the room\'s message');
    ackError(await emitAck(ds, 'chat:message', { roomId: room.id, message: 'still here?' }), 'FORBIDDEN');
  });

  it('joining a public room on B, created on A, delivers its messages from C', async () => {
    const c = ctx.cluster;
    const [a, b, d] = await makeUsers(c, 3, 'xpub');
    const room = await createPublic(a, 'open');
    const bs = await socketOn(c, 1, b);
    const ds = await socketOn(c, 2, d);
    ackOk(await emitAck(bs, 'chat:join', { roomId: room.id }));
    ackOk(await emitAck(ds, 'chat:join', { roomId: room.id }));
    const incoming = newMessage(bs, room.id);
    const sent = await sendSocket(ds, room.id, 'hello public');
    assert.equal((await incoming).message.id, sent.id);
  });

  it('a preference changed on one node takes effect on the others (shareTyping, inApp)', async () => {
    const c = ctx.cluster;
    const [a, b] = await makeUsers(c, 2, 'xpref');
    const warm = await createGroup(a, [b], 'prefs warm');
    // a second room: the typing throttle is per user and room, so it cannot hide anything here
    const check = await createGroup(a, [b], 'prefs check');
    const as = await socketOn(c, 0, a);
    const bs = await socketOn(c, 1, b);
    const typingOf = (roomId) => inRoom(roomId, (p) => p.userId === a.id && p.isTyping);
    // node A has looked at a's preferences: typing is shown
    const shown = once(bs, 'chat:user_typing', 5000, typingOf(warm.id));
    ackOk(await emitAck(as, 'chat:typing', { roomId: warm.id, isTyping: true }));
    await shown;
    // turned off through node C
    const off = { preferences: { shareTyping: false } };
    httpStatus(await restOn(c, 2, a, 'PUT', '/notifications/preferences', { body: off }), 200);
    const hidden = none(bs, 'chat:user_typing', QUIET_MS, typingOf(check.id));
    ackOk(await emitAck(as, 'chat:typing', { roomId: check.id, isTyping: true }));
    assert.ok(await hidden, 'node A still forwarded typing after shareTyping was turned off on node C');

    // in-app delivery: node B delivers one, the type is turned off on node A, node B must not deliver
    const like = { userIds: [b.id], type: 'like', title: 't', message: 'm' };
    const first = once(bs, 'notification:new', 5000);
    httpStatus(await c.nodes[1].service('POST', '/notifications', like), 201);
    await first;
    const noLikes = { preferences: { like: { inApp: false } } };
    httpStatus(await restOn(c, 0, b, 'PUT', '/notifications/preferences', { body: noLikes }), 200);
    const quiet = none(bs, 'notification:new', QUIET_MS);
    httpStatus(await c.nodes[1].service('POST', '/notifications', like), 201);
    assert.ok(await quiet, 'node B delivered a type whose in-app delivery was turned off on node A');
  });

  it('a user with sockets on two nodes turns offline only after both close, with one update per change', { timeout: 20_000 }, async () => {
    const c = ctx.cluster;
    const [watcher, subject] = await makeUsers(c, 2, 'xpres');
    await follow(c, watcher, subject);
    const ws = await socketOn(c, 2, watcher);
    const updates = record(ws, 'presence:update', about(subject.id));
    const s1 = await socketOn(c, 0, subject);
    const s2 = await socketOn(c, 1, subject);
    await expecting('online', updates.until((l) => l.some((p) => p.status === 'online')), updates);
    s1.close();
    await sleep(1200); // well past PRESENCE_GRACE_MS=300: still online thanks to the socket on B
    assert.deepEqual(updates.items.map((p) => p.status), ['online'], 'presence changed while a socket was still connected');
    s2.close();
    await expecting('offline once both sockets closed', updates.until((l) => l.some((p) => p.status === 'offline'), 5000), updates);
    await sleep(1500); // record a while longer: no duplicates from other nodes
    updates.stop();
    assert.deepEqual(updates.items.map((p) => p.status), ['online', 'offline'], 'exactly one update per change');
  });

  it('presence set on one node is what every node reports', async () => {
    const c = ctx.cluster;
    const [watcher, subject] = await makeUsers(c, 2, 'xpres2');
    await follow(c, watcher, subject);
    const ws = await socketOn(c, 0, watcher);
    const online = once(ws, 'presence:update', 5000, about(subject.id, 'online'));
    const ss = await socketOn(c, 1, subject);
    await online;
    const busy = once(ws, 'presence:update', 5000, about(subject.id, 'busy'));
    ackOk(await emitAck(ss, 'presence:status', { status: 'busy' }));
    await busy;
    for (const i of [0, 1, 2]) {
      const me = httpStatus(await restOn(c, i, subject, 'GET', '/presence/me'), 200);
      assert.equal(me.status, 'busy', `GET /presence/me on node ${i}`);
      const friends = httpStatus(await restOn(c, i, watcher, 'GET', '/presence/online-friends'), 200);
      assert.deepEqual(friends.items.map((f) => f.userId), [subject.id], `online-friends on node ${i}`);
    }
    const activity = once(ws, 'presence:friend_activity', 5000, (p) => p?.userId === subject.id);
    httpStatus(await restOn(c, 2, subject, 'PUT', '/presence/activity', { body: { activity: 'reading' } }), 200);
    assertIncludes(await activity, { userId: subject.id, activity: 'reading' });
  });

  it('the per-user connection limit counts sockets on every node (MAX_CONNECTIONS_PER_USER=3)', async () => {
    const c = ctx.cluster;
    const user = await makeUser(c, 'xlimit');
    const sockets = [await socketOn(c, 0, user), await socketOn(c, 0, user), await socketOn(c, 1, user)];
    for (const i of [0, 1, 2]) {
      const err = await connectError(c.nodes[i], { auth: { token: user.token } });
      assert.equal(err.message, 'TOO_MANY_CONNECTIONS', `4th socket on node ${i}`);
    }
    sockets[2].close();
    const again = await eventually(() => on(c, 2, user, { readyTimeoutMs: 2000 }), { timeoutMs: 5000, intervalMs: 100 });
    assert.ok(again.socket.connected);
  });

  it('the rate limit is shared by all nodes (RATE_LIMIT_PER_MINUTE=5)', async () => {
    const c = ctx.cluster;
    const [a, b] = await makeUsers(c, 2, 'xrate');
    const room = await createGroup(a, [b], 'limited');
    const onA = await socketOn(c, 0, a);
    const onB = await socketOn(c, 1, a);
    for (const n of range(1, 3)) await sendSocket(onA, room.id, `A ${n}`);
    for (const n of range(1, 2)) await sendSocket(onB, room.id, `B ${n}`);
    for (const s of [onA, onB]) {
      const error = ackError(await emitAck(s, 'chat:message', { roomId: room.id, message: 'one too many' }), 'RATE_LIMITED');
      assert.equal(typeof error.retryAfterMs, 'number');
    }
    for (const i of [0, 1, 2]) {
      httpError(await restOn(c, i, a, 'POST', `/chat/rooms/${room.id}/messages`, { body: { message: 'rest' } }), 429, 'RATE_LIMITED');
    }
  });

  it('a service broadcast made on A reaches users and rooms on B and C', async () => {
    const c = ctx.cluster;
    const [a, b, d] = await makeUsers(c, 3, 'xbc');
    const room = await createGroup(a, [b, d], 'broadcast');
    const bs = await socketOn(c, 1, b);
    const ds = await socketOn(c, 2, d);
    const toB = once(bs, 'promo', 5000);
    httpStatus(await c.nodes[0].service('POST', '/broadcast', { event: 'promo', data: { n: 1 }, userIds: [b.id] }), [200, 202]);
    assert.deepEqual(await toB, { n: 1 });

    const toRoom = [bs, ds].map((s) => once(s, 'room-wide', 5000));
    const skipped = none(bs, 'except-b', QUIET_MS);
    const toD = once(ds, 'except-b', 5000);
    httpStatus(await c.nodes[0].service('POST', '/broadcast', { event: 'room-wide', data: 'x', rooms: [`chat:${room.id}`] }), [200, 202]);
    await Promise.all(toRoom);
    httpStatus(
      await c.nodes[0].service('POST', '/broadcast', { event: 'except-b', data: 'y', rooms: [`chat:${room.id}`], except: [`user:${b.id}`] }),
      [200, 202],
    );
    assert.equal(await toD, 'y');
    assert.ok(await skipped, 'except was ignored on another node');
  });

  it('a notification created through node A reaches the user\'s sockets on B and C', async () => {
    const c = ctx.cluster;
    const user = await makeUser(c, 'xnotif');
    const sb = await socketOn(c, 1, user);
    const sc = await socketOn(c, 2, user);
    const news = [sb, sc].map((s) => once(s, 'notification:new', 5000));
    const counts = [sb, sc].map((s) => once(s, 'notification:unread_count', 5000, (p) => p?.count === 1));
    const res = await c.nodes[0].service('POST', '/notifications', { userIds: [user.id], type: 'comment', title: 'Hi', message: 'there' });
    const created = httpStatus(res, 201).notifications[0];
    for (const n of await Promise.all(news)) assert.equal(n.id, created.id);
    await Promise.all(counts);
    // mark read on B: C hears the new count
    const zero = once(sc, 'notification:unread_count', 5000, (p) => p?.count === 0);
    assert.equal(ackOk(await emitAck(sb, 'notifications:mark_read', { all: true })).unreadCount, 0);
    await zero;
  });

  it('a feed activity published on A reaches a subscribed follower on B and public readers on C', async () => {
    const c = ctx.cluster;
    const [actor, fan, reader] = await makeUsers(c, 3, 'xfeed');
    await follow(c, fan, actor);
    const fs = await socketOn(c, 1, fan);
    const rs = await socketOn(c, 2, reader);
    ackOk(await emitAck(fs, 'feed:subscribe', { followingOnly: true }));
    ackOk(await emitAck(rs, 'feed:subscribe', {}));
    const toFan = once(fs, 'feed:new_post', 5000, (p) => p?.actorId === actor.id);
    const quietReader = none(rs, 'feed:new_post', QUIET_MS, (p) => p?.actorId === actor.id);
    const res = await c.nodes[0].service('POST', '/feed/activities', {
      activityType: 'post', actorId: actor.id, targetId: 'p1', targetType: 'post',
    });
    const stored = httpStatus(res, 201);
    assert.deepEqual(await toFan, stored);
    assert.ok(await quietReader, 'a followers-only activity reached a public reader');

    const publicToReader = once(rs, 'feed:activity', 5000, (p) => p?.actorId === actor.id);
    httpStatus(await c.nodes[0].service('POST', '/feed/activities', {
      activityType: 'like', actorId: actor.id, targetId: 'p2', targetType: 'post', audience: 'public',
    }), 201);
    await publicToReader;
  });
});

describe('cluster: a node killed with SIGKILL', { skip: SKIP }, () => {
  const ctx = useCluster(3, { MAX_CONNECTIONS_PER_USER: '3' });

  it('its users turn offline on the other nodes within NODE_TTL_MS + 3 s; users also on a live node stay online', { timeout: 30_000 }, async () => {
    const c = ctx.cluster;
    const [watcher, gone, both, full] = await makeUsers(c, 4, 'kill');
    for (const u of [gone, both]) await follow(c, watcher, u);
    const ws = await socketOn(c, 0, watcher);
    const updates = record(ws, 'presence:update');
    await socketOn(c, 2, gone);
    await socketOn(c, 2, both);
    await socketOn(c, 1, both);
    // a user whose every allowed socket is on the doomed node
    for (let i = 0; i < 3; i += 1) await socketOn(c, 2, full);
    await expecting(
      'both followees online before the kill',
      updates.until((l) => [gone.id, both.id].every((id) => l.some(about(id, 'online'))), 5000),
      updates,
    );

    // sanity: before the kill, messages cross from node 1 to node 0
    const room = await createGroup(watcher, [both], 'survivors');
    const bs = await socketOn(c, 1, both);
    const before = newMessage(ws, room.id);
    await sendSocket(bs, room.id, 'before');
    await before;

    const killedAt = Date.now();
    await c.kill(2);
    await expecting(
      `offline within NODE_TTL_MS (${NODE_TTL_MS}) + 3 s of the kill for a user only on the killed node`,
      updates.until((l) => l.some(about(gone.id, 'offline')), NODE_TTL_MS + 3000),
      updates,
    );
    const took = Date.now() - killedAt;
    assert.ok(took <= NODE_TTL_MS + 3000, `offline came ${took} ms after the kill`);

    // the user who still has a socket on node 1 never went offline
    await sleep(1000);
    assert.ok(!updates.items.some(about(both.id, 'offline')), `${both.id} went offline although still connected to node 1`);

    // the survivors still talk to each other
    const after = newMessage(ws, room.id);
    await sendSocket(bs, room.id, 'after');
    await after;

    // the dead node's sockets no longer count toward the connection limit
    const back = await eventually(() => on(c, 1, full, { readyTimeoutMs: 2000 }), { timeoutMs: 3000, intervalMs: 200 });
    assert.ok(back.socket.connected);
    updates.stop();
  });

  it('the surviving nodes stay healthy and keep serving REST', async () => {
    const c = ctx.cluster;
    for (const node of c.alive()) {
      const body = httpStatus(await node.api('GET', '/health'), 200);
      assert.deepEqual(body.services, { database: 'ok', redis: 'ok' });
    }
    const [a, b] = await makeUsers(c, 2, 'after-kill');
    const room = await createGroup(a, [b], 'after the kill');
    const bs = await socketOn(c, 1, b);
    const incoming = newMessage(bs, room.id);
    await sendRest(a, room.id, 'still here');
    await incoming;
  });
});

const EXTERNAL_REDIS = process.env.REDIS_URL ? 'REDIS_URL names an external Redis, which the tests cannot restart' : false;

describe('cluster: Redis restarted mid-run', { skip: SKIP || EXTERNAL_REDIS }, () => {
  const ctx = useCluster(2);
  const state = {};

  before(async () => {
    const c = ctx.cluster;
    const [a, b, d] = await makeUsers(c, 3, 'redis');
    const room = await createGroup(a, [b, d], 'outage');
    Object.assign(state, {
      a, b, d, room,
      as: await socketOn(c, 0, a), // node 0
      bs: await socketOn(c, 0, b), // node 0, same node as a
      ds: await socketOn(c, 1, d), // node 1
    });
  });

  it('before: cross-node delivery works', async () => {
    const { room, as, ds } = state;
    const incoming = newMessage(ds, room.id);
    await sendSocket(as, room.id, 'before the outage');
    await incoming;
  });

  it('Redis down: every node\'s /health answers 503 with services.redis "down"', { timeout: 30_000 }, async () => {
    const c = ctx.cluster;
    await c.redis.down();
    for (const node of c.nodes) {
      const res = await eventually(
        async () => {
          const r = await health(node);
          return r.status === 503 && r.body?.services?.redis === 'down' ? r : null;
        },
        { timeoutMs: 10_000, intervalMs: 200 },
      ).catch(() => health(node));
      assert.equal(res.status, 503, `/health during the outage: ${JSON.stringify(res.body)}`);
      assertIncludes(res.body.services, { redis: 'down', database: 'ok' }, 'services');
    }
  });

  it('Redis down: a message between two sockets of the same node is still delivered', { timeout: 20_000 }, async () => {
    const { room, as, bs } = state;
    assert.equal(ctx.cluster.redis.isRunning(), false, 'Redis should be down for this test');
    const incoming = newMessage(bs, room.id, 8000).then(() => 'delivered', (err) => err.message);
    const ack = await emitAck(as, 'chat:message', { roomId: room.id, message: 'during the outage' }, 8000).catch((err) => ({
      noAck: err.message,
    }));
    const delivered = await incoming;
    assert.equal(delivered, 'delivered', `not delivered to the other socket on the same node; the sender's ack: ${JSON.stringify(ack)}`);
    ackOk(ack);
  });

  it('Redis back on the same port: every node answers /health 200 again, without a restart', { timeout: 30_000 }, async () => {
    const c = ctx.cluster;
    await c.redis.start();
    // the nodes reconnect with a backoff of at most 5 s
    for (const node of c.nodes) {
      await eventually(async () => (await health(node)).status === 200, { timeoutMs: 15_000, intervalMs: 200 }).catch(() => {});
      const res = await health(node);
      assert.equal(res.status, 200, `/health after the outage: ${JSON.stringify(res.body)}`);
      assert.deepEqual(res.body.services, { database: 'ok', redis: 'ok' });
      assert.equal(node.exited, null, 'a node exited');
    }
  });

  it('after Redis is back, cross-node delivery works again without restarting any node', { timeout: 30_000 }, async () => {
    const { room, as, ds } = state;
    let n = 0;
    await eventually(
      async () => {
        n += 1;
        const incoming = newMessage(ds, room.id, 1500).then(() => true, () => false);
        await sendSocket(as, room.id, `after the outage ${n}`);
        if (await incoming) return true;
        throw new Error(`${n} sends on node 0 since Redis came back, none reached the socket on node 1`);
      },
      { timeoutMs: 20_000, intervalMs: 250 },
    );
    // and the other way round
    const back = newMessage(as, room.id);
    await sendSocket(ds, room.id, 'from node 1');
    await back;
  });

  it('after Redis is back, new connections and presence work across nodes', { timeout: 30_000 }, async () => {
    const c = ctx.cluster;
    const [watcher, subject] = await makeUsers(c, 2, 'redis-pres');
    await follow(c, watcher, subject);
    const ws = await socketOn(c, 0, watcher);
    const online = once(ws, 'presence:update', 8000, about(subject.id, 'online'));
    await socketOn(c, 1, subject);
    await online;
  });
});

describe('cluster: nodes started at the same moment on a fresh database', { skip: SKIP }, () => {
  // startCluster() starts the first node alone; a deployment (docker-compose, a rollout) starts
  // them together, and the migrations must not trip over each other.
  it('all come up healthy and share one schema', { timeout: 60_000 }, async () => {
    const redis = await startRedis();
    const db = await freshDatabase();
    const env = { REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.keyPrefix, DATABASE_URL: db.url, NODE_TTL_MS: String(NODE_TTL_MS) };
    const started = await Promise.allSettled([0, 1, 2].map((i) => startServer(env, { label: `together${i}` })));
    const nodes = started.filter((r) => r.status === 'fulfilled').map((r) => r.value);
    try {
      const failures = started
        .filter((r) => r.status === 'rejected')
        .map((r) => r.reason.message.split('\n').filter((l) => /error|Caused|duplicate/i.test(l)).slice(0, 3).join(' | '));
      assert.deepEqual(failures, [], 'nodes failed to start together');
      const [a, b] = [
        await makeUser(nodes[0], 'together-a'),
        await makeUser(nodes[1], 'together-b'),
      ];
      const room = await createGroup(a, [b], 'together');
      const bs = (await connect(nodes[2], b.token)).socket;
      const incoming = newMessage(bs, room.id);
      await sendRest(a, room.id, 'all three');
      await incoming;
    } finally {
      closeAll();
      await Promise.allSettled(nodes.map((n) => n.stop()));
      await redis.stop();
      await db.drop().catch(() => {});
    }
  });
});
