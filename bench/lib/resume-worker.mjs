// A receiver process of the resume scenarios (jitter, avalanche, rolling), forked by
// lib/resume.mjs. It owns a share of the receiver sockets, each a socket.io-client socket wrapped
// by `@switchboard/client` with reconnection on (socket.io-client's default backoff unless told
// otherwise), and books per socket what the helper let through: which seqs of its room and which
// notifications arrived (so the parent can count losses and duplicates), how many duplicates the
// helper dropped, each resume's `recovered`, and how long each replay took.
//
// Parent → worker: { type: 'start', url, clients: [{ token, roomId }], concurrency, socketOptions }
//                  { type: 'jitter', periodMs } (0 stops it)   { type: 'mark' }
//                  { type: 'status' }   { type: 'report', expected: { [roomId]: { seqs, notes } } }
// Worker → parent: { type: 'hello' }, { type: 'started', ok, errors }, { type: 'status', ... },
//                  { type: 'report', ... }
import { performance } from 'node:perf_hooks';
import { connect } from '@switchboard/client';

const now = () => performance.timeOrigin + performance.now();
const send = (msg) => process.send(msg);
process.on('disconnect', () => process.exit(0)); // parent gone: never linger

const JOURNALED = ['chat:new_message', 'chat:message_updated', 'chat:room_updated', 'notification:new', 'notification:read'];

/** Per socket: the client, its room, what it got. */
const receivers = [];
let jitterTimer = null;
let markAt = 0;
const replayMs = []; // transport open → replay complete
const backMs = []; // kill → replay complete
const errors = {};
const count = (map, key) => {
  map[key] = (map[key] || 0) + 1;
};

function track(r) {
  const { client } = r;
  client.socket.io.on('open', () => {
    r.openAt = now();
  });
  client.socket.on('connect_error', (err) => count(errors, err.message || 'connect_error'));
  client.socket.on('disconnect', (reason) => {
    r.connected = false;
    count(r.disconnects, reason);
  });
  const replayDone = (t) => {
    r.replayLeft = -1;
    if (r.openAt && r.sessions > 1) replayMs.push(t - r.openAt); // resumes only, not first connects
    if (r.killedAt) backMs.push(t - r.killedAt);
    r.killedAt = 0;
  };
  client.onSession((s) => {
    const t = now();
    r.connected = true;
    r.sessions += 1;
    r.readyAt = t;
    if (r.sessions > 1) {
      if (s.recovered) r.recovered += 1;
      else r.notRecovered += 1;
    }
    r.dupBase = client.duplicates;
    r.replayLeft = s.replayed;
    r.replayGot = 0;
    if (s.replayed === 0) replayDone(t);
  });
  const onJournaled = (event) => (payload) => {
    const t = now();
    if (event === 'chat:new_message' && payload?.roomId === r.roomId) {
      const seq = payload.message?.seq;
      if (Number.isInteger(seq) && seq > 0) {
        if (r.seqs.has(seq)) r.dupsPassed += 1;
        else r.seqs.add(seq);
      }
    } else if (event === 'notification:new') {
      const k = payload?.title;
      if (r.notes.has(k)) r.dupsPassed += 1;
      else r.notes.add(k);
    }
    if (r.replayLeft > 0) {
      r.replayGot += 1;
      if (r.replayGot + (client.duplicates - r.dupBase) >= r.replayLeft) replayDone(t);
    }
  };
  for (const event of JOURNALED) client.on(event, onJournaled(event));
}

/** Cuts a socket's TCP connection without a goodbye, as a phone losing its network does. */
function kill(r) {
  const engine = r.client.socket.io.engine;
  const ws = engine?.transport?.ws;
  r.killedAt = now();
  r.kills += 1;
  if (ws && ws._socket) ws._socket.destroy();
  else engine?.close();
}

async function start({ url, clients, concurrency = 50, socketOptions = {} }) {
  let next = 0;
  let ok = 0;
  const one = async () => {
    while (next < clients.length) {
      const c = clients[next++];
      const client = connect(url, {
        token: c.token,
        transports: ['websocket'],
        forceNew: true,
        reconnection: true,
        autoConnect: false,
        ...socketOptions,
      });
      const r = {
        client,
        roomId: c.roomId,
        seqs: new Set(),
        notes: new Set(),
        dupsPassed: 0,
        sessions: 0,
        recovered: 0,
        notRecovered: 0,
        kills: 0,
        disconnects: {},
        connected: false,
        openAt: 0,
        killedAt: 0,
        readyAt: 0,
        replayLeft: -1,
        replayGot: 0,
        dupBase: 0,
      };
      receivers.push(r);
      track(r);
      const ready = client.nextSession();
      client.socket.connect();
      const timeout = new Promise((resolve) => setTimeout(resolve, 60_000, 'timeout'));
      if ((await Promise.race([ready, timeout])) !== 'timeout') ok += 1;
      else count(errors, 'not ready within 60 s');
    }
  };
  await Promise.all(Array.from({ length: concurrency }, one));
  send({ type: 'started', ok, errors });
}

