// Resume after a disconnect (issue #10): for each kind of journaled event — new messages, edits
// and deletes, rooms created / renamed / members added / removed (the removed user included),
// others' delivered and read watermarks, notifications new and read, feed activities — a
// receiver disconnects, things happen (over REST and from a socket on another node when the
// suite runs on a cluster), the receiver comes back with its cursor and must get exactly the
// missed events, once, in order, then live ones. Every case runs twice: with stock
// socket.io-client following the documented procedure, and with the `@switchboard/client`
// helper. Then the reset answers (a foreign epoch, a cursor past the head, garbage), and a race:
// a sender posts continuously while receivers drop and resume over and over.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { memoryStorage, wrap } from '@switchboard/client';
import { httpStatus } from '../lib/assertions.mjs';
import { createGroup, sendRest, sendSocket } from '../lib/chat.mjs';
import { connect, createSocket, emitAck, range, uid } from '../lib/client.mjs';
import { CLUSTER_MODE, makeUsers, nodesOf, useServer } from '../lib/harness.mjs';
import { closeHelpers, cursorId, describeEvent, helperReceiver, plainReceiver } from '../lib/resume.mjs';

const ALL_KINDS = ['chat', 'notifications', 'feed'];
const MODES = { plain: plainReceiver, helper: helperReceiver };

/** Node `i` of the server (a cluster's nodes in turn; the one server otherwise). */
const nodeAt = (server, i) => nodesOf(server)[i % nodesOf(server).length];

const describeAll = (entries) => entries.map((e) => describeEvent(e.event, e.payload));

async function notify(server, user, title) {
  const res = await server.service('POST', '/notifications', { userIds: [user.id], type: 'system', title, message: title });
  httpStatus(res, 201);
  return res.body.notifications[0];
}

async function follow(server, follower, followee) {
  httpStatus(await server.service('PUT', '/follows', { followerId: follower.id, followeeId: followee.id }), 200);
}

async function publish(server, actor, activityType, fields = {}) {
  const res = await server.service('POST', '/feed/activities', {
    activityType,
    actorId: actor.id,
    targetId: uid('target'),
    targetType: 'post',
    ...fields,
  });
  httpStatus(res, 201);
  return res.body;
}

/** Asserts cursors only grow over the whole log, across every reconnect. */
function assertIncreasing(log) {
  const ids = log.journaled().map((e) => cursorId(e.cursor));
  for (let i = 1; i < ids.length; i += 1) assert.ok(ids[i] > ids[i - 1], `cursor ids must increase: ${ids.join(', ')}`);
}

/**
 * One resume case: `setup(users)` before the receiver (users[1]) connects on node 0;
 * it disconnects; `away(ctx)` acts and returns the descriptions of the events it must replay;
 * it reconnects (the plain client to node 1 of a cluster); `live(ctx)` acts once more and returns
 * the one live event that must follow the replay.
 */
async function resumeCase(server, mode, { users: n = 2, prefix, feed, setup, away, live }) {
  const users = await makeUsers(server, n, prefix);
  const ctx = { users, ...(await setup(users)) };
  const receiver = MODES[mode](server, users[1], { feed, node: nodeAt(server, 0) });
  try {
    const first = await receiver.connect(nodeAt(server, 0));
    assert.equal(typeof first.cursor, 'string', `session:ready.cursor: ${JSON.stringify(first)}`);
    assert.equal(first.recovered, false, 'a first connect has nothing to recover');
    assert.deepEqual([...first.reset].sort(), [...ALL_KINDS].sort());
    assert.equal(first.replayed, 0);
    assert.equal(receiver.cursor, first.cursor);
    receiver.disconnect();

    const expected = await away(ctx);
    const ready = await receiver.reconnect(nodeAt(server, 1));
    assert.equal(ready.recovered, true, `recovered: ${JSON.stringify(ready)}`);
    assert.deepEqual(ready.reset, []);
    assert.equal(ready.cursor.split(':')[0], first.cursor.split(':')[0], 'same epoch');
    assert.ok(Array.isArray(ready.rooms), 'the contract fields stay');
    await receiver.log.until((l) => l.sinceReady().length >= Math.max(expected.length, ready.replayed), 8000, 'the replay');
    assert.deepEqual(describeAll(receiver.log.sinceReady()), expected, 'exactly the missed events, in order');
    assert.equal(ready.replayed, expected.length, `replayed: ${JSON.stringify(ready)}`);

    const liveEvent = await live(ctx);
    await receiver.log.until((l) => l.sinceReady().length >= expected.length + 1, 8000, 'the live event');
    assert.deepEqual(describeAll(receiver.log.sinceReady()), [...expected, liveEvent], 'then the live event, once');
    assertIncreasing(receiver.log);
    if (mode === 'helper') {
      assert.equal(receiver.client.duplicates, 0, 'the server sent no duplicate');
      assert.equal(receiver.client.recovered, true);
    }
  } finally {
    receiver.close();
  }
}

