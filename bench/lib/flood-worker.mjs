// The flooders of the `flood` scenario, on a worker thread of their own: a flooder writes as
// fast as its socket takes, and on the main thread its loop delayed the healthy chatters' acks
// in the load generator's own event loop, which the scenario then counted as server latency.
// Started with { url, tokens, roomIds }; floods until the main thread posts 'stop', then posts
// its counts back and exits.
import { parentPort, workerData } from 'node:worker_threads';
import { LiteSocket } from './lite.mjs';

const FLOOD_EVENTS = (roomId) => [
  ['chat:typing', { roomId, isTyping: true }],
  ['chat:sync', { roomId, afterSeq: 0, limit: 100 }],
  ['presence:activity', { activity: 'viewing:post:1' }],
  ['notifications:subscribe', {}],
  ['chat:read', { roomId, upToSeq: 1 }],
];

const { url, tokens, roomIds } = workerData;
let flooding = true;
parentPort.on('message', (m) => {
  if (m === 'stop') flooding = false;
});

const flood = { sent: 0, acked: 0, rateLimited: 0, reconnects: 0, closes: {}, connectErrors: {} };
const count = (map, key) => {
  map[key] = (map[key] || 0) + 1;
};

await Promise.all(tokens.map(async (token, f) => {
  const events = FLOOD_EVENTS(roomIds[f]);
  while (flooding) {
    const s = new LiteSocket(url, token, {
      onClose: (reason) => count(flood.closes, reason),
      onEvent: (event, payload) => {
        if (event === 'error' || event === 'session:error') count(flood.closes, `${event} ${payload?.code ?? ''}`);
      },
    });
    const r = await s.connect(10_000);
    if (r.error) {
      count(flood.connectErrors, r.error);
      await new Promise((res) => setTimeout(res, 100));
      continue;
    }
    let k = 0;
    // every 50th event asks for an ack, to see what a flooder is told
    while (flooding && !s.closed) {
      if (s.buffered > 256 * 1024) {
        await new Promise((res) => setTimeout(res, 1));
        continue;
      }
      const [event, data] = events[k % events.length];
      const ack = k % 50 === 0
        ? (reply) => {
            if (reply?.ok) flood.acked += 1;
            else if (reply?.error?.code === 'RATE_LIMITED') flood.rateLimited += 1;
          }
        : undefined;
      s.emit(event, data, ack);
      flood.sent += 1;
      k += 1;
      if (k % 200 === 0) await new Promise((res) => setImmediate(res));
    }
    s.terminate();
    if (flooding) flood.reconnects += 1;
  }
}));
parentPort.postMessage(flood);
