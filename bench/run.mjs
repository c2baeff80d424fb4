#!/usr/bin/env node
// Switchboard load generator. Three scenarios:
//
//   fanout  (default) R group rooms, N receiver sockets, S sender sockets sending M paced
//           `chat:message`s with acks; every `chat:new_message` is checked (no loss, no
//           duplicate) and its latency (receive − send time) recorded. `--search` steps its
//           rate up to the highest one sustained.
//   connect K sockets connecting (websocket) with bounded concurrency: time, per-socket time to
//           `session:ready`, server RSS per connection.
//   persist many small rooms, closed-loop senders: persisted messages/s and ack latency.
//
// Receivers live in forked worker processes (--workers) so the load generator can use both
// cores; the report shows the CPU time of the server, of the load generator and of everything
// else on the machine, so a run says where the bottleneck was. See README.md.
import { fork } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { io } from 'socket.io-client';
import { loadavg, machineCpuMs, memory, processCpu } from './lib/proc.mjs';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import { CLUSTER_KINDS, shareInfra, spawnCluster } from './lib/cluster.mjs';
import { api, externalServer, SERVER_KINDS, spawnServer } from './lib/server.mjs';
import { createGroupRoom } from './lib/setup.mjs';
import { fmtInt, fmtMb, fmtMs, fmtPct, summary } from './lib/stats.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REST = '/api/v1/realtime';
const now = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const USAGE = `usage: node run.mjs [options]
  --scenario fanout|connect   what to measure (default fanout); slow-consumer, flood, storm and soak
                              take their own options (--scenario NAME --help)
 fanout:
  --sockets N        receiver sockets (default 1000)
  --rooms R          group rooms (default 1), the receivers split evenly between them, every
                     sender in each; message i goes to room i % R (50 x 20: --rooms 50 --sockets 1000)
  --per-user P       sockets per receiver user (default 2; server default limit is 10)
  --senders S        sender sockets, one user each (default 4)
  --messages M       measured messages, all senders together (default 200)
  --rate R           messages per second, all senders together (default 50; 0 = closed loop:
                     each sender sends its next message when the previous ack arrives)
  --warmup W         unmeasured messages sent (and checked) first (default 10)
  --target-deliveries D   PASS needs >= D deliveries/s (default 20000)
  --target-p99 L          PASS needs delivery latency p99 <= L ms (default 50)
 persist:
  --rooms R          small rooms (default 200), sizes cycling from --min-members (2) to
                     --max-members (5), one lite socket per member
  --senders-per-room S   members of each room sending, closed loop (default 1)
  --duration-sec T   how long the senders send (default 10)
  --target-messages N     PASS needs >= N persisted (acked) messages/s (default 10000)
  --target-ack-p99 L      PASS needs ack p99 <= L ms (default 50)
 connect:
  --connections K    sockets to connect (default 2000)
  --per-user P       sockets per user (default 2)
  --no-room          do not put the users in a group room (default: one room with all of them)
 common:
  --server KIND      switchboard (default), socketioxide (bench/reference-socketioxide: bare
                     socketioxide, in memory) or node (bench/reference-node: socket.io 4.8, in memory)
  --compare          run the scenario against all three, one after the other, and print the
                     ratios of Switchboard to each reference (same options for all)
  --client sio|lite  receiver client: socket.io-client (default) or a minimal Engine.IO/Socket.IO
                     client on a bare WebSocket that costs the load generator less CPU
  --workers W        receiver/connector processes (default 2)
  --nodes N          fanout only: N nodes behind a throw-away Redis (Switchboard on a throw-away
                     PostgreSQL; the node reference with @socket.io/redis-adapter; socketioxide
                     has no Redis adapter and is skipped by --compare); REST and senders on node
                     0, receiver worker i on node i % N; CPU and RSS summed over the nodes
  --quiet-wait SEC   before measuring, wait up to SEC for the machine to be idle (default 0)
  --concurrency C    connections in flight while connecting, all workers together (default 100)
  --drain-ms T       stop waiting for deliveries after T ms without progress (default 5000)
  --timeout SEC      hard limit for the whole run (default 300)
  --server-env K=V   extra environment for the spawned server (repeatable)
  --json FILE        also write the results as JSON
  --help
 env: SWITCHBOARD_BIN / CARGO_TARGET_DIR pick the binary (default ../target/release/switchboard);
      SWITCHBOARD_URL + JWT_SECRET [+ SWITCHBOARD_PID] target a running server instead.`;

