// slow-consumer: a 10×200 fan-out (rooms × members, each room with one sender at --rate msg/s)
// run twice on fresh servers: once with every receiver reading, once with --slow-pct of each
// room's receivers stopping to read right after `session:ready` (their TCP socket paused, like a
// phone on a dead link). The healthy receivers must get every message exactly once in both runs,
// and their delivery p99 with slow sockets must stay within 2× of the run without. What became
// of the slow sockets (disconnected by the server, and why) is reported.
import { DeliveryBook, benchContent, drain } from '../lib/book.mjs';
import { runScenario, scenarioOptions, verdict } from '../lib/cli.mjs';
import { LiteSocket, now, pool } from '../lib/lite.mjs';
import { createGroupRoom, rssSampler } from '../lib/setup.mjs';
import { fmtInt, fmtMb, fmtMs } from '../lib/stats.mjs';

const spec = {
  rooms: [10, 'rooms'],
  'room-size': [200, 'members per room (one of them sends)'],
  rate: [10, 'messages per second per room'],
  'duration-sec': [120, 'sending time per run'],
  'slow-pct': [10, 'percent of each room\'s receivers that stop reading (second run)'],
  'content-bytes': [3500, 'size of each message\'s content'],
  'drain-ms': [5000, 'stop waiting for deliveries after this long without progress'],
};

async function phase(opts, server, runId, slowPct) {
  const R = opts.rooms;
  const perRoom = opts.roomSize - 1;
  const total = Math.round(opts.rate * opts.durationSec) * R; // messages over all rooms
  const book = new DeliveryBook(R * perRoom, total);
  const slow = new Set();
  const healthyPerRoom = new Array(R).fill(0);
  const closes = {};
  let slowClosed = 0;
  let measuring = true;
  const roomIds = [];
  const senders = [];
  const receivers = [];
  for (let r = 0; r < R; r += 1) {
    const users = Array.from({ length: perRoom }, (_, i) => `sc-${runId}-${slowPct}-r${r}-u${i}`);
    const owner = `sc-${runId}-${slowPct}-r${r}-sender`;
    roomIds.push(await createGroupRoom(server, owner, users, `slow ${r}`));
    const nSlow = Math.round((perRoom * slowPct) / 100);
    users.forEach((u, i) => {
      const idx = receivers.length;
      const isSlow = i < nSlow;
      if (isSlow) slow.add(idx);
      else healthyPerRoom[r] += 1;
      receivers.push({ idx, room: r, token: server.token(u), slow: isSlow });
    });
    senders.push(server.token(owner));
  }
  const sockets = new Array(receivers.length);
  const connected = await pool(receivers, 100, async (rc) => {
    const s = new LiteSocket(server.url, rc.token, {
      onMessage: (_room, content, _seq, t) => {
        if (!rc.slow) book.record(rc.idx, content, t);
      },
      onClose: (reason) => {
        if (!measuring) return;
        const key = `${rc.slow ? 'slow' : 'healthy'}: ${reason}`;
        closes[key] = (closes[key] || 0) + 1;
        if (rc.slow) slowClosed += 1;
      },
      onEvent: (event, payload) => {
        if (event !== 'session:ready' && event !== 'chat:new_message' && !event.startsWith('presence')) {
          const key = `${rc.slow ? 'slow' : 'healthy'} got ${event}${payload?.code ? ` ${payload.code}` : ''}`;
          closes[key] = (closes[key] || 0) + 1;
        }
      },
    });
    sockets[rc.idx] = s;
    const r = await s.connect();
    if (!r.error && rc.slow) s.pause();
    return r;
  });
  const failed = connected.filter((r) => r.error).length;
  if (failed) throw new Error(`${failed} receivers did not connect: ${connected.find((r) => r.error).error}`);
  const senderSockets = await Promise.all(senders.map(async (t) => {
    const s = new LiteSocket(server.url, t);
    const r = await s.connect();
    if (r.error) throw new Error(`sender: ${r.error}`);
    return s;
  }));

  const rss = rssSampler(server.pid, 500);
  const ackErrors = {};
  let acked = 0;
  const roomOf = new Uint16Array(total);
  const t0 = now();
  const interval = 1000 / (opts.rate * R);
  for (let i = 0; i < total; i += 1) {
    const wait = t0 + i * interval - now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    const r = i % R;
    roomOf[i] = r;
    senderSockets[r].emit(
      'chat:message',
      { roomId: roomIds[r], message: benchContent(i, now(), opts.contentBytes) },
      (ack) => {
        if (ack?.ok) acked += 1;
        else {
          const code = ack?.error?.code ?? 'NO_ACK';
          ackErrors[code] = (ackErrors[code] || 0) + 1;
        }
      },
    );
  }
  const expected = healthyPerRoom.reduce((a, n) => a + n, 0) * (total / R);
  await drain(() => book.received >= expected, () => book.received, opts.drainMs);
  rss.stop();
  measuring = false;
  const healthyOpen = receivers.filter((rc) => !rc.slow && !sockets[rc.idx].closed).length;
  let lost = 0;
  for (const rc of receivers) {
    if (rc.slow) continue;
    for (let i = 0; i < total; i += 1) if (roomOf[i] === rc.room && !book.has(rc.idx, i)) lost += 1;
  }
  for (const s of [...sockets, ...senderSockets]) s.terminate();
  return {
    slowPct,
    messages: total,
    acked,
    ackErrors,
    expected,
    received: book.received,
    lost,
    dups: book.dups,
    latencyMs: book.latency(),
    slowSockets: slow.size,
    slowDisconnected: slowClosed,
    healthy: receivers.length - slow.size,
    healthyOpen,
    closes,
    peakRssKb: rss.peakKb,
  };
}