const msg = (room, m) => `chat:new_message ${room.id} #${m.seq} ${m.content}`;

/** The cases, each `{ name, ...resumeCase options }`. */
const CASES = [
  {
    name: 'new messages (REST and a socket on another node)',
    prefix: 'rsmsg',
    async setup([a, b]) {
      const room = await createGroup(a, [b], 'resume messages');
      const { socket: as } = await connect(nodeAt(this.server, 1), a.token);
      return { room, as };
    },
    async away({ users: [a], room, as }) {
      const m1 = await sendRest(a, room.id, 'away 1');
      const m2 = await sendSocket(as, room.id, 'away 2');
      const m3 = await sendRest(a, room.id, 'away 3');
      return [m1, m2, m3].map((m) => msg(room, m));
    },
    async live({ room, as }) {
      return msg(room, await sendSocket(as, room.id, 'live'));
    },
  },
  {
    name: 'an edit and a delete',
    prefix: 'rsedit',
    async setup([a, b]) {
      const room = await createGroup(a, [b], 'resume edits');
      const m1 = await sendRest(a, room.id, 'first');
      const m2 = await sendRest(a, room.id, 'second');
      return { room, m1, m2 };
    },
    async away({ users: [a], room, m1, m2 }) {
      httpStatus(await a.api('PATCH', `/chat/rooms/${room.id}/messages/${m1.id}`, { body: { message: 'first, edited' } }), 200);
      const del = await a.api('DELETE', `/chat/rooms/${room.id}/messages/${m2.id}`);
      assert.ok([200, 204].includes(del.status), `delete: ${del.status}`);
      return [`chat:message_updated ${room.id} #1 first, edited`, `chat:message_updated ${room.id} #2 deleted`];
    },
    async live({ users: [a], room }) {
      return msg(room, await sendRest(a, room.id, 'live'));
    },
  },
  {
    name: 'a room created, renamed and grown while away, and its messages',
    prefix: 'rsroom',
    users: 3,
    async setup() {
      return {};
    },
    async away(ctx) {
      const [a, b, c] = ctx.users;
      const room = await createGroup(a, [b], 'born while away');
      ctx.room = room;
      // Being put in a group is also a notification (group_invite), right after the room.
      const invite = httpStatus(await b.api('GET', '/notifications?limit=1'), 200).items[0];
      assert.equal(invite.type, 'group_invite');
      httpStatus(await a.api('PATCH', `/chat/rooms/${room.id}`, { body: { name: 'renamed while away' } }), 200);
      httpStatus(await a.api('POST', `/chat/rooms/${room.id}/members`, { body: { userIds: [c.id] } }), [200, 201]);
      const m = await sendRest(c, room.id, 'hello from the new member');
      return [
        `chat:room_updated ${room.id} created`,
        `notification:new ${invite.id} ${invite.title}`,
        `chat:room_updated ${room.id} renamed renamed while away`,
        `chat:room_updated ${room.id} member_added`,
        msg(room, m),
      ];
    },
    async live({ users: [a], room }) {
      return msg(room, await sendRest(a, room.id, 'live'));
    },
  },
  {
    name: 'removed from a room while away: the removal, none of the room\'s later messages',
    prefix: 'rsrm',
    users: 3,
    async setup([a, b, c]) {
      const room = await createGroup(a, [b, c], 'resume removal');
      return { room };
    },
    // The room is gone for the removed user: none of its messages come back, not even those
    // sent before the removal (replay follows membership now); the removal itself does.
    async away({ users: [a, b], room }) {
      await sendRest(a, room.id, 'before the removal');
      assert.equal((await a.api('DELETE', `/chat/rooms/${room.id}/members/${encodeURIComponent(b.id)}`)).status, 204);
      await sendRest(a, room.id, 'after the removal');
      return [`chat:room_updated ${room.id} member_removed`];
    },
    async live({ users: [, b] }) {
      const n = await notify(this.server, b, 'live after removal');
      return `notification:new ${n.id} live after removal`;
    },
  },
  {
    name: 'another member\'s delivered and read watermarks (from a socket on another node)',
    prefix: 'rsmark',
    users: 3,
    async setup([a, b, c]) {
      const room = await createGroup(a, [b, c], 'resume receipts');
      await sendRest(a, room.id, 'one');
      await sendRest(a, room.id, 'two');
      const { socket: cs } = await connect(nodeAt(this.server, 1), c.token);
      return { room, cs };
    },
    async away({ users: [, , c], room, cs }) {
      assert.equal((await emitAck(cs, 'chat:delivered', { roomId: room.id, upToSeq: 2 })).ok, true);
      assert.equal((await emitAck(cs, 'chat:read', { roomId: room.id, upToSeq: 1 })).ok, true);
      return [`chat:messages_delivered ${room.id} ${c.id} 2`, `chat:messages_read ${room.id} ${c.id} 1`];
    },
    async live({ users: [a], room }) {
      return msg(room, await sendRest(a, room.id, 'live'));
    },
  },
  {
    name: 'notifications: new ones and a read-state change',
    prefix: 'rsnote',
    async setup() {
      return {};
    },
    async away({ users: [, b] }) {
      const n1 = await notify(this.server, b, 'one');
      const n2 = await notify(this.server, b, 'two');
      httpStatus(await b.api('PUT', '/notifications/read', { body: { notificationIds: [n1.id] } }), 200);
      return [`notification:new ${n1.id} one`, `notification:new ${n2.id} two`, `notification:read ${n1.id} unread=1`];
    },
    async live({ users: [, b] }) {
      const n = await notify(this.server, b, 'three');
      return `notification:new ${n.id} three`;
    },
  },
  {
    name: 'feed activities for a socket connected with feed: "all"',
    prefix: 'rsfeed',
    users: 3,
    feed: 'all',
    async setup([a, b]) {
      await follow(this.server, b, a);
      return {};
    },
    async away({ users: [a, , stranger] }) {
      const post = await publish(this.server, a, 'post');
      const like = await publish(this.server, a, 'like');
      const open = await publish(this.server, stranger, 'post', { audience: 'public' });
      return [`feed:new_post ${post.id} post`, `feed:activity ${like.id} like`, `feed:new_post ${open.id} post`];
    },
    async live({ users: [a] }) {
      const comment = await publish(this.server, a, 'comment');
      return `feed:new_comment ${comment.id} comment`;
    },
  },
];

