// `--nodes N`: the server under test as N nodes behind one Redis, as the two-node target
// measures it (Switchboard on PostgreSQL, the Node reference with @socket.io/redis-adapter).
// Redis and PostgreSQL come from client-tests/lib/infra.mjs: throw-away instances, or the ones
// REDIS_URL / DATABASE_URL (postgres://…) name — `--search` and `--compare` start them once in
// the parent and hand them to every run that way, each run still getting its own key prefix and
// database.
//
// The result looks like one server to run.mjs: `url` is node 0 (REST and the senders), `urls`
// every node (receiver worker i connects to node i % N), `pids` every node (CPU and RSS are
// their sums); Redis's and PostgreSQL's CPU count as "other processes".
import { freshDatabase, startPostgres, startRedis } from '../../client-tests/lib/infra.mjs';
import { spawnServer } from './server.mjs';

/** Kinds of server that can run as a cluster: the socketioxide reference has no Redis adapter. */
export const CLUSTER_KINDS = ['switchboard', 'node'];

/**
 * Starts Redis (and PostgreSQL, for Switchboard) unless REDIS_URL / DATABASE_URL name them, and
 * exports their URLs for child runs; returns `stop()`.
 */
export async function shareInfra() {
  const redis = process.env.REDIS_URL ? null : await startRedis();
  if (redis) process.env.REDIS_URL = redis.url;
  const pg = process.env.DATABASE_URL?.startsWith('postgres') ? null : await startPostgres({ database: null });
  if (pg) process.env.DATABASE_URL = pg.adminUrl;
  return {
    stop: async () => {
      await redis?.stop().catch(() => {});
      await pg?.stop().catch(() => {});
    },
  };
}

/** Starts `n` nodes of `kind` sharing a fresh key prefix (and database); the composite server. */
export async function spawnCluster(n, envOverrides, kind) {
  if (!CLUSTER_KINDS.includes(kind)) {
    throw new Error(`--nodes ${n} runs ${CLUSTER_KINDS.join(' or ')}: the ${kind} reference has no Redis adapter`);
  }
  const redis = await startRedis();
  const db = kind === 'switchboard' && !envOverrides.DATABASE_URL ? await freshDatabase() : null;
  const env = {
    REDIS_URL: redis.url,
    REDIS_KEY_PREFIX: redis.keyPrefix,
    ...(db ? { DATABASE_URL: db.url } : {}),
    ...envOverrides,
  };
  const nodes = [];
  const stop = async () => {
    const exits = await Promise.all(nodes.map((x) => x.stop()));
    await redis.stop().catch(() => {});
    await db?.drop().catch(() => {});
    return exits.find(Boolean) ?? null;
  };
  try {
    // One at a time: the first runs the migrations alone.
    for (let i = 0; i < n; i += 1) nodes.push(await spawnServer(env, kind));
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    url: nodes[0].url,
    urls: nodes.map((x) => x.url),
    get pid() {
      return nodes[0].pid;
    },
    get pids() {
      return nodes.map((x) => x.pid);
    },
    kind,
    external: false,
    env,
    token: nodes[0].token,
    get stderr() {
      return nodes.map((x) => x.stderr).join('\n');
    },
    get exited() {
      return nodes.map((x) => x.exited).find(Boolean) ?? null;
    },
    stop,
    killNow() {
      for (const x of nodes) x.killNow();
    },
  };
}
