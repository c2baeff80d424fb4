// Chat messages: chat:message / REST send fan-out (never back to the sending socket), the message
// object, gapless per-room seq under concurrency, clientMessageId idempotency (also racing),
// validation and sanitising, rate limiting, edit/delete, and websocket <-> polling interop.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ackError, ackOk, httpError, httpStatus, rfc3339 } from '../lib/assertions.mjs';
import { assertMessage, createDirect, createGroup, groupOfThree, inRoom, sendRest, sendSocket } from '../lib/chat.mjs';
import { emitAck, fakeId, none, once, range, record } from '../lib/client.mjs';
import { makeUser, makeUsers, useServer } from '../lib/harness.mjs';

const newMessage = (socket, roomId, extra) => once(socket, 'chat:new_message', 5000, inRoom(roomId, extra));

describe('chat messages', () => {
  const ctx = useServer();

  describe('delivery', () => {
    it('chat:message acks the message and reaches everyone but the sending socket', async () => {
      const { a, room, a1, a2, bs, cs } = await groupOfThree(ctx.server, 'fan');
      const receivers = [a2, bs, cs].map((s) => newMessage(s, room.id));
      const notToSender = none(a1, 'chat:new_message', 800, inRoom(room.id));

      const ack = ackOk(await emitAck(a1, 'chat:message', { roomId: room.id, message: 'hello', clientMessageId: 'cm-1' }));
      assertMessage(ack.message, {
        roomId: room.id,
        seq: 1,
        userId: a.id,
        senderName: a.name,
        content: 'hello',
        type: 'text',
        replyToId: null,
        clientMessageId: 'cm-1',
        editedAt: null,
        deleted: false,
      });
      for (const payload of await Promise.all(receivers)) {
        assert.equal(payload.roomId, room.id);
        assert.deepEqual(payload.message, ack.message);
      }
      assert.ok(await notToSender, 'the sending socket must not get its own chat:new_message');
    });

    it('a REST send reaches every socket in the room, the sender\'s included', async () => {
      const { a, room, a1, a2, bs, cs } = await groupOfThree(ctx.server, 'rest');
      const receivers = [a1, a2, bs, cs].map((s) => newMessage(s, room.id));
      const sent = await sendRest(a, room.id, 'via rest', { clientMessageId: 'rest-1' });
      assertMessage(sent, { seq: 1, userId: a.id, content: 'via rest', clientMessageId: 'rest-1' });
      for (const payload of await Promise.all(receivers)) assert.equal(payload.message.id, sent.id);
    });

    it('seq stays gapless with 10 concurrent senders x 10 messages', { timeout: 30_000 }, async () => {
      const [owner, ...rest] = await makeUsers(ctx.server, 11, 'seq');
      const observer = rest.pop();
      const senders = [owner, ...rest];
      const room = await createGroup(owner, [...rest, observer], 'seq race');
      const sockets = (await Promise.all(senders.map((u) => u.connect()))).map((r) => r.socket);
      const { socket: os } = await observer.connect();
      const seen = record(os, 'chat:new_message', inRoom(room.id));

      const sends = sockets.flatMap((s, i) => range(1, 10).map((n) => sendSocket(s, room.id, `sender ${i} message ${n}`)));
      const messages = await Promise.all(sends);
      assert.deepEqual(messages.map((m) => m.seq).sort((x, y) => x - y), range(1, 100));
      assert.equal(new Set(messages.map((m) => m.id)).size, 100);

      await seen.count(100, 15_000);
      assert.deepEqual(seen.items.map((p) => p.message.seq).sort((x, y) => x - y), range(1, 100));
    });

    it('a websocket-only client and a polling-only client chat both ways', async () => {
      const [w, p] = await makeUsers(ctx.server, 2, 'interop');
      const room = await createDirect(w, p);
      const { socket: ws } = await w.connect({ transports: ['websocket'] });
      const { socket: ps } = await p.connect({ transports: ['polling'] });
      assert.equal(ps.io.engine.transport.name, 'polling');

      const toPolling = newMessage(ps, room.id);
      const fromWs = await sendSocket(ws, room.id, 'from websocket');
      assert.equal((await toPolling).message.id, fromWs.id);

      const toWs = newMessage(ws, room.id);
      const fromPolling = await sendSocket(ps, room.id, 'from polling');
      assert.equal((await toWs).message.id, fromPolling.id);
      assert.equal(fromPolling.seq, fromWs.seq + 1);
    });
  });

  describe('clientMessageId idempotency', () => {
    it('a retry returns the original message and is not delivered twice', async () => {
      const { a, b, room, a1, a2, bs } = await groupOfThree(ctx.server, 'retry');
      const atB = record(bs, 'chat:new_message', inRoom(room.id));
      const first = await sendSocket(a1, room.id, 'once only', { clientMessageId: 'retry-1' });
      const again = await sendSocket(a1, room.id, 'once only', { clientMessageId: 'retry-1' });
      assert.deepEqual([again.id, again.seq], [first.id, first.seq]);
      // from the same user's other device, and over REST: still the same message
      assert.equal((await sendSocket(a2, room.id, 'once only', { clientMessageId: 'retry-1' })).id, first.id);
      const viaRest = await a.api('POST', `/chat/rooms/${room.id}/messages`, {
        body: { message: 'once only', clientMessageId: 'retry-1' },
      });
      assert.equal(httpStatus(viaRest, [200, 201]).id, first.id);

      await atB.count(1);
      assert.ok(await none(bs, 'chat:new_message', 500, inRoom(room.id)), 'retry was delivered again');
      assert.equal(atB.items.length, 1);

      // idempotency is per user: B using the same id sends a new message, with the next seq
      const bMsg = await sendSocket(bs, room.id, 'mine', { clientMessageId: 'retry-1' });
      assert.notEqual(bMsg.id, first.id);
      assert.equal(bMsg.seq, first.seq + 1);
      assert.equal(bMsg.userId, b.id);
    });

    it('5 racing sends with one clientMessageId make one message with one seq', async () => {
      const { room, a1, a2, bs, cs } = await groupOfThree(ctx.server, 'race');
      const recorders = [a2, bs, cs].map((s) => record(s, 'chat:new_message', inRoom(room.id)));
      const acks = await Promise.all(range(1, 5).map(() => sendSocket(a1, room.id, 'racing', { clientMessageId: 'race-1' })));
      assert.equal(new Set(acks.map((m) => m.id)).size, 1, 'all acks must carry the same message id');
      assert.deepEqual(acks.map((m) => m.seq), [1, 1, 1, 1, 1]);

      await Promise.all(recorders.map((r) => r.count(1)));
      const extra = await Promise.all([a2, bs, cs].map((s) => none(s, 'chat:new_message', 500, inRoom(room.id))));
      assert.deepEqual(extra, [true, true, true], 'someone received the message more than once');
      for (const r of recorders) assert.equal(r.items[0].message.id, acks[0].id);

      assert.equal((await sendSocket(a1, room.id, 'next')).seq, 2);
    });
  });

  describe('validation', () => {
    it('refuses empty and whitespace-only content', async () => {
      const { room, a1 } = await groupOfThree(ctx.server, 'empty');
      for (const message of ['', '   \n\t  ']) {
        ackError(await emitAck(a1, 'chat:message', { roomId: room.id, message }), 'INVALID_PAYLOAD', { field: 'message' });
      }
    });

    it('accepts 4000 characters and refuses 4001', async () => {
      const { room, a1 } = await groupOfThree(ctx.server, 'long');
      const ok = await sendSocket(a1, room.id, 'x'.repeat(4000));
      assert.equal(ok.content.length, 4000);
      ackError(await emitAck(a1, 'chat:message', { roomId: room.id, message: 'x'.repeat(4001) }), 'INVALID_PAYLOAD', {
        field: 'message',
      });
    });

    it('refuses an unknown message type and accepts the known ones', async () => {
      const { room, a1 } = await groupOfThree(ctx.server, 'type');
      ackError(await emitAck(a1, 'chat:message', { roomId: room.id, message: 'x', type: 'video' }), 'INVALID_PAYLOAD', {
        field: 'type',
      });
      for (const type of ['text', 'image', 'file']) {
        assert.equal((await sendSocket(a1, room.id, `a ${type}`, { type })).type, type);
      }
    });

    it('replyToId must be a message of the same room', async () => {
      const { a, room, a1 } = await groupOfThree(ctx.server, 'reply');
      const elsewhere = await createGroup(a, [await makeUser(ctx.server, 'reply-x')], 'elsewhere');
      const foreign = await sendRest(a, elsewhere.id, 'in another room');
      // Contract is silent on the code: a reference to a message that is not in this room is
      // either a field error or an unknown message.
      ackError(await emitAck(a1, 'chat:message', { roomId: room.id, message: 'reply', replyToId: foreign.id }), [
        'INVALID_PAYLOAD',
        'NOT_FOUND',
      ]);
      const original = await sendSocket(a1, room.id, 'original');
      assert.equal((await sendSocket(a1, room.id, 'reply', { replyToId: original.id })).replyToId, original.id);
    });

    it('a non-member cannot send (FORBIDDEN / 403); an unknown room is 404 over REST', async () => {
      const { room } = await groupOfThree(ctx.server, 'outsider');
      const x = await makeUser(ctx.server, 'outsider-x');
      const { socket: xs } = await x.connect();
      ackError(await emitAck(xs, 'chat:message', { roomId: room.id, message: 'let me in' }), 'FORBIDDEN');
      httpError(await x.api('POST', `/chat/rooms/${room.id}/messages`, { body: { message: 'hi' } }), 403, 'FORBIDDEN');
      httpError(await x.api('POST', `/chat/rooms/${fakeId()}/messages`, { body: { message: 'hi' } }), 404, 'NOT_FOUND');
    });

    it('REST validation errors are 400 INVALID_PAYLOAD with field details', async () => {
      const { a, room } = await groupOfThree(ctx.server, 'restval');
      const res = await a.api('POST', `/chat/rooms/${room.id}/messages`, { body: { message: '  ' } });
      httpError(res, 400, 'INVALID_PAYLOAD', { field: 'message' });
    });

    it('rejected messages never take a seq', async () => {
      const { a, room, a1 } = await groupOfThree(ctx.server, 'noseq');
      const before = await sendSocket(a1, room.id, 'first');
      for (const bad of [{ message: '' }, { message: 'y'.repeat(4001) }, { message: 'z', type: 'bogus' }]) {
        ackError(await emitAck(a1, 'chat:message', { roomId: room.id, ...bad }), 'INVALID_PAYLOAD');
      }
      httpError(await a.api('POST', `/chat/rooms/${room.id}/messages`, { body: { message: '' } }), 400, 'INVALID_PAYLOAD');
      assert.equal((await sendSocket(a1, room.id, 'second')).seq, before.seq + 1);
    });

    it('strips control characters except newline and tab', async () => {
      const { room, a1, bs } = await groupOfThree(ctx.server, 'ctrl');
      const incoming = newMessage(bs, room.id);
      const sent = await sendSocket(a1, room.id, 'a\u0007b\nc\td\u0000\u001b\u007f');
      assert.equal(sent.content, 'ab\nc\td');
      assert.equal((await incoming).message.content, 'ab\nc\td');
      // nothing left after stripping is empty content
      ackError(await emitAck(a1, 'chat:message', { roomId: room.id, message: '\u0007\u0008' }), 'INVALID_PAYLOAD');
    });

    it('returns HTML verbatim (never interpreted or escaped)', async () => {
      const { a, room, a1 } = await groupOfThree(ctx.server, 'html');
      assert.equal((await sendSocket(a1, room.id, '<b>x</b>')).content, '<b>x</b>');
      const tricky = `<script>alert("x")</script> &amp; 'q'`;
      assert.equal((await sendRest(a, room.id, tricky)).content, tricky);
    });
  });

  describe('edit and delete', () => {
    it('editing your own message emits chat:message_updated with the new content', async () => {
      const { a, room, a1, a2, bs, cs } = await groupOfThree(ctx.server, 'edit');
      const msg = await sendSocket(a1, room.id, 'original');
      const updates = [a2, bs, cs].map((s) => once(s, 'chat:message_updated', 5000, inRoom(room.id)));
      const res = await a.api('PATCH', `/chat/rooms/${room.id}/messages/${msg.id}`, { body: { message: 'edited' } });
      const edited = httpStatus(res, 200);
      assertMessage(edited, { id: msg.id, seq: msg.seq, content: 'edited', deleted: false });
      rfc3339(edited.editedAt, 'editedAt');
      for (const u of await Promise.all(updates)) {
        assert.equal(u.roomId, room.id);
        assertMessage(u.message, { id: msg.id, seq: msg.seq, content: 'edited' });
      }
    });

    it('deleting your own message keeps its seq, empties it and marks it deleted', async () => {
      const { a, room, a1, bs } = await groupOfThree(ctx.server, 'del');
      const msg = await sendSocket(a1, room.id, 'regret');
      const update = once(bs, 'chat:message_updated', 5000, inRoom(room.id));
      assert.equal((await a.api('DELETE', `/chat/rooms/${room.id}/messages/${msg.id}`)).status, 204);
      const { message } = await update;
      assertMessage(message, { id: msg.id, seq: msg.seq, content: '', deleted: true });
    });

    it('editing or deleting someone else\'s message is 403', async () => {
      const { b, room, a1 } = await groupOfThree(ctx.server, 'notmine');
      const msg = await sendSocket(a1, room.id, 'mine');
      const path = `/chat/rooms/${room.id}/messages/${msg.id}`;
      httpError(await b.api('PATCH', path, { body: { message: 'hacked' } }), 403, 'FORBIDDEN');
      httpError(await b.api('DELETE', path), 403, 'FORBIDDEN');
    });

    it('edit validation: empty content is 400, an unknown message 404', async () => {
      const { a, room, a1 } = await groupOfThree(ctx.server, 'editval');
      const msg = await sendSocket(a1, room.id, 'fine');
      httpError(await a.api('PATCH', `/chat/rooms/${room.id}/messages/${msg.id}`, { body: { message: ' ' } }), 400, 'INVALID_PAYLOAD', {
        field: 'message',
      });
      httpError(await a.api('PATCH', `/chat/rooms/${room.id}/messages/${fakeId()}`, { body: { message: 'x' } }), 404, 'NOT_FOUND');
    });
  });
});

