// Feed summaries (issue 13): feed:subscribe { mode: "counts", intervalMs? } sends
// feed:updates_available { count, latestId, feedType } at most once per interval instead of each
// activity; intervals below FEED_COUNTS_MIN_INTERVAL_MS are raised to it; mode "events" (the
// default) and feed:unsubscribe end it; feed:watch { targetId } sends
// feed:new_comments_available { targetId, count }. Activities are published on any node.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ackError, ackOk, httpStatus } from '../lib/assertions.mjs';
import { emitAck, none, once, record, uid } from '../lib/client.mjs';
import { makeUser, useServer } from '../lib/harness.mjs';

const FEED_EVENTS = ['feed:new_post', 'feed:new_comment', 'feed:activity'];
const MIN_MS = 150;

async function follow(server, follower, followee) {
  httpStatus(await server.service('PUT', '/follows', { followerId: follower.id, followeeId: followee.id }), 200);
}

async function publish(server, actor, fields = {}) {
  const body = { activityType: 'post', actorId: actor.id, targetId: uid('target'), targetType: 'post', ...fields };
  return httpStatus(await server.service('POST', '/feed/activities', body), 201);
}

/** A reader following a fresh author, connected. */
async function readerOf(server, prefix) {
  const [reader, author] = [await makeUser(server, `${prefix}r`), await makeUser(server, `${prefix}a`)];
  await follow(server, reader, author);
  const { socket } = await reader.connect();
  return { reader, author, socket };
}

function noFeedEvents(socket, ms = 600) {
  return Promise.all(FEED_EVENTS.map((e) => none(socket, e, ms))).then((all) => all.every(Boolean));
}

const total = (list) => list.reduce((sum, p) => sum + p.count, 0);

describe(`feed counts (FEED_COUNTS_MIN_INTERVAL_MS=${MIN_MS})`, () => {
  const ctx = useServer({ FEED_COUNTS_MIN_INTERVAL_MS: String(MIN_MS), FEED_COUNTS_INTERVAL_MS: '400' });

  it('counts mode summarises at most once per interval and sends no activity', async () => {
    const { author, socket } = await readerOf(ctx.server, 'cnt');
    const ack = ackOk(await emitAck(socket, 'feed:subscribe', { mode: 'counts', intervalMs: 300 }));
    assert.equal(ack.intervalMs, 300);
    const summaries = record(socket, 'feed:updates_available');
    const stamps = [];
    socket.on('feed:updates_available', () => stamps.push(Date.now()));
    const quiet = noFeedEvents(socket, 1200);
    const published = [];
    for (let i = 0; i < 3; i += 1) published.push(await publish(ctx.server, author));
    await summaries.until((list) => total(list) >= 3, 5000);
    assert.equal(total(summaries.items), 3, JSON.stringify(summaries.items));
    const last = summaries.items.at(-1);
    assert.equal(last.latestId, published.at(-1).id);
    assert.equal(last.feedType, 'all');
    for (let i = 1; i < stamps.length; i += 1) {
      assert.ok(stamps[i] - stamps[i - 1] >= 250, `two summaries ${stamps[i] - stamps[i - 1]} ms apart`);
    }
    assert.equal(await quiet, true, 'a counts-mode socket received an activity');
    assert.equal(await none(socket, 'feed:updates_available', 700), true, 'a summary with nothing new');
    summaries.stop();
  });

  it('followingOnly counts leave strangers\' public posts out; short intervals are raised', async () => {
    const { author, socket } = await readerOf(ctx.server, 'fo');
    const stranger = await makeUser(ctx.server, 'fos');
    const ack = ackOk(await emitAck(socket, 'feed:subscribe', { mode: 'counts', followingOnly: true, intervalMs: 1 }));
    assert.equal(ack.intervalMs, MIN_MS);
    const summaries = record(socket, 'feed:updates_available');
    await publish(ctx.server, stranger, { audience: 'public' });
    await publish(ctx.server, author);
    await summaries.until((list) => total(list) >= 1, 5000);
    assert.equal(await none(socket, 'feed:updates_available', 600), true);
    assert.equal(total(summaries.items), 1);
    assert.equal(summaries.items[0].feedType, 'following');
    summaries.stop();
  });

  it('mode "events" and feed:unsubscribe end counts mode', async () => {
    const { author, socket } = await readerOf(ctx.server, 'sw');
    ackOk(await emitAck(socket, 'feed:subscribe', { mode: 'counts', intervalMs: MIN_MS }));
    ackOk(await emitAck(socket, 'feed:subscribe', { mode: 'events' }));
    const live = once(socket, 'feed:new_post', 4000, (p) => p?.actorId === author.id);
    const noSummary = none(socket, 'feed:updates_available', 900);
    await publish(ctx.server, author);
    await live;
    assert.equal(await noSummary, true, 'events mode still got a summary');

    ackOk(await emitAck(socket, 'feed:subscribe', { mode: 'counts', intervalMs: MIN_MS }));
    ackOk(await emitAck(socket, 'feed:unsubscribe'));
    const nothing = none(socket, 'feed:updates_available', 900);
    const quiet = noFeedEvents(socket, 900);
    await publish(ctx.server, author);
    assert.equal(await nothing, true, 'a summary after unsubscribing');
    assert.equal(await quiet, true, 'an activity after unsubscribing');
  });

  it('bad counts payloads are INVALID_PAYLOAD', async () => {
    const { socket } = await readerOf(ctx.server, 'bad');
    ackError(await emitAck(socket, 'feed:subscribe', { mode: 'digest' }), 'INVALID_PAYLOAD', { field: 'mode' });
    ackError(await emitAck(socket, 'feed:subscribe', { mode: 'counts', intervalMs: -5 }), 'INVALID_PAYLOAD', {
      field: 'intervalMs',
    });
    ackError(await emitAck(socket, 'feed:subscribe', { mode: 'counts', intervalMs: 86_400_000 }), 'INVALID_PAYLOAD', {
      field: 'intervalMs',
    });
    ackError(await emitAck(socket, 'feed:watch', {}), 'INVALID_PAYLOAD', { field: 'targetId' });
    ackError(await emitAck(socket, 'feed:watch', { targetId: '' }), 'INVALID_PAYLOAD', { field: 'targetId' });
    ackError(await emitAck(socket, 'feed:unwatch'), 'INVALID_PAYLOAD');
  });

  it('feed:watch counts new comments on one target', async () => {
    const { author, socket } = await readerOf(ctx.server, 'cm');
    const target = uid('post');
    const ack = ackOk(await emitAck(socket, 'feed:watch', { targetId: target, intervalMs: MIN_MS }));
    assert.equal(ack.targetId, target);
    const counts = record(socket, 'feed:new_comments_available');
    await publish(ctx.server, author, { activityType: 'comment', targetId: target });
    await publish(ctx.server, author, { activityType: 'comment', targetId: uid('other') });
    await publish(ctx.server, author, { activityType: 'like', targetId: target });
    await publish(ctx.server, author, { activityType: 'comment', targetId: target });
    await counts.until((list) => total(list) >= 2, 5000);
    assert.ok(counts.items.every((p) => p.targetId === target), JSON.stringify(counts.items));
    assert.equal(await none(socket, 'feed:new_comments_available', 600), true);
    assert.equal(total(counts.items), 2);
    ackOk(await emitAck(socket, 'feed:unwatch', { targetId: target }));
    const after = none(socket, 'feed:new_comments_available', 800);
    await publish(ctx.server, author, { activityType: 'comment', targetId: target });
    assert.equal(await after, true, 'a count after feed:unwatch');
    counts.stop();
  });
});
