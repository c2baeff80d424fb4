// The helper against a fake socket: what it sends at each connect, which events it passes on,
// which it drops as duplicates, where it stands after a replay (complete or cut short), epochs,
// storage, and the reset callback.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { describe, it } from 'node:test';
import { connect, memoryStorage, parseCursor, wrap } from '../dist/esm/index.js';
import { FakeSocket, ready } from './fake-socket.mjs';

const ALL = ['chat', 'notifications', 'feed'];

/** A wrapped fake socket that has done its first connect and got `session:ready` at `cursor`. */
async function connected(cursor = 'ep1:10', options = {}) {
  const socket = new FakeSocket();
  const client = wrap(socket, { token: 't', ...options });
  const auth = await socket.handshake();
  socket.deliver('session:ready', ready({ cursor }));
  return { socket, client, auth };
}

/** Records what a helper listener of `event` got. */
function recordOn(client, event) {
  const got = [];
  client.on(event, (...args) => got.push(args));
  return got;
}

describe('parseCursor', () => {
  it('reads "<epoch>:<id>" and refuses anything else', () => {
    assert.deepEqual(parseCursor('k3f9q1:1234'), { epoch: 'k3f9q1', id: 1234 });
    assert.deepEqual(parseCursor('a:b:7'), { epoch: 'a:b', id: 7 });
    for (const bad of [null, 7, '', ':1', 'ep:', 'ep:-1', 'ep:1.5', 'ep:1e3', 'ep:99999999999999999999', 'nocolon']) {
      assert.equal(parseCursor(bad), null, JSON.stringify(bad));
    }
  });
});

describe('connect handshake', () => {
  it('a first connect sends the token but no cursor, keeps the socket\'s own auth fields', async () => {
    const socket = new FakeSocket({ token: 'old', app: 'x' });
    wrap(socket, { token: 'new', feed: 'all', auth: { device: 'd1' } });
    assert.deepEqual(await socket.handshake(), { token: 'new', app: 'x', device: 'd1', feed: 'all' });
  });

  it('getToken is asked before every connect and wins over token', async () => {
    const socket = new FakeSocket({});
    let n = 0;
    wrap(socket, { token: 'static', getToken: async () => `fresh-${(n += 1)}` });
    assert.equal((await socket.handshake()).token, 'fresh-1');
    assert.equal((await socket.handshake()).token, 'fresh-2');
  });

  it('without a cursor, session:ready sets the position and reports a reset of every kind', async () => {
    const socket = new FakeSocket();
    const resets = [];
    const client = wrap(socket, { token: 't', onReset: (kinds) => resets.push(kinds) });
    assert.equal(client.recovered, null);
    await socket.handshake();
    socket.deliver('session:ready', ready({ cursor: 'ep1:10' }));
    assert.equal(client.lastCursor, 'ep1:10');
    assert.equal(client.recovered, false);
    assert.deepEqual(client.reset, ALL);
    assert.deepEqual(resets, [ALL]);
    assert.equal((await socket.handshake()).cursor, 'ep1:10');
  });

  it('session:ready reaches helper listeners too', async () => {
    const socket = new FakeSocket();
    const client = wrap(socket, { token: 't' });
    const got = recordOn(client, 'session:ready');
    const next = client.nextSession();
    socket.deliver('session:ready', ready({ cursor: 'ep1:3' }));
    assert.equal(got.length, 1);
    assert.equal(got[0][0].userId, 'u1');
    assert.equal((await next).cursor, 'ep1:3');
  });
});