export async function main(argv) {
  const opts = scenarioOptions('slow-consumer', argv, spec);
  await runScenario(opts, async (startServer) => {
    const runId = Date.now().toString(36);
    const runs = [];
    for (const pct of [0, opts.slowPct]) {
      const server = await startServer();
      runs.push(await phase(opts, server, runId, pct));
      await server.stop();
    }
    const [base, slow] = runs;
    const lines = ['', `== slow-consumer: ${opts.rooms} rooms x ${opts.roomSize} members, ${opts.rate} msg/s per room, ` +
      `${opts.contentBytes}-byte messages, ${opts.durationSec} s ==`];
    for (const r of runs) {
      lines.push(
        `${r.slowPct ? `${r.slowPct}% slow` : 'no slow  '}  healthy ${fmtInt(r.received)}/${fmtInt(r.expected)} deliveries, lost ${r.lost}, ` +
          `duplicates ${r.dups}; p50 ${fmtMs(r.latencyMs.p50)} p99 ${fmtMs(r.latencyMs.p99)} max ${fmtMs(r.latencyMs.max)}; ` +
          `acks ${r.acked}/${r.messages} ${JSON.stringify(r.ackErrors)}; slow sockets dropped by the server ` +
          `${r.slowDisconnected}/${r.slowSockets}; healthy still open ${r.healthyOpen}/${r.healthy}; peak RSS ${fmtMb(r.peakRssKb)}`,
      );
      lines.push(`           events and closes: ${JSON.stringify(r.closes)}`);
    }
    const ratio = slow.latencyMs.p99 / base.latencyMs.p99;
    const { pass, lines: v } = verdict(
      'slow-consumer',
      [
        [base.lost === 0 && slow.lost === 0, `no loss for healthy receivers (${base.lost}, ${slow.lost})`],
        [base.dups === 0 && slow.dups === 0, `no duplicates (${base.dups}, ${slow.dups})`],
        [slow.healthyOpen === slow.healthy, `no healthy receiver disconnected (${slow.healthy - slow.healthyOpen})`],
        [ratio <= 2, `healthy p99 with slow sockets within 2x of without (${ratio.toFixed(2)}x)`],
      ],
      `p99 ${fmtMs(base.latencyMs.p99)} -> ${fmtMs(slow.latencyMs.p99)}, duplicates ${slow.dups}, lost ${slow.lost}`,
    );
    console.log([...lines, ...v].join('\n'));
    return { pass, result: { scenario: 'slow-consumer', runs, p99Ratio: ratio } };
  });
}
