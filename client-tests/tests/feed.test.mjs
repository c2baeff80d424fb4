// Live feed (contract §6, §7, §8): feed:subscribe / feed:unsubscribe, fan-out of activities
// published through the service API to subscribed followers' sockets and to feed:public (once per
// socket, never to the actor), event names by type, and the REST feed with its filters, cursor,
// trending targets and per-type statistics.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { UUID_RE, ackError, ackOk, assertIncludes, httpError, httpStatus, rfc3339 } from '../lib/assertions.mjs';
import { emitAck, none, once, uid } from '../lib/client.mjs';
import { makeUser, makeUsers, useServer } from '../lib/harness.mjs';

const FEED_EVENTS = ['feed:new_post', 'feed:new_comment', 'feed:activity'];
const QUIET_MS = 700;

/** PUT /follows through the service API; asserts 200. */
async function follow(server, follower, followee) {
  const res = await server.service('PUT', '/follows', { followerId: follower.id, followeeId: followee.id });
  httpStatus(res, 200);
}

/** POST /feed/activities; asserts 201 and returns the stored activity. */
async function publish(server, actor, fields = {}) {
  const body = {
    activityType: 'post',
    actorId: actor.id,
    targetId: uid('target'),
    targetType: 'post',
    ...fields,
  };
  const res = await server.service('POST', '/feed/activities', body);
  httpStatus(res, 201);
  return res.body;
}

async function subscribe(socket, payload) {
  return ackOk(await emitAck(socket, 'feed:subscribe', payload));
}

/**
 * The next feed event of any name whose payload matches `match` (resolves `{ event, activity }`).
 * Call it before publishing: the event may arrive before the service API's response.
 */
