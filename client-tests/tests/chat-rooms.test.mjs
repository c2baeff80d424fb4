// Chat rooms: creating direct/group/public rooms over REST, chat:join, renaming, adding and
// removing members, and how live sockets follow membership (chat:room_updated, receiving the
// room's messages without reconnecting, group_invite notifications).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { UUID_RE, ackError, ackOk, httpError, httpStatus, rfc3339 } from '../lib/assertions.mjs';
import { createDirect, createGroup, createPublic, createRoomRes, getRoom, sendRest, sendSocket } from '../lib/chat.mjs';
import { emitAck, fakeId, none, once, record } from '../lib/client.mjs';
import { makeUser, makeUsers, useServer } from '../lib/harness.mjs';

const memberIds = (room) => room.members.map((m) => m.userId).sort();
const roleOf = (room, userId) => room.members.find((m) => m.userId === userId)?.role;
const roomUpdated = (socket, roomId, change) =>
  once(socket, 'chat:room_updated', 5000, (p) => p?.room?.id === roomId && p.change === change);
const newMessageIn = (socket, roomId) => once(socket, 'chat:new_message', 5000, (p) => p?.roomId === roomId);

describe('chat rooms', () => {
  const ctx = useServer();

  describe('direct rooms', () => {
    it('creates a direct room (201) in the contract shape', async () => {
      const [a, b] = await makeUsers(ctx.server, 2, 'direct');
      const { status, room } = await createRoomRes(a, [b], { type: 'direct' });
      assert.equal(status, 201);
      for (const key of ['id', 'type', 'name', 'createdBy', 'createdAt', 'members', 'lastSeq', 'unreadCount']) {
        assert.ok(key in room, `room lacks '${key}'`);
      }
      assert.match(room.id, UUID_RE);
      assert.equal(room.type, 'direct');
      assert.equal(room.createdBy, a.id);
      rfc3339(room.createdAt, 'createdAt');
      assert.deepEqual(memberIds(room), [a.id, b.id].sort());
      assert.equal(roleOf(room, a.id), 'owner');
      for (const m of room.members) {
        assert.equal(typeof m.role, 'string');
        rfc3339(m.joinedAt, 'members[].joinedAt');
      }
      assert.equal(room.lastSeq, 0);
      assert.equal(room.unreadCount, 0);
    });

    it('creating it again returns the existing room (200), whoever asks', async () => {
      const [a, b] = await makeUsers(ctx.server, 2, 'again');
      const first = await createRoomRes(a, [b], { type: 'direct' });
      assert.equal(first.status, 201);
      const byCreator = await createRoomRes(a, [b], { type: 'direct' });
      assert.deepEqual([byCreator.status, byCreator.room.id], [200, first.room.id]);
      const byOther = await createRoomRes(b, [a], { type: 'direct' });
      assert.deepEqual([byOther.status, byOther.room.id], [200, first.room.id]);
      // the type defaults to direct with one participant and no name
      const implicit = await createRoomRes(b, [a]);
      assert.deepEqual([implicit.status, implicit.room.id], [200, first.room.id]);
    });

    it('the other side\'s live socket gets chat:room_updated "created" and the room\'s messages', async () => {
      const [a, b] = await makeUsers(ctx.server, 2, 'live');
      const { socket: bs } = await b.connect();
      const created = once(bs, 'chat:room_updated', 5000, (p) => p?.change === 'created');
      const room = await createDirect(a, b);
      const update = await created;
      assert.equal(update.room.id, room.id);
      const incoming = newMessageIn(bs, room.id);
      const sent = await sendRest(a, room.id, 'hello there');
      assert.equal((await incoming).message.id, sent.id);
    });

    it('a direct room takes exactly one other participant', async () => {
      const [a, b, c] = await makeUsers(ctx.server, 3, 'two');
      const res = await a.api('POST', '/chat/rooms', { body: { participants: [b.id, c.id], type: 'direct' } });
      httpError(res, 400, 'INVALID_PAYLOAD');
    });

    it('adding members to a direct room is refused', async () => {
      const [a, b, c] = await makeUsers(ctx.server, 3, 'noadd');
      const room = await createDirect(a, b);
      const res = await a.api('POST', `/chat/rooms/${room.id}/members`, { body: { userIds: [c.id] } });
      assert.ok(res.status >= 400 && res.status < 500, `expected 4xx, got ${res.status}`);
      httpError(res, res.status, ['INVALID_PAYLOAD', 'CONFLICT', 'FORBIDDEN']);
    });
  });

  describe('group and public rooms', () => {
    it('creates a named group (type defaults to group); the creator is owner', async () => {
      const [a, b, c] = await makeUsers(ctx.server, 3, 'grp');
      const { status, room } = await createRoomRes(a, [b, c], { name: 'Team' });
      assert.equal(status, 201);
      assert.equal(room.type, 'group');
      assert.equal(room.name, 'Team');
      assert.equal(room.createdBy, a.id);
      assert.deepEqual(memberIds(room), [a.id, b.id, c.id].sort());
      assert.equal(roleOf(room, a.id), 'owner');
      assert.notEqual(roleOf(room, b.id), 'owner');
    });

    it('chat:join on a public room makes you a member and joins your socket', async () => {
      const [a, d] = await makeUsers(ctx.server, 2, 'pub');
      const room = await createPublic(a, 'Lobby');
      assert.equal(room.type, 'public');
      const { socket: ds } = await d.connect();
      const ack = ackOk(await emitAck(ds, 'chat:join', { roomId: room.id }));
      assert.equal(ack.room.id, room.id);
      assert.ok(memberIds(ack.room).includes(d.id), 'joiner must be listed as a member');

      const incoming = newMessageIn(ds, room.id);
      const sent = await sendRest(a, room.id, 'welcome');
      assert.equal((await incoming).message.id, sent.id);

      const list = httpStatus(await d.api('GET', '/chat/rooms'), 200);
      assert.ok(list.items.some((r) => r.id === room.id), 'joined public room must be listed');
      // joining again is harmless
      ackOk(await emitAck(ds, 'chat:join', { roomId: room.id }));
    });

    it('chat:join of an unknown room is NOT_FOUND', async () => {
      const u = await makeUser(ctx.server, 'unknown');
      const { socket } = await u.connect();
      ackError(await emitAck(socket, 'chat:join', { roomId: fakeId() }), 'NOT_FOUND');
    });

    it('chat:join of a group by a non-member is FORBIDDEN; a member may join', async () => {
      const [a, b, x] = await makeUsers(ctx.server, 3, 'forb');
      const room = await createGroup(a, [b], 'private');
      const { socket: xs } = await x.connect();
      ackError(await emitAck(xs, 'chat:join', { roomId: room.id }), 'FORBIDDEN');
      const { socket: bs } = await b.connect();
      assert.equal(ackOk(await emitAck(bs, 'chat:join', { roomId: room.id })).room.id, room.id);
    });

    it('GET /chat/rooms/:id is 403 for a non-member and 404 for an unknown room', async () => {
      const [a, b, x] = await makeUsers(ctx.server, 3, 'get');
      const room = await createGroup(a, [b], 'g');
      httpError(await x.api('GET', `/chat/rooms/${room.id}`), 403, 'FORBIDDEN');
      httpError(await a.api('GET', `/chat/rooms/${fakeId()}`), 404, 'NOT_FOUND');
      assert.equal((await getRoom(b, room.id)).id, room.id);
    });

    it('GET /chat/rooms lists the caller\'s rooms as { items, nextCursor }', async () => {
      const [a, b, c] = await makeUsers(ctx.server, 3, 'list');
      const g = await createGroup(a, [b], 'one');
      const d = await createDirect(a, c);
      const body = httpStatus(await a.api('GET', '/chat/rooms'), 200);
      assert.ok(Array.isArray(body.items));
      assert.ok('nextCursor' in body);
      const listed = body.items.map((r) => r.id);
      assert.ok(listed.includes(g.id) && listed.includes(d.id));
      const forB = httpStatus(await b.api('GET', '/chat/rooms'), 200).items.map((r) => r.id);
      assert.ok(forB.includes(g.id) && !forB.includes(d.id));
    });

    it('session:ready lists the rooms the user is a member of', async () => {
      const [a, b, c] = await makeUsers(ctx.server, 3, 'ready');
      const g = await createGroup(a, [b, c], 'ready-group');
      const d = await createDirect(b, a);
      const { ready } = await a.connect();
      assert.deepEqual([...ready.rooms].sort(), [g.id, d.id].sort());
    });
  });

  describe('renaming', () => {
    it('PATCH renames and every member gets chat:room_updated "renamed"', async () => {
      const [a, b, c] = await makeUsers(ctx.server, 3, 'ren');
      const room = await createGroup(a, [b, c], 'Before');
      const sockets = await Promise.all([a, b, c].map((u) => u.connect()));
      const updates = sockets.map(({ socket }) => roomUpdated(socket, room.id, 'renamed'));
      const res = await a.api('PATCH', `/chat/rooms/${room.id}`, { body: { name: 'After' } });
      assert.equal(httpStatus(res, 200).name, 'After');
      for (const u of await Promise.all(updates)) assert.equal(u.room.name, 'After');
      assert.equal((await getRoom(a, room.id)).name, 'After');
    });

    it('renaming is refused to non-members (403) and with an empty name (400)', async () => {
      const [a, b, x] = await makeUsers(ctx.server, 3, 'renbad');
      const room = await createGroup(a, [b], 'Name');
      httpError(await x.api('PATCH', `/chat/rooms/${room.id}`, { body: { name: 'Hijack' } }), 403, 'FORBIDDEN');
      httpError(await a.api('PATCH', `/chat/rooms/${room.id}`, { body: { name: '' } }), 400, 'INVALID_PAYLOAD', {
        field: 'name',
      });
    });
  });

  describe('adding members', () => {
    it('added users\' live sockets get "member_added" and the room\'s messages at once', async () => {
      const [a, b, d] = await makeUsers(ctx.server, 3, 'add');
      const room = await createGroup(a, [b], 'grow');
      const [{ socket: as }, { socket: bs }, { socket: ds }] = await Promise.all([a, b, d].map((u) => u.connect()));
      const updates = [as, bs, ds].map((s) => roomUpdated(s, room.id, 'member_added'));

      const res = await a.api('POST', `/chat/rooms/${room.id}/members`, { body: { userIds: [d.id] } });
      httpStatus(res, [200, 201]);
      for (const u of await Promise.all(updates)) assert.ok(memberIds(u.room).includes(d.id));

      const incoming = newMessageIn(ds, room.id);
      const sent = await sendSocket(bs, room.id, 'hi newcomer');
      assert.equal((await incoming).message.id, sent.id);
    });

    it('an added user gets a group_invite notification', async () => {
      const [a, b, e] = await makeUsers(ctx.server, 3, 'invite');
      const room = await createGroup(a, [b], 'invites');
      const { socket: es } = await e.connect();
      const invite = once(es, 'notification:new', 5000, (n) => n?.type === 'group_invite');
      httpStatus(await a.api('POST', `/chat/rooms/${room.id}/members`, { body: { userIds: [e.id] } }), [200, 201]);
      const n = await invite;
      assert.equal(n.type, 'group_invite');
      assert.equal(n.isRead, false);
    });

    it('any member may add members; a non-member may not', async () => {
      const [a, b, f, x] = await makeUsers(ctx.server, 4, 'who');
      const room = await createGroup(a, [b], 'open door');
      httpStatus(await b.api('POST', `/chat/rooms/${room.id}/members`, { body: { userIds: [f.id] } }), [200, 201]);
      assert.ok(memberIds(await getRoom(a, room.id)).includes(f.id));
      httpError(await x.api('POST', `/chat/rooms/${room.id}/members`, { body: { userIds: [x.id] } }), 403, 'FORBIDDEN');
    });
  });

  describe('removing members and leaving', () => {
    it('a removed member gets "member_removed" and stops receiving the room', async () => {
      const [a, b, d] = await makeUsers(ctx.server, 3, 'rm');
      const room = await createGroup(a, [b, d], 'shrink');
      const [{ socket: as }, { socket: bs }, { socket: ds }] = await Promise.all([a, b, d].map((u) => u.connect()));
      const updates = [as, bs, ds].map((s) => roomUpdated(s, room.id, 'member_removed'));

      const res = await a.api('DELETE', `/chat/rooms/${room.id}/members/${encodeURIComponent(d.id)}`);
      assert.equal(res.status, 204);
      for (const u of await Promise.all(updates)) assert.ok(!memberIds(u.room).includes(d.id));

      const toB = newMessageIn(bs, room.id);
      const quiet = none(ds, 'chat:new_message', 600, (p) => p?.roomId === room.id);
      await sendSocket(as, room.id, 'd cannot see this');
      await toB;
      assert.ok(await quiet, 'removed member still received a room message');
      ackError(await emitAck(ds, 'chat:sync', { roomId: room.id, afterSeq: 0 }), 'FORBIDDEN');
    });

    it('a member leaves by removing their own id', async () => {
      const [a, c] = await makeUsers(ctx.server, 2, 'leave');
      const room = await createGroup(a, [c], 'bye');
      const { socket: cs } = await c.connect();
      const removed = roomUpdated(cs, room.id, 'member_removed');
      assert.equal((await c.api('DELETE', `/chat/rooms/${room.id}/members/${encodeURIComponent(c.id)}`)).status, 204);
      await removed;
      httpError(await c.api('GET', `/chat/rooms/${room.id}`), 403, 'FORBIDDEN');
      assert.deepEqual(memberIds(await getRoom(a, room.id)), [a.id]);
    });
  });

  describe('big rooms (over ROOM_MEMBERS_INLINE_MAX, default 100)', () => {
    const INLINE_MAX = 100;

    /** A public room with `n` more members (ids only, created on first use) plus `users`. */
    async function bigRoom(owner, users, n, prefix) {
      const room = await createPublic(owner, 'big');
      const others = Array.from({ length: n }, (_, i) => `${prefix}-${i}`);
      for (let i = 0; i < others.length; i += 500) {
        httpStatus(await owner.api('POST', `/chat/rooms/${room.id}/members`, { body: { userIds: others.slice(i, i + 500) } }), 200);
      }
      httpStatus(await owner.api('POST', `/chat/rooms/${room.id}/members`, { body: { userIds: users.map((u) => u.id) } }), 200);
      return room;
    }

    it('a join sends each member one chat:room_updated of bounded size, with memberCount and userIds', async () => {
      const [owner, member, newcomer] = await makeUsers(ctx.server, 3, 'bigjoin');
      const room = await bigRoom(owner, [member], 600, fakeId());
      const total = 602;
      const sockets = [(await owner.connect()).socket, (await member.connect()).socket];
      const logs = sockets.map((s) => record(s, 'chat:room_updated', (p) => p?.room?.id === room.id));
      const { socket: ns } = await newcomer.connect();

      const ack = ackOk(await emitAck(ns, 'chat:join', { roomId: room.id }));
      assert.equal(ack.room.memberCount, total + 1);
      assert.equal(ack.room.members.length, INLINE_MAX, 'the room object lists only the first members');
      assert.equal(ack.room.unreadCount, 0, 'the joiner still sees their own unread count');

      for (const log of logs) {
        const [update] = await log.count(1);
        assert.equal(update.change, 'member_added');
        assert.deepEqual(update.userIds, [newcomer.id], 'who joined');
        assert.equal(update.room.memberCount, total + 1);
        assert.equal(update.room.members.length, INLINE_MAX);
        assert.ok(!('unreadCount' in update.room), 'per-member counts are not in a room-wide emit');
      }
      // One more change proves the first was delivered once: each socket has exactly one per change.
      const left = sockets.map((s) => roomUpdated(s, room.id, 'member_removed'));
      assert.equal((await newcomer.api('DELETE', `/chat/rooms/${room.id}/members/${encodeURIComponent(newcomer.id)}`)).status, 204);
      const removals = await Promise.all(left);
      for (const removal of removals) assert.deepEqual(removal.userIds, [newcomer.id]);
      for (const log of logs) {
        assert.deepEqual(log.items.map((p) => p.change), ['member_added', 'member_removed']);
        log.stop();
      }
    });

    it('GET /chat/rooms/:id/members pages through every member, newest first', async () => {
      const [owner, member] = await makeUsers(ctx.server, 2, 'bigpage');
      const room = await bigRoom(owner, [member], 230, fakeId());
      const seen = [];
      let cursor = null;
      for (let page = 0; page < 10; page++) {
        const query = cursor ? `?limit=100&before=${encodeURIComponent(cursor)}` : '?limit=100';
        const res = httpStatus(await member.api('GET', `/chat/rooms/${room.id}/members${query}`), 200);
        assert.ok(res.items.length <= 100);
        for (const m of res.items) rfc3339(m.joinedAt, 'members[].joinedAt');
        seen.push(...res.items.map((m) => m.userId));
        cursor = res.nextCursor;
        if (cursor === null) break;
      }
      assert.equal(cursor, null, 'paging ends');
      assert.equal(seen.length, 232);
      assert.equal(new Set(seen).size, 232);
      assert.equal(seen[0], member.id, 'most recently joined first');
      assert.equal(seen.at(-1), owner.id);
      const got = await getRoom(member, room.id);
      assert.equal(got.memberCount, 232);
      assert.equal(got.members.length, INLINE_MAX);
    });
  });
});
