// A process of the `persist` scenario, forked by run.mjs: it owns a share of the small rooms'
// member sockets (`lite` client), and every sender among them sends `chat:message` in a closed
// loop (the next one as soon as the previous ack arrives) until told to stop. It records every
// ack latency and error, and counts the `chat:new_message` deliveries its sockets get (with
// their latency), so the parent can check that every persisted message reached the room.
//
// Parent → worker: { type: 'setup', url, members: [{ token, roomId, sender }], concurrency }
//                  { type: 'go', durationMs }, { type: 'report' }, { type: 'close' }
// Worker → parent: { type: 'ready', ok, errors }, { type: 'sent', ... }, { type: 'progress', d },
//                  { type: 'report', ... }
import { LiteSocket, now, pool } from './lite.mjs';

const send = (msg) => process.send(msg);
process.on('disconnect', () => process.exit(0));

let sockets = [];
let members = [];
let deliveries = 0;
let deliveryMs = [];
let disconnects = 0;
let progressTimer = null;
let cpuAtGo = null;

function onMessage(_roomId, content, _seq, t) {
  if (!content || !content.startsWith('bench|p|')) return;
  deliveries += 1;
  const sentAt = Number(content.slice(content.lastIndexOf('|') + 1));
  if (Number.isFinite(sentAt)) deliveryMs.push(t - sentAt);
}

async function setup({ url, members: list, concurrency }) {
  members = list;
  const errors = {};
  let ok = 0;
  sockets = await pool(list, concurrency, async (m) => {
    const s = new LiteSocket(url, m.token, { onMessage, onClose: () => (disconnects += 1) });
    const r = await s.connect(30_000);
    if (r.error) errors[r.error] = (errors[r.error] || 0) + 1;
    else ok += 1;
    return s;
  });
  send({ type: 'ready', ok, errors });
}

function go({ durationMs, runId, worker }) {
  cpuAtGo = process.cpuUsage();
  const stopAt = now() + durationMs;
  const ackMs = [];
  const errors = {};
  const ackedPerRoom = {};
  let acked = 0;
  let running = 0;
  let n = 0;
  progressTimer = setInterval(() => send({ type: 'progress', d: deliveries }), 100);
  const done = () => {
    send({ type: 'sent', acked, ackedPerRoom, errors, ackMs: Float64Array.from(ackMs), lastAck: now() });
  };
  members.forEach((m, i) => {
    if (!m.sender) return;
    const socket = sockets[i];
    running += 1;
    const loop = () => {
      if (now() >= stopAt || socket.closed) {
        running -= 1;
        if (running === 0) done();
        return;
      }
      const sentAt = now();
      const k = n++;
      socket.emit(
        'chat:message',
        { roomId: m.roomId, message: `bench|p|${k}|${sentAt}`, clientMessageId: `${runId}-${worker}-${k}` },
        (reply, t) => {
          if (reply && reply.ok === true) {
            acked += 1;
            ackedPerRoom[m.roomId] = (ackedPerRoom[m.roomId] || 0) + 1;
            ackMs.push(t - sentAt);
          } else {
            const code = reply ? (reply.error?.code ?? 'BAD_ACK') : 'NO_ACK';
            errors[code] = (errors[code] || 0) + 1;
          }
          loop();
        },
      );
    };
    loop();
  });
  if (running === 0) done();
}

process.on('message', (msg) => {
  switch (msg.type) {
    case 'setup':
      setup(msg);
      break;
    case 'go':
      go(msg);
      break;
    case 'report': {
      clearInterval(progressTimer);
      const cpu = process.cpuUsage(cpuAtGo ?? undefined);
      send({
        type: 'report',
        deliveries,
        deliveryMs: Float64Array.from(deliveryMs),
        disconnects,
        open: sockets.filter((s) => s && s.ready && !s.closed).length,
        cpuMs: (cpu.user + cpu.system) / 1000,
        cpuSysMs: cpu.system / 1000,
      });
      break;
    }
    case 'close':
      for (const s of sockets) s?.close();
      setTimeout(() => process.exit(0), 200);
      break;
    default:
  }
});

send({ type: 'hello' });
