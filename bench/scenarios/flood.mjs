// flood: --chatters sockets chat in rooms of --room-size (each sends `chat:message` with an ack at
// --chat-rate per second) while one socket in every hundred sends events as fast as its socket
// takes them, without acks: `chat:typing`, `chat:sync`, `presence:activity`,
// `notifications:subscribe`, `chat:read` in turn. A flooder that the server disconnects comes
// back at once and goes on. The flooders run on a worker thread (lib/flood-worker.mjs). The healthy chatters' ack p99 must stay under --target-p99 and the
// server's RSS growth under --max-growth-mb; the report says what the flooders got
// (RATE_LIMITED answers, disconnects) and how much of their traffic the server took.
import { Worker } from 'node:worker_threads';
import { DeliveryBook, benchContent, drain } from '../lib/book.mjs';
import { runScenario, scenarioOptions, verdict } from '../lib/cli.mjs';
import { LiteSocket, now, pool } from '../lib/lite.mjs';
import { createGroupRoom, rssSampler } from '../lib/setup.mjs';
import { fmtInt, fmtMb, fmtMs, summary } from '../lib/stats.mjs';

const spec = {
  chatters: [1000, 'healthy sockets, one user each'],
  'room-size': [20, 'members per room'],
  'chat-rate': [0.2, 'chat messages per second per healthy socket'],
  'flood-per': [100, 'one flooder per this many healthy sockets'],
  'duration-sec': [30, 'flooding and chatting time'],
  'target-p99': [50, 'PASS needs healthy ack p99 <= this many ms'],
  'max-growth-mb': [100, 'PASS needs server RSS growth (peak - before) <= this many MB'],
  'drain-ms': [5000, 'stop waiting for deliveries after this long without progress'],
};

