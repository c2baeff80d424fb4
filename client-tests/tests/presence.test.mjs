// Presence: online while any socket is connected, offline only after PRESENCE_GRACE_MS (300 ms
// in tests) once the last socket is gone, away after IDLE_TIMEOUT_MS of no client events and
// back on the next event unless the user chose away/busy; updates reach followers and
// direct-room partners only, and nobody when the user turned shareOnlineStatus off;
// presence:activity and the REST presence routes.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ackError, ackOk, assertIncludes, rfc3339 } from '../lib/assertions.mjs';
import { createDirect, setPreferences } from '../lib/chat.mjs';
import { emitAck, none, once, record } from '../lib/client.mjs';
import { clusterSize } from '../lib/cluster.mjs';
import { makeUser, useServer } from '../lib/harness.mjs';

const about = (userId, status) => (p) => p?.userId === userId && (status === undefined || p.status === status);
const update = (socket, userId, status, timeoutMs = 4000) =>
  once(socket, 'presence:update', timeoutMs, about(userId, status));

async function follow(server, follower, followee) {
  const res = await server.service('PUT', '/follows', { followerId: follower.id, followeeId: followee.id });
  assert.ok(res.status < 300, `follow failed: ${res.status} ${JSON.stringify(res.body)}`);
}

/** A watcher who follows a fresh subject, with the watcher connected. */
async function watched(server, prefix) {
  const [watcher, subject] = [await makeUser(server, `${prefix}w`), await makeUser(server, `${prefix}s`)];
  await follow(server, watcher, subject);
  const { socket: ws } = await watcher.connect();
  return { watcher, subject, ws };
}

