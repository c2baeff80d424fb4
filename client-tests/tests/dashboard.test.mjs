// The Grafana dashboard (deploy/grafana/switchboard.json) only queries metrics the server really
// exposes: a server with Redis (so the emitter's metric exists) gets traffic of every kind the
// dashboard shows, then every `switchboard_*` name in the dashboard's queries must appear in
// its /metrics. A renamed metric breaks this test instead of silently emptying a panel.
// The YAML and compose wiring are checked by scripts/check-deploy.py.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { createClient } from 'redis';
import { ackError, httpStatus } from '../lib/assertions.mjs';
import { createGroup, sendSocket } from '../lib/chat.mjs';
import { closeAll, connectError, emitAck, eventually } from '../lib/client.mjs';
import { makeUsers } from '../lib/harness.mjs';
import { startRedis } from '../lib/infra.mjs';
import { startServer } from '../lib/server.mjs';

const DASHBOARD = new URL('../../deploy/grafana/switchboard.json', import.meta.url);

/** Every query string of the dashboard: panel targets and template variables. */
function queries(dashboard) {
  const out = [];
  for (const panel of dashboard.panels) for (const t of panel.targets ?? []) out.push(t.expr);
  for (const v of dashboard.templating?.list ?? []) out.push(v.definition ?? v.query?.query ?? v.query);
  return out.filter((q) => typeof q === 'string');
}

/** Sample names (with `_bucket`/`_sum`/`_count`) in a Prometheus text exposition. */
function exposed(text) {
  const names = new Set();
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(line);
    if (m && !line.startsWith('#')) names.add(m[1]);
  }
  return names;
}

describe('grafana dashboard', () => {
  const ctx = { server: null, redis: null, client: null };
  before(async () => {
    ctx.redis = await startRedis();
    ctx.server = await startServer({ REDIS_URL: ctx.redis.url, REDIS_KEY_PREFIX: ctx.redis.keyPrefix });
    ctx.client = createClient({ url: ctx.redis.url });
    await ctx.client.connect();
  });
  after(async () => {
    closeAll();
    await ctx.client?.quit().catch(() => {});
    await ctx.server?.stop();
    await ctx.redis?.stop();
  });

  it('uses only metric names that /metrics exposes', async () => {
    const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8'));
    const used = new Set(queries(dashboard).flatMap((q) => q.match(/\bswitchboard_[a-z0-9_]+/g) ?? []));
    assert.ok(used.size >= 8, `the dashboard queries only ${[...used]}`);

    // Traffic: a refused connect, sockets, an event with ack, an ack error, HTTP calls, a
    // disconnect, and an emitter frame.
    const server = ctx.server;
    await connectError(server);
    const [alice, bob] = await makeUsers(server, 2, 'dash');
    const room = await createGroup(alice, [bob], 'dashboard');
    const { socket } = await alice.connect();
    const other = (await bob.connect()).socket;
    await sendSocket(socket, room.id, 'hello');
    ackError(await emitAck(socket, 'no-such-event', {}), 'NOT_FOUND');
    httpStatus(await alice.api('GET', '/chat/rooms'), 200);
    other.close();
    await ctx.client.publish('socket.io#/realtime#', Buffer.from([0xc1]));

    await eventually(async () => {
      const names = exposed((await server.api('GET', '/metrics')).body);
      const missing = [...used].filter((n) => !names.has(n));
      assert.deepEqual(missing, [], `dashboard metrics missing from /metrics`);
      return true;
    });
  });
});
