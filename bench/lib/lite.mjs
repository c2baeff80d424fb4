// A minimal Engine.IO 4 / Socket.IO 5 client on a bare `ws` WebSocket for the load scenarios
// (slow-consumer, flood, storm, soak). Unlike socket.io-client it can stop reading (the TCP
// socket is paused, as a phone on a bad link does), write as fast as the socket takes (a
// flooding client), and costs the load generator little CPU per delivery: `chat:new_message`
// is read with string searches, everything else with JSON.parse.
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';

export const NS = '/realtime';
const EVENT = `42${NS},`;
const ACK = `43${NS},`;
const NEW_MESSAGE = `42${NS},["chat:new_message",`;

export const now = () => performance.timeOrigin + performance.now();

/** The JSON string value of `"key":"…"` in `s` (no escapes expected), or null. */
export function stringField(s, key, from = 0) {
  const k = s.indexOf(`"${key}":"`, from);
  if (k < 0) return null;
  const start = k + key.length + 4;
  const end = s.indexOf('"', start);
  return end < 0 ? null : s.slice(start, end);
}

/** The integer value of `"key":123` in `s`, or NaN. */
export function intField(s, key) {
  const k = s.indexOf(`"${key}":`);
  return k < 0 ? NaN : parseInt(s.slice(k + key.length + 3, k + key.length + 23), 10);
}

/**
 * One socket on `/realtime`. Handlers: `onMessage(roomId, content, seq, t)` for
 * `chat:new_message`, `onEvent(name, payload, t)` for every other event, `onClose(reason)` once
 * when the socket ends after it was ready (`io server disconnect`, `transport close`, …).
 */
export class LiteSocket {
  constructor(url, token, handlers = {}) {
    this.url = url;
    this.token = token;
    this.handlers = handlers;
    this.ws = null;
    this.ready = false;
    this.closed = false;
    this.closeReason = null;
    this.nextAck = 0;
    this.acks = new Map();
    this.session = null;
  }

  /** Connects; resolves `{ ms, session }` on `session:ready`, or `{ error }`. */
  connect(timeoutMs = 30_000) {
    const t0 = now();
    return new Promise((resolve) => {
      let settled = false;
      const finish = (r) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(r);
      };
      const timer = setTimeout(() => {
        finish({ error: `not ready within ${timeoutMs} ms` });
        this.terminate();
      }, timeoutMs);
      const ws = new WebSocket(`${this.url.replace(/^http/, 'ws')}/socket.io/?EIO=4&transport=websocket`, {
        perMessageDeflate: false,
        skipUTF8Validation: true,
      });
      this.ws = ws;
      ws.on('message', (data) => {
        const t = now();
        const s = data.toString();
        if (s.startsWith(NEW_MESSAGE)) {
          const roomId = stringField(s, 'roomId', NEW_MESSAGE.length);
          const content = stringField(s, 'content');
          this.handlers.onMessage?.(roomId, content, intField(s, 'seq'), t);
          return;
        }
        switch (s.charCodeAt(0)) {
          case 50: // '2' ping
            ws.send('3');
            return;
          case 48: // '0' open → CONNECT the namespace with the token
            ws.send(`40${NS},${JSON.stringify({ token: this.token })}`);
            return;
          case 52: // '4' Socket.IO packet
            if (s.startsWith(EVENT)) {
              const [event, payload] = JSON.parse(s.slice(EVENT.length));
              if (event === 'session:ready' && !this.ready) {
                this.ready = true;
                this.session = payload;
                finish({ ms: now() - t0, session: payload });
              }
              this.handlers.onEvent?.(event, payload, t);
            } else if (s.startsWith(ACK)) {
              const body = s.slice(ACK.length);
              const bracket = body.indexOf('[');
              const id = Number(body.slice(0, bracket));
              const cb = this.acks.get(id);
              if (cb) {
                this.acks.delete(id);
                cb(JSON.parse(body.slice(bracket))[0], t);
              }
            } else if (s.startsWith(`44${NS}`)) {
              finish({ error: `connect_error: ${stringField(s, 'message') ?? s.slice(0, 100)}` });
              this.terminate();
            } else if (s.startsWith(`41${NS}`)) {
              this.end('io server disconnect');
            }
            return;
          default:
        }
      });
      ws.on('error', (err) => finish({ error: `websocket error: ${err.message}` }));
      ws.on('close', () => {
        finish({ error: 'closed before ready' });
        this.end('transport close');
      });
    });
  }

  end(reason) {
    if (this.closed) return;
    this.closed = true;
    this.closeReason = reason;
    for (const cb of this.acks.values()) cb(null, now());
    this.acks.clear();
    if (this.ready) this.handlers.onClose?.(reason);
  }

  /** Emits `event` with `data`; `ack(reply, t)` gets the ack (null if the socket ended first). */
  emit(event, data, ack) {
    if (this.closed || !this.ws || this.ws.readyState !== WebSocket.OPEN) {
      ack?.(null, now());
      return false;
    }
    let id = '';
    if (ack) {
      id = String(this.nextAck++);
      this.acks.set(Number(id), ack);
    }
    this.ws.send(`42${NS},${id}${JSON.stringify([event, data])}`);
    return true;
  }

  /** Bytes written but not yet handed to the kernel (the flooder's back-pressure). */
  get buffered() {
    return this.ws?.bufferedAmount ?? 0;
  }

  /** Stops reading: the server's writes pile up in TCP buffers, then in the server. */
  pause() {
    this.ws?._socket?.pause();
  }

  close() {
    try {
      this.ws?.close();
    } catch {
      // already gone
    }
  }

  terminate() {
    try {
      this.ws?.terminate();
    } catch {
      // already gone
    }
  }
}

/** Runs `fn` over `items` with at most `concurrency` in flight; resolves the results in order. */
export async function pool(items, concurrency, fn) {
  const results = new Array(items.length);
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, items.length)) }, lane));
  return results;
}
