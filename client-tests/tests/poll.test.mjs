// Long polling (`GET /api/v1/realtime/poll`): 401 without a token; the first poll answers at once
// with the current cursor and a session id; a waiting poll is answered by a message sent over
// REST or Socket.IO; events missed between polls come back at once and in order from
// last_poll_id (on any node of a cluster); typing waits in the poller's session between polls;
// a timeout ends a poll with no events.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ackOk } from '../lib/assertions.mjs';
import { createGroup, sendRest } from '../lib/chat.mjs';
import { emitAck } from '../lib/client.mjs';
import { CLUSTER_MODE, makeUser, nodesOf, useServer } from '../lib/harness.mjs';
import { POLL, poll, pollAfter } from '../lib/sse.mjs';

describe('long polling', () => {
  const ctx = useServer({ TYPING_THROTTLE_MS: '0' });

  it('refuses a poll without a valid token', async () => {
    const res = await fetch(`${ctx.server.url}${POLL}`);
    assert.equal(res.status, 401);
    assert.equal((await res.json()).error.code, 'UNAUTHORIZED');
    const bad = await fetch(`${ctx.server.url}${POLL}?token=nope`);
    assert.equal(bad.status, 401);
  });

  it('answers a first poll at once, then a waiting poll with the next message', async () => {
    const [a, b] = [await makeUser(ctx.server, 'a'), await makeUser(ctx.server, 'b')];
    const room = await createGroup(a, [b]);
    const started = Date.now();
    const first = await poll(ctx.server.url, b, { timeoutMs: 20000 });
    assert.equal(first.status, 200);
    assert.ok(Date.now() - started < 5000, 'no wait without last_poll_id');
    assert.deepEqual(first.body.events, []);
    assert.equal(typeof first.body.lastPollId, 'string');
    assert.equal(typeof first.body.session, 'string');

    const waiting = pollAfter(ctx.server.url, b, first.body, 20000);
    await new Promise((r) => setTimeout(r, 200));
    const { socket } = await a.connect();
    ackOk(await emitAck(socket, 'chat:message', { roomId: room.id, message: 'wake up' }));
    const answer = await waiting;
    assert.equal(answer.status, 200);
    const msg = answer.body.events.find((e) => e.event === 'chat:new_message');
    assert.ok(msg, JSON.stringify(answer.body));
    assert.equal(msg.data.message.content, 'wake up');
    assert.equal(msg.id, answer.body.lastPollId);
    socket.close();
  });

  it('returns what was missed between polls at once and in order', async () => {
    const [a, b] = [await makeUser(ctx.server, 'a'), await makeUser(ctx.server, 'b')];
    const room = await createGroup(a, [b]);
    const first = await poll(ctx.server.url, b);
    for (const text of ['one', 'two', 'three']) await sendRest(a, room.id, text);
    const answer = await pollAfter(ctx.server.url, b, first.body, 20000);
    const texts = answer.body.events.filter((e) => e.event === 'chat:new_message').map((e) => e.data.message.content);
    assert.deepEqual(texts, ['one', 'two', 'three']);
    assert.equal(answer.body.recovered, true);

    const started = Date.now();
    const empty = await pollAfter(ctx.server.url, b, answer.body, 300);
    assert.deepEqual(empty.body.events, []);
    assert.equal(empty.body.lastPollId, answer.body.lastPollId);
    assert.ok(Date.now() - started >= 250, 'the poll waited out its timeout');
  });

  it('keeps typing for the poller between polls', async () => {
    const [a, b] = [await makeUser(ctx.server, 'a'), await makeUser(ctx.server, 'b')];
    const room = await createGroup(a, [b]);
    const first = await poll(nodesOf(ctx.server)[0].url, b);
    const typing = await a.api('POST', `/chat/rooms/${room.id}/typing`, { body: { isTyping: true } });
    assert.equal(typing.status, 200);
    const answer = await pollAfter(nodesOf(ctx.server)[0].url, b, first.body, 5000);
    const t = answer.body.events.find((e) => e.event === 'chat:user_typing');
    assert.ok(t, JSON.stringify(answer.body));
    assert.equal(t.id, null);
    assert.equal(t.data.userId, a.id);
  });
});

describe('long polling on a cluster', { skip: CLUSTER_MODE ? false : 'needs SWITCHBOARD_NODES' }, () => {
  const ctx = useServer();

  it('resumes a poll on another node from the journal', async () => {
    const [n0, n1] = nodesOf(ctx.server);
    const [a, b] = [await makeUser(ctx.server, 'a'), await makeUser(ctx.server, 'b')];
    const room = await createGroup(a, [b]);
    const first = await poll(n0.url, b);
    await sendRest(a, room.id, 'sent meanwhile');
    const answer = await pollAfter(n1.url, b, first.body, 5000);
    assert.deepEqual(answer.body.events.map((e) => e.data.message?.content), ['sent meanwhile']);
  });
});