function feedEvent(socket, match, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const handler = (event, payload) => {
      if (!FEED_EVENTS.includes(event) || !match(payload)) return;
      clearTimeout(timer);
      socket.offAny(handler);
      resolve({ event, activity: payload });
    };
    const timer = setTimeout(() => {
      socket.offAny(handler);
      reject(new Error(`no matching feed event within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.onAny(handler);
  });
}

const byActor = (actor) => (p) => p?.actorId === actor.id;

/** Resolves true if no feed event of any name arrives within `ms`. */
function noFeed(socket, ms = QUIET_MS) {
  return Promise.all(FEED_EVENTS.map((e) => none(socket, e, ms))).then((all) => all.every(Boolean));
}

/** Every feed event (any name) this socket receives from now on. */
function recordFeed(socket) {
  const items = [];
  const handler = (event, payload) => {
    if (FEED_EVENTS.includes(event)) items.push({ event, payload });
  };
  socket.onAny(handler);
  return { items, stop: () => socket.offAny(handler) };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

describe('feed: live delivery', () => {
  const ctx = useServer();

  it('reaches subscribed followers\' sockets only, with the stored activity', async () => {
    const [actor, fan, publicOnly] = await makeUsers(ctx.server, 3, 'fd');
    await follow(ctx.server, fan, actor);
    const { socket: fanSub } = await fan.connect();
    const { socket: fanIdle } = await fan.connect();
    const { socket: stranger } = await publicOnly.connect();
    await subscribe(fanSub, {});
    await subscribe(stranger, {});

    const quietIdle = noFeed(fanIdle);
    const quietStranger = noFeed(stranger);
    const got = once(fanSub, 'feed:new_post', 5000, (p) => p?.actorId === actor.id);
    const stored = await publish(ctx.server, actor, {
      content: 'hello followers',
      metadata: { tags: ['a'] },
      targetId: 'post-42',
    });
    assert.match(stored.id, UUID_RE);
    rfc3339(stored.createdAt, 'activity.createdAt');
    assertIncludes(stored, {
      activityType: 'post',
      actorId: actor.id,
      targetId: 'post-42',
      targetType: 'post',
      content: 'hello followers',
      metadata: { tags: ['a'] },
      audience: 'followers',
    });
    assert.deepEqual(await got, stored, 'the event carries the stored activity');
    assert.ok(await quietIdle, 'a socket that did not subscribe got a feed event');
    assert.ok(await quietStranger, 'a followers-only activity reached a non-follower via feed:public');
  });

  it('feed:unsubscribe stops delivery to that socket', async () => {
    const [actor, fan] = await makeUsers(ctx.server, 2, 'unsub');
    await follow(ctx.server, fan, actor);
    const { socket } = await fan.connect();
    await subscribe(socket);
    ackOk(await emitAck(socket, 'feed:unsubscribe'));
    const quiet = noFeed(socket);
    await publish(ctx.server, actor, { audience: 'public' });
    assert.ok(await quiet, 'an unsubscribed socket got a feed event');
  });

  it('public activities reach feed:public subscribers who do not follow the actor', async () => {
    const [actor, reader] = await makeUsers(ctx.server, 2, 'pub');
    const { socket } = await reader.connect();
    await subscribe(socket, {});
    const got = feedEvent(socket, byActor(actor));
    const stored = await publish(ctx.server, actor, { audience: 'public' });
    const { activity } = await got;
    assert.deepEqual(activity, stored);
  });

  it('followingOnly subscriptions get no public activities from strangers', async () => {
    const [actor, reader] = await makeUsers(ctx.server, 2, 'fonly');
    const { socket } = await reader.connect();
    await subscribe(socket, { followingOnly: true });
    const quiet = noFeed(socket);
    await publish(ctx.server, actor, { audience: 'public' });
    assert.ok(await quiet, 'a followingOnly socket got a stranger\'s public activity');
  });

  it('subscribing again with followingOnly: true leaves feed:public', async () => {
    const [actor, reader] = await makeUsers(ctx.server, 2, 'resub');
    const { socket } = await reader.connect();
    await subscribe(socket, {});
    await subscribe(socket, { followingOnly: true });
    const quiet = noFeed(socket);
    await publish(ctx.server, actor, { audience: 'public' });
    assert.ok(await quiet, 'feed:public was not left');
  });

  it('a socket in both feed:{user} and feed:public gets a public activity once', async () => {
    const [actor, fan] = await makeUsers(ctx.server, 2, 'once');
    await follow(ctx.server, fan, actor);
    const { socket } = await fan.connect();
    await subscribe(socket, {});
    const log = recordFeed(socket);
    const first = feedEvent(socket, byActor(actor));
    const stored = await publish(ctx.server, actor, { audience: 'public' });
    await first;
    await sleep(QUIET_MS);
    log.stop();
    assert.equal(log.items.filter((i) => i.payload?.id === stored.id).length, 1, 'delivered more than once');
  });

  it('never notifies the actor\'s own sockets', async () => {
    const [actor, fan] = await makeUsers(ctx.server, 2, 'self');
    await follow(ctx.server, fan, actor);
    await follow(ctx.server, actor, fan);
    const { socket: own1 } = await actor.connect();
    const { socket: own2 } = await actor.connect();
    await subscribe(own1, {});
    await subscribe(own2, { followingOnly: true });
    const { socket: fanSocket } = await fan.connect();
    await subscribe(fanSocket, {});
    const quiet = [noFeed(own1), noFeed(own2)];
    const got = feedEvent(fanSocket, byActor(actor));
    await publish(ctx.server, actor, { audience: 'public' });
    await got;
    assert.deepEqual(await Promise.all(quiet), [true, true], 'the actor got their own activity');
  });

  it('names the event after the activity type', async () => {
    const [actor, fan] = await makeUsers(ctx.server, 2, 'names');
    await follow(ctx.server, fan, actor);
    const { socket } = await fan.connect();
    await subscribe(socket, { followingOnly: true });
    for (const [activityType, event] of [
      ['post', 'feed:new_post'],
      ['comment', 'feed:new_comment'],
      ['like', 'feed:activity'],
      ['share', 'feed:activity'],
    ]) {
      const targetId = uid('t');
      const pending = feedEvent(socket, (p) => p?.targetId === targetId);
      await publish(ctx.server, actor, { activityType, targetId });
      const got = await pending;
      assert.equal(got.event, event, `${activityType} must arrive as ${event}`);
      assert.equal(got.activity.activityType, activityType);
    }
  });

  it('reaches every follower in one publish (many followers, many sockets)', async () => {
    const actor = await makeUser(ctx.server, 'star');
    const fans = await makeUsers(ctx.server, 30, 'many');
    await Promise.all(fans.map((f) => follow(ctx.server, f, actor)));
    const sockets = await Promise.all(fans.map(async (f) => (await f.connect()).socket));
    await Promise.all(sockets.map((s) => subscribe(s, { followingOnly: true })));
    const pending = sockets.map((s) => feedEvent(s, byActor(actor)));
    await publish(ctx.server, actor, { activityType: 'comment' });
    const got = await Promise.all(pending);
    assert.ok(got.every((g) => g.event === 'feed:new_comment'));
  });

  it('accepts feed:subscribe and feed:unsubscribe without a payload or ack, and rejects bad ones', async () => {
    const reader = await makeUser(ctx.server, 'acks');
    const { socket } = await reader.connect();
    ackOk(await emitAck(socket, 'feed:subscribe'));
    ackOk(await emitAck(socket, 'feed:unsubscribe', {}));
    socket.emit('feed:subscribe');
    ackError(await emitAck(socket, 'feed:subscribe', { followingOnly: 'yes' }), 'INVALID_PAYLOAD', {
      field: 'followingOnly',
    });
    ackError(await emitAck(socket, 'feed:subscribe', 42), 'INVALID_PAYLOAD');
    // still connected and answering
    ackOk(await emitAck(socket, 'feed:unsubscribe'));
  });
});

describe('feed: publishing through the service API', () => {
  const ctx = useServer();

  it('validates every field and names them', async () => {
    const actor = await makeUser(ctx.server, 'val');
    const res = await ctx.server.service('POST', '/feed/activities', {
      activityType: 'Post!',
      actorId: actor.id,
      targetId: '',
      targetType: '_x',
      content: 'x'.repeat(4001),
      metadata: [1, 2],
    });
    const error = httpError(res, 400, 'INVALID_PAYLOAD');
    const fields = error.details.map((d) => d.field).sort();
    assert.deepEqual(fields, ['activityType', 'content', 'metadata', 'targetId', 'targetType']);
  });

  it('refuses an unknown audience, oversized metadata and missing fields', async () => {
    const actor = await makeUser(ctx.server, 'val2');
    const base = { activityType: 'post', actorId: actor.id, targetId: 't', targetType: 'post' };
    httpError(await ctx.server.service('POST', '/feed/activities', { ...base, audience: 'friends' }), 400, 'INVALID_PAYLOAD', {
      field: 'audience',
    });
    httpError(
      await ctx.server.service('POST', '/feed/activities', { ...base, metadata: { blob: 'x'.repeat(5000) } }),
      400,
      'INVALID_PAYLOAD',
      { field: 'metadata' },
    );
    const { targetId, ...noTarget } = base;
    httpError(await ctx.server.service('POST', '/feed/activities', noTarget), 400, 'INVALID_PAYLOAD', { field: 'targetId' });
  });

  it('defaults audience to followers and stores absent content and metadata as null', async () => {
    const actor = await makeUser(ctx.server, 'dflt');
    const stored = await publish(ctx.server, actor);
    assertIncludes(stored, { audience: 'followers', content: null, metadata: null });
  });
});

describe('feed: REST', () => {
  const ctx = useServer();

  /**
   * viewer follows friend; friend posts (followers) and likes (public); stranger posts (public)
   * and comments (followers only); viewer posts (public). Returns everything, oldest first.
   */
  async function scenario(prefix) {
    const [viewer, friend, stranger] = await makeUsers(ctx.server, 3, prefix);
    await follow(ctx.server, viewer, friend);
    const friendPost = await publish(ctx.server, friend, { activityType: 'post' });
    const friendLike = await publish(ctx.server, friend, { activityType: 'like', audience: 'public' });
    const strangerPost = await publish(ctx.server, stranger, { activityType: 'post', audience: 'public' });
    const strangerComment = await publish(ctx.server, stranger, { activityType: 'comment' });
    const ownPost = await publish(ctx.server, viewer, { activityType: 'post', audience: 'public' });
    return { viewer, friend, stranger, friendPost, friendLike, strangerPost, strangerComment, ownPost };
  }

  const ids = (body) => body.items.map((a) => a.id);
  const get = async (user, query = '') => httpStatus(await user.api('GET', `/feed${query}`), 200);

  it('lists followed users\' activities and public ones, newest first, never the viewer\'s own', async () => {
    const s = await scenario('rf');
    const body = await get(s.viewer);
    // Other tests on this server publish public activities too; look at this scenario's only.
    const mine = new Set([s.friendPost, s.friendLike, s.strangerPost, s.strangerComment, s.ownPost].map((a) => a.id));
    const seen = ids(body).filter((id) => mine.has(id));
    assert.deepEqual(seen, [s.strangerPost.id, s.friendLike.id, s.friendPost.id]);
    assert.ok('nextCursor' in body);
    const item = body.items.find((a) => a.id === s.friendPost.id);
    assert.deepEqual(item, s.friendPost, 'REST items are the stored activity objects');
  });

  it('following_only=true keeps only activities of people the viewer follows', async () => {
    const s = await scenario('fo');
    const body = await get(s.viewer, '?following_only=true');
    assert.deepEqual(ids(body), [s.friendLike.id, s.friendPost.id]);
    assert.equal(body.nextCursor, null);
  });

  it('types filters by activity type (comma-separated)', async () => {
    const s = await scenario('ty');
    assert.deepEqual(ids(await get(s.viewer, '?following_only=true&types=like')), [s.friendLike.id]);
    assert.deepEqual(ids(await get(s.viewer, '?following_only=true&types=post,like')), [s.friendLike.id, s.friendPost.id]);
    assert.deepEqual(ids(await get(s.viewer, '?following_only=true&types=comment')), []);
    httpError(await s.viewer.api('GET', '/feed?types=post,Bad'), 400, 'INVALID_PAYLOAD', { field: 'types' });
  });

  it('time_range accepts 1h, 24h, 7d and 30d and refuses anything else', async () => {
    const s = await scenario('tr');
    for (const range of ['1h', '24h', '7d', '30d']) {
      assert.deepEqual(ids(await get(s.viewer, `?following_only=true&time_range=${range}`)), [s.friendLike.id, s.friendPost.id]);
    }
    httpError(await s.viewer.api('GET', '/feed?time_range=2w'), 400, 'INVALID_PAYLOAD', { field: 'time_range' });
  });

  it('pages with limit and the before cursor', async () => {
    const [viewer, friend] = await makeUsers(ctx.server, 2, 'page');
    await follow(ctx.server, viewer, friend);
    const published = [];
    for (let i = 0; i < 5; i += 1) published.push(await publish(ctx.server, friend, { content: `n${i}` }));
    const newestFirst = published.map((a) => a.id).reverse();
    const seen = [];
    let cursor = null;
    for (let page = 0; page < 5; page += 1) {
      const query = `?following_only=true&limit=2${cursor ? `&before=${cursor}` : ''}`;
      const body = await get(viewer, query);
      seen.push(...ids(body));
      cursor = body.nextCursor;
      if (!cursor) break;
      assert.equal(cursor, body.items.at(-1).id, 'nextCursor is the last item\'s id');
    }
    assert.deepEqual(seen, newestFirst);
    assert.equal(cursor, null);
    httpError(await viewer.api('GET', '/feed?limit=0'), 400, 'INVALID_PAYLOAD', { field: 'limit' });
    httpError(await viewer.api('GET', '/feed?limit=abc'), 400, 'INVALID_PAYLOAD');
  });

  it('requires a user token', async () => {
    httpError(await ctx.server.api('GET', '/api/v1/realtime/feed'), 401, 'UNAUTHORIZED');
    httpError(await ctx.server.api('GET', '/api/v1/realtime/feed/trending'), 401, 'UNAUTHORIZED');
    httpError(await ctx.server.api('GET', '/api/v1/realtime/feed/statistics'), 401, 'UNAUTHORIZED');
  });
});

describe('feed: trending and statistics', () => {
  // A server of its own, so the counts are exactly this block's.
  const ctx = useServer();

  it('trending lists targets by activity count in the last 24 h', async () => {
    const [a, b, viewer] = await makeUsers(ctx.server, 3, 'trend');
    const hot = { targetId: 'post-hot', targetType: 'post' };
    const warm = { targetId: 'post-warm', targetType: 'post' };
    const other = { targetId: 'post-hot', targetType: 'event' };
    await publish(ctx.server, a, { ...warm, activityType: 'like' });
    await publish(ctx.server, a, { ...hot, activityType: 'like' });
    await publish(ctx.server, b, { ...hot, activityType: 'comment' });
    await publish(ctx.server, b, { ...warm, activityType: 'like' });
    const last = await publish(ctx.server, a, { ...hot, activityType: 'share', audience: 'public' });
    await publish(ctx.server, b, { ...other, activityType: 'like' });

    const body = httpStatus(await viewer.api('GET', '/feed/trending'), 200);
    assert.deepEqual(
      body.items.map(({ targetId, targetType, count }) => ({ targetId, targetType, count })),
      [
        { targetId: 'post-hot', targetType: 'post', count: 3 },
        { targetId: 'post-warm', targetType: 'post', count: 2 },
        { targetId: 'post-hot', targetType: 'event', count: 1 },
      ],
    );
    assert.equal(body.items[0].lastActivityAt, last.createdAt);
    const limited = httpStatus(await viewer.api('GET', '/feed/trending?limit=1'), 200);
    assert.equal(limited.items.length, 1);
    assert.equal(limited.items[0].targetId, 'post-hot');
  });

  it('statistics count the viewer\'s feed per type over 24 h and 7 d', async () => {
    const [viewer, friend, stranger] = await makeUsers(ctx.server, 3, 'stats');
    await follow(ctx.server, viewer, friend);
    await publish(ctx.server, friend, { activityType: 'post' });
    await publish(ctx.server, friend, { activityType: 'post' });
    await publish(ctx.server, friend, { activityType: 'like' });
    await publish(ctx.server, stranger, { activityType: 'review', audience: 'public' });
    await publish(ctx.server, stranger, { activityType: 'follow' }); // followers only: not in the feed
    await publish(ctx.server, viewer, { activityType: 'post', audience: 'public' }); // own: not in the feed

    const body = httpStatus(await viewer.api('GET', '/feed/statistics'), 200);
    // The previous test published public `share` activities on this server as well.
    assert.deepEqual(body.last24h, { post: 2, like: 1, review: 1, share: 1 });
    assert.deepEqual(body.last7d, body.last24h);
  });

  it('statistics of a user with an empty feed are empty objects', async () => {
    // Everything public on this server was published by the tests above; a followingOnly-like
    // empty feed needs a server with nothing public, so just check the shape here.
    const user = await makeUser(ctx.server, 'empty');
    const body = httpStatus(await user.api('GET', '/feed/statistics'), 200);
    assert.equal(typeof body.last24h, 'object');
    assert.equal(typeof body.last7d, 'object');
  });
});