describe('presence (PRESENCE_GRACE_MS=300)', () => {
  const ctx = useServer();

  it('a follower sees a user come online; a stranger does not', async () => {
    const { subject, ws } = await watched(ctx.server, 'on');
    const stranger = await makeUser(ctx.server, 'stranger');
    const { socket: ss } = await stranger.connect();
    const seen = update(ws, subject.id, 'online');
    const unseen = none(ss, 'presence:update', 800, about(subject.id));
    await subject.connect();
    const p = await seen;
    assertIncludes(p, { userId: subject.id, status: 'online' });
    rfc3339(p.lastSeen, 'lastSeen');
    assert.equal(await unseen, true, 'a stranger received presence:update');
  });

  it('a direct-room partner sees presence without following', async () => {
    const [a, b] = [await makeUser(ctx.server, 'dpa'), await makeUser(ctx.server, 'dpb')];
    await createDirect(a, b);
    const { socket: as } = await a.connect();
    const seen = update(as, b.id, 'online');
    await b.connect();
    await seen;
  });

  it('turns offline only after the grace period', async () => {
    const { subject, ws } = await watched(ctx.server, 'grace');
    const online = update(ws, subject.id, 'online');
    const { socket } = await subject.connect();
    await online;
    const offline = update(ws, subject.id, 'offline', 4000);
    const early = none(ws, 'presence:update', 200, about(subject.id, 'offline'));
    const closedAt = Date.now();
    socket.close();
    assert.equal(await early, true, 'offline came before the grace period');
    const p = await offline;
    assert.ok(Date.now() - closedAt >= 250, 'offline came too early');
    rfc3339(p.lastSeen, 'lastSeen');
  });

  it('with two sockets, offline comes only when both are closed', async () => {
    const { subject, ws } = await watched(ctx.server, 'two');
    const online = update(ws, subject.id, 'online');
    const [{ socket: s1 }, { socket: s2 }] = [await subject.connect(), await subject.connect()];
    await online;
    const stillOnline = none(ws, 'presence:update', 800, about(subject.id, 'offline'));
    s1.close();
    assert.equal(await stillOnline, true, 'offline while a socket was still connected');
    const offline = update(ws, subject.id, 'offline');
    s2.close();
    await offline;
  });

  it('a reload within the grace period announces nothing', async () => {
    const { subject, ws } = await watched(ctx.server, 'reload');
    const online = update(ws, subject.id, 'online');
    const { socket } = await subject.connect();
    await online;
    const updates = record(ws, 'presence:update', about(subject.id));
    socket.close();
    await subject.connect();
    assert.equal(await none(ws, 'presence:update', 800, about(subject.id)), true);
    assert.deepEqual(updates.items, [], 'a reload flapped the presence');
    updates.stop();
  });

  it('presence:status busy is announced, kept through events, and cleared by online', async () => {
    const { subject, ws } = await watched(ctx.server, 'busy');
    const online = update(ws, subject.id, 'online');
    const { socket } = await subject.connect();
    await online;
    const busy = update(ws, subject.id, 'busy');
    ackOk(await emitAck(socket, 'presence:status', { status: 'busy' }));
    await busy;
    const noChange = none(ws, 'presence:update', 500, about(subject.id));
    ackOk(await emitAck(socket, 'notifications:subscribe', {}));
    assert.equal(await noChange, true, 'an event changed a chosen busy status');
    const back = update(ws, subject.id, 'online');
    ackOk(await emitAck(socket, 'presence:status', { status: 'online' }));
    await back;
  });

  it('rejects bad presence payloads', async () => {
    const user = await makeUser(ctx.server, 'bad');
    const { socket } = await user.connect();
    ackError(await emitAck(socket, 'presence:status', { status: 'offline' }), ['INVALID_PAYLOAD'], { field: 'status' });
    ackError(await emitAck(socket, 'presence:status', { status: 'asleep' }), ['INVALID_PAYLOAD'], { field: 'status' });
    ackError(await emitAck(socket, 'presence:activity', { activity: 'x'.repeat(65) }), ['INVALID_PAYLOAD'], {
      field: 'activity',
    });
    const big = { blob: 'x'.repeat(1100) };
    ackError(await emitAck(socket, 'presence:activity', { activity: 'ok', metadata: big }), ['INVALID_PAYLOAD'], {
      field: 'metadata',
    });
    ackError(await emitAck(socket, 'presence:activity', { activity: 'ok', metadata: [1] }), ['INVALID_PAYLOAD']);
  });

  it('presence:activity reaches followers as presence:friend_activity', async () => {
    const { subject, ws } = await watched(ctx.server, 'act');
    const { socket } = await subject.connect();
    const seen = once(ws, 'presence:friend_activity', 4000, about(subject.id));
    ackOk(await emitAck(socket, 'presence:activity', { activity: 'viewing:post:123', metadata: { postId: 123 } }));
    assert.deepEqual(await seen, { userId: subject.id, activity: 'viewing:post:123', metadata: { postId: 123 } });
  });

  it('REST: /presence/me, PUT /presence/activity and /presence/online-friends', async () => {
    const { watcher, subject, ws } = await watched(ctx.server, 'rest');
    const online = update(ws, subject.id, 'online');
    await subject.connect();
    await online;
    const me = await subject.api('GET', '/presence/me');
    assert.equal(me.status, 200);
    assertIncludes(me.body, { userId: subject.id, status: 'online' });

    const seen = once(ws, 'presence:friend_activity', 4000, about(subject.id));
    const put = await subject.api('PUT', '/presence/activity', { body: { activity: 'typing:essay' } });
    assert.equal(put.status, 200);
    assertIncludes(put.body, { userId: subject.id, activity: 'typing:essay' });
    await seen;
    const bad = await subject.api('PUT', '/presence/activity', { body: { activity: '' } });
    assert.equal(bad.status, 400);

    const offlineFriend = await makeUser(ctx.server, 'restoff');
    await follow(ctx.server, watcher, offlineFriend);
    const friends = await watcher.api('GET', '/presence/online-friends');
    assert.equal(friends.status, 200);
    const ids = friends.body.items.map((f) => f.userId);
    assert.deepEqual(ids, [subject.id], 'online-friends must list exactly the online followee');
    assertIncludes(friends.body.items[0], { status: 'online', activity: 'typing:essay' });
  });

  it('shareOnlineStatus: false hides the user from everyone', async () => {
    const { watcher, subject, ws } = await watched(ctx.server, 'hide');
    await setPreferences(subject, { shareOnlineStatus: false });
    const hidden = none(ws, 'presence:update', 800, about(subject.id));
    const { socket } = await subject.connect();
    assert.equal(await hidden, true, 'a hidden user was announced');
    const friends = await watcher.api('GET', '/presence/online-friends');
    assert.deepEqual(friends.body.items, []);
    const me = await subject.api('GET', '/presence/me');
    assertIncludes(me.body, { status: 'online' }, 'own presence');
    const quiet = none(ws, 'presence:friend_activity', 600, about(subject.id));
    ackOk(await emitAck(socket, 'presence:activity', { activity: 'secret' }));
    assert.equal(await quiet, true, 'a hidden user\'s activity was announced');
  });
});

describe('presence idle (IDLE_TIMEOUT_MS=400)', () => {
  const ctx = useServer({ IDLE_TIMEOUT_MS: '400' });

  it('turns away without events, and online again on the next event', async () => {
    const { subject, ws } = await watched(ctx.server, 'idle');
    const online = update(ws, subject.id, 'online');
    const { socket } = await subject.connect();
    await online;
    await update(ws, subject.id, 'away', 4000);
    const back = update(ws, subject.id, 'online');
    ackOk(await emitAck(socket, 'notifications:subscribe', {}));
    await back;
  });

  it('a chosen away is not undone by events', async () => {
    const { subject, ws } = await watched(ctx.server, 'chosen');
    const online = update(ws, subject.id, 'online');
    const { socket } = await subject.connect();
    await online;
    const away = update(ws, subject.id, 'away');
    ackOk(await emitAck(socket, 'presence:status', { status: 'away' }));
    await away;
    const stays = none(ws, 'presence:update', 800, about(subject.id));
    ackOk(await emitAck(socket, 'notifications:subscribe', {}));
    assert.equal(await stays, true, 'a chosen away changed on an event');
  });
});

