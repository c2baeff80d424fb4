// Chat shortcuts over REST and sockets, each asserting success so tests read as scenarios.
import assert from 'node:assert/strict';
import { UUID_RE, ackOk, httpStatus, rfc3339 } from './assertions.mjs';
import { emitAck } from './client.mjs';
import { makeUsers } from './harness.mjs';

const ids = (users) => users.map((u) => (typeof u === 'string' ? u : u.id));

/** POST /chat/rooms as `owner`; returns `{ status, room }` (status 200 or 201). */
export async function createRoomRes(owner, participants, { type, name } = {}) {
  const body = { participants: ids(participants) };
  if (type) body.type = type;
  if (name !== undefined) body.name = name;
  const res = await owner.api('POST', '/chat/rooms', { body });
  httpStatus(res, [200, 201]);
  assert.ok(res.body?.id, `room object expected: ${JSON.stringify(res.body)}`);
  return { status: res.status, room: res.body };
}

export async function createDirect(owner, other) {
  return (await createRoomRes(owner, [other], { type: 'direct' })).room;
}

export async function createGroup(owner, others, name = 'group') {
  return (await createRoomRes(owner, others, { type: 'group', name })).room;
}

export async function createPublic(owner, name = 'public', others = []) {
  return (await createRoomRes(owner, others, { type: 'public', name })).room;
}

/** POST …/messages; asserts 201 and returns the message object. */
export async function sendRest(user, roomId, message, extra = {}) {
  const res = await user.api('POST', `/chat/rooms/${roomId}/messages`, { body: { message, ...extra } });
  httpStatus(res, 201);
  return res.body;
}

/** `n` REST sends in order ("<prefix> 1", ...); returns the messages. */
export async function sendMany(user, roomId, n, prefix = 'message') {
  const sent = [];
  for (let i = 1; i <= n; i += 1) sent.push(await sendRest(user, roomId, `${prefix} ${i}`));
  return sent;
}

/** `chat:message` with an ack; asserts ok and returns the message object. */
export async function sendSocket(socket, roomId, message, extra = {}) {
  const ack = ackOk(await emitAck(socket, 'chat:message', { roomId, message, ...extra }));
  assert.ok(ack.message, `ack must carry the message: ${JSON.stringify(ack)}`);
  return ack.message;
}

/** PUT /notifications/preferences `{ preferences }`; asserts 200. */
export async function setPreferences(user, preferences) {
  const res = await user.api('PUT', '/notifications/preferences', { body: { preferences } });
  httpStatus(res, 200);
  return res.body;
}

/** GET /chat/rooms/:id as `user`; asserts 200 and returns the room. */
export async function getRoom(user, roomId) {
  const res = await user.api('GET', `/chat/rooms/${roomId}`);
  return httpStatus(res, 200);
}

const MESSAGE_KEYS = [
  'clientMessageId', 'content', 'createdAt', 'deleted', 'editedAt', 'id',
  'replyToId', 'roomId', 'senderName', 'seq', 'type', 'userId',
];

/** Asserts a message object has every contract field with the right types, plus `expected` values. */
export function assertMessage(msg, expected = {}) {
  assert.ok(msg && typeof msg === 'object', `message object expected, got ${JSON.stringify(msg)}`);
  for (const key of MESSAGE_KEYS) assert.ok(key in msg, `message lacks '${key}': ${JSON.stringify(msg)}`);
  assert.match(msg.id, UUID_RE);
  assert.ok(Number.isInteger(msg.seq) && msg.seq >= 1, `seq must be a positive integer: ${msg.seq}`);
  assert.equal(typeof msg.content, 'string');
  assert.equal(typeof msg.deleted, 'boolean');
  rfc3339(msg.createdAt, 'message.createdAt');
  if (msg.editedAt !== null) rfc3339(msg.editedAt, 'message.editedAt');
  for (const [key, value] of Object.entries(expected)) {
    assert.deepEqual(msg[key], value, `message.${key}`);
  }
  return msg;
}

/** Listener filter: payloads of `roomId` for which `extra(payload)` holds. */
export const inRoom = (roomId, extra = () => true) => (p) => p?.roomId === roomId && extra(p);

/**
 * A fresh group room of users A, B and C, all connected, A with two sockets:
 * `{ a, b, c, room, a1, a2, bs, cs }`.
 */
export async function groupOfThree(server, prefix) {
  const [a, b, c] = await makeUsers(server, 3, prefix);
  const room = await createGroup(a, [b, c], prefix);
  const connected = await Promise.all([a.connect(), a.connect(), b.connect(), c.connect()]);
  const [a1, a2, bs, cs] = connected.map((r) => r.socket);
  return { a, b, c, room, a1, a2, bs, cs };
}
