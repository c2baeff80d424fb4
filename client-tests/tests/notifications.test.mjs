// Notifications (contract §5, §7, §8, §11): creation through the service API and live delivery
// (notification:new then notification:unread_count to every socket of the user), in-app
// preferences, dedupKey, expiry, notifications:subscribe and notifications:mark_read over the
// socket, the REST list / mark-read / preferences routes.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { UUID_RE, ackError, ackOk, assertIncludes, httpError, httpStatus, rfc3339 } from '../lib/assertions.mjs';
import { setPreferences } from '../lib/chat.mjs';
import { emitAck, eventually, fakeId, none, once } from '../lib/client.mjs';
import { makeUser, makeUsers, useServer } from '../lib/harness.mjs';

const QUIET_MS = 700;
const NOTIFICATION_KEYS = ['actor', 'createdAt', 'data', 'expiresAt', 'id', 'isRead', 'message', 'priority', 'title', 'type'];
const KNOWN_TYPES = [
  'like', 'comment', 'follow', 'follow_request', 'mention', 'message',
  'group_invite', 'event', 'post', 'recommendation', 'system',
];

/** POST /notifications; returns the response (status 200 or 201 asserted). */
async function notifyRes(server, users, fields = {}) {
  const body = {
    userIds: [users].flat().map((u) => (typeof u === 'string' ? u : u.id)),
    type: 'system',
    title: 'Hello',
    message: 'A message',
    ...fields,
  };
  const res = await server.service('POST', '/notifications', body);
  httpStatus(res, [200, 201]);
  return res;
}

/** POST /notifications for one user; asserts one was created and returns it. */
async function notify(server, user, fields = {}) {
  const res = await notifyRes(server, user, fields);
  assert.equal(res.status, 201);
  assert.equal(res.body.created, 1);
  return res.body.notifications[0];
}

function assertNotification(n, expected = {}) {
  for (const key of NOTIFICATION_KEYS) assert.ok(key in n, `notification lacks '${key}': ${JSON.stringify(n)}`);
  assert.match(n.id, UUID_RE);
  rfc3339(n.createdAt, 'notification.createdAt');
  if (n.expiresAt !== null) rfc3339(n.expiresAt, 'notification.expiresAt');
  return assertIncludes(n, expected, 'notification');
}

/** Every event this socket receives from now on, in order: `[[event, payload], ...]`. */
function recordAll(socket) {
  const log = [];
  const handler = (event, payload) => log.push([event, payload]);
  socket.onAny(handler);
  return { log, stop: () => socket.offAny(handler) };
}

const list = async (user, query = '') => httpStatus(await user.api('GET', `/notifications${query}`), 200);
const unreadCount = (socket, count) => once(socket, 'notification:unread_count', 5000, (p) => count === undefined || p?.count === count);

