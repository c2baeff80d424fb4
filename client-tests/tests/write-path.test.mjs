// Every write takes one write path (README "SQLite writes"): with SQLITE_BUSY_TIMEOUT_MS=0 a
// write that met another one inside SQLite would fail at once with "database is locked", so a
// burst of mixed writes from real clients (socket connects, messages, receipts, notifications
// and their mark-read, preferences, follows) all succeeding shows they queue in the server.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ackOk, httpStatus } from '../lib/assertions.mjs';
import { createGroup, getRoom, sendSocket, setPreferences } from '../lib/chat.mjs';
import { emitAck } from '../lib/client.mjs';
import { makeUsers, useServer } from '../lib/harness.mjs';

const USERS = 16;

describe('mixed concurrent writes (SQLITE_BUSY_TIMEOUT_MS=0)', () => {
  const ctx = useServer({ SQLITE_BUSY_TIMEOUT_MS: '0' });

  it('all succeed: connects, messages, receipts, notifications, preferences, follows', async () => {
    const server = ctx.server;
    const users = await makeUsers(server, USERS, 'wp');
    const room = await createGroup(users[0], users.slice(1), 'writers');
    await Promise.all(users.map(async (user, i) => {
      const next = users[(i + 1) % USERS];
      // Two connects: each one upserts the profile from the token's name claim.
      const [{ socket }, { socket: second }] = await Promise.all([user.connect(), user.connect()]);
      const created = server.service('POST', '/notifications', {
        userIds: [user.id, next.id], type: 'system', title: 't', message: 'm',
      });
      const follow = server.service('PUT', '/follows', { followerId: user.id, followeeId: next.id });
      const [sent] = await Promise.all([
        sendSocket(socket, room.id, `hello from ${i}`),
        sendSocket(second, room.id, `again from ${i}`),
        setPreferences(user, { shareTyping: i % 2 === 0 }),
        created.then((res) => httpStatus(res, [200, 201])),
        follow.then((res) => httpStatus(res, 200)),
      ]);
      await Promise.all([
        emitAck(socket, 'chat:delivered', { roomId: room.id, upToSeq: sent.seq }).then(ackOk),
        emitAck(second, 'chat:read', { roomId: room.id, upToSeq: sent.seq }).then(ackOk),
        emitAck(socket, 'notifications:mark_read', { all: true }).then(ackOk),
      ]);
    }));
    const after = await getRoom(users[0], room.id);
    assert.equal(after.lastSeq, 2 * USERS, 'every message took one seq');
  });
});