describe('chat messages: rate limit (RATE_LIMIT_PER_MINUTE=5)', () => {
  const ctx = useServer({ RATE_LIMIT_PER_MINUTE: '5' });

  it('5 at once pass, the 6th is RATE_LIMITED with retryAfterMs, REST is 429 + Retry-After', async () => {
    const [a, b] = await makeUsers(ctx.server, 2, 'rl');
    const room = await createGroup(a, [b], 'limited');
    const { socket: as } = await a.connect();
    const { socket: bs } = await b.connect();

    const five = await Promise.all(range(1, 5).map((n) => sendSocket(as, room.id, `burst ${n}`)));
    assert.deepEqual(five.map((m) => m.seq).sort((x, y) => x - y), range(1, 5));

    const error = ackError(await emitAck(as, 'chat:message', { roomId: room.id, message: 'one too many' }), 'RATE_LIMITED');
    assert.equal(typeof error.retryAfterMs, 'number', `error.retryAfterMs missing: ${JSON.stringify(error)}`);
    assert.ok(error.retryAfterMs > 0 && error.retryAfterMs <= 60_000, `retryAfterMs out of range: ${error.retryAfterMs}`);

    const res = await a.api('POST', `/chat/rooms/${room.id}/messages`, { body: { message: 'rest too' } });
    httpError(res, 429, 'RATE_LIMITED');
    const retryAfter = res.headers.get('retry-after');
    assert.match(retryAfter ?? '', /^\d+$/, `Retry-After must be whole seconds, got ${retryAfter}`);
    assert.ok(Number(retryAfter) >= 1 && Number(retryAfter) <= 60);

    // the limit is per user, and the rejected sends took no seq
    assert.equal((await sendSocket(bs, room.id, 'b is fine')).seq, 6);
  });

  it('REST sends count toward the same limit', async () => {
    const [a, b] = await makeUsers(ctx.server, 2, 'rlmix');
    const room = await createGroup(a, [b], 'mixed');
    const { socket: as } = await a.connect();
    for (const n of range(1, 3)) await sendRest(a, room.id, `rest ${n}`);
    for (const n of range(1, 2)) await sendSocket(as, room.id, `socket ${n}`);
    ackError(await emitAck(as, 'chat:message', { roomId: room.id, message: 'sixth' }), 'RATE_LIMITED');
  });
});

describe('chat message order', () => {
  const ctx = useServer();

  it('one socket\'s messages take seqs, and reach others, in the order they were sent', async () => {
    const { room, a1, bs } = await groupOfThree(ctx.server, 'order');
    const delivered = record(bs, 'chat:new_message', inRoom(room.id));
    const contents = Array.from({ length: 40 }, (_, i) => `m${i}`);
    // Emitted back to back, without waiting for acks: the server must keep the order.
    const acks = await Promise.all(contents.map((message) => emitAck(a1, 'chat:message', { roomId: room.id, message })));
    const seqs = acks.map((ack) => ack.message.seq);
    assert.deepEqual(seqs, contents.map((_, i) => i + 1), 'seqs out of send order');
    await delivered.count(contents.length);
    assert.deepEqual(delivered.items.map((p) => p.message.content), contents, 'delivered out of order');
    delivered.stop();
  });
});
