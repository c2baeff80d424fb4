#!/usr/bin/env node
// Prints a Markdown table of the runs saved with `run.mjs --json results/<name>.json`.
// usage: node table.mjs [results/*.json ...]   (default: every file in results/)
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

const files = process.argv.length > 2
  ? process.argv.slice(2)
  : readdirSync('results').filter((f) => f.endsWith('.json')).sort().map((f) => path.join('results', f));

const f0 = (v) => (Number.isFinite(v) ? Math.round(v).toLocaleString('en-US') : 'n/a');
const f1 = (v) => (Number.isFinite(v) ? v.toFixed(1) : 'n/a');

const fan = [];
const con = [];
for (const file of files) {
  const { opts, result: r } = JSON.parse(readFileSync(file, 'utf8'));
  const name = path.basename(file, '.json');
  const c = r.cpu ?? {};
  const cpu = `${f0(c.serverPct)}% / ${f0(c.clientPct)}% / ${f0(c.otherPct)}%`;
  if (r.scenario === 'fanout') {
    fan.push(
      `| ${name} | ${r.client} | ${f0(r.receivers)} | ${r.rate || 'closed'} | ${r.messages} | ${f0(r.received)}/${f0(r.expected)} | ` +
        `${f0(r.deliveriesPerSec)} | ${f1(r.latencyMs.p50)} / ${f1(r.latencyMs.p90)} / ${f1(r.latencyMs.p99)} / ${f1(r.latencyMs.max)} | ` +
        `${f1(r.ackMs.p50)} / ${f1(r.ackMs.p99)} | ${cpu} | ${f1(c.serverPeakRssKb / 1024)} | ${r.checks.every((x) => x.ok) ? 'PASS' : 'FAIL'} |`,
    );
  } else {
    con.push(
      `| ${name} | ${opts.client} | ${f0(r.ok)}/${f0(r.sockets)} | ${f0(r.elapsedMs)} | ${f0((r.ok * 1000) / r.elapsedMs)} | ` +
        `${f1(r.times.p50)} / ${f1(r.times.p99)} | ${f1(r.rssBeforeKb / 1024)} → ${f1(r.rssAfterKb / 1024)} | ${f1(r.perConnKb)} | ${cpu} |`,
    );
  }
}
if (fan.length) {
  console.log('| run | client | receivers | msg/s | msgs | delivered | deliveries/s | latency p50 / p90 / p99 / max ms | ack p50 / p99 ms | CPU server / load gen / other (of one core) | server peak RSS MB | result |');
  console.log('|---|---|---|---|---|---|---|---|---|---|---|---|');
  console.log(fan.join('\n'));
}
if (con.length) {
  if (fan.length) console.log('');
  console.log('| run | client | connected | ms | sockets/s | ready p50 / p99 ms | server RSS MB | KB per connection | CPU server / load gen / other |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  console.log(con.join('\n'));
}