export async function main(argv) {
  const opts = scenarioOptions('flood', argv, spec);
  await runScenario(opts, async (startServer) => {
    // The contract's default message limit: a raised one raises the per-socket budget with it.
    const server = await startServer({ RATE_LIMIT_PER_MINUTE: '60' });
    const runId = Date.now().toString(36);
    const nRooms = Math.ceil(opts.chatters / opts.roomSize);
    const nFlood = Math.max(1, Math.floor(opts.chatters / opts.floodPer));
    const chatters = [];
    const roomIds = [];
    for (let r = 0; r < nRooms; r += 1) {
      const users = Array.from({ length: Math.min(opts.roomSize, opts.chatters - r * opts.roomSize) }, (_, i) => `fl-${runId}-r${r}-u${i}`);
      const flooderHere = r < nFlood ? [`fl-${runId}-flooder${r}`] : [];
      roomIds.push(await createGroupRoom(server, users[0], [...users.slice(1), ...flooderHere], `flood ${r}`));
      for (const u of users) chatters.push({ idx: chatters.length, room: r, token: server.token(u) });
    }
    const total = Math.round(opts.chatters * opts.chatRate * opts.durationSec);
    const book = new DeliveryBook(chatters.length, total);
    const closes = {};
    const sockets = new Array(chatters.length);
    const results = await pool(chatters, 100, async (c) => {
      const s = new LiteSocket(server.url, c.token, {
        onMessage: (_room, content, _seq, t) => book.record(c.idx, content, t),
        onClose: (reason) => {
          closes[reason] = (closes[reason] || 0) + 1;
        },
      });
      sockets[c.idx] = s;
      return s.connect();
    });
    const failed = results.filter((r) => r.error);
    if (failed.length) throw new Error(`${failed.length} chatters did not connect: ${failed[0].error}`);

    console.log(`setup: ${nRooms} rooms, ${chatters.length} chatters connected; flooding with ${nFlood} sockets for ${opts.durationSec} s`);
    await new Promise((r) => setTimeout(r, 1000));
    const rss = rssSampler(server.pid, 250);
    const rssBeforeKb = rss.sample();
    // On a worker thread: see lib/flood-worker.mjs.
    const worker = new Worker(new URL('../lib/flood-worker.mjs', import.meta.url), {
      workerData: {
        url: server.url,
        tokens: Array.from({ length: nFlood }, (_, f) => server.token(`fl-${runId}-flooder${f}`)),
        roomIds: roomIds.slice(0, nFlood),
      },
    });
    const flooders = new Promise((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });

    const acks = [];
    const ackErrors = {};
    const t0 = now();
    const interval = 1000 / (opts.chatters * opts.chatRate);
    for (let i = 0; i < total; i += 1) {
      const wait = t0 + i * interval - now();
      if (wait > 1) await new Promise((r) => setTimeout(r, wait));
      const c = chatters[i % chatters.length];
      const sentAt = now();
      sockets[c.idx].emit('chat:message', { roomId: roomIds[c.room], message: benchContent(i, sentAt) }, (reply, t) => {
        if (reply?.ok) acks.push(t - sentAt);
        else {
          const code = reply?.error?.code ?? 'NO_ACK';
          ackErrors[code] = (ackErrors[code] || 0) + 1;
        }
      });
    }
    console.log(`sent ${total} chat messages; stopping the flooders`);
    worker.postMessage('stop');
    const flood = await flooders;
    await worker.terminate();
    const flooderStopMs = now() - t0 - opts.durationSec * 1000;
    const roomMembers = (r) => Math.min(opts.roomSize, opts.chatters - r * opts.roomSize);
    let expected = 0;
    for (let i = 0; i < total; i += 1) expected += roomMembers(chatters[i % chatters.length].room) - 1;
    await drain(() => book.received >= expected && acks.length + Object.values(ackErrors).reduce((x, y) => x + y, 0) >= total, () => book.received + acks.length, opts.drainMs);
    rss.stop();
    await new Promise((r) => setTimeout(r, 2000));
    const rssAfterKb = rss.sample();
    for (const s of sockets) s.terminate();

    const a = summary(acks);
    const l = book.latency();
    const growthKb = rss.peakKb - rssBeforeKb;
    const ackErrorCount = Object.values(ackErrors).reduce((x, y) => x + y, 0);
    const lines = [
      '',
      `== flood: ${opts.chatters} chatters in rooms of ${opts.roomSize} at ${opts.chatRate} msg/s each, ${nFlood} flooders, ${opts.durationSec} s ==`,
      `healthy acks    ${acks.length}/${total} ok; p50 ${fmtMs(a.p50)} p99 ${fmtMs(a.p99)} max ${fmtMs(a.max)}; errors ${JSON.stringify(ackErrors)}`,
      `deliveries      ${fmtInt(book.received)}/${fmtInt(expected)}, duplicates ${book.dups}; p50 ${fmtMs(l.p50)} p99 ${fmtMs(l.p99)}; chatter closes ${JSON.stringify(closes)}`,
      `flooders        sent ${fmtInt(flood.sent)} events (${fmtInt(flood.sent / opts.durationSec)}/s); of the sampled acks ${flood.acked} ok, ` +
        `${flood.rateLimited} RATE_LIMITED; reconnects ${flood.reconnects}; closes ${JSON.stringify(flood.closes)}; ` +
        `connect errors ${JSON.stringify(flood.connectErrors)}`,
      `server RSS      ${fmtMb(rssBeforeKb)} before, peak ${fmtMb(rss.peakKb)} (+${fmtMb(growthKb)}), ${fmtMb(rssAfterKb)} 2 s after`,
    ];
    const { pass, lines: v } = verdict(
      'flood',
      [
        [ackErrorCount === 0 && acks.length === total, `every healthy chat:message acked ok (${acks.length}/${total} ok, ${ackErrorCount} errors)`],
        [a.p99 <= opts.targetP99, `healthy ack p99 <= ${opts.targetP99} ms (${fmtMs(a.p99)})`],
        [growthKb <= opts.maxGrowthMb * 1024, `RSS growth <= ${opts.maxGrowthMb} MB (${fmtMb(growthKb)})`],
        [book.dups === 0 && book.received === expected, `chatters got every message once (${book.received}/${expected}, ${book.dups} dups)`],
      ],
      `ack p99 ${fmtMs(a.p99)}, RSS +${fmtMb(growthKb)}, flooder events ${fmtInt(flood.sent)}`,
    );
    console.log([...lines, ...v].join('\n'));
    return {
      pass,
      result: { scenario: 'flood', total, ackMs: a, ackErrors, latencyMs: l, expected, received: book.received, dups: book.dups, flood, rssBeforeKb, rssPeakKb: rss.peakKb, rssAfterKb, growthKb },
    };
  });
}