describe('presence:activity throttle (PRESENCE_ACTIVITY_THROTTLE_MS=500)', () => {
  const WINDOW_MS = 500;
  // The loop below is a flood by design: the per-socket event budget is lifted so that the
  // throttle, not the budget, is what is tested.
  const ctx = useServer({
    PRESENCE_ACTIVITY_THROTTLE_MS: String(WINDOW_MS),
    SOCKET_EVENT_BURST: '100000',
    SOCKET_EVENTS_PER_SECOND: '100000',
    SOCKET_FLOOD_REJECTIONS: '100000',
  });

  it('a client looping presence:activity is announced at most once per window, the latest last', async () => {
    const { subject, ws } = await watched(ctx.server, 'loop');
    const { socket } = await subject.connect();
    const seen = record(ws, 'presence:friend_activity', about(subject.id));
    const started = Date.now();
    // 1000 activities, 50 in flight at a time, the last one alone: each is acknowledged `{}`.
    for (let i = 0; i < 999; i += 50) {
      const n = Math.min(50, 999 - i);
      const acks = await Promise.all(
        Array.from({ length: n }, (_, j) => emitAck(socket, 'presence:activity', { activity: `step:${i + j}` }, 10000)),
      );
      for (const ack of acks) assert.deepEqual(ack, { ok: true });
    }
    assert.deepEqual(await emitAck(socket, 'presence:activity', { activity: 'step:999' }), { ok: true });
    await seen.until((list) => list.at(-1)?.activity === 'step:999', 4000);
    const elapsed = Date.now() - started;
    // One at the start, then at most one per window that ended (plus one for timing slack).
    const bound = Math.ceil(elapsed / WINDOW_MS) + 2;
    assert.ok(seen.items.length <= bound, `${seen.items.length} announcements in ${elapsed} ms (bound ${bound})`);
    assert.equal(await none(ws, 'presence:friend_activity', WINDOW_MS + 300, about(subject.id)), true, 'an announcement after the latest');
    assert.equal(seen.items.at(-1).activity, 'step:999');
    seen.stop();
  });

  it('PUT /presence/activity is throttled the same way, and always answers with the latest', async () => {
    const { subject, ws } = await watched(ctx.server, 'putloop');
    await subject.connect();
    const seen = record(ws, 'presence:friend_activity', about(subject.id));
    const started = Date.now();
    for (let i = 0; i < 20; i++) {
      const put = await subject.api('PUT', '/presence/activity', { body: { activity: `put:${i}` } });
      assert.equal(put.status, 200);
      assertIncludes(put.body, { activity: `put:${i}` });
    }
    await seen.until((list) => list.at(-1)?.activity === 'put:19', 4000);
    // The throttle is per node: in a cluster, REST calls spread over the nodes.
    const bound = (Math.ceil((Date.now() - started) / WINDOW_MS) + 2) * Math.max(1, clusterSize());
    assert.ok(seen.items.length <= bound, `${seen.items.length} announcements of 20 quick PUTs (bound ${bound})`);
    seen.stop();
  });
});

describe('presence audience follows the follow graph at once', () => {
  const ctx = useServer();

  it('a new follower gets the next update; an unfollower gets none', async () => {
    const { subject, ws } = await watched(ctx.server, 'aud');
    const online = update(ws, subject.id, 'online');
    const { socket } = await subject.connect();
    await online; // the subject's audience is cached now
    const late = await makeUser(ctx.server, 'audlate');
    const { socket: ls } = await late.connect();
    await follow(ctx.server, late, subject);
    const heard = update(ls, subject.id, 'busy');
    ackOk(await emitAck(socket, 'presence:status', { status: 'busy' }));
    await heard;

    const res = await ctx.server.service('DELETE', '/follows', { followerId: late.id, followeeId: subject.id });
    assert.ok(res.status < 300, `unfollow failed: ${res.status}`);
    const unheard = none(ls, 'presence:update', 800, about(subject.id));
    const stillHeard = update(ws, subject.id, 'away');
    ackOk(await emitAck(socket, 'presence:status', { status: 'away' }));
    await stillHeard;
    assert.equal(await unheard, true, 'an unfollower still got presence:update');
  });
});