describe('resume: exactly the missed events, once, in order, then live ones', () => {
  const ctx = useServer({ RATE_LIMIT_PER_MINUTE: '100000' });
  after(closeHelpers);

  for (const mode of Object.keys(MODES)) {
    describe(`with ${mode === 'plain' ? 'stock socket.io-client (the documented procedure)' : '@switchboard/client'}`, () => {
      for (const { name, ...c } of CASES) {
        it(name, async () => {
          // `this.server` inside the case's functions
          const bound = { ...c, server: ctx.server };
          for (const key of ['setup', 'away', 'live']) bound[key] = c[key].bind(bound);
          await resumeCase(ctx.server, mode, bound);
        });
      }
    });
  }
});

describe('resume: a position the server cannot continue from is a reset', () => {
  const ctx = useServer();
  after(closeHelpers);

  /** Connects `user` with `cursor` (and `feed`) in auth; resolves `session:ready`. */
  async function readyWith(user, cursor, feed) {
    const socket = createSocket(ctx.server, null, { auth: { token: user.token, cursor, ...(feed ? { feed } : {}) } });
    const ready = await new Promise((resolve, reject) => {
      socket.once('session:ready', resolve);
      socket.once('connect_error', reject);
    });
    socket.close();
    return ready;
  }

  it('a cursor of another epoch: recovered false, every kind reset, a current cursor', async () => {
    const [u] = await makeUsers(ctx.server, 1, 'rsepoch');
    const current = (await readyWith(u, undefined)).cursor;
    const ready = await readyWith(u, 'someotherepoch:5', 'all');
    assert.equal(ready.recovered, false);
    assert.deepEqual([...ready.reset].sort(), [...ALL_KINDS].sort());
    assert.equal(ready.replayed, 0);
    assert.equal(ready.cursor.split(':')[0], current.split(':')[0]);
    assert.notEqual(ready.cursor.split(':')[0], 'someotherepoch');
  });

  it('a cursor past the journal head: reset', async () => {
    const [u] = await makeUsers(ctx.server, 1, 'rshead');
    const epoch = (await readyWith(u, undefined)).cursor.split(':')[0];
    const ready = await readyWith(u, `${epoch}:999999999`);
    assert.equal(ready.recovered, false);
    assert.ok(ready.reset.includes('chat') && ready.reset.includes('notifications'), JSON.stringify(ready.reset));
    assert.equal(ready.replayed, 0);
  });

  it('a cursor that is not one still connects, as a reset', async () => {
    const [u] = await makeUsers(ctx.server, 1, 'rsjunk');
    for (const junk of ['garbage', 12, '', { id: 1 }]) {
      const ready = await readyWith(u, junk);
      assert.equal(ready.recovered, false, JSON.stringify(junk));
      assert.ok(ready.reset.includes('chat'), JSON.stringify(ready.reset));
      assert.equal(typeof ready.cursor, 'string');
    }
  });

  it('the helper reports a reset through onReset and continues from the server\'s cursor', async () => {
    const [a, b] = await makeUsers(ctx.server, 2, 'rshelper');
    const room = await createGroup(a, [b], 'after a reset');
    const socket = createSocket(ctx.server, null, { autoConnect: false, auth: {} });
    const resets = [];
    const client = wrap(socket, { token: b.token, storage: memoryStorage('someotherepoch:5'), onReset: (kinds) => resets.push(kinds) });
    const session = client.nextSession();
    socket.connect();
    const s = await session;
    assert.equal(s.recovered, false);
    assert.equal(client.recovered, false);
    assert.equal(resets.length, 1);
    assert.ok(resets[0].includes('chat') && resets[0].includes('notifications'), JSON.stringify(resets));
    assert.equal(client.lastCursor, s.cursor);
    const got = new Promise((resolve) => client.once('chat:new_message', (p, cursor) => resolve({ p, cursor })));
    await sendRest(a, room.id, 'after reset');
    const { p, cursor } = await got;
    assert.equal(p.message.content, 'after reset');
    assert.ok(cursorId(cursor) > cursorId(s.cursor));
    assert.equal(client.lastCursor, cursor);
    client.close();
  });
});

