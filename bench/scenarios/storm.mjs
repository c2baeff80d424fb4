// storm: --sockets users (one socket each) are followed by --observers watchers. All of them
// connect at once; then all drop at once; then all come back at once; then all bounce (drop and
// reconnect inside the grace period, as a deploy does). Every presence change must reach the
// follower in time: `online` within 2 s of the user's `session:ready`, `offline` within grace +
// 2 s of the drop, and a bounce inside the grace period must announce nothing. The peak of the
// server's presence queue (a gauge on /metrics, when the server exposes it) is reported.
import { runScenario, scenarioOptions, verdict } from '../lib/cli.mjs';
import { LiteSocket, now, pool } from '../lib/lite.mjs';
import { follow, metric, rssSampler } from '../lib/setup.mjs';
import { fmtInt, fmtMb, fmtMs, summary } from '../lib/stats.mjs';

const spec = {
  sockets: [5000, 'storm users, one socket each'],
  observers: [10, 'followers; each follows sockets/observers storm users'],
  'grace-ms': [5000, 'PRESENCE_GRACE_MS of the server'],
  'slack-ms': [2000, 'allowed delay past ready (online) or past grace (offline)'],
  concurrency: [5000, 'connections in flight while storming'],
  'queue-metric': ['switchboard_presence_queue_depth', 'gauge sampled for the peak queue length'],
};

