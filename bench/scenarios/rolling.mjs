// rolling: a two-node cluster (a throw-away Redis and PostgreSQL, as the client tests start
// them) behind a small TCP load balancer (lib/proxy.mjs); receivers (`@switchboard/client`,
// default backoff) and senders connect through it, so both nodes carry sockets. Under chat load
// (plus notification batches), node 0 is restarted gracefully (SIGTERM: it drains and closes its
// sockets, which reconnect through the balancer to node 1 and resume), then brought back.
// Passes when nothing is lost: every receiver ends with every seq of its room and every
// notification, once, and every resume recovered.
import { freshDatabase, startRedis } from '../../client-tests/lib/infra.mjs';
import { runScenario, scenarioOptions, verdict } from '../lib/cli.mjs';
import { now } from '../lib/lite.mjs';
import { startProxy } from '../lib/proxy.mjs';
import { SERVICE_KEY, drain, makeRooms, startReceivers, startSenders } from '../lib/resume.mjs';
import { rssSampler } from '../lib/setup.mjs';
import { fmtInt, fmtMb, fmtMs } from '../lib/stats.mjs';

const spec = {
  sockets: [2000, 'receiver sockets, one user each'],
  rooms: [20, 'group rooms the receivers are spread over'],
  rate: [50, 'chat messages/s over all rooms'],
  'notify-rate': [2, 'notification batches/s, each to every member of one room'],
  'warm-sec': [10, 'seconds of load before the restart'],
  'after-sec': [10, 'seconds of load after the restarted node is back'],
  'drain-sec': [30, 'after the load: give up when nothing new arrives for this long'],
  workers: [2, 'receiver processes'],
  concurrency: [100, 'connections in flight while connecting'],
};

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function main(argv) {
  const opts = scenarioOptions('rolling', argv, spec);
  const redis = await startRedis();
  const db = await freshDatabase();
  let proxy = null;
  const after = async () => {
    await proxy?.stop();
    await redis.stop().catch(() => {});
    await db.drop().catch(() => {});
  };
  await runScenario(
    opts,
    async (startServer) => {
      const env = {
        SERVICE_API_KEY: SERVICE_KEY,
        MAX_PAYLOAD_BYTES: '1000000',
        REDIS_URL: redis.url,
        REDIS_KEY_PREFIX: redis.keyPrefix,
        DATABASE_URL: db.url,
        NODE_TTL_MS: '2000',
      };
      const first = await startServer(env); // runs the migrations alone
      const nodes = [first, await startServer(env)];
      proxy = await startProxy(nodes.map((n) => Number(new URL(n.url).port)));
      const lb = { url: proxy.url, token: first.token };
      const runId = Date.now().toString(36);
      const perRoom = Math.max(1, Math.round(opts.sockets / opts.rooms));
      let t = now();
      const rooms = await makeRooms(lb, { rooms: opts.rooms, perRoom, runId });
      console.log(`setup: 2 nodes behind ${proxy.url}; ${rooms.length} rooms of ${perRoom} receivers + 1 sender in ${fmtMs(now() - t)}`);
      const clients = rooms.flatMap((r) => r.members.map((m) => ({ token: lb.token(m), roomId: r.roomId })));
      t = now();
      const receivers = await startReceivers({ workers: opts.workers, url: proxy.url, clients, concurrency: opts.concurrency });
      console.log(`connected ${fmtInt(receivers.ok)}/${fmtInt(clients.length)} receivers in ${fmtMs(now() - t)} ${JSON.stringify(receivers.errors)}`);
      const rss = nodes.map((n) => rssSampler(() => n.pid, 250));
      const logBefore = nodes.map((n) => n.stderr.length);
      try {
        const senders = await startSenders({ url: proxy.url, token: lb.token, rooms, rate: opts.rate, notifyRate: opts.notifyRate });
        await sleep(opts.warmSec * 1000);
        await receivers.mark();
        const before = await receivers.status();
        const restart = await nodes[0].restart({ signal: 'SIGTERM' });
        console.log(`node 0 restarted gracefully: down ${fmtMs(restart.downMs)}, exit ${JSON.stringify(restart.exited)}`);
        await sleep(opts.afterSec * 1000);
        await senders.stop();
        const st = await receivers.status();
        const expected = await senders.expected(proxy.url);
        const r = await drain(receivers, expected, opts.drainSec * 1000);
        for (const x of rss) x.stop();
        const deliveries = r.wanted + r.notesWanted;
        const delivered = r.got + r.notesGot;
        const lost = deliveries - delivered;
        const errorsOf = (n, i) => n.stderr.slice(logBefore[i]).split('\n').filter((l) => /\bERROR\b/.test(l));
        const serverErrors = nodes.flatMap(errorsOf);
        const s = senders.stats;
        const lines = [
          '',
          `== rolling: ${fmtInt(clients.length)} sockets over 2 nodes, ${opts.rate} msg/s + ${opts.notifyRate} notification batches/s; node 0 restarted gracefully ==`,
          `moved          ${fmtInt(st.backAfterMark)} sockets reconnected and resumed after the restart (of ${fmtInt(before.sockets)}), ` +
            `${fmtInt(st.recoveredAfterMark)} recovered; ${fmtInt(r.notRecovered)} resumes over the run not recovered`,
          `load           ${fmtInt(s.sent)} messages sent (${fmtInt(s.acked)} acked, errors ${JSON.stringify(s.ackErrors)}), ` +
            `${fmtInt(s.notifyBatches)} notification batches (errors ${JSON.stringify(s.notifyErrors)})`,
          `delivered      chat ${fmtInt(r.got)}/${fmtInt(r.wanted)}, notifications ${fmtInt(r.notesGot)}/${fmtInt(r.notesWanted)}: lost ${fmtInt(lost)}; ` +
            `duplicates ${fmtInt(r.helperDuplicates)} dropped by the helper, ${fmtInt(r.dupsPassed)} past it`,
          `errors         connect errors ${JSON.stringify(r.errors)}; server ERROR lines ${serverErrors.length}; proxy ${JSON.stringify(proxy.stats)}`,
          ...serverErrors.slice(0, 5).map((l) => `  ${l.slice(0, 200)}`),
          `server RSS     peak ${rss.map((x) => fmtMb(x.peakKb)).join(' / ')}`,
        ];
        const { pass, lines: v } = verdict(
          'rolling',
          [
            [lost === 0 && deliveries > 0, `0 lost (${fmtInt(lost)} of ${fmtInt(deliveries)})`],
            [r.dupsPassed === 0, `no duplicate reached the app (${r.dupsPassed})`],
            [r.notRecovered === 0, `every resume recovered (${r.notRecovered} not)`],
            [st.backAfterMark > 0, `sockets moved (${st.backAfterMark})`],
            [serverErrors.length === 0, `no server errors (${serverErrors.length})`],
          ],
          `lost ${fmtInt(lost)} of ${fmtInt(deliveries)} deliveries, ${st.backAfterMark} sockets moved`,
        );
        if (r.missing.length) lines.push(`missing (sample) ${JSON.stringify(r.missing.slice(0, 5))}`);
        console.log([...lines, ...v].join('\n'));
        return {
          pass,
          result: { scenario: 'rolling', sockets: clients.length, downMs: restart.downMs, moved: st.backAfterMark, lost, deliveries, report: { ...r, replayMs: undefined, backMs: undefined }, serverErrors: serverErrors.length, peakRssKb: rss.map((x) => x.peakKb) },
        };
      } finally {
        for (const x of rss) x.stop();
        await receivers.close();
      }
    },
    { after },
  );
}