function options() {
  const { values } = parseArgs({
    options: {
      scenario: { type: 'string', default: 'fanout' },
      server: { type: 'string', default: 'switchboard' },
      compare: { type: 'boolean', default: false },
      client: { type: 'string', default: 'sio' },
      'quiet-wait': { type: 'string', default: '0' },
      sockets: { type: 'string', default: '1000' },
      connections: { type: 'string', default: '2000' },
      'per-user': { type: 'string', default: '2' },
      senders: { type: 'string', default: '4' },
      messages: { type: 'string', default: '200' },
      rate: { type: 'string', default: '50' },
      warmup: { type: 'string', default: '10' },
      workers: { type: 'string', default: '2' },
      nodes: { type: 'string', default: '1' },
      concurrency: { type: 'string', default: '100' },
      'drain-ms': { type: 'string', default: '5000' },
      timeout: { type: 'string', default: '300' },
      'target-deliveries': { type: 'string', default: '20000' },
      'target-p99': { type: 'string', default: '50' },
      'no-room': { type: 'boolean', default: false },
      rooms: { type: 'string' },
      'min-members': { type: 'string', default: '2' },
      'max-members': { type: 'string', default: '5' },
      'senders-per-room': { type: 'string', default: '1' },
      'duration-sec': { type: 'string', default: '10' },
      'target-messages': { type: 'string', default: '10000' },
      'target-ack-p99': { type: 'string', default: '50' },
      search: { type: 'boolean', default: false },
      'search-sec': { type: 'string', default: '10' },
      'search-factor': { type: 'string', default: '1.5' },
      'search-p99': { type: 'string', default: '100' },
      'search-steps': { type: 'string', default: '12' },
      'server-env': { type: 'string', multiple: true, default: [] },
      json: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const int = (name, min) => {
    const v = Number(values[name]);
    if (!Number.isInteger(v) || v < min) throw new Error(`--${name} must be an integer >= ${min}`);
    return v;
  };
  const num = (name) => {
    const v = Number(values[name]);
    if (!Number.isFinite(v) || v < 0) throw new Error(`--${name} must be a number >= 0`);
    return v;
  };
  if (!['fanout', 'connect', 'persist'].includes(values.scenario)) throw new Error('--scenario is fanout, connect or persist');
  if (values.search && values.scenario !== 'fanout') throw new Error('--search is for --scenario fanout');
  if (Number(values.nodes) > 1 && values.scenario !== 'fanout') throw new Error('--nodes is for --scenario fanout');
  if (Number(values.nodes) > 1 && process.env.SWITCHBOARD_URL) throw new Error('--nodes starts its own nodes: unset SWITCHBOARD_URL');
  if (values.search && Number(values.rate) <= 0) throw new Error('--search starts from a paced --rate > 0');
  if (values.search && !(Number(values['search-factor']) > 1)) throw new Error('--search-factor must be > 1');
  if (!['sio', 'lite'].includes(values.client)) throw new Error('--client is sio or lite');
  if (!SERVER_KINDS.includes(values.server)) throw new Error(`--server is one of ${SERVER_KINDS.join(', ')}`);
  const serverEnv = {};
  for (const kv of values['server-env']) {
    const i = kv.indexOf('=');
    if (i < 1) throw new Error(`--server-env wants K=V, got ${kv}`);
    serverEnv[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return {
    scenario: values.scenario,
    server: values.server,
    compare: values.compare,
    client: values.client,
    quietWaitSec: num('quiet-wait'),
    sockets: int('sockets', 1),
    connections: int('connections', 1),
    perUser: int('per-user', 1),
    senders: int('senders', 1),
    messages: int('messages', 1),
    rate: num('rate'),
    warmup: int('warmup', 0),
    workers: int('workers', 1),
    nodes: int('nodes', 1),
    concurrency: int('concurrency', 1),
    drainMs: int('drain-ms', 100),
    timeoutSec: int('timeout', 5),
    targetDeliveries: num('target-deliveries'),
    targetP99: num('target-p99'),
    room: !values['no-room'],
    rooms: values.rooms === undefined ? (values.scenario === 'persist' ? 200 : 1) : int('rooms', 1),
    minMembers: int('min-members', 2),
    maxMembers: int('max-members', 2),
    sendersPerRoom: int('senders-per-room', 1),
    durationSec: num('duration-sec'),
    targetMessages: num('target-messages'),
    targetAckP99: num('target-ack-p99'),
    search: values.search,
    searchSec: num('search-sec'),
    searchFactor: num('search-factor'),
    searchP99: num('search-p99'),
    searchSteps: int('search-steps', 1),
    serverEnv,
    json: values.json,
  };
}

// ---------------------------------------------------------------------------------------------
// workers

class Worker {
  constructor(index, script = 'worker.mjs') {
    this.index = index;
    this.progress = { m: 0, w: 0 };
    this.waiters = new Map();
    this.child = fork(path.join(HERE, 'lib', script), [], { serialization: 'advanced', stdio: 'inherit' });
    this.child.on('message', (msg) => {
      if (msg.type === 'progress') this.progress = msg;
      const w = this.waiters.get(msg.type);
      if (w) {
        this.waiters.delete(msg.type);
        w(msg);
      }
    });
    this.exited = new Promise((resolve) => this.child.on('exit', resolve));
    this.child.on('exit', (code) => {
      for (const [type, w] of this.waiters) w({ type, error: `worker ${index} exited (${code})` });
      this.waiters.clear();
    });
  }

  request(msg, replyType) {
    return new Promise((resolve) => {
      this.waiters.set(replyType, resolve);
      this.child.send(msg);
    });
  }

  tell(msg) {
    if (this.child.connected) this.child.send(msg);
  }

  async close() {
    this.tell({ type: 'close' });
    const t = setTimeout(() => this.child.kill('SIGKILL'), 3000);
    await this.exited;
    clearTimeout(t);
  }
}

async function startWorkers(n, script) {
  const workers = Array.from({ length: n }, (_, i) => new Worker(i, script));
  await Promise.all(workers.map((w) => new Promise((resolve) => (w.waiters.set('hello', resolve)))));
  return workers;
}

/** Splits `list` into `n` contiguous chunks of nearly equal size. */
function chunks(list, n) {
  const out = [];
  let start = 0;
  for (let i = 0; i < n; i += 1) {
    const size = Math.floor(list.length / n) + (i < list.length % n ? 1 : 0);
    out.push(list.slice(start, start + size));
    start += size;
  }
  return out;
}

/**
 * Connects `tokens` (one per socket) spread over the workers; merged result. `roomOf(i)`: the
 * room socket `i` must find in its `session:ready` and is measured in ('' for none).
 */
async function connectVia(workers, server, tokens, { roomOf, messages, concurrency, client }) {
  const parts = chunks(tokens, workers.length);
  const rooms = chunks(tokens.map((_, i) => roomOf(i)), workers.length);
  const t0 = now();
  const results = await Promise.all(
    workers.map((w, i) =>
      w.request(
        {
          type: 'connect',
          url: server.urls ? server.urls[i % server.urls.length] : server.url,
          tokens: parts[i],
          socketRooms: rooms[i],
          messages,
          concurrency: Math.max(1, Math.round(concurrency / workers.length)),
          readyTimeoutMs: 30_000,
          client,
        },
        'connected',
      ),
    ),
  );
  const elapsedMs = now() - t0;
  const errors = {};
  let ok = 0;
  const times = [];
  for (const r of results) {
    if (r.error) errors[r.error] = (errors[r.error] || 0) + 1;
    ok += r.ok ?? 0;
    for (const [k, v] of Object.entries(r.errors ?? {})) errors[k] = (errors[k] || 0) + v;
    if (r.times) times.push(...r.times);
  }
  return { ok, errors, elapsedMs, times: summary(times) };
}

// ---------------------------------------------------------------------------------------------
// setup over REST

function connectSender(server, userId, roomId) {
  return new Promise((resolve, reject) => {
    const socket = io(`${server.url}/realtime`, {
      transports: ['websocket'],
      forceNew: true,
      reconnection: false,
      auth: { token: server.token(userId) },
    });
    const timer = setTimeout(() => reject(new Error(`sender ${userId} not ready in 30 s`)), 30_000);
    socket.once('session:ready', (s) => {
      clearTimeout(timer);
      if (!s.rooms.includes(roomId)) reject(new Error(`sender ${userId}: room missing from session:ready`));
      else resolve(socket);
    });
    socket.once('connect_error', (e) => {
      clearTimeout(timer);
      reject(new Error(`sender ${userId}: connect_error ${e.message}`));
    });
  });
}

async function health(server) {
  try {
    return (await api(server.url, 'GET', '/health')).body;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------
// resource accounting over a window

/** The server's processes: every node of a `--nodes` cluster, else the one. */
const pidsOf = (server) => server.pids ?? [server.pid];

/** CPU time of all the server's processes (`processCpu` summed), or null when one is unreadable. */
function serverCpu(server) {
  const all = pidsOf(server).map(processCpu);
  if (all.some((c) => !c)) return null;
  return all.reduce((a, c) => ({ userMs: a.userMs + c.userMs, sysMs: a.sysMs + c.sysMs }), { userMs: 0, sysMs: 0 });
}

/** RSS of all the server's processes, summed (`{ rssKb }`), or null when one is unreadable. */
function serverMemory(server) {
  const all = pidsOf(server).map(memory);
  if (all.some((m) => !m)) return null;
  return { rssKb: all.reduce((a, m) => a + m.rssKb, 0) };
}

function cpuWindow(server) {
  const start = {
    t: now(),
    server: serverCpu(server),
    machine: machineCpuMs(),
    self: process.cpuUsage(),
  };
  let peakRssKb = serverMemory(server)?.rssKb ?? NaN;
  const sampler = setInterval(() => {
    const m = serverMemory(server);
    if (m && !(m.rssKb <= peakRssKb)) peakRssKb = m.rssKb;
  }, 200);
  return {
    /** Ends the window; `reports` carry the workers' CPU time (`cpuMs`, `cpuSysMs`) in it. */
    end(reports) {
      clearInterval(sampler);
      const wallMs = now() - start.t;
      const srv = start.server && serverCpu(server);
      const serverMs = srv ? srv.userMs + srv.sysMs - start.server.userMs - start.server.sysMs : NaN;
      const serverSysMs = srv ? srv.sysMs - start.server.sysMs : NaN;
      const self = process.cpuUsage(start.self);
      const clientMs = reports.reduce((a, r) => a + (r.cpuMs ?? 0), 0) + (self.user + self.system) / 1000;
      const clientSysMs = reports.reduce((a, r) => a + (r.cpuSysMs ?? 0), 0) + self.system / 1000;
      const m = machineCpuMs();
      const machineBusyMs = m && start.machine ? m.busyMs - start.machine.busyMs : NaN;
      const machineTotalMs = m && start.machine ? m.totalMs - start.machine.totalMs : NaN;
      const mem = serverMemory(server);
      if (mem && !(mem.rssKb <= peakRssKb)) peakRssKb = mem.rssKb;
      return {
        wallMs,
        serverCpuMs: serverMs,
        serverSysMs,
        clientCpuMs: clientMs,
        clientSysMs,
        otherCpuMs: Number.isFinite(serverMs) ? machineBusyMs - serverMs - clientMs : NaN,
        machineBusyPct: (100 * machineBusyMs) / machineTotalMs,
        // percentages of ONE core (a 2-core machine has 200%)
        serverPct: (100 * serverMs) / wallMs,
        clientPct: (100 * clientMs) / wallMs,
        otherPct: Number.isFinite(serverMs) ? (100 * (machineBusyMs - serverMs - clientMs)) / wallMs : NaN,
        serverRssKb: mem?.rssKb ?? NaN,
        serverPeakRssKb: peakRssKb,
      };
    },
  };
}

function cpuLines(c, cores) {
  return [
    `CPU in window   ${fmtInt(c.wallMs)} ms wall, machine ${fmtPct(c.machineBusyPct)} busy of ${cores} cores`,
    `  server        ${fmtInt(c.serverCpuMs)} ms  (${fmtPct(c.serverPct)} of one core; ${fmtInt(c.serverSysMs)} ms of it in the kernel)`,
    `  load gen      ${fmtInt(c.clientCpuMs)} ms  (${fmtPct(c.clientPct)} of one core, all bench processes; ${fmtInt(c.clientSysMs)} ms in the kernel)`,
    `  other procs   ${fmtInt(c.otherCpuMs)} ms  (${fmtPct(c.otherPct)} of one core)`,
  ];
}

function bottleneck(c, cores) {
  if (!Number.isFinite(c.machineBusyPct)) return 'unknown (no /proc readings)';
  const noisy = c.otherPct > 25
    ? `; WARNING: other processes used ${fmtPct(c.otherPct)} of one core during the window, so these numbers understate the server`
    : '';
  return bottleneckText(c, cores) + noisy;
}

function bottleneckText(c, cores) {
  if (c.machineBusyPct < 85) return `machine not CPU-saturated (${fmtPct(c.machineBusyPct)} busy): the offered load, not CPU, bounded this run`;
  const parts = [
    ['server', c.serverPct],
    ['load generator', c.clientPct],
    ['other processes', c.otherPct],
  ].sort((a, b) => b[1] - a[1]);
  return `machine CPU-saturated (${fmtPct(c.machineBusyPct)} of ${cores} cores busy); largest consumer: ${parts[0][0]} (${fmtPct(parts[0][1])} of one core)`;
}

/**
 * Waits (at most `maxSec`) for a 1 s stretch in which the whole machine used under 25% of one
 * core: the bench is idle at that point, so that is other work (e.g. a compiler) that would
 * compete with the server and the load generator for the two cores.
 */
async function waitQuiet(maxSec) {
  if (!maxSec) return;
  const deadline = now() + maxSec * 1000;
  const t0 = now();
  for (;;) {
    const a = machineCpuMs();
    await sleep(1000);
    const b = machineCpuMs();
    if (!a || !b) return;
    const busyPctOfCore = (100 * (b.busyMs - a.busyMs)) / 1000;
    if (busyPctOfCore < 25) {
      console.log(`quiet-wait: machine quiet after ${fmtMs(now() - t0)} (${fmtPct(busyPctOfCore)} of one core busy)`);
      return;
    }
    if (now() > deadline) {
      console.log(`quiet-wait: gave up after ${maxSec} s; machine still ${fmtPct(busyPctOfCore)} of one core busy`);
      return;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// scenarios

async function fanout(opts, server, workers, runId, cores) {
  const receiverUsers = Math.ceil(opts.sockets / opts.perUser);
  const receivers = Array.from({ length: receiverUsers }, (_, i) => `bench-${runId}-r${i}`);
  const senders = Array.from({ length: opts.senders }, (_, i) => `bench-${runId}-s${i}`);
  const tokens = [];
  for (let i = 0; i < opts.sockets; i += 1) tokens.push(server.token(receivers[Math.floor(i / opts.perUser)]));
  // `--rooms` rooms, the receiver users split evenly between them, every sender in every room;
  // message i goes to room i % R.
  const R = Math.min(opts.rooms, receiverUsers);
  const roomOfUser = (u) => Math.floor((u * R) / receiverUsers);
  const roomOfSocket = (i) => roomOfUser(Math.floor(i / opts.perUser));

  let t = now();
  const roomIds = [];
  for (let r = 0; r < R; r += 1) {
    const members = receivers.filter((_, u) => roomOfUser(u) === r);
    roomIds.push(await createGroupRoom(server, senders[0], [...senders.slice(1), ...members], `bench ${runId} ${r}`));
  }
  const roomSockets = new Uint32Array(R); // receiver sockets per room
  for (let i = 0; i < opts.sockets; i += 1) roomSockets[roomOfSocket(i)] += 1;
  console.log(`setup: ${R} room(s) with ${receivers.length} receiver users and ${senders.length} senders in ${fmtMs(now() - t)}`);

  const conn = await connectVia(workers, server, tokens, {
    roomOf: (i) => roomIds[roomOfSocket(i)],
    messages: opts.messages,
    concurrency: opts.concurrency,
    client: opts.client,
  });
  console.log(
    `connect: ${conn.ok}/${opts.sockets} receiver sockets ready in ${fmtMs(conn.elapsedMs)} ` +
      `(per socket p50 ${fmtMs(conn.times.p50)}, p99 ${fmtMs(conn.times.p99)})`,
  );
  if (conn.ok !== opts.sockets) {
    throw new Error(`only ${conn.ok}/${opts.sockets} receivers connected: ${JSON.stringify(conn.errors)}`);
  }
  if (server.urls) {
    const perNode = await Promise.all(server.urls.map((url) => health({ url })));
    console.log(`connect: sockets per node (GET /health) ${perNode.map((h) => h?.connections ?? '?').join(' / ')}`);
  }
  const senderSockets = await Promise.all(senders.map((s) => connectSender(server, s, roomIds[0])));
  const N = opts.sockets;
  const S = senderSockets.length;

  const acks = { ms: [], errors: {}, pending: 0 };
  const ackSeq = new Float64Array(opts.messages); // seq the server gave measured message i
  let doneAcks = null;
  const ackDone = () => {
    acks.pending -= 1;
    if (acks.pending === 0 && doneAcks) doneAcks();
  };
  const senderOf = new Uint16Array(opts.messages); // which sender socket sent measured message i
  const sendOne = (phase, i, cb, k = i % S) => {
    const socket = senderSockets[k];
    if (phase === 'm') senderOf[i] = k;
    const sentAt = now();
    acks.pending += 1;
    socket.timeout(30_000).emit(
      'chat:message',
      { roomId: roomIds[i % R], message: `bench|${phase}|${i}|${sentAt}`, clientMessageId: `${runId}-${phase}-${i}` },
      (err, ack) => {
        if (phase === 'm') {
          if (err) acks.errors.TIMEOUT = (acks.errors.TIMEOUT || 0) + 1;
          else if (!ack || ack.ok !== true) {
            const code = ack?.error?.code ?? 'BAD_ACK';
            acks.errors[code] = (acks.errors[code] || 0) + 1;
          } else {
            acks.ms.push(now() - sentAt);
            ackSeq[i] = ack.message?.seq ?? 0;
          }
        } else if (err || !ack?.ok) {
          acks.errors[`warmup ${err ? 'TIMEOUT' : ack?.error?.code}`] = 1;
        }
        ackDone();
        cb?.();
      },
    );
  };
  const allAcked = () =>
    acks.pending === 0 ? Promise.resolve() : new Promise((resolve) => (doneAcks = resolve));

  const totals = () => workers.reduce((a, w) => ({ m: a.m + w.progress.m, w: a.w + w.progress.w }), { m: 0, w: 0 });
  /** Waits until `key` deliveries reach `target`, or `drainMs` pass without progress. */
  const waitDeliveries = async (key, target) => {
    let last = -1;
    let lastChange = now();
    for (;;) {
      const got = totals()[key];
      if (got >= target) return got;
      if (got !== last) {
        last = got;
        lastChange = now();
      } else if (now() - lastChange > opts.drainMs) return got;
      await sleep(20);
    }
  };

  // warm-up (checked, not measured)
  for (const w of workers) w.tell({ type: 'arm' });
  if (opts.warmup > 0) {
    for (let i = 0; i < opts.warmup; i += 1) {
      sendOne('w', i);
      await sleep(20);
    }
    await allAcked();
    let warmExpected = 0;
    for (let i = 0; i < opts.warmup; i += 1) warmExpected += roomSockets[i % R];
    const got = await waitDeliveries('w', warmExpected);
    if (got !== warmExpected) console.log(`warm-up: ${got}/${warmExpected} deliveries`);
  }

  // measured phase
  await waitQuiet(opts.quietWaitSec);
  for (const w of workers) w.tell({ type: 'arm' });
  await sleep(50);
  const window = cpuWindow(server);
  const firstSend = now();
  if (opts.rate > 0) {
    const interval = 1000 / opts.rate;
    let i = 0;
    while (i < opts.messages) {
      const wait = firstSend + i * interval - now();
      if (wait > 1) await sleep(wait);
      while (i < opts.messages && firstSend + i * interval <= now()) sendOne('m', i++);
    }
  } else {
    let next = 0;
    await Promise.all(
      senderSockets.map(
        (_, k) =>
          new Promise((resolve) => {
            const loop = () => {
              if (next >= opts.messages) return resolve();
              sendOne('m', next++, loop, k);
            };
            loop();
          }),
      ),
    );
  }
  const lastSend = now();
  await allAcked();
  let expected = 0;
  for (let i = 0; i < opts.messages; i += 1) expected += roomSockets[i % R];
  await waitDeliveries('m', expected);
  const reports = await Promise.all(workers.map((w) => w.request({ type: 'report' }, 'report')));
  const cpu = window.end(reports);
  for (const s of senderSockets) s.close();

  const lat = [];
  let received = 0;
  let lastRecv = 0;
  let dups = 0;
  let outOfOrder = 0;
  let foreign = 0;
  let open = 0;
  const disconnects = {};
  const perMsg = new Uint32Array(opts.messages);
  let workerRssKb = 0;
  for (const r of reports) {
    if (r.error) throw new Error(r.error);
    for (let k = 0; k < r.latencies.length; k += 1) lat.push(r.latencies[k]);
    received += r.latencies.length;
    if (r.lastRecv) lastRecv = Math.max(lastRecv, r.lastRecv);
    dups += r.dups;
    outOfOrder += r.outOfOrder;
    foreign += r.foreign + r.malformed;
    open += r.open;
    workerRssKb += r.rssKb;
    for (let k = 0; k < opts.messages; k += 1) perMsg[k] += r.perMsg[k];
    for (const [k, v] of Object.entries(r.disconnects)) disconnects[k] = (disconnects[k] || 0) + v;
  }
  // A sender's messages to a room should get increasing seqs in the order that socket sent them.
  let senderInversions = 0;
  const maxSeqOf = new Float64Array(S * R);
  for (let i = 0; i < opts.messages; i += 1) {
    if (!ackSeq[i]) continue;
    const k = senderOf[i] * R + (i % R);
    if (ackSeq[i] < maxSeqOf[k]) senderInversions += 1;
    maxSeqOf[k] = Math.max(maxSeqOf[k], ackSeq[i]);
  }
  let incomplete = 0;
  for (let k = 0; k < opts.messages; k += 1) if (perMsg[k] !== roomSockets[k % R]) incomplete += 1;
  const l = summary(lat);
  const histogram = new Array(501).fill(0); // 1 ms buckets; the last one is ">= 500 ms"
  for (const v of lat) histogram[Math.min(500, Math.max(0, Math.floor(v)))] += 1;
  const ackHistogram = new Array(501).fill(0);
  for (const v of acks.ms) ackHistogram[Math.min(500, Math.max(0, Math.floor(v)))] += 1;
  const a = summary(acks.ms);
  const spanMs = (lastRecv || now()) - firstSend;
  const deliveriesPerSec = (received * 1000) / spanMs;
  const ackErrors = Object.values(acks.errors).reduce((x, y) => x + y, 0);
  const lost = expected - received;
  const checks = [
    [lost === 0, `no lost deliveries (${fmtInt(received)}/${fmtInt(expected)})`],
    [dups === 0, `no duplicate deliveries (${dups})`],
    [ackErrors === 0, `every chat:message acked ok (${ackErrors} errors)`],
    [open === N, `no receiver disconnected (${N - open} gone)`],
    [!server.exited, `server stayed up${server.exited ? ` (it exited: ${JSON.stringify(server.exited)})` : ''}`],
    [deliveriesPerSec >= opts.targetDeliveries, `>= ${fmtInt(opts.targetDeliveries)} deliveries/s (${fmtInt(deliveriesPerSec)})`],
    [l.p99 <= opts.targetP99, `delivery p99 <= ${opts.targetP99} ms (${fmtMs(l.p99)})`],
  ];
  const pass = checks.every(([ok]) => ok);
  const offered = opts.rate > 0 ? (opts.rate * expected) / opts.messages : NaN;

  const lines = [
    '',
    `== fanout${opts.nodes > 1 ? ` on ${opts.nodes} nodes` : ''}: ${R} group room(s), ${fmtInt(N)} ${opts.client} receiver sockets (${receivers.length} users x ${opts.perUser}), ${S} senders, ` +
      `${opts.messages} messages @ ${opts.rate > 0 ? `${opts.rate} msg/s` : 'closed loop'} ==`,
    `messages sent   ${opts.messages} in ${fmtMs(lastSend - firstSend)} (${(opts.messages * 1000 / Math.max(1, lastSend - firstSend)).toFixed(1)} msg/s achieved)`,
    `deliveries      ${fmtInt(received)} / ${fmtInt(expected)} expected, lost ${fmtInt(lost)}, duplicates ${dups}, ` +
      `messages not reaching every receiver ${incomplete}`,
    `throughput      ${fmtInt(deliveriesPerSec)} deliveries/s over ${fmtMs(spanMs)} (first send -> last delivery)` +
      (Number.isFinite(offered) ? `; offered ${fmtInt(offered)}/s` : ''),
    `                server fan-out incl. senders' other sockets: ${fmtInt(expected + opts.messages * (S - 1))} packets`,
    `delivery lat.   p50 ${fmtMs(l.p50)}  p90 ${fmtMs(l.p90)}  p99 ${fmtMs(l.p99)}  max ${fmtMs(l.max)}`,
    `ack latency     p50 ${fmtMs(a.p50)}  p99 ${fmtMs(a.p99)}  max ${fmtMs(a.max)}  errors ${JSON.stringify(acks.errors)}`,
    `seq order       ${outOfOrder} deliveries arrived with a lower seq than the previous one on that socket; ` +
      `${senderInversions} messages got a lower seq than an earlier message of the same sender socket`,
    `foreign events  ${foreign}; receiver disconnects ${JSON.stringify(disconnects)}`,
    `server RSS      ${fmtMb(cpu.serverRssKb)} at end, peak ${fmtMb(cpu.serverPeakRssKb)}; bench workers RSS ${fmtMb(workerRssKb)}`,
    ...cpuLines(cpu, cores),
    `  server CPU per message ${fmtMs(cpu.serverCpuMs / opts.messages)}, per delivery ${(1000 * cpu.serverCpuMs / Math.max(1, received)).toFixed(1)} us`,
    `  load gen CPU per delivery ${(1000 * cpu.clientCpuMs / Math.max(1, received)).toFixed(1)} us`,
    `bottleneck      ${bottleneck(cpu, cores)}`,
  ];
  if (Number.isFinite(offered) && offered < opts.targetDeliveries) {
    lines.push(`note            offered load ${fmtInt(offered)}/s is below the target; raise --rate or --sockets`);
  }
  for (const [ok, text] of checks) lines.push(`  [${ok ? 'ok' : 'FAIL'}] ${text}`);
  lines.push(`${pass ? 'PASS' : 'FAIL'} fanout: ${fmtInt(deliveriesPerSec)} deliveries/s, p99 ${fmtMs(l.p99)}, lost ${lost} ` +
    `(targets >= ${fmtInt(opts.targetDeliveries)}/s, p99 <= ${opts.targetP99} ms, no loss)`);
  console.log(lines.join('\n'));
  return {
    pass,
    result: {
      scenario: 'fanout',
      client: opts.client,
      rooms: R,
      receivers: N,
      receiverUsers: receivers.length,
      senders: S,
      messages: opts.messages,
      rate: opts.rate,
      expected,
      received,
      lost,
      dups,
      incompleteMessages: incomplete,
      outOfOrder,
      senderInversions,
      deliveriesPerSec,
      spanMs,
      sendMs: lastSend - firstSend,
      latencyMs: l,
      latencyHistogramMs: histogram,
      ackHistogramMs: ackHistogram,
      ackMs: a,
      ackErrors: acks.errors,
      disconnects,
      connect: { ...conn, times: conn.times },
      cpu,
      checks: checks.map(([ok, text]) => ({ ok, text })),
    },
  };
}

async function connectScenario(opts, server, workers, runId, cores) {
  const K = opts.connections;
  const users = Array.from({ length: Math.ceil(K / opts.perUser) }, (_, i) => `bench-${runId}-c${i}`);
  const tokens = [];
  for (let i = 0; i < K; i += 1) tokens.push(server.token(users[Math.floor(i / opts.perUser)]));
  let roomId = '';
  if (opts.room) {
    const t = now();
    roomId = await createGroupRoom(server, users[0], users.slice(1), `bench ${runId}`);
    console.log(`setup: room ${roomId} with ${users.length} members in ${fmtMs(now() - t)}`);
  }
  await sleep(500);
  await waitQuiet(opts.quietWaitSec);
  const before = memory(server.pid);
  for (const w of workers) w.tell({ type: 'arm' });
  await sleep(50);
  const window = cpuWindow(server);
  const conn = await connectVia(workers, server, tokens, {
    roomOf: () => roomId,
    messages: 0,
    concurrency: opts.concurrency,
    client: opts.client,
  });
  const workerCpu = await Promise.all(workers.map((w) => w.request({ type: 'report' }, 'report')));
  const cpu = window.end(workerCpu);
  await sleep(1000);
  const after = memory(server.pid);
  const h = await health(server);
  const perConnKb = before && after ? (after.rssKb - before.rssKb) / Math.max(1, conn.ok) : NaN;
  const ok = conn.ok === K && !server.exited;
  if (server.exited) console.log(`server exited during the run: ${JSON.stringify(server.exited)}`);
  const lines = [
    '',
    `== connect: ${fmtInt(K)} ${opts.client} websocket sockets (${users.length} users x ${opts.perUser})` +
      `${opts.room ? ', all in one group room' : ''}, ${opts.concurrency} in flight ==`,
    `connected       ${fmtInt(conn.ok)} / ${fmtInt(K)} in ${fmtMs(conn.elapsedMs)} (${fmtInt((conn.ok * 1000) / conn.elapsedMs)} sockets/s); errors ${JSON.stringify(conn.errors)}`,
    `time to ready   p50 ${fmtMs(conn.times.p50)}  p90 ${fmtMs(conn.times.p90)}  p99 ${fmtMs(conn.times.p99)}  max ${fmtMs(conn.times.max)}`,
    `server /health  connections ${h?.connections ?? 'n/a'}`,
    `server RSS      ${fmtMb(before?.rssKb)} before, ${fmtMb(after?.rssKb)} after (+1 s); ` +
      `${Number.isFinite(perConnKb) ? `${perConnKb.toFixed(1)} KB` : 'n/a'} per connection; threads ${after?.threads ?? 'n/a'}`,
    ...cpuLines(cpu, cores),
    `  server CPU per connection ${fmtMs(cpu.serverCpuMs / Math.max(1, conn.ok))}`,
    `bottleneck      ${bottleneck(cpu, cores)}`,
    `${ok ? 'PASS' : 'FAIL'} connect: ${conn.ok}/${K} sockets in ${fmtMs(conn.elapsedMs)}`,
  ];
  console.log(lines.join('\n'));
  return {
    pass: ok,
    result: { scenario: 'connect', sockets: K, users: users.length, ...conn, health: h, rssBeforeKb: before?.rssKb, rssAfterKb: after?.rssKb, perConnKb, cpu },
  };
}

/**
 * Persisted messages/s into many small rooms: `--rooms` rooms of 2–5 members (one socket each,
 * spread over the workers), `--senders-per-room` of each room sending in a closed loop for
 * `--duration-sec`. Every message is persisted before its ack, so this measures the write path;
 * the fan-out per message is small (1–4 deliveries).
 */
async function persist(opts, server, workers, runId, cores) {
  const rooms = [];
  const members = [];
  let t = now();
  const span = opts.maxMembers - opts.minMembers + 1;
  for (let r = 0; r < opts.rooms; r += 1) {
    const size = Math.max(2, opts.minMembers + (r % Math.max(1, span)));
    const users = Array.from({ length: size }, (_, i) => `bench-${runId}-p${r}-${i}`);
    const res = await api(server.url, 'POST', `${REST}/chat/rooms`, {
      token: server.token(users[0]),
      body: { participants: users.slice(1), type: 'group', name: `persist ${r}` },
    });
    if (res.status !== 201 && res.status !== 200) throw new Error(`creating room ${r}: HTTP ${res.status} ${JSON.stringify(res.body)}`);
    rooms.push({ id: res.body.id, size });
    users.forEach((u, i) => members.push({ token: server.token(u), roomId: res.body.id, sender: i < opts.sendersPerRoom }));
  }
  const senders = members.filter((m) => m.sender).length;
  console.log(`setup: ${rooms.length} rooms, ${members.length} members, ${senders} senders in ${fmtMs(now() - t)}`);
  t = now();
  // Interleaved so every worker has whole-room shares of senders and receivers alike.
  const parts = Array.from({ length: workers.length }, () => []);
  members.forEach((m, i) => parts[i % workers.length].push(m));
  const ready = await Promise.all(
    workers.map((w, i) =>
      w.request({ type: 'setup', url: server.url, members: parts[i], concurrency: Math.max(1, Math.round(opts.concurrency / workers.length)) }, 'ready'),
    ),
  );
  const connected = ready.reduce((a, r) => a + (r.ok ?? 0), 0);
  console.log(`connect: ${connected}/${members.length} sockets ready in ${fmtMs(now() - t)}`);
  if (connected !== members.length) throw new Error(`only ${connected}/${members.length} connected: ${JSON.stringify(ready.map((r) => r.errors))}`);
  await waitQuiet(opts.quietWaitSec);
  const window = cpuWindow(server);
  const t0 = now();
  const sent = await Promise.all(
    workers.map((w, i) => w.request({ type: 'go', durationMs: opts.durationSec * 1000, runId, worker: i }, 'sent')),
  );
  const lastAck = Math.max(...sent.map((s) => s.lastAck));
  const sizeOf = new Map(rooms.map((r) => [r.id, r.size]));
  let acked = 0;
  let expected = 0;
  const errors = {};
  const ackMs = [];
  for (const s of sent) {
    acked += s.acked;
    for (const [room, n] of Object.entries(s.ackedPerRoom)) expected += n * (sizeOf.get(room) - 1);
    for (const [k, v] of Object.entries(s.errors)) errors[k] = (errors[k] || 0) + v;
    for (const v of s.ackMs) ackMs.push(v);
  }
  // Deliveries trail the acks a little: wait for them (or `--drain-ms` without progress).
  let last = -1;
  let lastChange = now();
  for (;;) {
    const got = workers.reduce((a, w) => a + (w.progress.d ?? 0), 0);
    if (got >= expected) break;
    if (got !== last) {
      last = got;
      lastChange = now();
    } else if (now() - lastChange > opts.drainMs) break;
    await sleep(20);
  }
  const reports = await Promise.all(workers.map((w) => w.request({ type: 'report' }, 'report')));
  const cpu = window.end(reports);
  const deliveries = reports.reduce((a, r) => a + r.deliveries, 0);
  const open = reports.reduce((a, r) => a + r.open, 0);
  const lat = [];
  for (const r of reports) for (const v of r.deliveryMs) lat.push(v);
  const a = summary(ackMs);
  const l = summary(lat);
  const messagesPerSec = (acked * 1000) / (lastAck - t0);
  const ackErrors = Object.values(errors).reduce((x, y) => x + y, 0);
  const checks = [
    [ackErrors === 0, `every chat:message acked ok (${ackErrors} errors: ${JSON.stringify(errors)})`],
    [deliveries === expected, `every persisted message reached the rest of its room (${fmtInt(deliveries)}/${fmtInt(expected)})`],
    [open === members.length, `no socket disconnected (${members.length - open} gone)`],
    [!server.exited, 'server stayed up'],
    [messagesPerSec >= opts.targetMessages, `>= ${fmtInt(opts.targetMessages)} persisted messages/s (${fmtInt(messagesPerSec)})`],
    [a.p99 <= opts.targetAckP99, `ack p99 <= ${opts.targetAckP99} ms (${fmtMs(a.p99)})`],
  ];
  const pass = checks.every(([ok]) => ok);
  const lines = [
    '',
    `== persist: ${rooms.length} rooms of ${opts.minMembers}-${opts.maxMembers} members, ${senders} closed-loop senders, ${opts.durationSec} s ==`,
    `persisted       ${fmtInt(acked)} messages acked in ${fmtMs(lastAck - t0)}: ${fmtInt(messagesPerSec)} messages/s`,
    `ack latency     p50 ${fmtMs(a.p50)}  p90 ${fmtMs(a.p90)}  p99 ${fmtMs(a.p99)}  max ${fmtMs(a.max)}`,
    `deliveries      ${fmtInt(deliveries)} / ${fmtInt(expected)}; latency p50 ${fmtMs(l.p50)}  p99 ${fmtMs(l.p99)}  max ${fmtMs(l.max)}`,
    `server RSS      ${fmtMb(cpu.serverRssKb)} at end, peak ${fmtMb(cpu.serverPeakRssKb)}`,
    ...cpuLines(cpu, cores),
    `  server CPU per message ${(1000 * cpu.serverCpuMs / Math.max(1, acked)).toFixed(1)} us`,
    `bottleneck      ${bottleneck(cpu, cores)}`,
  ];
  for (const [ok, text] of checks) lines.push(`  [${ok ? 'ok' : 'FAIL'}] ${text}`);
  lines.push(`${pass ? 'PASS' : 'FAIL'} persist: ${fmtInt(messagesPerSec)} messages/s, ack p99 ${fmtMs(a.p99)}`);
  console.log(lines.join('\n'));
  return {
    pass,
    result: {
      scenario: 'persist',
      rooms: rooms.length,
      members: members.length,
      senders,
      acked,
      messagesPerSec,
      ackMs: a,
      latencyMs: l,
      deliveries,
      expected,
      errors,
      cpu,
      checks: checks.map(([ok, text]) => ({ ok, text })),
    },
  };
}

// ---------------------------------------------------------------------------------------------

/** Load scenarios with their own options, each in `scenarios/<name>.mjs` (see README.md). */
const LOAD_SCENARIOS = ['slow-consumer', 'flood', 'storm', 'soak', 'jitter', 'avalanche', 'rolling', 'gap', 'sse'];

async function main() {
  const argv = process.argv.slice(2);
  const named = argv.findIndex((a) => a === '--scenario' || a.startsWith('--scenario='));
  const scenario = named < 0 ? null : argv[named].includes('=') ? argv[named].split('=')[1] : argv[named + 1];
  if (LOAD_SCENARIOS.includes(scenario)) {
    const { main: run } = await import(`./scenarios/${scenario}.mjs`);
    return run(argv);
  }
  let opts;
  try {
    opts = options();
  } catch (err) {
    console.error(`${err.message}\n\n${USAGE}`);
    process.exit(2);
  }
  // A cluster's Redis and PostgreSQL are started once for all the runs of a comparison or search.
  if (opts.nodes > 1 && (opts.compare || opts.search)) await shareInfra();
  if (opts.compare) return compare(argv, opts);
  if (opts.search) return search(argv, opts);
  const cores = (await import('node:os')).availableParallelism();
  const runId = Date.now().toString(36);
  const nSockets = opts.scenario === 'fanout' ? opts.sockets : opts.scenario === 'persist' ? opts.rooms * 2 : opts.connections;
  const limit = Number(opts.serverEnv.MAX_CONNECTIONS_PER_USER ?? 10);
  if (opts.perUser > limit) console.log(`warning: --per-user ${opts.perUser} exceeds MAX_CONNECTIONS_PER_USER (${limit})`);
  opts.workers = Math.max(opts.nodes, Math.min(opts.workers, nSockets));

  let server = null;
  let workers = [];
  let exitCode = 2;
  const hard = setTimeout(() => {
    console.error(`\nFAIL: run exceeded --timeout ${opts.timeoutSec} s; aborting`);
    for (const w of workers) w.child.kill('SIGKILL');
    server?.killNow?.();
    process.exit(2);
  }, opts.timeoutSec * 1000);
  hard.unref();
  process.on('SIGINT', () => {
    for (const w of workers) w.child.kill('SIGKILL');
    server?.killNow?.();
    process.exit(130);
  });

  try {
    server = process.env.SWITCHBOARD_URL
      ? await externalServer()
      : opts.nodes > 1
        ? await spawnCluster(opts.nodes, opts.serverEnv, opts.server)
        : await spawnServer(opts.serverEnv, opts.server);
    const where = server.urls ? `${server.urls.join(' ')} (${opts.nodes} nodes, Redis)` : server.url;
    console.log(
      `server: ${opts.server} ${where}${server.external ? ' (external)' : ` pid ${pidsOf(server).join(' ')}`}; node ${process.version}; ` +
        `${cores} cores; loadavg before ${loadavg()}; workers ${opts.workers}`,
    );
    workers = await startWorkers(opts.workers, opts.scenario === 'persist' ? 'persist-worker.mjs' : 'worker.mjs');
    const run = { fanout, connect: connectScenario, persist }[opts.scenario];
    const { pass, result } = await run(opts, server, workers, runId, cores);
    const logIssues = serverLogIssues(server.stderr);
    if (logIssues.length) {
      console.log('server warnings/errors during the run:');
      for (const [line, n] of logIssues) console.log(`  ${n} x ${line}`);
    }
    if (opts.json) {
      writeFileSync(opts.json, JSON.stringify({ opts, loadavg: loadavg(), result, serverLog: logIssues }, null, 2));
    }
    exitCode = pass ? 0 : 1;
  } catch (err) {
    console.error(`\nERROR: ${err.stack || err.message}`);
    if (server?.stderr) console.error(`server stderr (tail):\n${server.stderr.slice(-4000)}`);
    exitCode = 2;
  } finally {
    await Promise.all(workers.map((w) => w.close()));
    await server?.stop();
  }
  process.exit(exitCode);
}

// ---------------------------------------------------------------------------------------------
// --search: the fan-out rate stepped up until it is no longer sustained

/** Runs run.mjs once more with `args` and returns its JSON result (null if it gave none). */
async function runChild(args) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'bench-run-'));
  const file = path.join(dir, 'result.json');
  const code = await new Promise((resolve) => {
    const child = fork(path.join(HERE, 'run.mjs'), [...args, '--json', file], { stdio: 'inherit' });
    child.on('exit', (c) => resolve(c));
  });
  let out = null;
  try {
    out = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    console.log(`(no result: exit code ${code})`);
  }
  rmSync(dir, { recursive: true, force: true });
  return out;
}

/**
 * Max sustained deliveries/s: fan-out runs at `--rate`, then × `--search-factor` per step, each
 * on a freshly started server for `--search-sec` worth of messages, until a step loses or
 * duplicates a delivery, gets an ack error or a disconnect, or its delivery p99 reaches
 * `--search-p99`; then two steps halve the last interval (geometrically). The answer is the
 * best sustained step's deliveries/s.
 */
async function search(argv, opts) {
  const rest = stripArgs(argv, [
    '--search', '--search-sec', '--search-factor', '--search-p99', '--search-steps',
    '--rate', '--messages', '--json', '--target-deliveries', '--target-p99',
  ]);
  const steps = [];
  const sustained = (r) =>
    r && r.lost === 0 && r.dups === 0 && Object.keys(r.ackErrors).length === 0 &&
    Object.keys(r.disconnects).length === 0 && r.latencyMs.p99 < opts.searchP99;
  const step = async (rate) => {
    const messages = Math.max(1, Math.round(rate * opts.searchSec));
    console.log(`\n######## --search step ${steps.length + 1}: ${rate.toFixed(1)} msg/s, ${messages} messages ########`);
    const out = await runChild([
      ...rest, '--rate', String(rate), '--messages', String(messages),
      '--target-deliveries', '0', '--target-p99', String(opts.searchP99),
    ]);
    const r = out?.result;
    const ok = sustained(r);
    steps.push({
      rate,
      ok,
      deliveriesPerSec: r?.deliveriesPerSec ?? NaN,
      p99: r?.latencyMs?.p99 ?? NaN,
      lost: r?.lost ?? NaN,
      serverPct: r?.cpu?.serverPct ?? NaN,
      checks: r?.checks ?? [],
    });
    return ok;
  };
  let lo = null; // highest sustained rate
  let hi = null; // lowest rate that was not
  let rate = opts.rate;
  for (let i = 0; i < opts.searchSteps; i += 1) {
    if (await step(rate)) {
      lo = rate;
      rate *= opts.searchFactor;
    } else {
      hi = rate;
      break;
    }
  }
  if (lo !== null && hi !== null) {
    for (let i = 0; i < 2; i += 1) {
      const mid = Math.sqrt(lo * hi);
      if (await step(mid)) lo = mid;
      else hi = mid;
    }
  }
  const best = steps.filter((s) => s.ok).reduce((a, s) => (a && a.deliveriesPerSec >= s.deliveriesPerSec ? a : s), null);
  const lines = [
    '',
    `== search: fanout, ${opts.rooms} room(s), ${fmtInt(opts.sockets)} receivers, p99 < ${opts.searchP99} ms and no loss ==`,
    '| msg/s | deliveries/s | delivery p99 ms | lost | server CPU % | sustained |',
    '|---|---|---|---|---|---|',
    ...steps.map((s) => `| ${s.rate.toFixed(1)} | ${fmtInt(s.deliveriesPerSec)} | ${fmtMs(s.p99)} | ${s.lost} | ${fmtPct(s.serverPct)} | ${s.ok ? 'yes' : 'no'} |`),
    best
      ? `max sustained ${fmtInt(best.deliveriesPerSec)} deliveries/s (${best.rate.toFixed(1)} msg/s)` +
        (hi === null ? `; every step was sustained: raise --search-steps` : '')
      : `no step was sustained: lower --rate`,
  ];
  console.log(lines.join('\n'));
  const result = {
    scenario: 'search',
    maxDeliveriesPerSec: best?.deliveriesPerSec ?? 0,
    maxRate: best?.rate ?? 0,
    bounded: hi !== null,
    steps,
    checks: [{ ok: best !== null && hi !== null, text: 'found the highest sustained rate' }],
    cpu: { otherPct: NaN },
  };
  if (opts.json) writeFileSync(opts.json, JSON.stringify({ opts, result }, null, 2));
  process.exit(best ? 0 : 1);
}

// ---------------------------------------------------------------------------------------------
// --compare: the same scenario against Switchboard and both references, then the ratios

/** What each scenario's comparison shows: [label, path into the JSON result, unit, higher is better]. */
const COMPARE_METRICS = {
  fanout: [
    ['deliveries/s', (r) => r.deliveriesPerSec, '', true],
    ['delivery p50 ms', (r) => r.latencyMs.p50, '', false],
    ['delivery p99 ms', (r) => r.latencyMs.p99, '', false],
    ['ack p99 ms', (r) => r.ackMs.p99, '', false],
    ['server CPU % of a core', (r) => r.cpu.serverPct, '', false],
    ['server CPU us/delivery', (r) => (1000 * r.cpu.serverCpuMs) / Math.max(1, r.received), '', false],
    ['server peak RSS MB', (r) => r.cpu.serverPeakRssKb / 1024, '', false],
  ],
  connect: [
    ['sockets/s', (r) => (r.ok * 1000) / r.elapsedMs, '', true],
    ['ready p99 ms', (r) => r.times.p99, '', false],
    ['KiB per connection', (r) => r.perConnKb, '', false],
    ['server CPU ms/connection', (r) => r.cpu.serverCpuMs / Math.max(1, r.ok), '', false],
  ],
  search: [
    ['max sustained deliveries/s', (r) => r.maxDeliveriesPerSec, '', true],
    ['at msg/s', (r) => r.maxRate, '', true],
  ],
  persist: [
    ['persisted msg/s', (r) => r.messagesPerSec, '', true],
    ['ack p50 ms', (r) => r.ackMs.p50, '', false],
    ['ack p99 ms', (r) => r.ackMs.p99, '', false],
    ['delivery p99 ms', (r) => r.latencyMs.p99, '', false],
    ['server CPU % of a core', (r) => r.cpu.serverPct, '', false],
    ['server CPU us/message', (r) => (1000 * r.cpu.serverCpuMs) / Math.max(1, r.acked), '', false],
  ],
};

const BOOLEAN_FLAGS = ['--compare', '--search', '--no-room', '--help'];

/** `argv` without the flags in `drop` (and their values). */
function stripArgs(argv, drop) {
  const out = [];
  for (let i = 0; i < argv.length; i += 1) {
    const a = argv[i];
    const name = a.split('=')[0];
    if (drop.includes(name)) {
      if (!a.includes('=') && !BOOLEAN_FLAGS.includes(name)) i += 1;
      continue;
    }
    out.push(a);
  }
  return out;
}

async function compare(argv, opts) {
  const rest = stripArgs(argv, ['--compare', '--server', '--json']);
  const runs = {};
  let failed = false;
  for (const kind of opts.nodes > 1 ? CLUSTER_KINDS : SERVER_KINDS) {
    console.log(`\n######## --server ${kind} ########`);
    const out = await runChild([...rest, '--server', kind]);
    if (out) runs[kind] = out;
    else failed = true;
  }
  const metrics = COMPARE_METRICS[opts.search ? 'search' : opts.scenario] ?? [];
  const val = (kind, get) => {
    try {
      return runs[kind] ? get(runs[kind].result) : NaN;
    } catch {
      return NaN;
    }
  };
  const fmt = (v) => (Number.isFinite(v) ? (Math.abs(v) >= 100 ? fmtInt(v) : v.toFixed(2)) : 'n/a');
  const ratio = (a, b) => (Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? `${(a / b).toFixed(2)}x` : 'n/a');
  const lines = [
    '',
    `== compare: ${opts.scenario}${opts.nodes > 1 ? ` on ${opts.nodes} nodes behind Redis` : ''}, ${new Date().toISOString()}, ${os.cpus().length} cores (${os.cpus()[0]?.model ?? '?'}), node ${process.version} ==`,
    '| metric | switchboard | socketioxide | node | switchboard / socketioxide | switchboard / node |',
    '|---|---|---|---|---|---|',
  ];
  for (const [label, get] of metrics) {
    const [sb, sx, nd] = SERVER_KINDS.map((k) => val(k, get));
    lines.push(`| ${label} | ${fmt(sb)} | ${fmt(sx)} | ${fmt(nd)} | ${ratio(sb, sx)} | ${ratio(sb, nd)} |`);
  }
  const other = SERVER_KINDS.map((k) => fmt(val(k, (r) => r.cpu.otherPct))).join(' / ');
  lines.push(`other processes' CPU during each window (% of one core, switchboard / socketioxide / node): ${other}`);
  for (const kind of SERVER_KINDS) {
    const checks = runs[kind]?.result?.checks;
    if (checks) lines.push(`${kind}: ${checks.filter((c) => !c.ok).map((c) => `FAIL ${c.text}`).join('; ') || 'all checks ok'}`);
  }
  console.log(lines.join('\n'));
  if (opts.json) writeFileSync(opts.json, JSON.stringify({ opts, runs, date: new Date().toISOString() }, null, 2));
  process.exit(failed ? 2 : 0);
}

/** WARN/ERROR lines of the server log, grouped (timestamps and ids stripped), most frequent first. */
function serverLogIssues(stderr) {
  const counts = new Map();
  for (const raw of (stderr || '').split('\n')) {
    // eslint-disable-next-line no-control-regex
    const line = raw.replace(/\x1b\[[0-9;]*m/g, '');
    if (!/\b(WARN|ERROR)\b/.test(line)) continue;
    const key = line
      .replace(/^\S*\d{4}-\d\d-\d\dT\S+\s*/, '')
      .replace(/[0-9a-f]{8}-[0-9a-f-]{27,}/gi, '<id>')
      .replace(/\b[A-Za-z0-9_-]{16,}\b/g, '<sid>')
      .slice(0, 240);
    counts.set(key, (counts.get(key) || 0) + 1);
  }
  return [...counts.entries()].sort((a, b) => b[1] - a[1]).slice(0, 8);
}

main();
