// Option parsing and the run frame shared by the load scenarios: each scenario declares its
// options with defaults, gets a fresh server per phase, a hard time limit, and writes its
// result as JSON when asked.
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { spawnServer } from './server.mjs';

/**
 * Parses `argv` against `spec` ({ name: [default, help] }) plus the common options; numbers
 * stay numbers. Prints usage and exits on `--help` or a bad value.
 */
export function scenarioOptions(name, argv, spec) {
  const common = {
    'server-env': [[], 'extra server environment K=V (repeatable)'],
    json: ['', 'also write the results as JSON to this file'],
    timeout: [600, 'hard limit for the whole run, seconds'],
  };
  const all = { ...spec, ...common };
  const usage = [`usage: node run.mjs --scenario ${name} [options]`]
    .concat(Object.entries(all).map(([k, [d, help]]) => `  --${k.padEnd(16)} ${help} (default ${JSON.stringify(d)})`))
    .join('\n');
  const options = { scenario: { type: 'string' }, help: { type: 'boolean', default: false } };
  for (const [k, [d]] of Object.entries(all)) {
    options[k] = Array.isArray(d) ? { type: 'string', multiple: true, default: d } : { type: 'string', default: String(d) };
  }
  let values;
  try {
    ({ values } = parseArgs({ args: argv, options, strict: true }));
  } catch (err) {
    console.error(`${err.message}\n\n${usage}`);
    process.exit(2);
  }
  if (values.help) {
    console.log(usage);
    process.exit(0);
  }
  const out = {};
  for (const [k, [d]] of Object.entries(all)) {
    const key = k.replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (typeof d === 'number') {
      const v = Number(values[k]);
      if (!Number.isFinite(v) || v < 0) {
        console.error(`--${k} must be a number >= 0\n\n${usage}`);
        process.exit(2);
      }
      out[key] = v;
    } else out[key] = values[k];
  }
  out.serverEnvObject = {};
  for (const kv of out.serverEnv) {
    const i = kv.indexOf('=');
    if (i < 1) {
      console.error(`--server-env wants K=V, got ${kv}`);
      process.exit(2);
    }
    out.serverEnvObject[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return out;
}

/**
 * Runs `body(startServer)` under the hard time limit; every server it started is stopped at the
 * end, then `after()` runs (what the scenario started besides servers). `body` returns
 * `{ pass, result }`. Exit code: 0 PASS, 1 FAIL, 2 error.
 */
export async function runScenario(opts, body, { after } = {}) {
  const servers = [];
  const hard = setTimeout(() => {
    console.error(`\nFAIL: run exceeded --timeout ${opts.timeout} s; aborting`);
    for (const s of servers) s.killNow();
    process.exit(2);
  }, opts.timeout * 1000);
  hard.unref();
  const startServer = async (env = {}) => {
    const server = await spawnServer({ ...env, ...opts.serverEnvObject });
    servers.push(server);
    return server;
  };
  let code = 2;
  try {
    const { pass, result } = await body(startServer);
    if (opts.json) writeFileSync(opts.json, JSON.stringify({ opts, result }, null, 2));
    code = pass ? 0 : 1;
  } catch (err) {
    console.error(`\nERROR: ${err.stack || err.message}`);
    for (const s of servers) if (s.stderr) console.error(`server stderr (tail):\n${s.stderr.slice(-3000)}`);
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
    await after?.().catch((err) => console.error(`cleanup: ${err.message}`));
  }
  process.exit(code);
}

/** `[ok, text]` checks as report lines, plus the verdict. */
export function verdict(name, checks, summaryText) {
  const pass = checks.every(([ok]) => ok);
  const lines = checks.map(([ok, text]) => `  [${ok ? 'ok' : 'FAIL'}] ${text}`);
  lines.push(`${pass ? 'PASS' : 'FAIL'} ${name}: ${summaryText}`);
  return { pass, lines };
}
