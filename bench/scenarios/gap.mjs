// gap: the resume cost of one returning client. A user in --rooms group rooms disconnects; while
// it is away --messages chat messages are sent over REST, spread over its rooms, and --gap-sec
// pass; it then reconnects with plain socket.io-client and the documented procedure (`auth`
// callback with its last cursor). Measured: from the transport opening to the last replayed
// event (the replay is one journal query, whatever the number of rooms). Repeated --rounds
// times; passes when every round replays exactly the missed messages, in order, recovered.
import { io } from 'socket.io-client';

import { runScenario, scenarioOptions, verdict } from '../lib/cli.mjs';
import { now } from '../lib/lite.mjs';
import { createGroupRoom } from '../lib/setup.mjs';
import { api } from '../lib/server.mjs';
import { fmtMs, summary } from '../lib/stats.mjs';

const spec = {
  rooms: [20, 'rooms the returning user is a member of'],
  messages: [1000, 'messages sent while it is away, spread over its rooms'],
  'gap-sec': [60, 'seconds away (beyond the sending)'],
  rounds: [3, 'disconnect / reconnect rounds'],
};

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function main(argv) {
  const opts = scenarioOptions('gap', argv, spec);
  await runScenario(opts, async (startServer) => {
    const server = await startServer({ RATE_LIMIT_PER_MINUTE: '1000000' });
    const runId = Date.now().toString(36);
    const me = `gap-${runId}-me`;
    const senders = [];
    const rooms = [];
    for (let r = 0; r < opts.rooms; r++) {
      const sender = `gap-${runId}-s${r}`;
      senders.push(sender);
      rooms.push(await createGroupRoom(server, sender, [me], `gap ${r}`));
    }
    let cursor;
    const got = [];
    let wantReplay = 0;
    let ready = null;
    let replayDone = null;
    const socket = io(`${server.url}/realtime`, {
      transports: ['websocket'],
      reconnection: false,
      autoConnect: false,
      auth: (cb) => cb({ token: server.token(me), cursor }),
    });
    const keep = (c) => {
      if (typeof c === 'string') cursor = c;
    };
    socket.on('session:ready', (s) => {
      ready = s;
      wantReplay = s.replayed;
      if (s.replayed === 0) keep(s.cursor);
      if (wantReplay === 0) replayDone?.();
    });
    socket.on('chat:new_message', (p, c) => {
      keep(c);
      got.push(p.message);
      if (got.length === wantReplay) replayDone?.();
    });
    const connect = () =>
      new Promise((resolve, reject) => {
        const t0 = now();
        let opened = null;
        socket.io.engine?.removeAllListeners?.('open');
        socket.io.once('open', () => {
          opened = now();
        });
        replayDone = () => resolve({ total: now() - t0, replay: now() - (opened ?? t0) });
        socket.once('connect_error', (e) => reject(new Error(`connect_error: ${e.message}`)));
        socket.connect();
      });
    await connect();
    const latencies = [];
    const checks = [];
    for (let round = 0; round < opts.rounds; round++) {
      socket.disconnect();
      got.length = 0;
      const sentIds = [];
      for (let i = 0; i < opts.messages; i++) {
        const r = i % rooms.length;
        const res = await api(server.url, 'POST', `/api/v1/realtime/chat/rooms/${rooms[r]}/messages`, {
          token: server.token(senders[r]),
          body: { message: `gap ${round} ${i}` },
        });
        if (res.status !== 201) throw new Error(`send: HTTP ${res.status} ${JSON.stringify(res.body)}`);
        sentIds.push(res.body.id);
      }
      await sleep(opts.gapSec * 1000);
      const t = await connect();
      latencies.push(t.replay);
      const ids = got.map((m) => m.id);
      const exact = ids.length === sentIds.length && new Set(ids).size === ids.length && sentIds.every((id) => ids.includes(id));
      console.log(`round ${round + 1}: replayed ${got.length}/${opts.messages} over ${opts.rooms} rooms, recovered ${ready.recovered}; transport open → last replayed ${fmtMs(t.replay)} (connect call → last ${fmtMs(t.total)})`);
      checks.push([exact && ready.recovered, `round ${round + 1}: exactly the ${opts.messages} missed messages, recovered`]);
    }
    socket.disconnect();
    const s = summary(latencies);
    console.log(`\n== gap: ${opts.messages} missed messages over ${opts.rooms} rooms after ${opts.gapSec} s away, ${opts.rounds} rounds ==`);
    console.log(`replay          p50 ${fmtMs(s.p50)}  max ${fmtMs(s.max)} (transport open → last replayed event)`);
    const v = verdict('gap', checks, `replay p50 ${fmtMs(s.p50)} max ${fmtMs(s.max)}`);
    console.log(v.lines.join('\n'));
    return { pass: v.pass, result: { latencies } };
  });
}