describe('resume race: a sender never stops while receivers drop and resume', () => {
  const ctx = useServer({ RATE_LIMIT_PER_MINUTE: '100000' });
  after(closeHelpers);

  it('every seq of the room reaches each helper-wrapped receiver exactly once, in order', { timeout: 90_000 }, async () => {
    const MESSAGES = 150;
    const RECEIVERS = 4;
    const [sender, ...receiverUsers] = await makeUsers(ctx.server, RECEIVERS + 1, 'rsrace');
    const room = await createGroup(sender, receiverUsers, 'race');
    const { socket: ss } = await connect(nodeAt(ctx.server, 1), sender.token);
    const receivers = receiverUsers.map((u, i) =>
      helperReceiver(ctx.server, u, { node: nodeAt(ctx.server, i), reconnection: true, reconnectionDelay: 20, reconnectionDelayMax: 100 }),
    );
    await Promise.all(receivers.map((r) => r.connect()));
    const sessions = receivers.map(() => []);
    receivers.forEach((r, i) => r.client.onSession((s) => sessions[i].push(s)));

    let sending = true;
    const reconnects = receivers.map(() => 0);
    const churn = receivers.map(async (r, i) => {
      let drops = 0;
      while (sending) {
        await new Promise((resolve) => setTimeout(resolve, 20 + Math.random() * 150));
        if (!sending) break;
        const back = r.client.nextSession();
        if (i % 2 === 0) r.drop(); // the transport dies; socket.io-client reconnects by itself
        else {
          r.disconnect();
          r.socket.connect();
        }
        await back;
        drops += 1;
        reconnects[i] = drops;
      }
      return drops;
    });
    // At least MESSAGES, and on until every receiver resumed twice mid-stream: a fast server
    // sends 150 before a slow reconnect is back (bounded, so a stuck churn fails below).
    let sent = 0;
    while (sent < MESSAGES || (reconnects.some((n) => n < 2) && sent < 20 * MESSAGES)) {
      sent += 1;
      if (sent % 2) await sendSocket(ss, room.id, `race ${sent}`);
      else await sendRest(sender, room.id, `race ${sent}`);
    }
    sending = false;
    const drops = await Promise.all(churn);
    for (const [i, r] of receivers.entries()) {
      const seqs = () => r.log.journaled().filter((e) => e.event === 'chat:new_message' && e.payload.roomId === room.id).map((e) => e.payload.message.seq);
      await r.log.until(() => seqs().length >= sent, 15_000, `all ${sent} messages at receiver ${i}`);
      assert.deepEqual(seqs(), range(1, sent), `receiver ${i} (${drops[i]} reconnects, ${r.client.duplicates} duplicates dropped)`);
      assert.ok(drops[i] >= 2, `receiver ${i} reconnected ${drops[i]} times`);
      for (const s of sessions[i]) assert.equal(s.recovered, true, `every resume recovered: ${JSON.stringify(s)}`);
    }
  });
});