describe('notifications: creation and delivery', () => {
  const ctx = useServer();

  it('delivers notification:new then notification:unread_count to every socket of the user', async () => {
    const [user, actor] = await makeUsers(ctx.server, 2, 'nd');
    const sockets = [(await user.connect()).socket, (await user.connect()).socket];
    const logs = sockets.map(recordAll);
    const counts = sockets.map((s) => unreadCount(s, 1));
    const res = await notifyRes(ctx.server, user, {
      type: 'like',
      title: 'New like',
      message: 'Someone liked your post',
      data: { postId: 'p1' },
      priority: 'high',
      actorId: actor.id,
    });
    httpStatus(res, 201);
    assert.equal(res.body.created, 1);
    const created = res.body.notifications[0];
    assertNotification(created, {
      type: 'like',
      title: 'New like',
      message: 'Someone liked your post',
      data: { postId: 'p1' },
      priority: 'high',
      actor: { id: actor.id, name: actor.name },
      isRead: false,
      expiresAt: null,
    });
    assert.equal(created.userId, user.id, 'each created notification names its recipient');
    await Promise.all(counts);
    for (const { log, stop } of logs) {
      stop();
      const names = log.map(([e]) => e).filter((e) => e.startsWith('notification:'));
      assert.deepEqual(names, ['notification:new', 'notification:unread_count']);
      const { userId, ...wire } = created;
      assert.deepEqual(log.find(([e]) => e === 'notification:new')[1], wire, 'notification:new carries the stored object');
    }
  });

  it('1000 recipients in one call: all stored, each connected one gets theirs and their own count', async () => {
    const connected = await makeUsers(ctx.server, 4, 'bulk');
    const [earlier, muted] = connected;
    await notify(ctx.server, earlier, { type: 'system' });
    await setPreferences(muted, { like: { inApp: false } });
    const sockets = await Promise.all(connected.map(async (u) => (await u.connect()).socket));
    const others = Array.from({ length: 1000 - connected.length }, (_, i) => `bulk-${fakeId()}-${i}`);
    const userIds = [...connected.map((u) => u.id), ...others];
    const counts = sockets.map((s, i) => unreadCount(s, i === 0 ? 2 : 1));
    const news = sockets.map((s, i) => (i === 1 ? none(s, 'notification:new', QUIET_MS) : once(s, 'notification:new')));

    const res = await notifyRes(ctx.server, userIds, { type: 'like', title: 'Bulk', message: 'To everyone' });
    assert.equal(res.status, 201);
    assert.equal(res.body.created, 1000);
    assert.deepEqual(new Set(res.body.notifications.map((n) => n.userId)), new Set(userIds));

    await Promise.all(counts);
    const delivered = await Promise.all(news);
    assert.equal(delivered[1], true, 'in-app off: stored, not delivered');
    for (const i of [0, 2, 3]) {
      const mine = res.body.notifications.find((n) => n.userId === connected[i].id);
      assert.equal(delivered[i].id, mine.id, 'each recipient gets their own notification');
    }
    for (const [i, user] of connected.entries()) {
      const page = await list(user, '?unread_only=true');
      assert.equal(page.items.length, i === 0 ? 2 : 1, `${user.id} has their notifications stored`);
    }
  });

  it('defaults priority to normal, data to {} and actor to null; one per distinct user', async () => {
    const [a, b] = await makeUsers(ctx.server, 2, 'dflt');
    const res = await notifyRes(ctx.server, [a, b, a]);
    assert.equal(res.body.created, 2);
    for (const n of res.body.notifications) assertNotification(n, { priority: 'normal', data: {}, actor: null });
    assert.deepEqual(res.body.notifications.map((n) => n.userId).sort(), [a.id, b.id].sort());
  });

  it('stores but does not deliver a type whose in-app delivery is off', async () => {
    const user = await makeUser(ctx.server, 'pref');
    await setPreferences(user, { like: { inApp: false } });
    const { socket } = await user.connect();
    const quiet = none(socket, 'notification:new', QUIET_MS);
    const count = unreadCount(socket, 1);
    const stored = await notify(ctx.server, user, { type: 'like' });
    assert.ok(await quiet, 'notification:new was delivered although inApp is off');
    await count;
    assert.deepEqual((await list(user)).items.map((n) => n.id), [stored.id]);

    // other types still arrive
    const other = once(socket, 'notification:new', 5000, (p) => p?.type === 'comment');
    await notify(ctx.server, user, { type: 'comment' });
    await other;
  });

  it('a repeated dedupKey for the same user within 24 h creates nothing', async () => {
    const [user, other] = await makeUsers(ctx.server, 2, 'dedup');
    const { socket } = await user.connect();
    const delivered = once(socket, 'notification:new');
    const first = await notify(ctx.server, user, { dedupKey: 'post:1:like' });
    await delivered;
    const quiet = none(socket, 'notification:new', QUIET_MS);
    const again = await notifyRes(ctx.server, user, { dedupKey: 'post:1:like', title: 'again' });
    assert.equal(again.status, 200);
    assert.deepEqual(again.body, { created: 0, notifications: [] });
    assert.ok(await quiet, 'a deduplicated notification was delivered');
    assert.deepEqual((await list(user)).items.map((n) => n.id), [first.id]);
    // the key is per user, and a different key is a different notification
    await notify(ctx.server, other, { dedupKey: 'post:1:like' });
    await notify(ctx.server, user, { dedupKey: 'post:2:like' });
  });

  it('never delivers or lists expired notifications', async () => {
    const user = await makeUser(ctx.server, 'exp');
    const { socket } = await user.connect();
    const quiet = none(socket, 'notification:new', QUIET_MS);
    const past = await notifyRes(ctx.server, user, { expiresAt: new Date(Date.now() - 60_000).toISOString() });
    assert.equal(past.body.created, 0);
    assert.ok(await quiet, 'an already expired notification was delivered');
    assert.deepEqual((await list(user)).items, []);

    const soon = new Date(Date.now() + 1500).toISOString();
    const live = await notify(ctx.server, user, { expiresAt: soon });
    assert.equal(Date.parse(live.expiresAt), Date.parse(soon));
    assert.deepEqual((await list(user)).items.map((n) => n.id), [live.id]);
    await eventually(async () => (await list(user)).items.length === 0, { timeoutMs: 5000 });
    const sub = ackOk(await emitAck(socket, 'notifications:subscribe', {}));
    assert.equal(sub.unreadCount, 0);
    assert.deepEqual(sub.notifications, []);
  });

  it('validates the body with field-level errors', async () => {
    const user = await makeUser(ctx.server, 'val');
    const base = { userIds: [user.id], type: 'system', title: 't', message: 'm' };
    const bad = async (fields, field) =>
      httpError(await ctx.server.service('POST', '/notifications', { ...base, ...fields }), 400, 'INVALID_PAYLOAD', { field });
    await bad({ userIds: [] }, 'userIds');
    await bad({ userIds: Array.from({ length: 1001 }, (_, i) => `u${i}`) }, 'userIds');
    await bad({ userIds: [''] }, 'userIds');
    await bad({ type: 'Bad Type' }, 'type');
    await bad({ title: '' }, 'title');
    await bad({ title: 'x'.repeat(201) }, 'title');
    await bad({ message: 'x'.repeat(2001) }, 'message');
    await bad({ data: [1] }, 'data');
    await bad({ priority: 'critical' }, 'priority');
    await bad({ actorId: '' }, 'actorId');
    await bad({ expiresAt: 'tomorrow' }, 'expiresAt');
    await bad({ dedupKey: 'k'.repeat(129) }, 'dedupKey');
    const { title, ...noTitle } = base;
    httpError(await ctx.server.service('POST', '/notifications', noTitle), 400, 'INVALID_PAYLOAD', { field: 'title' });
    const several = httpError(
      await ctx.server.service('POST', '/notifications', { ...base, userIds: [], type: 'X', title: '' }),
      400,
      'INVALID_PAYLOAD',
    );
    assert.deepEqual(several.details.map((d) => d.field).sort(), ['title', 'type', 'userIds']);
  });
});

