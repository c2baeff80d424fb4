// A Server-Sent Events reader on fetch (what an EventSource does, minus the automatic
// reconnect, which the tests do by hand with Last-Event-ID), and long-poll shortcuts.
import { REST } from './harness.mjs';

export const STREAM = `${REST}/stream`;
export const POLL = `${REST}/poll`;

/**
 * Opens `path` on `baseUrl`; `token` goes in the query (as an EventSource would send it) unless
 * `bearer` is set. Resolves `{ status, body }` for a refusal, or a reader:
 * `{ next(ms), named(event, ms), frames, close() }`, each frame `{ id, event, data, retry }`.
 */
export async function openStream(baseUrl, path, { token, bearer, lastEventId, query = '' } = {}) {
  const headers = { Accept: 'text/event-stream' };
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  if (lastEventId) headers['Last-Event-ID'] = lastEventId;
  const params = new URLSearchParams(query);
  if (token) params.set('token', token);
  const qs = params.toString();
  const controller = new AbortController();
  const res = await fetch(`${baseUrl}${path}${qs ? `?${qs}` : ''}`, { headers, signal: controller.signal });
  if (res.status !== 200) {
    const text = await res.text();
    let body = text;
    try {
      body = JSON.parse(text);
    } catch {
      // not JSON
    }
    return { status: res.status, body };
  }
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  const queue = [];
  let waiting = null;
  let ended = false;
  const frames = [];
  (async () => {
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const frame = parse(block);
          if (!frame) continue;
          frames.push(frame);
          queue.push(frame);
          waiting?.();
        }
      }
    } catch {
      // aborted or reset
    }
    ended = true;
    waiting?.();
  })();

  async function next(ms = 5000) {
    const deadline = Date.now() + ms;
    while (queue.length === 0) {
      if (ended) throw new Error('the stream ended');
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no SSE frame within ${ms} ms`);
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        waiting = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      waiting = null;
    }
    return queue.shift();
  }

  async function named(event, ms = 5000, filter = () => true) {
    const deadline = Date.now() + ms;
    for (;;) {
      const frame = await next(Math.max(1, deadline - Date.now()));
      if (frame.event === event && filter(frame.data)) return frame;
    }
  }

  return {
    status: 200,
    headers: res.headers,
    frames,
    next,
    named,
    get ended() {
      return ended;
    },
    close: () => controller.abort(),
  };
}

function parse(block) {
  const frame = { id: null, event: 'message', data: null, retry: null };
  let data = '';
  let any = false;
  for (const line of block.split('\n')) {
    if (line === '' || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    any = true;
    if (field === 'id') frame.id = value;
    else if (field === 'event') frame.event = value;
    else if (field === 'data') data += value;
    else if (field === 'retry') frame.retry = Number(value);
  }
  if (!any) return null;
  try {
    frame.data = JSON.parse(data);
  } catch {
    frame.data = data;
  }
  return frame;
}

/** One long poll as `user` on `baseUrl`: `{ status, body }`. */
export async function poll(baseUrl, user, { lastPollId, session, timeoutMs, feed } = {}) {
  const params = new URLSearchParams();
  if (lastPollId) params.set('last_poll_id', lastPollId);
  if (session) params.set('session', session);
  if (timeoutMs !== undefined) params.set('timeout_ms', String(timeoutMs));
  if (feed) params.set('feed', feed);
  const res = await fetch(`${baseUrl}${POLL}?${params}`, { headers: { Authorization: `Bearer ${user.token}` } });
  return { status: res.status, body: await res.json() };
}

/** The next poll after `answer` (its cursor and session). */
export const pollAfter = (baseUrl, user, answer, timeoutMs = 5000) =>
  poll(baseUrl, user, { lastPollId: answer.lastPollId, session: answer.session, timeoutMs });