export async function main(argv) {
  const opts = scenarioOptions('storm', argv, spec);
  await runScenario(opts, async (startServer) => {
    const server = await startServer({
      SERVICE_API_KEY: 'bench-service-key-0123456789',
      PRESENCE_GRACE_MS: String(opts.graceMs),
      MAX_PAYLOAD_BYTES: '1000000',
    });
    const runId = Date.now().toString(36);
    const users = Array.from({ length: opts.sockets }, (_, i) => `st-${runId}-u${i}`);
    const observerOf = (i) => `st-${runId}-obs${i % opts.observers}`;
    let t = now();
    await pool(users, 20, (u, i) => follow(server, observerOf(i), u));
    console.log(`setup: ${fmtInt(users.length)} follows in ${fmtMs(now() - t)}`);

    const updates = new Map(); // userId -> [{ status, t }]
    const observers = await Promise.all(Array.from({ length: opts.observers }, async (_, k) => {
      const s = new LiteSocket(server.url, server.token(`st-${runId}-obs${k}`), {
        onEvent: (event, p, at) => {
          if (event !== 'presence:update' || !p?.userId) return;
          if (!updates.has(p.userId)) updates.set(p.userId, []);
          updates.get(p.userId).push({ status: p.status, t: at });
        },
      });
      const r = await s.connect();
      if (r.error) throw new Error(`observer: ${r.error}`);
      return s;
    }));

    let peakQueue = NaN;
    const queueTimer = setInterval(async () => {
      const v = await metric(server, opts.queueMetric);
      if (Number.isFinite(v) && !(v <= peakQueue)) peakQueue = v;
    }, 100);
    const rss = rssSampler(server.pid, 250);
    let sockets = [];
    const readyAt = new Float64Array(users.length);
    const connectAll = async () => {
      const t0 = now();
      sockets = users.map((u) => new LiteSocket(server.url, server.token(u)));
      const results = await pool(sockets, opts.concurrency, async (s, i) => {
        const r = await s.connect(60_000);
        readyAt[i] = now();
        return r;
      });
      const errors = {};
      for (const r of results) if (r.error) errors[r.error] = (errors[r.error] || 0) + 1;
      return { ms: now() - t0, ready: summary(results.filter((r) => !r.error).map((r) => r.ms)), errors };
    };
    const dropAll = () => {
      for (const s of sockets) s.terminate();
      return now();
    };
    /** Waits until every user has an update with `status` after `since`, or `deadline`. */
    const awaitStatus = async (status, since, deadline) => {
      const missing = () => users.filter((u) => !(updates.get(u) ?? []).some((x) => x.status === status && x.t >= since));
      while (now() < deadline && missing().length) await new Promise((r) => setTimeout(r, 100));
      const delays = [];
      for (let i = 0; i < users.length; i += 1) {
        const x = (updates.get(users[i]) ?? []).find((y) => y.status === status && y.t >= since);
        if (x) delays.push(x.t - (status === 'online' ? readyAt[i] : since));
      }
      return { missing: missing().length, delays: summary(delays) };
    };
    const phases = [];
    const slack = opts.slackMs;

    // 1. everyone connects at once
    let since = now();
    const c1 = await connectAll();
    const on1 = await awaitStatus('online', since, now() + slack + 5000);
    phases.push({ name: 'connect storm', connect: c1, updates: on1, limitMs: slack });
    // 2. everyone drops at once
    since = dropAll();
    const off = await awaitStatus('offline', since, since + opts.graceMs + slack + 5000);
    phases.push({ name: 'drop all', updates: off, limitMs: opts.graceMs + slack });
    // 3. everyone comes back at once
    since = now();
    const c3 = await connectAll();
    const on3 = await awaitStatus('online', since, now() + slack + 5000);
    phases.push({ name: 'reconnect storm', connect: c3, updates: on3, limitMs: slack });
    // 4. bounce: drop and reconnect inside the grace period: nobody may be announced offline
    since = dropAll();
    const c4 = await connectAll();
    await new Promise((r) => setTimeout(r, opts.graceMs + slack));
    // Only users whose socket was back before their grace period ended must stay online.
    let flaps = 0;
    let backInGrace = 0;
    users.forEach((u, i) => {
      if (readyAt[i] - since >= opts.graceMs) return;
      backInGrace += 1;
      if ((updates.get(u) ?? []).some((x) => x.status === 'offline' && x.t >= since)) flaps += 1;
    });
    phases.push({ name: 'bounce (deploy)', connect: c4, offlineAnnounced: flaps, backInGrace });

    clearInterval(queueTimer);
    rss.stop();
    for (const s of [...sockets, ...observers]) s.terminate();

    const lines = ['', `== storm: ${fmtInt(opts.sockets)} sockets, ${opts.observers} observers, grace ${opts.graceMs} ms ==`];
    for (const p of phases) {
      const c = p.connect;
      const cText = c ? `ready ${fmtMs(c.ready.p50)} p50 / ${fmtMs(c.ready.p99)} p99 in ${fmtMs(c.ms)} total, errors ${JSON.stringify(c.errors)}; ` : '';
      const uText = p.updates
        ? `updates missing ${p.updates.missing}, delay p50 ${fmtMs(p.updates.delays.p50)} p99 ${fmtMs(p.updates.delays.p99)} max ${fmtMs(p.updates.delays.max)} (limit ${fmtMs(p.limitMs)})`
        : `${p.backInGrace} users back within the grace period, ${p.offlineAnnounced} of them announced offline`;
      lines.push(`${p.name.padEnd(16)} ${cText}${uText}`);
    }
    lines.push(`presence queue  peak ${Number.isFinite(peakQueue) ? fmtInt(peakQueue) : `n/a (${opts.queueMetric} not on /metrics)`}; server peak RSS ${fmtMb(rss.peakKb)}`);
    const timely = (p) => p.updates.missing === 0 && p.updates.delays.max <= p.limitMs;
    const { pass, lines: v } = verdict(
      'storm',
      [
        ...phases.filter((p) => p.updates).map((p) => [timely(p), `${p.name}: every presence:update within ${fmtMs(p.limitMs)}`]),
        ...phases.filter((p) => p.connect).map((p) => [Object.keys(p.connect.errors).length === 0, `${p.name}: every socket ready`]),
        [flaps === 0 && backInGrace > 0, `a bounce inside the grace period announces nobody offline (${flaps} of ${backInGrace})`],
      ],
      phases.filter((p) => p.updates).map((p) => `${p.name} max ${fmtMs(p.updates.delays.max)}`).join(', '),
    );
    console.log([...lines, ...v].join('\n'));
    return { pass, result: { scenario: 'storm', phases, peakQueue, peakRssKb: rss.peakKb } };
  });
}
