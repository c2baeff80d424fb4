// Display names (contract §1 `name` claim, §8 `PUT /users/:userId`): the profile the backend sets
// is not overwritten by a token without `name`, on connect or on reconnect; a token with `name`
// sets it at connect.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import jwt from 'jsonwebtoken';
import { createDirect, getRoom, sendSocket } from '../lib/chat.mjs';
import { connect, uid } from '../lib/client.mjs';
import { makeUser, useServer } from '../lib/harness.mjs';
import { JWT_SECRET } from '../lib/server.mjs';

/** A token with no `name` claim at all (signToken always puts one in). */
const unnamedToken = (userId) =>
  jwt.sign({ sub: userId, exp: Math.floor(Date.now() / 1000) + 3600 }, JWT_SECRET, { algorithm: 'HS256' });

const memberName = (room, userId) => room.members.find((m) => m.userId === userId)?.name;

describe('profile names', () => {
  const ctx = useServer();

  it('a token without `name` keeps the name set through the service API', async () => {
    const id = uid('prof');
    const profile = await ctx.server.service('PUT', `/users/${id}`, { name: 'Profile Name' });
    assert.equal(profile.status, 200);
    const peer = await makeUser(ctx.server, 'peer');
    const room = await createDirect(peer, id);

    for (const attempt of ['first connect', 'reconnect']) {
      const { socket } = await connect(ctx.server, unnamedToken(id));
      const message = await sendSocket(socket, room.id, `hello on ${attempt}`);
      socket.close();

      assert.equal(message.senderName, 'Profile Name', attempt);
      assert.equal(memberName(await getRoom(peer, room.id), id), 'Profile Name', attempt);
    }
  });

  it('a token with `name` sets the profile name at connect', async () => {
    const id = uid('prof');
    await ctx.server.service('PUT', `/users/${id}`, { name: 'Old Name' });
    const peer = await makeUser(ctx.server, 'peer');
    const room = await createDirect(peer, id);

    const { socket } = await connect(ctx.server, ctx.server.token(id, { name: 'New Name' }));
    const message = await sendSocket(socket, room.id, 'hi');
    socket.close();

    assert.equal(message.senderName, 'New Name');
    assert.equal(memberName(await getRoom(peer, room.id), id), 'New Name');
  });
});
