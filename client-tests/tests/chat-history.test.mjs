// Chat history: catching up after a reconnect (chat:sync and REST after_seq, oldest first),
// paging back through history (newest first, `before` cursors until nextCursor is null),
// deleted messages in history, full-text search in one room, and chat:leave (live events stop,
// membership stays).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ackError, ackOk, httpError, httpStatus } from '../lib/assertions.mjs';
import { createGroup, getRoom, groupOfThree, inRoom, sendMany, sendRest, sendSocket } from '../lib/chat.mjs';
import { emitAck, fakeId, none, once } from '../lib/client.mjs';
import { makeUser, useServer } from '../lib/harness.mjs';

const seqs = (messages) => messages.map((m) => m.seq);
const sync = async (socket, payload) => ackOk(await emitAck(socket, 'chat:sync', payload));

describe('chat history', () => {
  const ctx = useServer();

  describe('catch-up after a reconnect', () => {
    // One scenario shared by the tests below: B saw seq 1, went away, A sent seq 2..4.
    let scenario;
    const missed = async () => {
      scenario ??= (async () => {
        const { a, b, room, bs } = await groupOfThree(ctx.server, 'sync');
        const first = once(bs, 'chat:new_message', 5000, inRoom(room.id));
        await sendRest(a, room.id, 'before you left');
        assert.equal((await first).message.seq, 1);
        bs.close();
        const away = await sendMany(a, room.id, 3, 'while away');
        const { socket, ready } = await b.connect();
        return { a, b, room, away, socket, ready };
      })();
      return scenario;
    };

    it('session:ready on reconnect lists the room', async () => {
      const { room, ready } = await missed();
      assert.ok(ready.rooms.includes(room.id));
    });

    it('chat:sync returns exactly the messages sent while away, oldest first', async () => {
      const { room, away, socket } = await missed();
      const ack = await sync(socket, { roomId: room.id, afterSeq: 1 });
      assert.deepEqual(seqs(ack.messages), [2, 3, 4]);
      assert.deepEqual(ack.messages.map((m) => m.id), away.map((m) => m.id));
      assert.deepEqual(ack.messages.map((m) => m.content), ['while away 1', 'while away 2', 'while away 3']);
      assert.equal(ack.hasMore, false);
    });

    it('chat:sync honours limit and reports hasMore', async () => {
      const { room, socket } = await missed();
      const page1 = await sync(socket, { roomId: room.id, afterSeq: 1, limit: 2 });
      assert.deepEqual([seqs(page1.messages), page1.hasMore], [[2, 3], true]);
      const page2 = await sync(socket, { roomId: room.id, afterSeq: 3, limit: 2 });
      assert.deepEqual([seqs(page2.messages), page2.hasMore], [[4], false]);
      const nothing = await sync(socket, { roomId: room.id, afterSeq: 4 });
      assert.deepEqual([nothing.messages, nothing.hasMore], [[], false]);
    });

    it('REST GET …/messages?after_seq= returns the same, oldest first', async () => {
      const { b, room, away } = await missed();
      const body = httpStatus(await b.api('GET', `/chat/rooms/${room.id}/messages?after_seq=1`), 200);
      assert.deepEqual(seqs(body.items), [2, 3, 4]);
      assert.deepEqual(body.items.map((m) => m.id), away.map((m) => m.id));
    });

    it('chat:sync is FORBIDDEN to non-members and NOT_FOUND for unknown rooms', async () => {
      const { room } = await missed();
      const { socket } = await (await makeUser(ctx.server, 'nosync')).connect();
      ackError(await emitAck(socket, 'chat:sync', { roomId: room.id, afterSeq: 0 }), 'FORBIDDEN');
      ackError(await emitAck(socket, 'chat:sync', { roomId: fakeId(), afterSeq: 0 }), 'NOT_FOUND');
    });
  });

  describe('paging back', () => {
    it('limit=5 pages newest first with before=nextCursor until nextCursor is null', async () => {
      const a = await makeUser(ctx.server, 'pager');
      const room = await createGroup(a, [await makeUser(ctx.server, 'pagee')], 'pages');
      await sendMany(a, room.id, 12);

      const pages = [];
      let cursor = null;
      for (let i = 0; i < 10; i += 1) {
        const query = `limit=5${cursor ? `&before=${encodeURIComponent(cursor)}` : ''}`;
        const body = httpStatus(await a.api('GET', `/chat/rooms/${room.id}/messages?${query}`), 200);
        assert.ok('nextCursor' in body, 'list responses carry nextCursor');
        pages.push(seqs(body.items));
        cursor = body.nextCursor;
        if (cursor === null) break;
        assert.equal(typeof cursor, 'string');
      }
      assert.deepEqual(pages, [[12, 11, 10, 9, 8], [7, 6, 5, 4, 3], [2, 1]]);
      assert.equal(cursor, null);
    });

    it('without limit, a short history comes in one page with nextCursor null', async () => {
      const a = await makeUser(ctx.server, 'short');
      const room = await createGroup(a, [await makeUser(ctx.server, 'short-b')], 'short');
      await sendMany(a, room.id, 3);
      const body = httpStatus(await a.api('GET', `/chat/rooms/${room.id}/messages`), 200);
      assert.deepEqual([seqs(body.items), body.nextCursor], [[3, 2, 1], null]);
    });

    it('a deleted message stays in history with its seq, empty and deleted', async () => {
      const a = await makeUser(ctx.server, 'deleter');
      const room = await createGroup(a, [await makeUser(ctx.server, 'del-b')], 'deleted');
      const [, middle] = await sendMany(a, room.id, 3);
      assert.equal((await a.api('DELETE', `/chat/rooms/${room.id}/messages/${middle.id}`)).status, 204);
      const { items } = httpStatus(await a.api('GET', `/chat/rooms/${room.id}/messages`), 200);
      assert.deepEqual(seqs(items), [3, 2, 1]);
      const gone = items.find((m) => m.id === middle.id);
      assert.deepEqual([gone.content, gone.deleted], ['', true]);
    });

    it('history is 403 for non-members and 404 for unknown rooms', async () => {
      const a = await makeUser(ctx.server, 'hist');
      const room = await createGroup(a, [await makeUser(ctx.server, 'hist-b')], 'hist');
      const x = await makeUser(ctx.server, 'hist-x');
      httpError(await x.api('GET', `/chat/rooms/${room.id}/messages`), 403, 'FORBIDDEN');
      httpError(await a.api('GET', `/chat/rooms/${fakeId()}/messages`), 404, 'NOT_FOUND');
    });
  });

  describe('search', () => {
    it('finds messages by word in one room; non-members get 403', async () => {
      const a = await makeUser(ctx.server, 'searcher');
      const room = await createGroup(a, [await makeUser(ctx.server, 'search-b')], 'search');
      const hit1 = await sendRest(a, room.id, 'the quick brown zebrafish jumps');
      await sendRest(a, room.id, 'nothing to see here');
      const hit2 = await sendRest(a, room.id, 'another zebrafish sighting');
      // the same word in another room of the same user must not leak in
      const other = await createGroup(a, [await makeUser(ctx.server, 'search-c')], 'elsewhere');
      const elsewhere = await sendRest(a, other.id, 'zebrafish elsewhere');

      const body = httpStatus(await a.api('GET', `/chat/rooms/${room.id}/messages/search?q=zebrafish`), 200);
      const found = body.items.map((m) => m.id).sort();
      assert.deepEqual(found, [hit1.id, hit2.id].sort());
      assert.ok(!found.includes(elsewhere.id));

      const x = await makeUser(ctx.server, 'search-x');
      httpError(await x.api('GET', `/chat/rooms/${room.id}/messages/search?q=zebrafish`), 403, 'FORBIDDEN');
    });
  });

  describe('chat:leave', () => {
    it('stops live events to that socket but keeps the membership', async () => {
      const { a, b, room, a1, bs, cs } = await groupOfThree(ctx.server, 'leave');
      ackOk(await emitAck(bs, 'chat:leave', { roomId: room.id }));

      const toC = once(cs, 'chat:new_message', 5000, inRoom(room.id));
      const quiet = none(bs, 'chat:new_message', 600, inRoom(room.id));
      const sent = await sendSocket(a1, room.id, 'b left the room view');
      await toC;
      assert.ok(await quiet, 'socket still got live events after chat:leave');

      // still a member: sync, REST and a re-join all work
      assert.deepEqual(seqs((await sync(bs, { roomId: room.id, afterSeq: 0 })).messages), [sent.seq]);
      assert.ok((await getRoom(b, room.id)).members.some((m) => m.userId === b.id));
      ackOk(await emitAck(bs, 'chat:join', { roomId: room.id }));
      const back = once(bs, 'chat:new_message', 5000, inRoom(room.id));
      await sendRest(a, room.id, 'welcome back');
      assert.equal((await back).message.seq, sent.seq + 1);
    });
  });
});