describe('notifications: socket events', () => {
  const ctx = useServer();

  it('notifications:subscribe answers the unread count and the latest 20', async () => {
    const user = await makeUser(ctx.server, 'sub');
    const created = [];
    for (let i = 0; i < 25; i += 1) created.push(await notify(ctx.server, user, { title: `n${i}` }));
    const { socket } = await user.connect();
    for (const payload of [{}, undefined]) {
      const ack = ackOk(await emitAck(socket, 'notifications:subscribe', payload));
      assert.equal(ack.unreadCount, 25);
      assert.deepEqual(ack.notifications.map((n) => n.id), created.slice(5).reverse().map((n) => n.id));
      assertNotification(ack.notifications[0], { title: 'n24', isRead: false });
    }
  });

  it('notifications:mark_read with ids marks only the user\'s own and updates the other sockets', async () => {
    const [user, other] = await makeUsers(ctx.server, 2, 'mr');
    const mine = [await notify(ctx.server, user), await notify(ctx.server, user), await notify(ctx.server, user)];
    const theirs = await notify(ctx.server, other);
    const { socket: s1 } = await user.connect();
    const { socket: s2 } = await user.connect();
    const onOther = unreadCount(s2, 1);
    const notOnSender = none(s1, 'notification:unread_count', QUIET_MS);
    const ack = ackOk(await emitAck(s1, 'notifications:mark_read', { notificationIds: [mine[0].id, mine[1].id, theirs.id] }));
    assert.equal(ack.updated, 2);
    assert.equal(ack.unreadCount, 1);
    assert.deepEqual(await onOther, { count: 1 });
    assert.ok(await notOnSender, 'the sending socket got notification:unread_count (it has the ack)');
    const theirList = await list(other, '?unread_only=true');
    assert.deepEqual(theirList.items.map((n) => n.id), [theirs.id], 'another user\'s notification was marked read');
    const mineList = await list(user);
    assert.deepEqual(
      mineList.items.map((n) => [n.id, n.isRead]),
      [[mine[2].id, false], [mine[1].id, true], [mine[0].id, true]],
    );
    // marking again changes nothing
    const again = ackOk(await emitAck(s1, 'notifications:mark_read', { notificationIds: [mine[0].id] }));
    assert.deepEqual([again.updated, again.unreadCount], [0, 1]);
  });

  it('notifications:mark_read { all: true } clears everything', async () => {
    const user = await makeUser(ctx.server, 'all');
    for (let i = 0; i < 3; i += 1) await notify(ctx.server, user);
    const { socket: s1 } = await user.connect();
    const { socket: s2 } = await user.connect();
    const onOther = unreadCount(s2, 0);
    const ack = ackOk(await emitAck(s1, 'notifications:mark_read', { all: true }));
    assert.deepEqual([ack.updated, ack.unreadCount], [3, 0]);
    await onOther;
    assert.deepEqual((await list(user, '?unread_only=true')).items, []);
  });

  it('notifications:mark_read refuses a missing or bad payload', async () => {
    const user = await makeUser(ctx.server, 'mrbad');
    const { socket } = await user.connect();
    ackError(await emitAck(socket, 'notifications:mark_read'), 'INVALID_PAYLOAD');
    ackError(await emitAck(socket, 'notifications:mark_read', {}), 'INVALID_PAYLOAD', { field: 'notificationIds' });
    ackError(await emitAck(socket, 'notifications:mark_read', { notificationIds: 'x' }), 'INVALID_PAYLOAD', { field: 'notificationIds' });
    ackError(
      await emitAck(socket, 'notifications:mark_read', { notificationIds: Array.from({ length: 501 }, (_, i) => `n${i}`) }),
      'INVALID_PAYLOAD',
      { field: 'notificationIds' }, // the wire name, not the Rust field name
    );
    ackOk(await emitAck(socket, 'notifications:subscribe'));
  });
});

