// jitter: receiver sockets in rooms, each killed (TCP cut, no goodbye) at a random moment once
// per --kill-every-sec, reconnecting with socket.io-client's default backoff and resuming with
// `@switchboard/client`, while senders keep up chat messages (--rate msg/s over the rooms) and
// notification batches (--notify-rate/s, each to every member of a room) for --duration-sec.
// Then the killing stops and every receiver must end up with every seq of its room and every
// notification sent to it, exactly once. Reports delivered-after-resume %, duplicates the
// helper dropped (and any that got past it), replay latency (transport open → last replayed
// event) and time back after a kill (kill → replay complete, backoff included).
import { runScenario, scenarioOptions, verdict } from '../lib/cli.mjs';
import { now } from '../lib/lite.mjs';
import { SERVICE_KEY, drain, makeRooms, startReceivers, startSenders } from '../lib/resume.mjs';
import { rssSampler } from '../lib/setup.mjs';
import { fmtInt, fmtMb, fmtMs, summary } from '../lib/stats.mjs';

const spec = {
  sockets: [2000, 'receiver sockets, one user each'],
  rooms: [20, 'group rooms the receivers are spread over'],
  rate: [90, 'chat messages/s over all rooms (deliveries/s = rate x sockets/rooms)'],
  'notify-rate': [10, 'notification batches/s, each to every member of one room'],
  'duration-sec': [120, 'seconds of load with killing'],
  'kill-every-sec': [15, 'each socket is killed once per this period, at a random moment'],
  'drain-sec': [30, 'after the load: give up when nothing new arrives for this long'],
  workers: [2, 'receiver processes'],
  concurrency: [100, 'connections in flight while connecting'],
};

export async function main(argv) {
  const opts = scenarioOptions('jitter', argv, spec);
  await runScenario(opts, async (startServer) => {
    const server = await startServer({ SERVICE_API_KEY: SERVICE_KEY, MAX_PAYLOAD_BYTES: '1000000' });
    const runId = Date.now().toString(36);
    const perRoom = Math.max(1, Math.round(opts.sockets / opts.rooms));
    let t = now();
    const rooms = await makeRooms(server, { rooms: opts.rooms, perRoom, runId });
    console.log(`setup: ${rooms.length} rooms of ${perRoom} receivers + 1 sender in ${fmtMs(now() - t)}`);
    const clients = rooms.flatMap((r) => r.members.map((m) => ({ token: server.token(m), roomId: r.roomId })));
    t = now();
    const receivers = await startReceivers({ workers: opts.workers, url: server.url, clients, concurrency: opts.concurrency });
    console.log(`connected ${fmtInt(receivers.ok)}/${fmtInt(clients.length)} receivers in ${fmtMs(now() - t)} ${JSON.stringify(receivers.errors)}`);
    const rss = rssSampler(server.pid, 500);
    try {
      const senders = await startSenders({ url: server.url, token: server.token, rooms, rate: opts.rate, notifyRate: opts.notifyRate });
      receivers.jitter(opts.killEverySec * 1000);
      const t0 = now();
      await new Promise((r) => setTimeout(r, opts.durationSec * 1000));
      receivers.jitter(0);
      await senders.stop();
      const loadMs = now() - t0;
      const expected = await senders.expected();
      const r = await drain(receivers, expected, opts.drainSec * 1000);
      rss.stop();
      const deliveries = r.wanted + r.notesWanted;
      const delivered = r.got + r.notesGot;
      const pct = deliveries ? (100 * delivered) / deliveries : NaN;
      const replay = summary(r.replayMs);
      const back = summary(r.backMs);
      const s = senders.stats;
      const lines = [
        '',
        `== jitter: ${fmtInt(clients.length)} sockets in ${rooms.length} rooms, each killed every ~${opts.killEverySec} s, ` +
          `${opts.rate} msg/s + ${opts.notifyRate} notification batches/s for ${opts.durationSec} s ==`,
        `load            ${fmtInt(s.sent)} messages sent (${fmtInt(s.acked)} acked, errors ${JSON.stringify(s.ackErrors)}), ` +
          `${fmtInt(s.notifyBatches)} notification batches (errors ${JSON.stringify(s.notifyErrors)}); ` +
          `${fmtInt((deliveries * 1000) / loadMs)} deliveries/s offered`,
        `kills           ${fmtInt(r.kills)} kills, ${fmtInt(r.sessions - r.sockets)} resumes (${fmtInt(r.recovered)} recovered, ${fmtInt(r.notRecovered)} not)`,
        `delivered       chat ${fmtInt(r.got)}/${fmtInt(r.wanted)}, notifications ${fmtInt(r.notesGot)}/${fmtInt(r.notesWanted)}: ` +
          `${pct.toFixed(3)}% after resume; ${r.incomplete} sockets missing something`,
        `duplicates      ${fmtInt(r.helperDuplicates)} dropped by the helper, ${fmtInt(r.dupsPassed)} got past it`,
        `replay latency  p50 ${fmtMs(replay.p50)}  p99 ${fmtMs(replay.p99)}  max ${fmtMs(replay.max)} (transport open → replay complete, n=${replay.n})`,
        `back after kill p50 ${fmtMs(back.p50)}  p99 ${fmtMs(back.p99)}  max ${fmtMs(back.max)} (kill → replay complete, backoff included)`,
        `disconnects     ${JSON.stringify(r.disconnects)}; connect errors ${JSON.stringify(r.errors)}`,
        `server RSS      peak ${fmtMb(rss.peakKb)}; load generator CPU ${fmtInt(r.cpuMs)} ms in workers`,
      ];
      const { pass, lines: v } = verdict(
        'jitter',
        [
          [delivered === deliveries && deliveries > 0, `every message and notification delivered after resume (${pct.toFixed(3)}%)`],
          [r.dupsPassed === 0, `no duplicate reached the app (${r.dupsPassed})`],
          [r.notRecovered === 0, `every resume recovered (${r.notRecovered} not)`],
          [r.kills > 0, `sockets were killed (${r.kills})`],
          [!server.exited, 'server stayed up'],
        ],
        `${pct.toFixed(3)}% delivered, ${r.dupsPassed} duplicates past the helper, replay p50 ${fmtMs(replay.p50)} p99 ${fmtMs(replay.p99)}`,
      );
      if (r.missing.length) lines.push(`missing (sample) ${JSON.stringify(r.missing.slice(0, 5))}`);
      console.log([...lines, ...v].join('\n'));
      return {
        pass,
        result: { scenario: 'jitter', sockets: clients.length, rooms: rooms.length, senders: s, report: { ...r, replayMs: replay, backMs: back }, deliveredPct: pct, peakRssKb: rss.peakKb },
      };
    } finally {
      rss.stop();
      await receivers.close();
    }
  });
}
