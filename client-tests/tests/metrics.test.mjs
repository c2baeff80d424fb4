// /metrics label cardinality: nothing a client sends — an invented event name, an invented HTTP
// method, a random path — becomes a label value, so clients cannot grow /metrics without bound.
// Also the 405 and 413 answers `fetch` clients see (contract §7 error shape).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ackError, httpError } from '../lib/assertions.mjs';
import { emitAck, uid } from '../lib/client.mjs';
import { makeUser, nodesOf, useServer } from '../lib/harness.mjs';

const metricsOf = async (server) => (await server.api('GET', '/metrics')).body;

describe('metrics labels', () => {
  const ctx = useServer();

  it('unknown socket events and invented methods or paths add no series', async () => {
    const user = await makeUser(ctx.server, 'metrics');
    const { socket } = await user.connect();
    const invented = [];
    for (let i = 0; i < 20; i += 1) {
      const event = `made-up-${uid('ev')}`;
      ackError(await emitAck(socket, event, {}), 'NOT_FOUND');
      const method = `RND${uid('m').replace(/[^a-z0-9]/gi, '').toUpperCase()}`;
      const path = `/random-${uid('p')}`;
      await ctx.server.api(method, path);
      await user.api(method, '/chat/rooms');
      invented.push(event, method, path);
    }
    socket.close();

    for (const node of nodesOf(ctx.server)) {
      const text = await metricsOf(node);
      for (const token of invented) assert.ok(!text.includes(token), `${token} became a metric label`);
      assert.match(text, /method="other"/);
    }
    const text = (await Promise.all(nodesOf(ctx.server).map(metricsOf))).join('\n');
    assert.match(text, /switchboard_events_in_total\{event="unknown"\}/);
  });

  it('a wrong method is 405 METHOD_NOT_ALLOWED with Allow', async () => {
    const user = await makeUser(ctx.server, 'm405');
    const res = await user.api('DELETE', '/chat/rooms');
    httpError(res, 405, 'METHOD_NOT_ALLOWED');
    assert.equal(res.headers.get('allow')?.replace(/\s/g, ''), 'GET,HEAD,POST');
  });

  it('a 5 MB body gets 413 PAYLOAD_TOO_LARGE, not a broken connection', async () => {
    const user = await makeUser(ctx.server, 'm413');
    const res = await user.api('POST', '/chat/rooms', { rawBody: ' '.repeat(5 * 1024 * 1024) });
    httpError(res, 413, 'PAYLOAD_TOO_LARGE');
  });
});
