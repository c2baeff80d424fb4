// soak: --duration-sec of steady churn. About --population sockets are open at any time, each a
// random user of a pool of --users who are members of --rooms group rooms; every second
// --churn-per-sec of them close and as many new ones connect. Open sockets type (`chat:typing`),
// chat (`chat:message` with an ack), report activity (`presence:activity`) and read
// (`chat:read`) at steady rates. The server's RSS after --warm-sec and at the end are compared:
// what per-user, per-room or per-socket state is never dropped shows up as growth.
import { runScenario, scenarioOptions, verdict } from '../lib/cli.mjs';
import { LiteSocket, pool } from '../lib/lite.mjs';
import { createGroupRoom, rssSampler } from '../lib/setup.mjs';
import { fmtInt, fmtMb, fmtPct } from '../lib/stats.mjs';

const spec = {
  'duration-sec': [1800, 'total run time'],
  'warm-sec': [300, 'RSS reference point'],
  population: [300, 'sockets open at any time'],
  users: [3000, 'user pool'],
  rooms: [30, 'group rooms (users split evenly)'],
  'churn-per-sec': [5, 'sockets replaced per second'],
  'message-every-sec': [20, 'each open socket sends a chat message this often'],
  'typing-every-sec': [10, 'each open socket types this often'],
  'activity-every-sec': [30, 'each open socket reports an activity this often'],
  'max-growth-pct': [10, 'PASS needs end RSS <= warm RSS x (1 + this/100)'],
};