describe('live events', () => {
  it('journaled events reach listeners as (payload, cursor) and move the cursor; ephemeral ones pass as they are', async () => {
    const { socket, client } = await connected('ep1:10');
    const messages = recordOn(client, 'chat:new_message');
    const typing = recordOn(client, 'chat:user_typing');
    socket.deliver('chat:new_message', { roomId: 'r', message: { seq: 1 } }, 'ep1:11');
    socket.deliver('chat:user_typing', { roomId: 'r', isTyping: true });
    socket.deliver('chat:new_message', { roomId: 'r', message: { seq: 2 } }, 'ep1:15');
    assert.deepEqual(messages.map((a) => a[1]), ['ep1:11', 'ep1:15']);
    assert.deepEqual(messages.map((a) => a[0].message.seq), [1, 2]);
    assert.deepEqual(typing, [[{ roomId: 'r', isTyping: true }]]);
    assert.equal(client.lastCursor, 'ep1:15');
    assert.equal((await socket.handshake()).cursor, 'ep1:15');
  });

  it('an id at or below the last one seen is dropped and counted', async () => {
    const { socket, client } = await connected('ep1:10');
    const got = recordOn(client, 'notification:new');
    for (const c of ['ep1:11', 'ep1:12', 'ep1:12', 'ep1:11', 'ep1:9', 'ep1:13']) socket.deliver('notification:new', { c }, c);
    assert.deepEqual(got.map((a) => a[1]), ['ep1:11', 'ep1:12', 'ep1:13']);
    assert.equal(client.duplicates, 3);
    assert.equal(client.lastCursor, 'ep1:13');
  });

  it('a single string argument that looks like a cursor is payload, not a cursor', async () => {
    const { socket, client } = await connected('ep1:10');
    const got = recordOn(client, 'custom');
    socket.deliver('custom', 'ep1:3');
    socket.deliver('custom', 'ep1:3');
    assert.equal(got.length, 2);
    assert.equal(client.lastCursor, 'ep1:10');
  });

  it('once, off and off-all', async () => {
    const { socket, client } = await connected('ep1:1');
    const seen = [];
    const a = (p) => seen.push(`a${p}`);
    client.once('x', (p) => seen.push(`once${p}`));
    client.on('x', a);
    client.on('y', (p) => seen.push(`y${p}`));
    socket.deliver('x', 1);
    socket.deliver('x', 2);
    client.off('x', a);
    socket.deliver('x', 3);
    client.off('y');
    socket.deliver('y', 4);
    assert.deepEqual(seen, ['once1', 'a1', 'a2']);
  });

  it('detach stops reading; close also disconnects', async () => {
    const { socket, client } = await connected('ep1:1');
    const got = recordOn(client, 'x');
    client.close();
    socket.deliver('x', {}, 'ep1:2');
    assert.equal(got.length, 0);
    assert.equal(socket.disconnected, true);
  });
});

describe('resume', () => {
  it('a recovered reconnect: the replayed events pass once, then the position is the head the server named', async () => {
    const { socket, client } = await connected('ep1:10');
    const got = recordOn(client, 'chat:new_message');
    socket.deliver('chat:new_message', { n: 11 }, 'ep1:11');
    socket.drop();
    const auth = await socket.handshake();
    assert.equal(auth.cursor, 'ep1:11');
    const resets = [];
    client.onReset((k) => resets.push(k));
    socket.deliver('session:ready', ready({ cursor: 'ep1:30', recovered: true, replayed: 3 }));
    assert.equal(client.recovered, true);
    assert.deepEqual(client.reset, []);
    assert.equal(client.lastCursor, 'ep1:11', 'the position moves to the head only once the replay is in');
    socket.deliver('chat:new_message', { n: 11 }, 'ep1:11'); // a duplicate counts toward the replay
    socket.deliver('chat:new_message', { n: 14 }, 'ep1:14');
    assert.equal(client.lastCursor, 'ep1:14');
    socket.deliver('chat:new_message', { n: 20 }, 'ep1:20');
    assert.equal(client.lastCursor, 'ep1:30');
    socket.deliver('chat:new_message', { n: 31 }, 'ep1:31');
    assert.deepEqual(got.map((a) => a[0].n), [11, 14, 20, 31]);
    assert.deepEqual(resets, []);
    assert.equal(client.duplicates, 1);
  });

  it('a replay cut short by a disconnect resumes from its last event, not from the head', async () => {
    const { socket, client } = await connected('ep1:10');
    socket.drop();
    await socket.handshake();
    socket.deliver('session:ready', ready({ cursor: 'ep1:50', recovered: true, replayed: 3 }));
    socket.deliver('chat:message_updated', {}, 'ep1:12');
    socket.drop();
    assert.equal((await socket.handshake()).cursor, 'ep1:12');
    socket.deliver('session:ready', ready({ cursor: 'ep1:50', recovered: true, replayed: 2 }));
    socket.deliver('chat:message_updated', {}, 'ep1:20');
    socket.deliver('chat:message_updated', {}, 'ep1:40');
    assert.equal(client.lastCursor, 'ep1:50');
  });

  it('a reset lists the kinds to refetch; a new epoch restarts the id comparison', async () => {
    const { socket, client } = await connected('old:500');
    const resets = [];
    client.onReset((kinds, session) => resets.push([kinds, session.cursor]));
    socket.drop();
    assert.equal((await socket.handshake()).cursor, 'old:500');
    socket.deliver('session:ready', ready({ cursor: 'new:7', recovered: false, reset: ['feed', 'chat', 'bogus'] }));
    assert.deepEqual(resets, [[['chat', 'feed'], 'new:7']]);
    assert.equal(client.recovered, false);
    assert.equal(client.lastCursor, 'new:7');
    const got = recordOn(client, 'feed:new_post');
    socket.deliver('feed:new_post', {}, 'new:8');
    assert.equal(got.length, 1, 'id 8 of the new epoch is not a duplicate of id 500 of the old one');
    assert.equal(client.lastCursor, 'new:8');
  });

  it('a session:ready without a cursor (an older server) changes nothing', async () => {
    const { socket, client } = await connected('ep1:10');
    socket.drop();
    await socket.handshake();
    socket.deliver('session:ready', { userId: 'u1', rooms: [] });
    assert.equal(client.lastCursor, 'ep1:10');
    assert.equal(client.recovered, false);
  });
});

