// The bench's other reference point: a Node socket.io 4.8 server, in memory, with the same
// subset of the Switchboard contract as bench/reference-socketioxide (see its src/main.rs):
// GET /health, POST/GET /api/v1/realtime/chat/rooms[/:id[/members]], namespace /realtime with an
// HS256 JWT in auth.token, session:ready { userId, rooms }, chat:message → ack { ok, message }
// and chat:new_message { roomId, message } to the room except the sending socket.
// This is what the Node gateway Switchboard replaces costs on the same machine in the same run.
// Settings: PORT (0 = any), HOST (127.0.0.1), JWT_SECRET. Prints "listening on HOST:PORT".
//
// With REDIS_URL it is one node of a cluster, as a Node gateway runs behind Redis: emits go
// through @socket.io/redis-adapter (pub/sub, channel prefix REDIS_KEY_PREFIX), and room
// membership written over REST on any node is also kept in Redis (a set of room ids per user),
// read when a socket connects; a socket may send to the rooms it joined then. Seqs stay per node
// (the bench's senders are all on one node).
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import jwt from 'jsonwebtoken';
import { Server } from 'socket.io';

const secret = process.env.JWT_SECRET || 'bench-secret';
const host = process.env.HOST || '127.0.0.1';
const port = Number(process.env.PORT || 0);

const members = new Map(); // roomId -> Set(userId)
const seqs = new Map(); // roomId -> last seq
const ofUser = new Map(); // userId -> [roomId]

const redisUrl = process.env.REDIS_URL;
const prefix = process.env.REDIS_KEY_PREFIX || 'reference-node';
let redis = null; // the command client, in cluster mode
const userKey = (u) => `${prefix}:rooms-of:${u}`;

async function add(roomId, users) {
  const set = members.get(roomId);
  const added = [];
  for (const u of users) {
    if (set.has(u)) continue;
    set.add(u);
    added.push(u);
    if (!ofUser.has(u)) ofUser.set(u, []);
    ofUser.get(u).push(roomId);
  }
  if (redis && added.length) {
    const multi = redis.multi();
    for (const u of added) multi.sAdd(userKey(u), roomId);
    await multi.exec();
  }
}

/** The rooms of `userId`: this node's map, or (in cluster mode) what every node wrote to Redis. */
async function roomsOf(userId) {
  if (!redis) return ofUser.get(userId) ?? [];
  return redis.sMembers(userKey(userId));
}

function verify(token) {
  try {
    return jwt.verify(token, secret, { algorithms: ['HS256'] });
  } catch {
    return null;
  }
}

function reply(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

function readJson(req) {
  return new Promise((resolve) => {
    let data = '';
    req.on('data', (c) => (data += c));
    req.on('end', () => {
      try {
        resolve(JSON.parse(data || '{}'));
      } catch {
        resolve(null);
      }
    });
  });
}

const ROOMS = '/api/v1/realtime/chat/rooms';
let io;
const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://x');
  if (req.method === 'GET' && url.pathname === '/health') {
    return reply(res, 200, { status: 'ok', connections: io.of('/realtime').sockets.size });
  }
  if (!url.pathname.startsWith(ROOMS)) return reply(res, 404, {});
  const claims = verify((req.headers.authorization || '').replace(/^Bearer /, ''));
  if (!claims) return reply(res, 401, {});
  const rest = url.pathname.slice(ROOMS.length).split('/').filter(Boolean);
  if (req.method === 'POST' && rest.length === 0) {
    const body = await readJson(req);
    const id = randomUUID();
    members.set(id, new Set());
    seqs.set(id, 0);
    await add(id, [claims.sub, ...(body?.participants ?? [])]);
    return reply(res, 201, { id });
  }
  const [id, sub] = rest;
  if (!members.has(id)) return reply(res, 404, {});
  if (req.method === 'POST' && sub === 'members') {
    const body = await readJson(req);
    await add(id, body?.userIds ?? []);
    return reply(res, 200, { id });
  }
  if (req.method === 'GET' && !sub) return reply(res, 200, { id, memberCount: members.get(id).size });
  return reply(res, 404, {});
});
server.on('connection', (s) => s.setNoDelay(true));
// Longer than any pause of the bench between REST calls: fetch() reuses idle connections, and
// Node's default 5 s would close one under it ("fetch failed").
server.keepAliveTimeout = 120_000;
server.headersTimeout = 125_000;

io = new Server(server, { serveClient: false });
if (redisUrl) {
  const { createClient } = await import('redis');
  const { createAdapter } = await import('@socket.io/redis-adapter');
  redis = createClient({ url: redisUrl });
  const pub = redis.duplicate();
  const sub = redis.duplicate();
  await Promise.all([redis.connect(), pub.connect(), sub.connect()]);
  io.adapter(createAdapter(pub, sub, { key: `${prefix}:socket.io` }));
}
const ns = io.of('/realtime');
ns.use((socket, next) => {
  const claims = verify(socket.handshake.auth?.token);
  if (!claims) return next(new Error('UNAUTHORIZED'));
  socket.data.user = { id: claims.sub, name: claims.name ?? claims.sub };
  next();
});
ns.on('connection', async (socket) => {
  const user = socket.data.user;
  // Handlers first: a client may send as soon as it sees session:ready.
  socket.on('chat:message', (p, ack) => {
    const cb = typeof ack === 'function' ? ack : () => {};
    if (!p || typeof p.roomId !== 'string' || typeof p.message !== 'string') {
      return cb({ ok: false, error: { code: 'VALIDATION_ERROR' } });
    }
    const member = redis ? socket.rooms.has(`chat:${p.roomId}`) : members.get(p.roomId)?.has(user.id);
    if (!member) return cb({ ok: false, error: { code: 'FORBIDDEN' } });
    const seq = (seqs.get(p.roomId) ?? 0) + 1;
    seqs.set(p.roomId, seq);
    const message = {
      id: randomUUID(),
      roomId: p.roomId,
      seq,
      userId: user.id,
      senderName: user.name,
      content: p.message,
      type: 'text',
      replyToId: null,
      clientMessageId: p.clientMessageId ?? null,
      createdAt: new Date().toISOString(),
      editedAt: null,
      deleted: false,
    };
    socket.to(`chat:${p.roomId}`).emit('chat:new_message', { roomId: p.roomId, message });
    cb({ ok: true, message });
  });
  let rooms;
  try {
    rooms = await roomsOf(user.id);
  } catch {
    return socket.disconnect(true);
  }
  socket.join([...rooms.map((r) => `chat:${r}`), `user:${user.id}`]);
  socket.emit('session:ready', { userId: user.id, rooms });
});

server.listen(port, host, () => {
  const a = server.address();
  console.log(`reference-node listening on ${a.address}:${a.port}`);
});
process.on('SIGTERM', () => {
  io.close();
  redis?.quit().catch(() => {});
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
});
