// The parts the resume scenarios (jitter, avalanche, rolling) share: rooms with one sender each,
// receiver processes running `@switchboard/client` sockets (lib/resume-worker.mjs), senders that
// post chat messages (acked `chat:message`) and notifications (service API) at a steady rate, and
// the expectation every receiver is checked against at the end: every seq of its room and every
// notification sent to it, exactly once.
import { fork } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { io } from 'socket.io-client';
import { now } from './lite.mjs';
import { api } from './server.mjs';
import { createGroupRoom } from './setup.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REST = '/api/v1/realtime';
export const SERVICE_KEY = 'bench-service-key-0123456789';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** `rooms` group rooms of `perRoom` receivers plus a sender (the owner) each. */
export async function makeRooms(server, { rooms, perRoom, runId, concurrency = 4 }) {
  const specs = Array.from({ length: rooms }, (_, r) => ({
    sender: `rs-${runId}-s${r}`,
    members: Array.from({ length: perRoom }, (_, i) => `rs-${runId}-r${r}-u${i}`),
  }));
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, rooms) }, async () => {
      while (next < specs.length) {
        const spec = specs[next++];
        spec.roomId = await createGroupRoom(server, spec.sender, spec.members, `resume ${runId}`);
      }
    }),
  );
  return specs;
}

/** One forked receiver process (lib/resume-worker.mjs). */
class Receiver {
  constructor() {
    this.child = fork(path.join(HERE, 'resume-worker.mjs'), [], { serialization: 'advanced', stdio: 'inherit' });
    this.waiters = new Map();
    this.child.on('message', (msg) => {
      const w = this.waiters.get(msg.type);
      if (w) {
        this.waiters.delete(msg.type);
        w(msg);
      }
    });
    this.hello = this.wait('hello');
  }

  wait(type) {
    return new Promise((resolve) => this.waiters.set(type, resolve));
  }

  request(msg, reply) {
    const p = this.wait(reply);
    this.child.send(msg);
    return p;
  }

  tell(msg) {
    this.child.send(msg);
  }
}

/**
 * Forks `workers` receiver processes and connects `clients` ({ token, roomId }) over them to
 * `url`; resolves once every socket had its first `session:ready` (or gave up).
 */
export async function startReceivers({ workers, url, clients, concurrency = 50, socketOptions = {} }) {
  const procs = Array.from({ length: Math.max(1, Math.min(workers, clients.length)) }, () => new Receiver());
  await Promise.all(procs.map((p) => p.hello));
  const shares = procs.map(() => []);
  clients.forEach((c, i) => shares[i % procs.length].push(c));
  const started = await Promise.all(
    procs.map((p, i) =>
      p.request({ type: 'start', url, clients: shares[i], concurrency: Math.ceil(concurrency / procs.length), socketOptions }, 'started'),
    ),
  );
  const errors = {};
  for (const s of started) for (const [k, v] of Object.entries(s.errors)) errors[k] = (errors[k] || 0) + v;
  const all = (msg, reply) => Promise.all(procs.map((p) => p.request(msg, reply)));
  return {
    ok: started.reduce((n, s) => n + s.ok, 0),
    errors,
    jitter: (periodMs) => procs.forEach((p) => p.tell({ type: 'jitter', periodMs })),
    mark: () => all({ type: 'mark' }, 'marked'),
    /** Summed over the workers: sockets, connected, backAfterMark, recoveredAfterMark, lastReady. */
    async status() {
      const parts = await all({ type: 'status' }, 'status');
      const sum = { sockets: 0, connected: 0, backAfterMark: 0, recoveredAfterMark: 0, lastReady: 0, errors: {} };
      for (const s of parts) {
        sum.sockets += s.sockets;
        sum.connected += s.connected;
        sum.backAfterMark += s.backAfterMark;
        sum.recoveredAfterMark += s.recoveredAfterMark;
        sum.lastReady = Math.max(sum.lastReady, s.lastReady);
        for (const [k, v] of Object.entries(s.errors)) sum.errors[k] = (sum.errors[k] || 0) + v;
      }
      return sum;
    },
    /** Every worker's report against `expected`, summed. */
    async report(expected) {
      const parts = await all({ type: 'report', expected }, 'report');
      const sum = { replayMs: [], backMs: [], disconnects: {}, errors: {}, missing: [] };
      for (const p of parts) {
        for (const [k, v] of Object.entries(p)) {
          if (typeof v === 'number') sum[k] = (sum[k] || 0) + v;
        }
        sum.replayMs.push(...p.replayMs);
        sum.missing.push(...p.missing);
        sum.backMs.push(...p.backMs);
        for (const [k, v] of Object.entries(p.disconnects)) sum.disconnects[k] = (sum.disconnects[k] || 0) + v;
        for (const [k, v] of Object.entries(p.errors)) sum.errors[k] = (sum.errors[k] || 0) + v;
      }
      return sum;
    },
    async close() {
      await Promise.all(procs.map((p) => Promise.race([p.request({ type: 'close' }, 'closed'), sleep(5000)])));
      for (const p of procs) p.child.kill();
    },
  };
}

