// Several Switchboard nodes sharing one Redis (rooms, presence, limits) and one PostgreSQL
// database, started for a test block. The returned object looks like a single server (`url`,
// `token`, `api`, `service`, `stop`), with REST calls going round-robin over the live nodes and
// sockets spread over them by `createSocket` (lib/client.mjs), plus `nodes`, `kill(i)`, `redis`.
import { freshDatabase, startRedis } from './infra.mjs';
import { startServer } from './server.mjs';

/** `SWITCHBOARD_NODES` as a number of nodes (≥ 1), or 0 when the suite runs on a single plain node. */
export function clusterSize() {
  const raw = process.env.SWITCHBOARD_NODES;
  if (!raw) return 0;
  const n = Number.parseInt(raw, 10);
  if (!Number.isInteger(n) || n < 1) throw new Error(`SWITCHBOARD_NODES must be a positive integer, got '${raw}'`);
  return n;
}

/** True when the suite runs against clusters (`SWITCHBOARD_NODES` set). */
export const CLUSTER_MODE = clusterSize() > 0;

/** Node heartbeat TTL used by test clusters (a SIGKILLed node's users go offline after this). */
export const NODE_TTL_MS = 2000;

/**
 * `startServer` with up to CLUSTER_START_RETRIES (default 0) more attempts when a node dies
 * before it is healthy. Off by default so that a node failing to start is a failure; turn it on
 * to look at the tests behind a known start-up problem. Each retried failure is printed.
 */
async function startNode(env, label) {
  const retries = Number.parseInt(process.env.CLUSTER_START_RETRIES || '0', 10) || 0;
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await startServer(env, { label });
    } catch (err) {
      if (attempt >= retries) throw err;
      console.error(`# ${label} failed to start (attempt ${attempt + 1}, retrying): ${err.message.split('\n').slice(0, 4).join(' | ')}`);
    }
  }
}

/**
 * Starts Redis (its own unless REDIS_URL is set; then a unique key prefix), a fresh database in
 * this test process's PostgreSQL, and `nodes` servers with `env` overrides. The first node starts
 * alone (it runs the migrations), the others in parallel once it is healthy.
 */
export async function startCluster({ nodes = 2, env = {} } = {}) {
  const redis = await startRedis();
  let db = null;
  const servers = [];
  const stopAll = async () => {
    await Promise.allSettled(servers.map((s) => s.stop()));
    await redis.stop().catch(() => {});
    if (db) await db.drop().catch(() => {});
  };
  try {
    db = await freshDatabase();
    const nodeEnv = {
      NODE_TTL_MS: String(NODE_TTL_MS),
      ...env,
      REDIS_URL: redis.url,
      REDIS_KEY_PREFIX: redis.keyPrefix,
      DATABASE_URL: db.url,
    };
    servers.push(await startNode(nodeEnv, 'node0'));
    const rest = await Promise.allSettled(
      Array.from({ length: nodes - 1 }, (_, i) => startNode(nodeEnv, `node${i + 1}`)),
    );
    for (const r of rest) if (r.status === 'fulfilled') servers.push(r.value);
    const failed = rest.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
  } catch (err) {
    await stopAll();
    throw err;
  }

  // A node that dies on its own is a server failure: say so, with its last words.
  let stopping = false;
  const expectedExit = new Set();
  servers.forEach((server, i) => {
    server.done.then((how) => {
      if (stopping || expectedExit.has(i)) return;
      const tail = server.stderr.split('\n').slice(-40).join('\n');
      console.error(`# cluster node${i} exited unexpectedly (${JSON.stringify(how)}); last output:\n${tail}`);
    });
  });

  const alive = () => servers.filter((s) => !s.exited);
  let turn = 0;
  /** The next live node, round-robin. */
  const next = () => {
    const live = alive();
    if (live.length === 0) throw new Error('every node of the cluster is down');
    const node = live[turn % live.length];
    turn += 1;
    return node;
  };

  let stopped = null;
  return {
    /** The individual servers (each a startServer() object with its own `url`, `api`, ...). */
    nodes: servers,
    redis,
    databaseUrl: db.url,
    get url() {
      return (alive()[0] ?? servers[0]).url;
    },
    get port() {
      return (alive()[0] ?? servers[0]).port;
    },
    env: servers[0].env,
    token: servers[0].token,
    /** REST call on the next live node. */
    api: (...args) => next().api(...args),
    /** Service API call on the next live node. */
    service: (...args) => next().service(...args),
    /** The live nodes. */
    alive,
    /** SIGKILLs node `i` (no graceful shutdown, no goodbye to Redis); resolves once it is gone. */
    kill: (i, signal = 'SIGKILL') => {
      expectedExit.add(i);
      return servers[i].kill(signal);
    },
    /** Gracefully stops node `i` (SIGTERM, like a deploy); resolves its `{ code, signal }`. */
    stopNode: (i) => {
      expectedExit.add(i);
      return servers[i].stop();
    },
    /** Stops every node, Redis and the database (idempotent). */
    stop: () => {
      stopping = true;
      stopped ??= stopAll();
      return stopped;
    },
    get stderr() {
      return servers.map((s, i) => `--- node${i} ---\n${s.stderr}`).join('\n');
    },
  };
}
