// Per-describe server lifecycle and test users: `useServer()` starts a fresh server before the
// block's tests and stops it (closing every socket) after them; `makeUser()` gives a user with a
// signed token, a connect() shortcut and a REST shortcut rooted at /api/v1/realtime.
//
// With SWITCHBOARD_NODES=N set, `useServer()` starts an N-node cluster instead (lib/cluster.mjs:
// shared Redis + PostgreSQL), whose REST calls go round-robin over the nodes and whose sockets are
// spread over them, so the same tests check that clients on different nodes see one server.
import { after, before } from 'node:test';
import { closeAll, connect, uid } from './client.mjs';
import { CLUSTER_MODE, clusterSize, startCluster } from './cluster.mjs';
import { startServer } from './server.mjs';

export { CLUSTER_MODE };

/** The servers whose counts make up the whole (every node of a cluster, or the one server). */
export const nodesOf = (server) => server.nodes ?? [server];

export const REST = '/api/v1/realtime';

/** Call inside a `describe`; `ctx.server` is set once the block's `before` hook ran. */
export function useServer(envOverrides = {}) {
  const ctx = { server: null };
  before(async () => {
    ctx.server = CLUSTER_MODE
      ? await startCluster({ nodes: clusterSize(), env: envOverrides })
      : await startServer(envOverrides);
  });
  after(async () => {
    closeAll();
    await ctx.server?.stop();
  });
  return ctx;
}

/**
 * A fresh user. Its profile is upserted through the service API first (best effort: the server
 * also creates unknown users lazily, so a failure here is not a test failure).
 */
export async function makeUser(server, prefix = 'user') {
  const id = uid(prefix);
  const name = `${prefix} ${id.slice(-6)}`;
  try {
    await server.service('PUT', `/users/${encodeURIComponent(id)}`, { name });
  } catch {
    // ignored on purpose, see above
  }
  const token = server.token(id, { name });
  return {
    id,
    name,
    token,
    /** Connects a socket for this user: `{ socket, ready }`. */
    connect: (opts) => connect(server, token, opts),
    /** REST call under /api/v1/realtime with this user's token. */
    api: (method, path, opts = {}) => server.api(method, REST + path, { token, ...opts }),
  };
}

/** Several fresh users at once. */
export function makeUsers(server, n, prefix = 'user') {
  return Promise.all(Array.from({ length: n }, (_, i) => makeUser(server, `${prefix}${i}`)));
}
