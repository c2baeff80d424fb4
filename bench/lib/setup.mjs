// Setting the stage over REST before a scenario measures anything: rooms with many members, the
// follow graph (service API), and a sampler of the server's resident memory.
import { memory } from './proc.mjs';
import { api } from './server.mjs';

const REST = '/api/v1/realtime';

/** Creates a group room owned by `owner` with `memberIds` (added in batches of 500); its id. */
export async function createGroupRoom(server, owner, memberIds, name) {
  const token = server.token(owner);
  const first = memberIds.slice(0, 499);
  const res = await api(server.url, 'POST', `${REST}/chat/rooms`, {
    token,
    body: { participants: first, type: 'group', name },
  });
  if (res.status !== 201 && res.status !== 200) {
    throw new Error(`creating the room: HTTP ${res.status} ${JSON.stringify(res.body)}`);
  }
  const roomId = res.body.id;
  for (let i = first.length; i < memberIds.length; i += 500) {
    const batch = memberIds.slice(i, i + 500);
    const add = await api(server.url, 'POST', `${REST}/chat/rooms/${roomId}/members`, {
      token,
      body: { userIds: batch },
    });
    if (add.status !== 200 && add.status !== 201) {
      throw new Error(`adding members: HTTP ${add.status} ${JSON.stringify(add.body)}`);
    }
  }
  const check = await api(server.url, 'GET', `${REST}/chat/rooms/${roomId}`, { token });
  // Large rooms may list only the first members inline; `memberCount` counts them all.
  const members = check.body?.memberCount ?? check.body?.members?.length;
  if (members !== memberIds.length + 1) {
    throw new Error(`room has ${members} members, expected ${memberIds.length + 1}`);
  }
  return roomId;
}

/** `followerId` follows `followeeId` (service API; the server needs SERVICE_API_KEY). */
export async function follow(server, followerId, followeeId) {
  const res = await fetch(`${server.url}/api/v1/internal/follows`, {
    method: 'PUT',
    headers: { 'Content-Type': 'application/json', 'X-Api-Key': server.env.SERVICE_API_KEY },
    body: JSON.stringify({ followerId, followeeId }),
  });
  await res.arrayBuffer();
  if (res.status >= 300) throw new Error(`follow ${followerId} -> ${followeeId}: HTTP ${res.status}`);
}

/**
 * Samples the server's RSS every `everyMs`; `.peakKb`, `.series` ([ms since start, kB]). `pid`
 * may be a function, read at every sample, for a server that is restarted during the run.
 */
export function rssSampler(pid, everyMs = 1000) {
  const pidOf = typeof pid === 'function' ? pid : () => pid;
  const t0 = Date.now();
  const sampler = {
    peakKb: memory(pidOf())?.rssKb ?? NaN,
    series: [],
    sample() {
      const kb = memory(pidOf())?.rssKb;
      if (!Number.isFinite(kb)) return NaN;
      if (!(kb <= sampler.peakKb)) sampler.peakKb = kb;
      sampler.series.push([Date.now() - t0, kb]);
      return kb;
    },
    /** The latest sample at or before `ms` since start. */
    at(ms) {
      let best = NaN;
      for (const [t, kb] of sampler.series) if (t <= ms) best = kb;
      return best;
    },
    stop() {
      clearInterval(timer);
      sampler.sample();
    },
  };
  const timer = setInterval(() => sampler.sample(), everyMs);
  sampler.sample();
  return sampler;
}

/** Reads one Prometheus gauge/counter value (summed over label sets) from `/metrics`, or NaN. */
export async function metric(server, name) {
  try {
    const text = await (await fetch(`${server.url}/metrics`)).text();
    let sum = NaN;
    for (const line of text.split('\n')) {
      if (line.startsWith(name) && (line[name.length] === ' ' || line[name.length] === '{')) {
        const v = Number(line.slice(line.lastIndexOf(' ') + 1));
        if (Number.isFinite(v)) sum = (Number.isFinite(sum) ? sum : 0) + v;
      }
    }
    return sum;
  } catch {
    return NaN;
  }
}
