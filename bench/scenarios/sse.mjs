// sse: SSE streams beside Socket.IO sockets in one run. Phase 1 (connect): --streams idle SSE
// streams (`GET /api/v1/realtime/stream`), then as many idle Socket.IO sockets, each user
// authenticated; reports the server's RSS growth per stream and per socket. Phase 2 (fan-out):
// --rooms rooms of --members receivers, half reading an SSE stream and half on Socket.IO, while
// the rooms' owners send --rate messages/s per room over REST for --duration-sec; reports
// delivery latency (send → receipt, from a timestamp in the message) per transport, side by side.
import http from 'node:http';

import { io } from 'socket.io-client';

import { runScenario, scenarioOptions, verdict } from '../lib/cli.mjs';
import { now } from '../lib/lite.mjs';
import { createGroupRoom, rssSampler } from '../lib/setup.mjs';
import { api } from '../lib/server.mjs';
import { fmtInt, fmtMs, summary } from '../lib/stats.mjs';

const spec = {
  streams: [2000, 'idle SSE streams (and as many idle sockets) in the connect phase'],
  rooms: [10, 'fan-out rooms'],
  members: [200, 'receivers per room, half SSE and half Socket.IO'],
  rate: [10, 'messages/s per room'],
  'duration-sec': [20, 'seconds of fan-out'],
};

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });

/** Opens an SSE stream for `token`; calls `onEvent(name, data)` per frame; resolves on `session:ready`. */
function openStream(url, token, onEvent) {
  return new Promise((resolve, reject) => {
    const req = http.get(`${url}/api/v1/realtime/stream`, { agent, headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' } }, (res) => {
      if (res.statusCode !== 200) return reject(new Error(`stream: HTTP ${res.statusCode}`));
      res.setEncoding('utf8');
      let buf = '';
      res.on('data', (chunk) => {
        buf += chunk;
        let end;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const frame = buf.slice(0, end);
          buf = buf.slice(end + 2);
          let name = 'message';
          let data = '';
          for (const line of frame.split('\n')) {
            if (line.startsWith('event:')) name = line.slice(6).trim();
            else if (line.startsWith('data:')) data += line.slice(5).trim();
          }
          if (name === 'session:ready') resolve(req);
          else if (data) onEvent(name, data);
        }
      });
    });
    req.on('error', reject);
  });
}

function openSocket(url, token, onMessage) {
  return new Promise((resolve, reject) => {
    const s = io(`${url}/realtime`, { transports: ['websocket'], reconnection: false, auth: { token } });
    s.on('chat:new_message', onMessage);
    s.once('session:ready', () => resolve(s));
    s.once('connect_error', (e) => reject(new Error(`socket: ${e.message}`)));
  });
}

async function inBatches(n, size, f) {
  const out = [];
  for (let i = 0; i < n; i += size) out.push(...(await Promise.all(Array.from({ length: Math.min(size, n - i) }, (_, j) => f(i + j)))));
  return out;
}

