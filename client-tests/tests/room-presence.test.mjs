// Room presence (issue 13): presence:watch { roomId } / presence:unwatch for members only, with a
// snapshot in the ack; presence:update of every member to watching sockets (also members who are
// neither followed nor direct partners), presence:room_count { roomId, online } coalesced per
// PRESENCE_COUNT_INTERVAL_MS; hidden members neither announced nor counted; at most
// MAX_WATCHES_PER_SOCKET rooms per socket; GET /chat/rooms/:id/presence with an ETag. On a
// cluster the watcher and the members sit on different nodes.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ackError, ackOk, httpStatus, rfc3339 } from '../lib/assertions.mjs';
import { createGroup, createPublic, setPreferences } from '../lib/chat.mjs';
import { emitAck, fakeId, none, once, record } from '../lib/client.mjs';
import { makeUser, makeUsers, useServer } from '../lib/harness.mjs';

const about = (userId, status) => (p) => p?.userId === userId && (status === undefined || p.status === status);
const countOf = (roomId, online) => (p) => p?.roomId === roomId && (online === undefined || p.online === online);

/** A group of a watcher and `n` other members, the watcher connected and watching the room. */
async function watchedGroup(server, prefix, n = 2) {
  const [watcher, ...members] = await makeUsers(server, n + 1, prefix);
  const room = await createGroup(watcher, members, prefix);
  const { socket: ws } = await watcher.connect();
  const ack = ackOk(await emitAck(ws, 'presence:watch', { roomId: room.id }));
  return { watcher, members, room, ws, ack };
}

