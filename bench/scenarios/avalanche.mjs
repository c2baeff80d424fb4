// avalanche: --sockets receivers in rooms (one user each, `@switchboard/client`, socket.io-client's
// default reconnection backoff) are all dropped at once by restarting the node (SIGTERM, a
// graceful shutdown, or --signal SIGKILL, a crash), while senders keep posting chat messages and
// notifications. Reports the time from the drop until every socket is back (its session:ready),
// the share of resumes that recovered, connect errors and server WARN/ERROR lines, peak RSS; and
// checks that every receiver ends with every seq of its room and every notification, once.
import { runScenario, scenarioOptions, verdict } from '../lib/cli.mjs';
import { now } from '../lib/lite.mjs';
import { SERVICE_KEY, drain, makeRooms, startReceivers, startSenders } from '../lib/resume.mjs';
import { rssSampler } from '../lib/setup.mjs';
import { fmtInt, fmtMb, fmtMs } from '../lib/stats.mjs';

const spec = {
  sockets: [10000, 'receiver sockets, one user each'],
  rooms: [100, 'group rooms the receivers are spread over'],
  rate: [20, 'chat messages/s over all rooms, before, during and after the drop'],
  'notify-rate': [2, 'notification batches/s, each to every member of one room'],
  signal: ['SIGTERM', 'how the node is stopped: SIGTERM (graceful) or SIGKILL (crash)'],
  'warm-sec': [5, 'seconds of load before the drop'],
  'after-sec': [5, 'seconds of load once every socket is back'],
  'back-timeout-sec': [120, 'give up waiting for every socket after this long'],
  'drain-sec': [30, 'after the load: give up when nothing new arrives for this long'],
  workers: [2, 'receiver processes'],
  concurrency: [200, 'connections in flight while connecting'],
};

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function main(argv) {
  const opts = scenarioOptions('avalanche', argv, spec);
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
    const rss = rssSampler(() => server.pid, 250);
    const logBefore = server.stderr.length;
    try {
      const senders = await startSenders({ url: server.url, token: server.token, rooms, rate: opts.rate, notifyRate: opts.notifyRate });
      await sleep(opts.warmSec * 1000);
      await receivers.mark();
      const dropAt = now();
      const restart = await server.restart({ signal: opts.signal });
      console.log(`node restarted (${opts.signal}): down ${fmtMs(restart.downMs)}, exit ${JSON.stringify(restart.exited)}`);
      let st;
      for (;;) {
        st = await receivers.status();
        if (st.backAfterMark >= st.sockets || now() - dropAt > opts.backTimeoutSec * 1000) break;
        await sleep(250);
      }
      const allBackMs = st.lastReady - dropAt;
      await sleep(opts.afterSec * 1000);
      await senders.stop();
      const expected = await senders.expected();
      const r = await drain(receivers, expected, opts.drainSec * 1000);
      rss.stop();
      const deliveries = r.wanted + r.notesWanted;
      const delivered = r.got + r.notesGot;
      const pct = deliveries ? (100 * delivered) / deliveries : NaN;
      const recoveredPct = (100 * st.recoveredAfterMark) / Math.max(1, st.sockets);
      const log = server.stderr.slice(logBefore).split('\n');
      const serverErrors = log.filter((l) => /\bERROR\b/.test(l));
      const serverWarns = log.filter((l) => /\bWARN\b/.test(l));
      const s = senders.stats;
      const lines = [
        '',
        `== avalanche: ${fmtInt(clients.length)} sockets in ${rooms.length} rooms dropped at once (node restarted with ${opts.signal}) ==`,
        `back            ${fmtInt(st.backAfterMark)}/${fmtInt(st.sockets)} sockets back ${fmtMs(allBackMs)} after the drop (node down ${fmtMs(restart.downMs)})`,
        `recovered       ${fmtInt(st.recoveredAfterMark)}/${fmtInt(st.sockets)} resumes recovered (${recoveredPct.toFixed(1)}%)`,
        `load            ${fmtInt(s.sent)} messages sent (${fmtInt(s.acked)} acked, errors ${JSON.stringify(s.ackErrors)}), ` +
          `${fmtInt(s.notifyBatches)} notification batches (errors ${JSON.stringify(s.notifyErrors)})`,
        `delivered       chat ${fmtInt(r.got)}/${fmtInt(r.wanted)}, notifications ${fmtInt(r.notesGot)}/${fmtInt(r.notesWanted)}: ${pct.toFixed(3)}%; ` +
          `duplicates ${fmtInt(r.helperDuplicates)} dropped by the helper, ${fmtInt(r.dupsPassed)} past it`,
        `errors          connect errors ${JSON.stringify(st.errors)}; server ${serverErrors.length} ERROR and ${serverWarns.length} WARN lines`,
        ...[...serverErrors, ...serverWarns].slice(0, 5).map((l) => `  ${l.slice(0, 200)}`),
        `server RSS      peak ${fmtMb(rss.peakKb)} (both processes)`,
      ];
      const { pass, lines: v } = verdict(
        'avalanche',
        [
          [st.backAfterMark === st.sockets, `every socket back (${st.backAfterMark}/${st.sockets})`],
          [st.recoveredAfterMark === st.sockets, `every resume recovered (${recoveredPct.toFixed(1)}%)`],
          [delivered === deliveries && deliveries > 0, `every message and notification delivered (${pct.toFixed(3)}%)`],
          [r.dupsPassed === 0, `no duplicate reached the app (${r.dupsPassed})`],
          [serverErrors.length === 0, `no server errors (${serverErrors.length})`],
        ],
        `all back in ${fmtMs(allBackMs)}, ${recoveredPct.toFixed(1)}% recovered, peak RSS ${fmtMb(rss.peakKb)}`,
      );
      if (r.missing.length) lines.push(`missing (sample) ${JSON.stringify(r.missing.slice(0, 5))}`);
      console.log([...lines, ...v].join('\n'));
      return {
        pass,
        result: { scenario: 'avalanche', sockets: clients.length, signal: opts.signal, allBackMs, downMs: restart.downMs, status: st, report: { ...r, replayMs: undefined, backMs: undefined }, deliveredPct: pct, recoveredPct, serverErrors: serverErrors.length, peakRssKb: rss.peakKb },
      };
    } finally {
      rss.stop();
      await receivers.close();
    }
  });
}