function jitter(periodMs) {
  clearInterval(jitterTimer);
  jitterTimer = null;
  for (const r of receivers) clearTimeout(r.killTimer);
  if (!periodMs) return;
  // Each socket dies once per period, at a random moment of it.
  const schedule = (r) => {
    r.killTimer = setTimeout(() => {
      if (r.connected) kill(r);
      schedule(r);
    }, periodMs * (0.5 + Math.random()));
  };
  for (const r of receivers) {
    r.killTimer = setTimeout(() => {
      if (r.connected) kill(r);
      schedule(r);
    }, Math.random() * periodMs);
  }
}

function status() {
  let connected = 0;
  let backAfterMark = 0;
  let lastReady = 0;
  let recoveredAfterMark = 0;
  for (const r of receivers) {
    if (r.connected) connected += 1;
    if (markAt && r.readyAt > markAt) {
      backAfterMark += 1;
      lastReady = Math.max(lastReady, r.readyAt);
      if (r.client.recovered) recoveredAfterMark += 1;
    }
  }
  return { type: 'status', sockets: receivers.length, connected, backAfterMark, recoveredAfterMark, lastReady, errors };
}

function report(expected) {
  let wanted = 0;
  let got = 0;
  let notesWanted = 0;
  let notesGot = 0;
  let dupsPassed = 0;
  let helperDuplicates = 0;
  let sessions = 0;
  let recovered = 0;
  let notRecovered = 0;
  let kills = 0;
  let incomplete = 0;
  const missing = []; // a sample: which seqs some sockets lack
  const disconnects = {};
  for (const r of receivers) {
    const e = expected[r.roomId] ?? { seqs: 0, notes: 0 };
    let have = 0;
    for (const seq of r.seqs) if (seq <= e.seqs) have += 1;
    wanted += e.seqs;
    got += have;
    notesWanted += e.notes;
    notesGot += Math.min(r.notes.size, e.notes);
    if (have < e.seqs || r.notes.size < e.notes) {
      incomplete += 1;
      if (missing.length < 10) {
        const seqs = [];
        for (let q = 1; q <= e.seqs && seqs.length < 5; q += 1) if (!r.seqs.has(q)) seqs.push(q);
        missing.push({ roomId: r.roomId, seqs, notes: `${r.notes.size}/${e.notes}` });
      }
    }
    dupsPassed += r.dupsPassed;
    helperDuplicates += r.client.duplicates;
    sessions += r.sessions;
    recovered += r.recovered;
    notRecovered += r.notRecovered;
    kills += r.kills;
    for (const [k, v] of Object.entries(r.disconnects)) disconnects[k] = (disconnects[k] || 0) + v;
  }
  const cpu = process.cpuUsage();
  send({
    type: 'report',
    sockets: receivers.length,
    wanted,
    got,
    notesWanted,
    notesGot,
    incomplete,
    dupsPassed,
    helperDuplicates,
    sessions,
    recovered,
    notRecovered,
    kills,
    disconnects,
    errors,
    missing,
    noteTitles: receivers.length ? [...receivers[0].notes].slice(-3) : [],
    replayMs,
    backMs,
    cpuMs: (cpu.user + cpu.system) / 1000,
  });
}

process.on('message', (msg) => {
  switch (msg.type) {
    case 'start':
      start(msg).catch((err) => send({ type: 'started', ok: 0, errors: { [err.message]: 1 } }));
      break;
    case 'jitter':
      jitter(msg.periodMs);
      break;
    case 'mark':
      markAt = now();
      send({ type: 'marked', at: markAt });
      break;
    case 'status':
      send(status());
      break;
    case 'report':
      report(msg.expected);
      break;
    case 'close':
      clearInterval(jitterTimer);
      for (const r of receivers) {
        clearTimeout(r.killTimer);
        r.client.close();
      }
      send({ type: 'closed' });
      break;
    default:
      break;
  }
});
send({ type: 'hello' });