describe('room presence (PRESENCE_COUNT_INTERVAL_MS=100, MAX_WATCHES_PER_SOCKET=3)', () => {
  const ctx = useServer({ PRESENCE_COUNT_INTERVAL_MS: '100', MAX_WATCHES_PER_SOCKET: '3' });

  it('the watch ack is a snapshot of the members and the online count', async () => {
    const { watcher, members, room, ack } = await watchedGroup(ctx.server, 'snap');
    assert.equal(ack.roomId, room.id);
    assert.equal(ack.online, 1, 'only the watcher is online');
    assert.equal(ack.nextCursor, null);
    const byId = Object.fromEntries(ack.items.map((i) => [i.userId, i]));
    assert.deepEqual(Object.keys(byId).sort(), [watcher.id, ...members.map((m) => m.id)].sort());
    assert.equal(byId[watcher.id].status, 'online');
    rfc3339(byId[watcher.id].lastSeen, 'lastSeen');
    assert.equal(byId[members[0].id].status, 'offline');
  });

  it('a member coming online and going offline reaches the watcher, with the count', async () => {
    const { members, room, ws } = await watchedGroup(ctx.server, 'live');
    const [m] = members;
    const online = once(ws, 'presence:update', 4000, about(m.id, 'online'));
    const two = once(ws, 'presence:room_count', 4000, countOf(room.id, 2));
    const { socket } = await m.connect();
    rfc3339((await online).lastSeen, 'lastSeen');
    assert.deepEqual(await two, { roomId: room.id, online: 2 });
    const offline = once(ws, 'presence:update', 4000, about(m.id, 'offline'));
    const one = once(ws, 'presence:room_count', 4000, countOf(room.id, 1));
    socket.close();
    await offline;
    await one;
  });

  it('a burst of changes is coalesced into few counts, the last one right', async () => {
    const { members, room, ws } = await watchedGroup(ctx.server, 'burst', 4);
    const counts = record(ws, 'presence:room_count', countOf(room.id));
    await Promise.all(members.map((m) => m.connect()));
    await counts.until((list) => list.at(-1)?.online === 5);
    assert.ok(counts.items.length <= 4, `one count per change is not coalesced: ${JSON.stringify(counts.items)}`);
    counts.stop();
  });

  it('a member hiding their status is neither announced nor counted', async () => {
    const { members, room, ws } = await watchedGroup(ctx.server, 'hide');
    const [hidden, visible] = members;
    await setPreferences(hidden, { shareOnlineStatus: false });
    const quiet = none(ws, 'presence:update', 800, about(hidden.id));
    await hidden.connect();
    assert.equal(await quiet, true, 'a hidden member was announced');
    const two = once(ws, 'presence:room_count', 4000, countOf(room.id, 2));
    await visible.connect();
    await two;
    const page = httpStatus(await members[1].api('GET', `/chat/rooms/${room.id}/presence`), 200);
    assert.equal(page.online, 2);
    assert.equal(page.items.find((i) => i.userId === hidden.id).status, 'offline');
  });

  it('presence:unwatch stops the updates', async () => {
    const { members, room, ws } = await watchedGroup(ctx.server, 'unw');
    ackOk(await emitAck(ws, 'presence:unwatch', { roomId: room.id }));
    const quiet = none(ws, 'presence:update', 800, about(members[0].id));
    const noCount = none(ws, 'presence:room_count', 800, countOf(room.id));
    await members[0].connect();
    assert.equal(await quiet, true, 'an unwatched room sent presence:update');
    assert.equal(await noCount, true, 'an unwatched room sent presence:room_count');
  });

  it('a removed member stops watching, on whatever node their socket is', async () => {
    const [owner, leaver, other] = await makeUsers(ctx.server, 3, 'rm');
    const room = await createGroup(owner, [leaver, other], 'rm');
    const { socket: ls } = await leaver.connect();
    ackOk(await emitAck(ls, 'presence:watch', { roomId: room.id }));
    const removed = once(ls, 'chat:room_updated', 4000, (p) => p?.room?.id === room.id && p.change === 'member_removed');
    httpStatus(await owner.api('DELETE', `/chat/rooms/${room.id}/members/${encodeURIComponent(leaver.id)}`), 204);
    await removed;
    const quiet = none(ls, 'presence:update', 800, about(other.id));
    await other.connect();
    assert.equal(await quiet, true, 'a former member still heard the room\'s presence');
  });

  it('members only; bad payloads; at most MAX_WATCHES_PER_SOCKET rooms', async () => {
    const owner = await makeUser(ctx.server, 'own');
    const stranger = await makeUser(ctx.server, 'str');
    const group = await createGroup(owner, [await makeUser(ctx.server, 'oth')], 'g');
    const pub = await createPublic(owner, 'pub');
    const { socket } = await stranger.connect();
    ackError(await emitAck(socket, 'presence:watch', { roomId: group.id }), 'FORBIDDEN');
    ackError(await emitAck(socket, 'presence:watch', { roomId: pub.id }), 'FORBIDDEN');
    ackError(await emitAck(socket, 'presence:watch', { roomId: fakeId() }), 'NOT_FOUND');
    ackError(await emitAck(socket, 'presence:watch', {}), 'INVALID_PAYLOAD', { field: 'roomId' });
    ackError(await emitAck(socket, 'presence:watch', 'nope'), 'INVALID_PAYLOAD');
    ackError(await emitAck(socket, 'presence:unwatch', { roomId: 7 }), 'INVALID_PAYLOAD', { field: 'roomId' });
    const rooms = [];
    for (let i = 0; i < 4; i += 1) rooms.push(await createGroup(stranger, [owner], `w${i}`));
    const { socket: ws } = await stranger.connect();
    for (const r of rooms.slice(0, 3)) ackOk(await emitAck(ws, 'presence:watch', { roomId: r.id }));
    ackOk(await emitAck(ws, 'presence:watch', { roomId: rooms[0].id }), 'watching again is fine');
    ackError(await emitAck(ws, 'presence:watch', { roomId: rooms[3].id }), 'CONFLICT');
    ackOk(await emitAck(ws, 'presence:unwatch', { roomId: rooms[0].id }));
    ackOk(await emitAck(ws, 'presence:watch', { roomId: rooms[3].id }));
  });

  it('GET /chat/rooms/:id/presence pages members and answers 304 while nothing changed', async () => {
    const [a, b, c] = await makeUsers(ctx.server, 3, 'rest');
    const room = await createGroup(a, [b, c], 'rest');
    const first = await a.api('GET', `/chat/rooms/${room.id}/presence?limit=2`);
    const page = httpStatus(first, 200);
    assert.equal(page.items.length, 2);
    assert.ok(page.nextCursor, 'a next page');
    const rest = httpStatus(await a.api('GET', `/chat/rooms/${room.id}/presence?limit=2&before=${encodeURIComponent(page.nextCursor)}`), 200);
    assert.equal(rest.items.length, 1);
    assert.equal(rest.nextCursor, null);
    const tag = first.headers.get('etag');
    assert.ok(tag, 'an ETag');
    const again = await a.api('GET', `/chat/rooms/${room.id}/presence?limit=2`, { headers: { 'If-None-Match': tag } });
    assert.equal(again.status, 304);
    assert.equal(again.body, null);
  });
});
