// Chat typing indicators and receipts: chat:typing -> chat:user_typing (never to the typer's own
// sockets, throttled, auto-false after TYPING_TIMEOUT_MS and on the last disconnect, hidden by
// shareTyping=false); chat:read / chat:delivered watermarks, their broadcasts (hidden by
// shareReadReceipts=false) and the unread counts they drive in the room list.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ackError, ackOk, assertIncludes, rfc3339 } from '../lib/assertions.mjs';
import { createGroup, getRoom, groupOfThree, inRoom, sendMany, sendRest, setPreferences } from '../lib/chat.mjs';
import { emitAck, none, once } from '../lib/client.mjs';
import { makeUser, useServer } from '../lib/harness.mjs';

const typing = (roomId, userId, isTyping) =>
  inRoom(roomId, (p) => p.userId === userId && (isTyping === undefined || p.isTyping === isTyping));
const typingEvent = (socket, roomId, userId, isTyping, timeoutMs = 5000) =>
  once(socket, 'chat:user_typing', timeoutMs, typing(roomId, userId, isTyping));
const setTyping = async (socket, roomId, isTyping) =>
  ackOk(await emitAck(socket, 'chat:typing', { roomId, isTyping }));

describe('chat typing (TYPING_TIMEOUT_MS=600, TYPING_THROTTLE_MS=2000)', () => {
  const ctx = useServer();

  it('reaches the other members and never the typing user\'s own sockets', async () => {
    const { a, room, a1, a2, bs, cs } = await groupOfThree(ctx.server, 'typ');
    const others = [bs, cs].map((s) => typingEvent(s, room.id, a.id, true));
    const own = [a1, a2].map((s) => none(s, 'chat:user_typing', 800));
    await setTyping(a1, room.id, true);
    for (const p of await Promise.all(others)) assertIncludes(p, { roomId: room.id, userId: a.id, isTyping: true });
    assert.deepEqual(await Promise.all(own), [true, true], 'the typing user\'s own sockets got chat:user_typing');
  });

  it('sends isTyping:false by itself after the typing timeout', async () => {
    const { a, room, a1, bs } = await groupOfThree(ctx.server, 'auto');
    const started = typingEvent(bs, room.id, a.id, true);
    const stopped = typingEvent(bs, room.id, a.id, false, 4000);
    await setTyping(a1, room.id, true);
    await started;
    const t0 = Date.now();
    const p = await stopped;
    assertIncludes(p, { roomId: room.id, userId: a.id, isTyping: false });
    assert.ok(Date.now() - t0 >= 300, `auto-false came too early (${Date.now() - t0} ms after true)`);
  });

  it('does not forward a second isTyping:true within the throttle window', async () => {
    const { a, room, a1, bs } = await groupOfThree(ctx.server, 'thr');
    const first = typingEvent(bs, room.id, a.id, true);
    await setTyping(a1, room.id, true);
    await first;
    const quiet = none(bs, 'chat:user_typing', 500, typing(room.id, a.id, true));
    await setTyping(a1, room.id, true);
    assert.ok(await quiet, 'a throttled isTyping:true was forwarded');
  });

  it('a throttled isTyping:true still refreshes the auto-false timer', async () => {
    const { a, room, a1, bs } = await groupOfThree(ctx.server, 'refresh');
    const first = typingEvent(bs, room.id, a.id, true);
    await setTyping(a1, room.id, true);
    await first;
    // 350 ms in (the timer is at 600), refresh; the original deadline must then pass silently
    assert.ok(await none(bs, 'chat:user_typing', 350, typing(room.id, a.id, false)), 'auto-false came too early');
    const stopped = typingEvent(bs, room.id, a.id, false, 4000);
    await setTyping(a1, room.id, true);
    assert.ok(await none(bs, 'chat:user_typing', 400, typing(room.id, a.id, false)), 'refresh did not extend the timer');
    await stopped;
  });

  it('shareTyping=false hides the user\'s typing', async () => {
    const [e, b] = [await makeUser(ctx.server, 'shy'), await makeUser(ctx.server, 'watcher')];
    const room = await createGroup(e, [b], 'shy typing');
    await setPreferences(e, { shareTyping: false });
    const { socket: es } = await e.connect();
    const { socket: bs } = await b.connect();
    const quiet = none(bs, 'chat:user_typing', 800, typing(room.id, e.id));
    await setTyping(es, room.id, true);
    assert.ok(await quiet, 'typing of a user with shareTyping=false was shown');
  });
});

describe('chat typing (TYPING_TIMEOUT_MS=10000)', () => {
  const ctx = useServer({ TYPING_TIMEOUT_MS: '10000' });

  it('forwards an explicit isTyping:false', async () => {
    const { a, room, a1, bs } = await groupOfThree(ctx.server, 'explicit');
    const started = typingEvent(bs, room.id, a.id, true);
    await setTyping(a1, room.id, true);
    await started;
    const stopped = typingEvent(bs, room.id, a.id, false, 3000);
    await setTyping(a1, room.id, false);
    await stopped;
  });

  it('sends isTyping:false when the typing user\'s last socket disconnects', async () => {
    const { a, room, a1, a2, bs } = await groupOfThree(ctx.server, 'gone');
    const started = typingEvent(bs, room.id, a.id, true);
    await setTyping(a1, room.id, true);
    await started;
    const early = none(bs, 'chat:user_typing', 600, typing(room.id, a.id, false));
    a1.close();
    assert.ok(await early, 'isTyping:false sent while the user still had a socket');
    const stopped = typingEvent(bs, room.id, a.id, false, 3000);
    a2.close();
    await stopped;
  });
});

