// A receiver process, forked by run.mjs (IPC with 'advanced' serialisation). It owns a share of
// the receiver sockets, so the load generator can use more than one core, and records for every
// `chat:new_message` the delivery latency (receive time − send time carried in the content), which
// message it was (to count losses and duplicates per socket) and the room seq order.
//
// Two receiver clients: `sio` is the real socket.io-client (what apps use; the default), `lite`
// speaks Engine.IO 4 / Socket.IO 5 over a bare `ws` WebSocket and reads only the few fields it
// needs without JSON-parsing each delivery, so the load generator costs less CPU per delivery
// and more of the 2 cores is left to the server.
//
// Parent → worker: { type: 'connect', url, tokens, socketRooms, concurrency, messages, readyTimeoutMs, client }
//                  (socketRooms[i]: the room socket i must find in its session:ready and is measured in)
//                  { type: 'arm' } (start CPU accounting and progress reports)
//                  { type: 'report' }, { type: 'close' }
// Worker → parent: { type: 'connected', ... }, { type: 'progress', m, w }, { type: 'report', ... }
import { performance } from 'node:perf_hooks';
import { io } from 'socket.io-client';
import WebSocket from 'ws';

const now = () => performance.timeOrigin + performance.now();
const send = (msg) => process.send(msg);

process.on('disconnect', () => process.exit(0)); // parent gone: never linger

let sockets = [];
let socketRooms = []; // the bench room of each socket
let roomSet = new Set(); // every bench room of this worker's sockets
let M = 0; // measured messages
let seen = null; // Uint8Array(sockets × M): which message each socket got
let lastSeq = null; // Int32Array(sockets)
let latencies = new Float64Array(1024);
let nLat = 0;
let perMsg = null; // Uint32Array(M): deliveries per measured message
let warm = 0;
let dups = 0;
let outOfOrder = 0;
let foreign = 0; // chat:new_message that is not a bench message of our rooms
let malformed = 0;
let firstRecv = null;
let lastRecv = null;
const disconnects = {};
let cpuAtArm = null;
let progressTimer = null;

function pushLatency(v) {
  if (nLat === latencies.length) {
    const bigger = new Float64Array(latencies.length * 2);
    bigger.set(latencies);
    latencies = bigger;
  }
  latencies[nLat++] = v;
}

/** Books one bench delivery on socket `i`: `content` "bench|<phase>|<index>|<sendTime>". */
function record(i, t, content, seq) {
  const parts = content.split('|');
  if (parts.length !== 4 || parts[0] !== 'bench') {
    foreign += 1;
    return;
  }
  if (seq < lastSeq[i]) outOfOrder += 1;
  lastSeq[i] = seq;
  if (parts[1] === 'w') {
    warm += 1;
    return;
  }
  const idx = Number(parts[2]);
  const sentAt = Number(parts[3]);
  if (!Number.isInteger(idx) || idx < 0 || idx >= M || !Number.isFinite(sentAt)) {
    malformed += 1;
    return;
  }
  const k = i * M + idx;
  if (seen[k]) {
    dups += 1;
    return;
  }
  seen[k] = 1;
  perMsg[idx] += 1;
  pushLatency(t - sentAt);
  if (firstRecv === null) firstRecv = t;
  lastRecv = t;
}

function onNewMessage(i) {
  return (payload) => {
    const t = now();
    const message = payload && payload.message;
    if (!message || !roomSet.has(payload.roomId) || typeof message.content !== 'string') {
      foreign += 1;
      return;
    }
    record(i, t, message.content, message.seq);
  };
}

const NS = '/realtime';
const EVENT_PREFIX = `42${NS},[`;
const NEW_MESSAGE_PREFIX = `42${NS},["chat:new_message",`;

/** The JSON string value of `"key":"…"` in `s` (no escapes expected), or null. */
function stringField(s, key, from = 0) {
  const k = s.indexOf(`"${key}":"`, from);
  if (k < 0) return null;
  const start = k + key.length + 4;
  const end = s.indexOf('"', start);
  return end < 0 ? null : s.slice(start, end);
}

function intField(s, key) {
  const k = s.indexOf(`"${key}":`);
  return k < 0 ? NaN : parseInt(s.slice(k + key.length + 3, k + key.length + 23), 10);
}