describe('notifications: REST', () => {
  const ctx = useServer();

  it('lists newest first with unread_only and the before cursor', async () => {
    const user = await makeUser(ctx.server, 'list');
    const created = [];
    for (let i = 0; i < 5; i += 1) created.push(await notify(ctx.server, user, { title: `n${i}` }));
    const newestFirst = created.map((n) => n.id).reverse();
    const page1 = await list(user, '?limit=2');
    assert.deepEqual(page1.items.map((n) => n.id), newestFirst.slice(0, 2));
    assert.equal(page1.nextCursor, newestFirst[1]);
    const page2 = await list(user, `?limit=2&before=${page1.nextCursor}`);
    assert.deepEqual(page2.items.map((n) => n.id), newestFirst.slice(2, 4));
    const page3 = await list(user, `?limit=2&before=${page2.nextCursor}`);
    assert.deepEqual(page3.items.map((n) => n.id), newestFirst.slice(4));
    assert.equal(page3.nextCursor, null);

    const marked = httpStatus(await user.api('PUT', '/notifications/read', { body: { notificationIds: [created[4].id, created[0].id] } }), 200);
    assert.deepEqual(marked, { updated: 2, unreadCount: 3 });
    const unread = await list(user, '?unread_only=true');
    assert.deepEqual(unread.items.map((n) => n.id), [created[3].id, created[2].id, created[1].id]);
    assert.ok(unread.items.every((n) => n.isRead === false));
    const unreadPage = await list(user, `?unread_only=true&limit=1&before=${created[3].id}`);
    assert.deepEqual(unreadPage.items.map((n) => n.id), [created[2].id]);
  });

  it('PUT /notifications/read { all: true } marks everything and tells the sockets', async () => {
    const user = await makeUser(ctx.server, 'restall');
    for (let i = 0; i < 2; i += 1) await notify(ctx.server, user);
    const { socket } = await user.connect();
    const pushed = unreadCount(socket, 0);
    const body = httpStatus(await user.api('PUT', '/notifications/read', { body: { all: true } }), 200);
    assert.deepEqual(body, { updated: 2, unreadCount: 0 });
    await pushed;
    httpError(await user.api('PUT', '/notifications/read', { body: {} }), 400, 'INVALID_PAYLOAD', { field: 'notificationIds' });
  });

  it('session:ready counts unread notifications', async () => {
    const user = await makeUser(ctx.server, 'ready');
    await notify(ctx.server, user);
    await notify(ctx.server, user);
    const { ready } = await user.connect();
    assert.equal(ready.unreadNotifications, 2);
  });

  it('preferences default to all on, and a PUT changes only the keys it sends', async () => {
    const user = await makeUser(ctx.server, 'prefs');
    const { preferences } = httpStatus(await user.api('GET', '/notifications/preferences'), 200);
    for (const type of KNOWN_TYPES) {
      assert.deepEqual(preferences[type], { inApp: true, push: true, email: true }, `default of ${type}`);
    }
    assertIncludes(preferences, { shareOnlineStatus: true, shareTyping: true, shareReadReceipts: true });

    const after1 = (await setPreferences(user, { like: { push: false } })).preferences;
    assert.deepEqual(after1.like, { inApp: true, push: false, email: true });
    assert.deepEqual(after1.comment, { inApp: true, push: true, email: true });
    assertIncludes(after1, { shareOnlineStatus: true, shareTyping: true, shareReadReceipts: true });

    await setPreferences(user, { shareTyping: false, like: { email: false } });
    const { preferences: after2 } = httpStatus(await user.api('GET', '/notifications/preferences'), 200);
    assert.deepEqual(after2.like, { inApp: true, push: false, email: false });
    assertIncludes(after2, { shareOnlineStatus: true, shareTyping: false, shareReadReceipts: true });

    httpError(await user.api('PUT', '/notifications/preferences', { body: { preferences: { like: { inApp: 'no' } } } }), 400, 'INVALID_PAYLOAD', {
      field: 'preferences.like.inApp',
    });
    httpError(await user.api('PUT', '/notifications/preferences', { body: { preferences: { shareTyping: 1 } } }), 400, 'INVALID_PAYLOAD', {
      field: 'preferences.shareTyping',
    });
  });
});