export async function main(argv) {
  const opts = scenarioOptions('sse', argv, spec);
  await runScenario(opts, async (startServer) => {
    const server = await startServer({ MAX_CONNECTIONS_PER_USER: '10', RATE_LIMIT_PER_MINUTE: '1000000' });
    const rss = rssSampler(() => server.pid, 500);
    const runId = Date.now().toString(36);
    const settle = async () => {
      await sleep(1500);
      return rss.sample();
    };

    // Phase 1: idle connections.
    const base = await settle();
    let t = now();
    const streams = await inBatches(opts.streams, 100, (i) => openStream(server.url, server.token(`sse-${runId}-i${i}`), () => {}));
    const afterStreams = await settle();
    console.log(`connect: ${fmtInt(streams.length)} SSE streams in ${fmtMs(now() - t)}`);
    t = now();
    const sockets = await inBatches(opts.streams, 100, (i) => openSocket(server.url, server.token(`sio-${runId}-i${i}`), () => {}));
    const afterSockets = await settle();
    console.log(`connect: ${fmtInt(sockets.length)} Socket.IO sockets in ${fmtMs(now() - t)}`);
    const kibStream = (afterStreams - base) / opts.streams;
    const kibSocket = (afterSockets - afterStreams) / opts.streams;
    for (const r of streams) r.destroy();
    for (const s of sockets) s.disconnect();
    await sleep(1000);

    // Phase 2: fan-out to mixed receivers.
    const lat = { sse: [], socketio: [] };
    const got = { sse: 0, socketio: 0 };
    const record = (kind, message) => {
      const sent = Number(String(message.content).split(' ')[1]);
      if (Number.isFinite(sent)) lat[kind].push(Date.now() - sent);
      got[kind]++;
    };
    const rooms = [];
    const receivers = [];
    for (let r = 0; r < opts.rooms; r++) {
      const owner = `fo-${runId}-o${r}`;
      const members = Array.from({ length: opts.members }, (_, i) => `fo-${runId}-r${r}-u${i}`);
      rooms.push({ owner, roomId: await createGroupRoom(server, owner, members, `sse ${r}`) });
      members.forEach((m, i) => receivers.push({ user: m, kind: i % 2 === 0 ? 'sse' : 'socketio' }));
    }
    const conns = await inBatches(receivers.length, 100, (i) => {
      const { user, kind } = receivers[i];
      return kind === 'sse'
        ? openStream(server.url, server.token(user), (name, data) => {
            if (name === 'chat:new_message') record('sse', JSON.parse(data).message);
          })
        : openSocket(server.url, server.token(user), (p) => record('socketio', p.message));
    });
    console.log(`fan-out: ${opts.rooms} rooms × ${opts.members} receivers (${receivers.length / 2} SSE, ${receivers.length / 2} Socket.IO)`);
    let sent = 0;
    const end = Date.now() + opts.durationSec * 1000;
    const every = 1000 / opts.rate;
    await Promise.all(
      rooms.map(async ({ owner, roomId }) => {
        const token = server.token(owner);
        let next = Date.now();
        while (Date.now() < end) {
          const res = await api(server.url, 'POST', `/api/v1/realtime/chat/rooms/${roomId}/messages`, { token, body: { message: `t ${Date.now()}` } });
          if (res.status === 201) sent++;
          next += every;
          await sleep(Math.max(0, next - Date.now()));
        }
      }),
    );
    await sleep(2000);
    for (const c of conns) (c.destroy ?? c.disconnect).call(c);
    rss.stop();
    const expect = sent * (opts.members / 2);
    const s = { sse: summary(lat.sse), socketio: summary(lat.socketio) };
    console.log(`\n== sse: ${fmtInt(opts.streams)} idle streams vs sockets; fan-out ${opts.rooms}×${opts.members} at ${opts.rate} msg/s/room for ${opts.durationSec} s ==`);
    console.log(`memory          ${kibStream.toFixed(1)} KiB per idle SSE stream, ${kibSocket.toFixed(1)} KiB per idle Socket.IO socket (server RSS growth)`);
    console.log(`fan-out         ${fmtInt(sent)} messages; SSE ${fmtInt(got.sse)}/${fmtInt(expect)} delivered, p50 ${fmtMs(s.sse.p50)} p99 ${fmtMs(s.sse.p99)}; Socket.IO ${fmtInt(got.socketio)}/${fmtInt(expect)}, p50 ${fmtMs(s.socketio.p50)} p99 ${fmtMs(s.socketio.p99)}`);
    const v = verdict(
      'sse',
      [
        [streams.length === opts.streams && sockets.length === opts.streams, 'every stream and socket connected'],
        [got.sse === expect && got.socketio === expect, 'every message reached every receiver on both transports'],
      ],
      `${kibStream.toFixed(1)} KiB/stream vs ${kibSocket.toFixed(1)} KiB/socket; delivery p99 SSE ${fmtMs(s.sse.p99)} vs Socket.IO ${fmtMs(s.socketio.p99)}`,
    );
    console.log(v.lines.join('\n'));
    return { pass: v.pass, result: { kibStream, kibSocket, latency: s, got, expect } };
  });
}