describe('storage', () => {
  it('is read once before the first connect and its cursor is sent', async () => {
    let reads = 0;
    const inner = memoryStorage('ep1:77');
    const storage = { get: () => ((reads += 1), inner.get()), set: (c) => inner.set(c) };
    const socket = new FakeSocket();
    const client = wrap(socket, { token: 't', storage });
    assert.equal((await socket.handshake()).cursor, 'ep1:77');
    assert.equal((await socket.handshake()).cursor, 'ep1:77');
    assert.equal(reads, 1);
    assert.equal(client.lastCursor, 'ep1:77');
  });

  it('an unreadable or broken stored value is ignored', async () => {
    const errors = [];
    for (const storage of [memoryStorage('garbage'), { get: () => Promise.reject(new Error('disk')), set: async () => {} }]) {
      const socket = new FakeSocket();
      wrap(socket, { token: 't', storage, onStorageError: (e) => errors.push(e.message) });
      const auth = await socket.handshake();
      assert.equal(auth.token, 't');
      assert.equal('cursor' in auth, false);
    }
    assert.deepEqual(errors, ['disk']);
  });

  it('a burst of events costs few writes and the last write is the last cursor', async () => {
    const writes = [];
    let release;
    const storage = {
      get: async () => null,
      set: (c) => {
        writes.push(c);
        return new Promise((r) => {
          release = r;
        });
      },
    };
    const { socket, client } = await connected('ep1:0', { storage });
    for (let i = 1; i <= 100; i += 1) socket.deliver('chat:new_message', {}, `ep1:${i}`);
    while (release) {
      const r = release;
      release = null;
      r();
      await new Promise((done) => setImmediate(done));
    }
    assert.ok(writes.length <= 3, `writes: ${writes.length}`);
    assert.equal(writes.at(-1), 'ep1:100');
    assert.equal(client.lastCursor, 'ep1:100');
  });

  it('a failing write is reported and does not stop the helper', async () => {
    const errors = [];
    const storage = { get: async () => null, set: () => Promise.reject(new Error('full')) };
    const { socket, client } = await connected('ep1:0', { storage, onStorageError: (e) => errors.push(e.message) });
    socket.deliver('x', {}, 'ep1:1');
    await new Promise((done) => setImmediate(done));
    assert.ok(errors.includes('full'));
    assert.equal(client.lastCursor, 'ep1:1');
  });
});

describe('connect()', () => {
  it('opens /realtime on the given server with the helper\'s auth, and honours autoConnect: false', async () => {
    const client = connect('http://127.0.0.1:9/', { token: 'tok', feed: 'following', autoConnect: false });
    assert.equal(client.socket.nsp, '/realtime');
    assert.equal(client.socket.connected, false);
    assert.equal(typeof client.socket.auth, 'function');
    const auth = await new Promise((resolve) => client.socket.auth(resolve));
    assert.deepEqual(auth, { token: 'tok', feed: 'following' });
    const again = connect('http://127.0.0.1:9/realtime', { token: 'tok', autoConnect: false });
    assert.equal(again.socket.nsp, '/realtime');
    client.close();
    again.close();
  });

  it('the CommonJS build exports the same API', () => {
    const require = createRequire(import.meta.url);
    const cjs = require('../dist/cjs/index.js');
    assert.equal(typeof cjs.connect, 'function');
    assert.equal(typeof cjs.wrap, 'function');
    assert.equal(typeof cjs.ResumableSocket, 'function');
    assert.deepEqual(cjs.parseCursor('e:1'), { epoch: 'e', id: 1 });
  });
});
