// Graceful shutdown: on SIGTERM the server closes every socket's transport (so clients
// reconnect on their own, to another node behind a balancer), and exits 0 promptly.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { once } from '../lib/client.mjs';
import { makeUser } from '../lib/harness.mjs';
import { startServer } from '../lib/server.mjs';

describe('graceful shutdown', () => {
  it('closes sockets with a reconnectable reason and exits 0', async () => {
    const server = await startServer();
    try {
      const user = await makeUser(server, 'bye');
      const [{ socket: ws }, { socket: poll }] = [
        await user.connect(),
        await user.connect({ transports: ['polling'] }),
      ];
      const reasons = Promise.all([once(ws, 'disconnect', 8000), once(poll, 'disconnect', 8000)]);
      const started = Date.now();
      const exit = await server.stop();
      // "transport close"/"transport error" make socket.io-client reconnect by itself;
      // "io server disconnect" would leave the client disconnected for good.
      for (const reason of await reasons) {
        assert.notEqual(reason, 'io server disconnect', 'clients were told not to reconnect');
      }
      assert.equal(exit.code, 0, `server exited with ${JSON.stringify(exit)}`);
      assert.ok(Date.now() - started < 5000, 'shutdown took too long');
    } finally {
      await server.stop();
    }
  });
});