/** The `lite` client: Engine.IO 4 + Socket.IO 5 over a bare WebSocket, websocket transport only. */
function connectLite(url, token, i, readyTimeoutMs) {
  return new Promise((resolve) => {
    const t0 = now();
    const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/socket.io/?EIO=4&transport=websocket`, {
      perMessageDeflate: false,
      skipUTF8Validation: true,
    });
    const handle = {
      connected: false,
      close: () => ws.close(),
    };
    sockets[i] = handle;
    let settled = false;
    const finish = (error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(error ? { error } : { ms: now() - t0 });
    };
    const timer = setTimeout(() => {
      finish(`not ready within ${readyTimeoutMs} ms`);
      ws.terminate();
    }, readyTimeoutMs);
    ws.on('message', (data) => {
      const t = now();
      const s = data.toString();
      if (s.startsWith(NEW_MESSAGE_PREFIX)) {
        // roomId of the envelope and of the message are the same; content and seq from the message
        if (!roomSet.has(stringField(s, 'roomId', NEW_MESSAGE_PREFIX.length))) {
          foreign += 1;
          return;
        }
        const content = stringField(s, 'content');
        if (content === null) {
          foreign += 1;
          return;
        }
        record(i, t, content, intField(s, 'seq'));
        return;
      }
      switch (s.charCodeAt(0)) {
        case 50: // '2' ping
          ws.send('3');
          return;
        case 48: // '0' Engine.IO open → Socket.IO CONNECT to the namespace with the token
          ws.send(`40${NS},${JSON.stringify({ token })}`);
          return;
        case 52: // '4' message
          if (s.startsWith(`40${NS}`)) {
            handle.connected = true;
          } else if (s.startsWith(`44${NS}`)) {
            finish(`connect_error: ${stringField(s, 'message') ?? s.slice(0, 100)}`);
            ws.close();
          } else if (s.startsWith(EVENT_PREFIX)) {
            const [event, payload] = JSON.parse(s.slice(EVENT_PREFIX.length - 1));
            if (event === 'session:ready') {
              const roomId = socketRooms[i];
              if (roomId && !(payload && Array.isArray(payload.rooms) && payload.rooms.includes(roomId))) {
                finish('session:ready does not list the bench room');
              } else finish();
            }
          } else if (s.startsWith(`41${NS}`)) {
            handle.connected = false;
            disconnects['io server disconnect'] = (disconnects['io server disconnect'] || 0) + 1;
          }
          return;
        default:
      }
    });
    ws.on('error', (err) => finish(`websocket error: ${err.message}`));
    ws.on('close', () => {
      if (handle.connected) {
        handle.connected = false;
        disconnects['transport close'] = (disconnects['transport close'] || 0) + 1;
      }
      finish('closed before ready');
    });
  });
}

function connectOne(url, token, i, readyTimeoutMs) {
  return new Promise((resolve) => {
    const t0 = now();
    const socket = io(`${url}/realtime`, {
      path: '/socket.io/',
      transports: ['websocket'],
      forceNew: true,
      reconnection: false,
      auth: { token },
    });
    sockets[i] = socket;
    socket.on('chat:new_message', onNewMessage(i));
    socket.on('disconnect', (reason) => {
      disconnects[reason] = (disconnects[reason] || 0) + 1;
    });
    let connected = false;
    let ready = false;
    const finish = (error) => {
      clearTimeout(timer);
      socket.off('connect_error', onError);
      resolve(error ? { error } : { ms: now() - t0 });
    };
    const onError = (err) => finish(`connect_error: ${err.message}`);
    const timer = setTimeout(() => finish(`not ready within ${readyTimeoutMs} ms`), readyTimeoutMs);
    socket.once('connect', () => {
      connected = true;
      if (ready) finish();
    });
    socket.once('session:ready', (s) => {
      ready = true;
      const roomId = socketRooms[i];
      if (roomId && !(s && Array.isArray(s.rooms) && s.rooms.includes(roomId))) {
        finish('session:ready does not list the bench room');
      } else if (connected) finish();
    });
    socket.on('connect_error', onError);
  });
}

async function connectAll({ url, tokens, concurrency, readyTimeoutMs, client }) {
  const connectFn = client === 'lite' ? connectLite : connectOne;
  sockets = new Array(tokens.length);
  lastSeq = new Int32Array(tokens.length);
  const times = new Float64Array(tokens.length);
  const errors = {};
  let ok = 0;
  let next = 0;
  const t0 = now();
  const lane = async () => {
    while (next < tokens.length) {
      const i = next++;
      const r = await connectFn(url, tokens[i], i, readyTimeoutMs);
      if (r.error) errors[r.error] = (errors[r.error] || 0) + 1;
      else times[ok++] = r.ms;
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, tokens.length)) }, lane));
  return { ok, errors, times: times.slice(0, ok), elapsedMs: now() - t0 };
}

process.on('message', async (msg) => {
  switch (msg.type) {
    case 'connect': {
      socketRooms = msg.socketRooms ?? [];
      roomSet = new Set(socketRooms);
      M = msg.messages || 0;
      const r = await connectAll(msg);
      seen = new Uint8Array(Math.max(1, sockets.length * M));
      perMsg = new Uint32Array(Math.max(1, M));
      send({ type: 'connected', ...r });
      break;
    }
    case 'arm': {
      cpuAtArm = process.cpuUsage();
      clearInterval(progressTimer);
      progressTimer = setInterval(() => send({ type: 'progress', m: nLat, w: warm }), 100);
      break;
    }
    case 'report': {
      clearInterval(progressTimer);
      const cpu = process.cpuUsage(cpuAtArm ?? undefined);
      const open = sockets.filter((s) => s && s.connected).length;
      send({
        type: 'report',
        latencies: latencies.slice(0, nLat),
        perMsg,
        warm,
        dups,
        outOfOrder,
        foreign,
        malformed,
        firstRecv,
        lastRecv,
        disconnects,
        open,
        cpuMs: (cpu.user + cpu.system) / 1000,
        cpuSysMs: cpu.system / 1000,
        rssKb: Math.round(process.memoryUsage().rss / 1024),
      });
      break;
    }
    case 'close': {
      clearInterval(progressTimer);
      for (const s of sockets) s?.close();
      setTimeout(() => process.exit(0), 200);
      break;
    }
    default:
      break;
  }
});

send({ type: 'hello' });
