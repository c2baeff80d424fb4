// Linux /proc readings: a process's resident memory and CPU time, and the machine's CPU time, so a
// run can say who used the two cores (server, load generator, or something else on the machine).
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

let clkTck = 100;
try {
  clkTck = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
} catch {
  // keep the usual 100
}

/** `{ rssKb, hwmKb }` of `pid` (VmRSS, VmHWM), or null when unreadable. */
export function memory(pid) {
  if (!pid) return null;
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const field = (key) => Number((status.match(new RegExp(`^${key}:\\s+(\\d+)`, 'm')) || [])[1] ?? NaN);
    return { rssKb: field('VmRSS'), hwmKb: field('VmHWM'), threads: field('Threads') };
  } catch {
    return null;
  }
}

/** CPU time (user + system) of `pid` in milliseconds, or null. */
export function processCpuMs(pid) {
  const t = processCpu(pid);
  return t && t.userMs + t.sysMs;
}

/** `{ userMs, sysMs }` CPU time of `pid`, or null. */
export function processCpu(pid) {
  if (!pid) return null;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // fields after the parenthesised command name; utime and stime are fields 14 and 15
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const utime = Number(rest[11]);
    const stime = Number(rest[12]);
    return { userMs: (utime * 1000) / clkTck, sysMs: (stime * 1000) / clkTck };
  } catch {
    return null;
  }
}

/** Machine-wide `{ busyMs, totalMs }` summed over all CPUs (from /proc/stat), or null. */
export function machineCpuMs() {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0];
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal (guest fields are already inside user)
    const [user, nice, system, idle, iowait = 0, irq = 0, softirq = 0, steal = 0] = v;
    const busy = user + nice + system + irq + softirq + steal;
    const total = busy + idle + iowait;
    return { busyMs: (busy * 1000) / clkTck, totalMs: (total * 1000) / clkTck };
  } catch {
    return null;
  }
}

export function loadavg() {
  try {
    return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  } catch {
    return 'n/a';
  }
}
