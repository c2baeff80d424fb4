// Bookkeeping for the load scenarios: which bench message each socket received (to count
// losses and duplicates per socket) and how late. A bench message's content is
// `bench|<index>|<send time>|<padding>`; the send time is `performance.timeOrigin + now()`, so
// every process on the machine reads the same clock.
import { summary } from './stats.mjs';

/** Content of bench message `index`, sent now, padded to about `bytes` characters. */
export function benchContent(index, sentAt, bytes = 0) {
  const head = `bench|${index}|${sentAt}|`;
  return bytes > head.length ? head + 'x'.repeat(bytes - head.length) : head;
}

/** Parses `benchContent`; null when it is not one. */
export function parseBench(content) {
  if (typeof content !== 'string' || !content.startsWith('bench|')) return null;
  const a = content.indexOf('|', 6);
  const b = content.indexOf('|', a + 1);
  const index = Number(content.slice(6, a));
  const sentAt = Number(content.slice(a + 1, b < 0 ? undefined : b));
  return Number.isInteger(index) && Number.isFinite(sentAt) ? { index, sentAt } : null;
}

/** Deliveries of `messages` bench messages to `sockets` sockets. */
export class DeliveryBook {
  constructor(sockets, messages) {
    this.M = messages;
    this.seen = new Uint8Array(Math.max(1, sockets * messages));
    this.latencies = [];
    this.received = 0;
    this.dups = 0;
    this.foreign = 0;
    this.lastAt = 0;
  }

  /** Books message content received by socket `i` at time `t`; false for a duplicate. */
  record(i, content, t) {
    const m = parseBench(content);
    if (!m || m.index >= this.M) {
      this.foreign += 1;
      return true;
    }
    const k = i * this.M + m.index;
    if (this.seen[k]) {
      this.dups += 1;
      return false;
    }
    this.seen[k] = 1;
    this.received += 1;
    this.latencies.push(t - m.sentAt);
    this.lastAt = t;
    return true;
  }

  /** Whether socket `i` got message `index`. */
  has(i, index) {
    return this.seen[i * this.M + index] === 1;
  }

  latency() {
    return summary(this.latencies);
  }
}

/**
 * Resolves true once `done()` holds; false when `idleMs` pass without `progress()` changing, or
 * after `maxMs` in all (a server that trickles deliveries must not hold the run forever).
 */
export async function drain(done, progress, idleMs, maxMs = 60_000) {
  const start = Date.now();
  let last = progress();
  let lastChange = start;
  while (!done()) {
    await new Promise((r) => setTimeout(r, 20));
    const p = progress();
    if (p !== last) {
      last = p;
      lastChange = Date.now();
    } else if (Date.now() - lastChange > idleMs) return false;
    if (Date.now() - start > maxMs) return false;
  }
  return true;
}