for (const [how, stop] of [
  ['SIGKILLed', (cluster, i) => cluster.kill(i)],
  ['stopped gracefully', (cluster, i) => cluster.stopNode(i)],
]) {
  describe(`resume on another node after the client's node was ${how}`, { skip: CLUSTER_MODE ? false : 'needs SWITCHBOARD_NODES (npm run test:cluster)' }, () => {
    const ctx = useServer({ RATE_LIMIT_PER_MINUTE: '100000' });

    it(`node ${how}: the client resumes on a live node with nothing lost`, async () => {
      const cluster = ctx.server;
      const live = cluster.alive();
      assert.ok(live.length >= 2, 'two live nodes');
      const [dying, survivor] = live;
      const [a, b] = await makeUsers(cluster, 2, 'rsdie');
      const room = await createGroup(a, [b], 'node dies');
      const receiver = plainReceiver(cluster, b);
      await receiver.connect(dying);
      const gone = new Promise((resolve) => receiver.socket.once('disconnect', resolve));
      const before = await survivor.api('POST', `/api/v1/realtime/chat/rooms/${room.id}/messages`, { token: a.token, body: { message: 'before' } });
      httpStatus(before, 201);
      await receiver.log.until((l) => l.sinceReady().length >= 1, 8000, 'the live message');
      await stop(cluster, cluster.nodes.indexOf(dying));
      await gone;
      const away = [];
      for (const n of range(1, 3)) {
        const res = await survivor.api('POST', `/api/v1/realtime/chat/rooms/${room.id}/messages`, { token: a.token, body: { message: `away ${n}` } });
        away.push(httpStatus(res, 201));
      }
      const ready = await receiver.reconnect(survivor);
      assert.equal(ready.recovered, true, JSON.stringify(ready));
      assert.equal(ready.replayed, 3);
      await receiver.log.until((l) => l.sinceReady().length >= 3, 8000, 'the replay');
      assert.deepEqual(describeAll(receiver.log.sinceReady()), away.map((m) => msg(room, m)));
      assertIncreasing(receiver.log);
      receiver.close();
    });
  });
}