describe('chat receipts', () => {
  const ctx = useServer();

  it('chat:read answers the unread count and broadcasts chat:messages_read to the room', async () => {
    const { a, b, room, a1, a2, bs, cs } = await groupOfThree(ctx.server, 'read');
    await sendMany(a, room.id, 3);
    const seen = [a1, a2, cs].map((s) => once(s, 'chat:messages_read', 5000, inRoom(room.id)));
    const ack = ackOk(await emitAck(bs, 'chat:read', { roomId: room.id, upToSeq: 2 }));
    assert.equal(ack.unreadCount, 1);
    for (const p of await Promise.all(seen)) {
      assertIncludes(p, { roomId: room.id, userId: b.id, upToSeq: 2 }, 'chat:messages_read');
      rfc3339(p.readAt, 'readAt');
    }
  });

  it('the read watermark never moves backwards', async () => {
    const { a, b, room, a1, bs } = await groupOfThree(ctx.server, 'back');
    await sendMany(a, room.id, 3);
    assert.equal(ackOk(await emitAck(bs, 'chat:read', { roomId: room.id, upToSeq: 3 })).unreadCount, 0);
    const lower = none(a1, 'chat:messages_read', 600, inRoom(room.id, (p) => p.userId === b.id && p.upToSeq < 3));
    assert.equal(ackOk(await emitAck(bs, 'chat:read', { roomId: room.id, upToSeq: 1 })).unreadCount, 0);
    assert.ok(await lower, 'a lower read broadcast a lower watermark');
    assert.equal((await getRoom(b, room.id)).unreadCount, 0);
    await sendRest(a, room.id, 'one more');
    assert.equal((await getRoom(b, room.id)).unreadCount, 1);
  });

  it('shareReadReceipts=false hides the broadcast but still stores the watermark', async () => {
    const [a, f] = [await makeUser(ctx.server, 'sender'), await makeUser(ctx.server, 'private')];
    const room = await createGroup(a, [f], 'private reads');
    await setPreferences(f, { shareReadReceipts: false });
    await sendMany(a, room.id, 2);
    const { socket: as } = await a.connect();
    const { socket: fs } = await f.connect();
    const quiet = none(as, 'chat:messages_read', 800, inRoom(room.id));
    assert.equal(ackOk(await emitAck(fs, 'chat:read', { roomId: room.id, upToSeq: 2 })).unreadCount, 0);
    assert.ok(await quiet, 'read receipt broadcast for a user with shareReadReceipts=false');
    assert.equal((await getRoom(f, room.id)).unreadCount, 0);
  });

  it('chat:delivered broadcasts chat:messages_delivered', async () => {
    const { a, b, room, a1, bs } = await groupOfThree(ctx.server, 'deliv');
    await sendMany(a, room.id, 3);
    const seen = once(a1, 'chat:messages_delivered', 5000, inRoom(room.id));
    ackOk(await emitAck(bs, 'chat:delivered', { roomId: room.id, upToSeq: 3 }));
    assertIncludes(await seen, { roomId: room.id, userId: b.id, upToSeq: 3 }, 'chat:messages_delivered');
    // a lower watermark is accepted but never broadcast as lower
    const lower = none(a1, 'chat:messages_delivered', 600, inRoom(room.id, (p) => p.upToSeq < 3));
    ackOk(await emitAck(bs, 'chat:delivered', { roomId: room.id, upToSeq: 1 }));
    assert.ok(await lower, 'a lower delivered watermark was broadcast');
  });

  it('unreadCount and lastMessage in GET /chat/rooms and GET /chat/rooms/:id', async () => {
    const { a, b, room, bs } = await groupOfThree(ctx.server, 'unread');
    const sent = await sendMany(a, room.id, 3);
    const item = (await b.api('GET', '/chat/rooms')).body.items.find((r) => r.id === room.id);
    assert.ok(item, 'room missing from GET /chat/rooms');
    assert.equal(item.unreadCount, 3);
    assert.equal(item.lastMessage?.id, sent[2].id);
    assert.equal(item.lastMessage.seq, 3);
    const one = await getRoom(b, room.id);
    assert.deepEqual([one.unreadCount, one.lastSeq], [3, 3]);

    ackOk(await emitAck(bs, 'chat:read', { roomId: room.id, upToSeq: 3 }));
    assert.equal((await getRoom(b, room.id)).unreadCount, 0);
    const after = (await b.api('GET', '/chat/rooms')).body.items.find((r) => r.id === room.id);
    assert.equal(after.unreadCount, 0);
  });

  it('receipts in a room you are not a member of are FORBIDDEN', async () => {
    const { room } = await groupOfThree(ctx.server, 'nonmem');
    const { socket: xs } = await (await makeUser(ctx.server, 'stranger')).connect();
    ackError(await emitAck(xs, 'chat:read', { roomId: room.id, upToSeq: 1 }), 'FORBIDDEN');
    ackError(await emitAck(xs, 'chat:delivered', { roomId: room.id, upToSeq: 1 }), 'FORBIDDEN');
  });
});