/**
 * Posts `rate` chat messages/s over the rooms (round-robin, acked `chat:message` from each
 * room's sender socket) and `notifyRate` notification batches/s (one batch = every member of
 * the next room, through the service API). Sender sockets reconnect by themselves; a send that
 * fails is counted, not retried. `expected()` reads each room's `lastSeq` and the notification
 * batches that were accepted: what every receiver must have had at the end.
 */
export async function startSenders({ url, token, rooms, rate, notifyRate }) {
  const sockets = await Promise.all(
    rooms.map(
      (room) =>
        new Promise((resolve, reject) => {
          const s = io(`${url}/realtime`, { auth: { token: token(room.sender) }, transports: ['websocket'], forceNew: true });
          s.once('session:ready', () => resolve(s));
          s.once('connect_error', (err) => reject(new Error(`sender: ${err.message}`)));
        }),
    ),
  );
  const stats = { sent: 0, acked: 0, ackErrors: {}, notifyBatches: 0, notifyErrors: {} };
  const notesOf = new Map(rooms.map((r) => [r.roomId, 0]));
  let running = true;
  const t0 = now();
  const chat = (async () => {
    let i = 0;
    while (running && rate > 0) {
      const wait = t0 + (i * 1000) / rate - now();
      if (wait > 1) await sleep(wait);
      const k = i % rooms.length;
      i += 1;
      stats.sent += 1;
      sockets[k]
        .timeout(10_000)
        .emitWithAck('chat:message', { roomId: rooms[k].roomId, message: `resume ${i}` })
        .then(
          (ack) => {
            if (ack?.ok) stats.acked += 1;
            else stats.ackErrors[ack?.error?.code ?? 'bad ack'] = (stats.ackErrors[ack?.error?.code ?? 'bad ack'] || 0) + 1;
          },
          (err) => {
            stats.ackErrors[err.message] = (stats.ackErrors[err.message] || 0) + 1;
          },
        );
    }
  })();
  const notes = (async () => {
    let i = 0;
    while (running && notifyRate > 0) {
      const wait = t0 + (i * 1000) / notifyRate - now();
      if (wait > 1) await sleep(wait);
      const room = rooms[i % rooms.length];
      i += 1;
      try {
        const res = await fetch(`${url}/api/v1/internal/notifications`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', 'X-Api-Key': SERVICE_KEY },
          body: JSON.stringify({ userIds: room.members, type: 'system', title: `n|${i}`, message: 'resume bench' }),
        });
        await res.arrayBuffer();
        if (res.status === 201 || res.status === 200) {
          stats.notifyBatches += 1;
          notesOf.set(room.roomId, notesOf.get(room.roomId) + 1);
        } else stats.notifyErrors[res.status] = (stats.notifyErrors[res.status] || 0) + 1;
      } catch (err) {
        stats.notifyErrors[err.message] = (stats.notifyErrors[err.message] || 0) + 1;
      }
    }
  })();
  return {
    stats,
    /** Stops sending and waits for the outstanding acks (bounded). */
    async stop() {
      running = false;
      await Promise.all([chat, notes]);
      const deadline = now() + 15_000;
      while (stats.acked + Object.values(stats.ackErrors).reduce((a, b) => a + b, 0) < stats.sent && now() < deadline) await sleep(50);
      for (const s of sockets) s.close();
    },
    /** `{ [roomId]: { seqs, notes } }`: every receiver of a room must have all of them. */
    async expected(baseUrl = url) {
      const out = {};
      for (const room of rooms) {
        const res = await api(baseUrl, 'GET', `${REST}/chat/rooms/${room.roomId}`, { token: token(room.sender) });
        out[room.roomId] = { seqs: res.body?.lastSeq ?? 0, notes: notesOf.get(room.roomId) };
      }
      return out;
    },
  };
}

/** Polls `receivers.report(expected)` until nothing is missing or `ms` pass without progress. */
export async function drain(receivers, expected, ms) {
  let last = -1;
  let since = now();
  for (;;) {
    const r = await receivers.report(expected);
    const have = r.got + r.notesGot;
    if (r.got >= r.wanted && r.notesGot >= r.notesWanted) return r;
    if (have !== last) {
      last = have;
      since = now();
    } else if (now() - since > ms) return r;
    await sleep(500);
  }
}
