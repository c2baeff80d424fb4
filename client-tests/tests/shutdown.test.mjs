// Graceful shutdown: on SIGTERM the server closes every socket's transport (so clients
// reconnect on their own, to another node behind a balancer), and exits 0 promptly. In cluster
// mode (SWITCHBOARD_NODES) the node stopped is one of a cluster, whose other nodes carry on.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { httpStatus } from '../lib/assertions.mjs';
import { connect, once } from '../lib/client.mjs';
import { CLUSTER_MODE, clusterSize, startCluster } from '../lib/cluster.mjs';
import { makeUser } from '../lib/harness.mjs';
import { startServer } from '../lib/server.mjs';

describe('graceful shutdown', () => {
  it('closes sockets with a reconnectable reason and exits 0', async () => {
    const cluster = CLUSTER_MODE ? await startCluster({ nodes: clusterSize() }) : null;
    const server = cluster ? cluster.nodes[0] : await startServer();
    try {
      const user = await makeUser(server, 'bye');
      const [{ socket: ws }, { socket: poll }] = [
        await user.connect(),
        await user.connect({ transports: ['polling'] }),
      ];
      const reasons = Promise.all([once(ws, 'disconnect', 8000), once(poll, 'disconnect', 8000)]);
      const started = Date.now();
      const exit = await (cluster ? cluster.stopNode(0) : server.stop());
      // "transport close"/"transport error" make socket.io-client reconnect by itself;
      // "io server disconnect" would leave the client disconnected for good.
      for (const reason of await reasons) {
        assert.notEqual(reason, 'io server disconnect', 'clients were told not to reconnect');
      }
      assert.equal(exit.code, 0, `server exited with ${JSON.stringify(exit)}`);
      assert.ok(Date.now() - started < 5000, 'shutdown took too long');

      // the rest of the cluster carries on, and the user can come back on another node
      for (const node of cluster?.nodes.slice(1) ?? []) {
        httpStatus(await node.api('GET', '/health'), 200);
        const { socket, ready } = await connect(node, user.token);
        assert.equal(ready.userId, user.id);
        socket.close();
      }
    } finally {
      await server.stop();
      await cluster?.stop();
    }
  });
});