export async function main(argv) {
  const opts = scenarioOptions('soak', argv, spec);
  await runScenario({ ...opts, timeout: Math.max(opts.timeout, opts.durationSec + 600) }, async (startServer) => {
    const server = await startServer();
    const runId = Date.now().toString(36);
    const perRoom = Math.ceil(opts.users / opts.rooms);
    const users = Array.from({ length: opts.users }, (_, i) => `sk-${runId}-u${i}`);
    const roomIds = [];
    for (let r = 0; r < opts.rooms; r += 1) {
      const members = users.slice(r * perRoom, (r + 1) * perRoom);
      roomIds.push(await createGroupRoom(server, members[0], members.slice(1), `soak ${r}`));
    }
    const roomOfUser = (i) => Math.floor(i / perRoom);
    const stats = { connects: 0, connectErrors: {}, closes: {}, messages: 0, acked: 0, ackErrors: {}, received: 0 };
    const open = new Set();
    const openOne = async () => {
      const u = Math.floor(Math.random() * users.length);
      const roomId = roomIds[roomOfUser(u)];
      const s = new LiteSocket(server.url, server.token(users[u]), {
        onMessage: () => {
          stats.received += 1;
        },
        onClose: (reason) => {
          if (!s.leaving) stats.closes[reason] = (stats.closes[reason] || 0) + 1;
          open.delete(s);
        },
      });
      const r = await s.connect();
      if (r.error) {
        stats.connectErrors[r.error] = (stats.connectErrors[r.error] || 0) + 1;
        return;
      }
      stats.connects += 1;
      s.roomId = roomId;
      s.lastSeq = 0;
      open.add(s);
    };
    const closeOne = () => {
      const s = open.values().next().value;
      if (!s) return;
      s.leaving = true;
      open.delete(s);
      s.close();
    };
    await pool(Array.from({ length: opts.population }), 50, openOne);
    const rss = rssSampler(server.pid, 10_000);
    const started = Date.now();
    let warmKb = NaN;
    let nextReport = 60_000;
    const actionsPerSec = (1 / opts.messageEverySec + 1 / opts.typingEverySec + 1 / opts.activityEverySec) * opts.population;
    console.log(`soak: ${opts.population} sockets open; ${opts.churnPerSec} replaced/s; about ${actionsPerSec.toFixed(0)} events/s; ${opts.durationSec} s`);
    let i = 0;
    while (Date.now() - started < opts.durationSec * 1000) {
      const tick = Date.now();
      for (let k = 0; k < opts.churnPerSec; k += 1) closeOne();
      const refill = Math.max(0, opts.population - open.size);
      const opening = pool(Array.from({ length: refill }), 20, openOne);
      for (const s of open) {
        i += 1;
        const roll = Math.random();
        if (roll < 1 / opts.messageEverySec) {
          stats.messages += 1;
          s.emit('chat:message', { roomId: s.roomId, message: `soak ${i}` }, (reply) => {
            if (reply?.ok) {
              stats.acked += 1;
              s.lastSeq = reply.message?.seq ?? s.lastSeq;
            } else if (!s.leaving && !s.closed) {
              const code = reply?.error?.code ?? 'NO_ACK';
              stats.ackErrors[code] = (stats.ackErrors[code] || 0) + 1;
            }
          });
        }
        if (Math.random() < 1 / opts.typingEverySec) s.emit('chat:typing', { roomId: s.roomId, isTyping: Math.random() < 0.7 });
        if (Math.random() < 1 / opts.activityEverySec) s.emit('presence:activity', { activity: `viewing:post:${i % 1000}` });
        if (s.lastSeq && Math.random() < 0.05) s.emit('chat:read', { roomId: s.roomId, upToSeq: s.lastSeq });
      }
      await opening;
      const elapsed = Date.now() - started;
      if (!Number.isFinite(warmKb) && elapsed >= opts.warmSec * 1000) warmKb = rss.sample();
      if (elapsed >= nextReport) {
        nextReport += 60_000;
        console.log(`  ${Math.round(elapsed / 1000)} s: RSS ${fmtMb(rss.sample())}, open ${open.size}, connects ${fmtInt(stats.connects)}, ` +
          `messages ${fmtInt(stats.messages)} (${fmtInt(stats.acked)} acked), deliveries ${fmtInt(stats.received)}`);
      }
      const wait = 1000 - (Date.now() - tick);
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
    rss.stop();
    const endKb = rss.series.at(-1)?.[1] ?? NaN;
    for (const s of open) s.terminate();
    const growth = (100 * (endKb - warmKb)) / warmKb;
    const ackErrorCount = Object.values(stats.ackErrors).reduce((a, b) => a + b, 0);
    const lines = [
      '',
      `== soak: ${opts.durationSec} s, ${opts.population} sockets of ${opts.users} users in ${opts.rooms} rooms, ${opts.churnPerSec} replaced/s ==`,
      `churn           ${fmtInt(stats.connects)} connects, errors ${JSON.stringify(stats.connectErrors)}, unexpected closes ${JSON.stringify(stats.closes)}`,
      `chat            ${fmtInt(stats.messages)} messages, ${fmtInt(stats.acked)} acked, errors ${JSON.stringify(stats.ackErrors)}; ${fmtInt(stats.received)} deliveries`,
      `server RSS      ${fmtMb(warmKb)} at ${opts.warmSec} s, ${fmtMb(endKb)} at the end (${fmtPct(growth)} growth), peak ${fmtMb(rss.peakKb)}`,
    ];
    const { pass, lines: v } = verdict(
      'soak',
      [
        [growth <= opts.maxGrowthPct, `RSS at the end within ${opts.maxGrowthPct}% of RSS at ${opts.warmSec} s (${growth.toFixed(1)}%)`],
        [Object.keys(stats.connectErrors).length === 0, 'every connect succeeded'],
        [ackErrorCount === 0, `every chat:message acked ok (${ackErrorCount} errors)`],
      ],
      `RSS ${fmtMb(warmKb)} -> ${fmtMb(endKb)}`,
    );
    console.log([...lines, ...v].join('\n'));
    return { pass, result: { scenario: 'soak', stats, warmKb, endKb, growthPct: growth, rssSeries: rss.series } };
  });
}
