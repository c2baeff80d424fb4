// Throw-away infrastructure for multi-node runs: a Redis (`startRedis`) and a PostgreSQL server
// (`startPostgres`, or one shared per test process with a fresh database per caller:
// `freshDatabase`). `REDIS_URL` / `DATABASE_URL` (postgres://…) name existing servers to use
// instead; then every caller still gets its own key prefix / database.
//
// Cleanup happens on every path: callers stop what they started (in `after` hooks); child
// processes still alive when the test process exits (also on SIGINT/SIGTERM/SIGHUP) are killed
// from a process 'exit' handler, and get a parent-death signal for the case of a SIGKILLed test
// process; a throw-away PostgreSQL (a daemon, not our child) has a watchdog shell that stops it
// and deletes its directory once the test process is gone, however it ended.
import { execFile, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, constants, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const OUTPUT_KEEP = 16 * 1024;

// ---------------------------------------------------------------------------------------------
// process bookkeeping

const liveChildren = new Set();
const exitHooks = new Set();
let exitHandlerInstalled = false;

function installExitHandler() {
  if (exitHandlerInstalled) return;
  exitHandlerInstalled = true;
  // A test process told to stop still cleans up: exit normally (running the handler below)
  // instead of dying on the spot, as the default action of these signals would.
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]]) {
    process.once(signal, () => process.exit(code));
  }
  process.on('exit', () => {
    for (const child of liveChildren) {
      try {
        child.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
    for (const hook of exitHooks) {
      try {
        hook();
      } catch {
        // best effort: nothing can be reported any more
      }
    }
  });
}

/** Kills `child` (SIGKILL) if it is still running when this process exits. */
export function trackChild(child) {
  installExitHandler();
  liveChildren.add(child);
  const forget = () => liveChildren.delete(child);
  child.once('exit', forget);
  child.once('error', forget);
  return child;
}

let setprivPath;

/**
 * `spawn`, tied to this process: where util-linux `setpriv` exists, the child gets a parent-death
 * signal (SIGKILL), so it cannot outlive a test process that was itself SIGKILLed. The child
 * keeps its pid (setpriv execs it) and is also tracked for the 'exit' handler.
 */
export function spawnTied(file, args, opts) {
  if (setprivPath === undefined) setprivPath = process.platform === 'linux' ? which('setpriv') : null;
  const child = setprivPath
    ? spawn(setprivPath, ['--pdeathsig', 'KILL', '--', file, ...args], opts)
    : spawn(file, args, opts);
  return trackChild(child);
}

/** Runs `fn` synchronously when this process exits; returns a function that cancels it. */
export function onProcessExit(fn) {
  installExitHandler();
  exitHooks.add(fn);
  return () => exitHooks.delete(fn);
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** A name unique to this run: `<prefix>_<pid>_<random>` (lowercase, usable as a DB name). */
export function uniqueName(prefix) {
  return `${prefix}_${process.pid}_${randomBytes(4).toString('hex')}`;
}

function isExecutable(file) {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The full path of `name` on PATH, or null. */
export function which(name) {
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    if (!dir) continue;
    const file = path.join(dir, name);
    if (isExecutable(file)) return file;
  }
  return null;
}

function run(file, args, { env, timeoutMs = 60_000 } = {}) {
  return new Promise((resolve, reject) => {
    execFile(file, args, { env: env ?? process.env, timeout: timeoutMs, maxBuffer: 4 << 20 }, (err, stdout, stderr) => {
      if (err) {
        err.message = `${file} ${args.join(' ')} failed: ${err.message}\n${stdout}${stderr}`;
        reject(err);
      } else {
        resolve({ stdout, stderr });
      }
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Redis

/** Sends `PING` to 127.0.0.1:port (or host:port) and resolves true on `+PONG`. */
export function redisPing(port, host = '127.0.0.1', timeoutMs = 1000) {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host });
    let data = '';
    const done = (ok) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      data += chunk.toString();
      if (data.includes('\r\n')) done(data.startsWith('+PONG'));
    });
    socket.on('error', () => done(false));
    socket.on('close', () => done(false));
  });
}

/**
 * A Redis for one test run: `REDIS_URL` when set (shared; `external: true`, cannot be stopped or
 * restarted), else a fresh `redis-server` on a free port with persistence off.
 *
 * Returns `{ url, port, external, keyPrefix, isRunning(), down(), start(), restart({ pauseMs, during }),
 * stop() }`: `down()` ends the server (SIGTERM, awaits the exit) and keeps its port, `start()`
 * starts it again on the same port, `restart()` does both, running the optional async `during()`
 * while Redis is down; `stop()` ends it for good. `keyPrefix` is a fresh `REDIS_KEY_PREFIX`.
 */
export async function startRedis() {
  const keyPrefix = uniqueName('sbtest');
  if (process.env.REDIS_URL) {
    const url = process.env.REDIS_URL;
    const parsed = new URL(url);
    const notHere = async () => {
      throw new Error('REDIS_URL names an external Redis: it cannot be stopped or restarted by the tests');
    };
    return {
      url,
      port: Number(parsed.port || 6379),
      external: true,
      keyPrefix,
      isRunning: () => true,
      stop: async () => {},
      down: notHere,
      start: notHere,
      restart: notHere,
    };
  }

  const bin = which('redis-server');
  if (!bin) {
    throw new Error('redis-server not found on PATH (install Redis 7+, e.g. `apt-get install redis-server`, or set REDIS_URL)');
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'switchboard-test-redis-'));
  const verbose = Boolean(process.env.TEST_LOG);
  let port = null;
  let child = null;
  let exitPromise = null;
  let output = '';

  const spawnOn = async (p) => {
    output = '';
    const proc = spawnTied(
      bin,
      ['--bind', '127.0.0.1', '--port', String(p), '--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let exited = null;
    const exited$ = new Promise((resolve) => {
      proc.on('exit', (code, signal) => {
        exited = { code, signal };
        resolve(exited);
      });
      proc.on('error', (error) => {
        exited = { code: null, signal: null, error };
        resolve(exited);
      });
    });
    const keep = (chunk) => {
      output = (output + chunk.toString()).slice(-OUTPUT_KEEP);
      if (verbose) process.stderr.write(`[redis:${p}] ${chunk}`);
    };
    proc.stdout.on('data', keep);
    proc.stderr.on('data', keep);
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (exited) return { ok: false, why: exited.error?.message ?? `exited with ${JSON.stringify(exited)}` };
      if (await redisPing(p, '127.0.0.1', 500)) {
        child = proc;
        exitPromise = exited$;
        return { ok: true };
      }
      if (Date.now() > deadline) {
        proc.kill('SIGKILL');
        await exited$;
        return { ok: false, why: 'no +PONG within 10 s' };
      }
      await sleep(25);
    }
  };

  // The free port can be taken between the probe and the bind: try a few.
  const failures = [];
  for (let attempt = 0; attempt < 3 && port === null; attempt += 1) {
    const p = await freePort();
    const res = await spawnOn(p);
    if (res.ok) port = p;
    else failures.push(`port ${p}: ${res.why}\n${output}`);
  }
  if (port === null) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`could not start redis-server:\n${failures.join('\n')}`);
  }
  const removeDir = onProcessExit(() => rmSync(dir, { recursive: true, force: true }));

  const stopServer = async () => {
    if (!child) return;
    const proc = child;
    const exited = exitPromise;
    child = null;
    exitPromise = null;
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  };

  const startServer = async () => {
    if (child) return;
    // The same port again; it may take a moment to be bindable.
    const deadline = Date.now() + 10_000;
    let last;
    for (;;) {
      last = await spawnOn(port);
      if (last.ok) return;
      if (Date.now() > deadline) throw new Error(`could not restart redis-server on port ${port}: ${last.why}\n${output}`);
      await sleep(100);
    }
  };

  let stopped = false;
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    external: false,
    keyPrefix,
    isRunning: () => child !== null,
    /** Stops the server for good (idempotent) and removes its directory. */
    stop: async () => {
      if (stopped) return;
      stopped = true;
      await stopServer();
      rmSync(dir, { recursive: true, force: true });
      removeDir();
    },
    /** SIGTERM and wait for the exit; the port stays reserved for `start()`. */
    down: stopServer,
    /** Starts the server again on the same port (after `down()`). */
    start: startServer,
    /** Stop, optionally wait `pauseMs` and/or run `during()`, start again on the same port. */
    restart: async ({ pauseMs = 0, during } = {}) => {
      await stopServer();
      try {
        if (pauseMs > 0) await sleep(pauseMs);
        if (during) await during();
      } finally {
        if (!stopped) await startServer();
      }
    },
    get output() {
      return output;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

const NO_POSTGRES =
  'PostgreSQL binaries not found: put initdb/pg_ctl on PATH or install PostgreSQL (/usr/lib/postgresql/*/bin), ' +
  'or set DATABASE_URL=postgres://… naming a server where databases may be created';

/** The directory holding initdb and pg_ctl: from PATH (following symlinks), else the newest Debian-style one. */
export function postgresBinDir() {
  const hasTools = (dir) => isExecutable(path.join(dir, 'initdb')) && isExecutable(path.join(dir, 'pg_ctl'));
  const initdb = which('initdb');
  if (initdb) {
    try {
      const real = path.dirname(realpathSync(initdb));
      if (hasTools(real)) return real;
    } catch {
      // fall through
    }
    if (hasTools(path.dirname(initdb))) return path.dirname(initdb);
  }
  const base = '/usr/lib/postgresql';
  if (!existsSync(base)) return null;
  const versions = readdirSync(base)
    .map((name) => ({ version: Number.parseFloat(name), dir: path.join(base, name, 'bin') }))
    .filter((v) => Number.isFinite(v.version) && hasTools(v.dir))
    .sort((x, y) => y.version - x.version);
  return versions[0]?.dir ?? null;
}

function psqlPath(binDir) {
  if (binDir && isExecutable(path.join(binDir, 'psql'))) return path.join(binDir, 'psql');
  const found = which('psql') ?? (postgresBinDir() && path.join(postgresBinDir(), 'psql'));
  if (!found || !isExecutable(found)) throw new Error('psql not found (needed to create test databases)');
  return found;
}

/** As root, the cluster must belong to another user (initdb refuses root): `postgres`. */
function clusterOwner() {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return null;
  const id = spawnSync('id', ['-u', 'postgres'], { stdio: 'ignore' });
  if (id.status !== 0) {
    throw new Error('running as root needs the `postgres` system user to own a throw-away cluster (install PostgreSQL)');
  }
  return 'postgres';
}

function asOwner(owner, file, args) {
  return owner ? ['runuser', ['-u', owner, '--', file, ...args]] : [file, args];
}

function withDatabase(url, name) {
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
}

const quoteIdent = (name) => `"${name.replace(/"/g, '""')}"`;

async function psql(binDir, adminUrl, sql) {
  await run(psqlPath(binDir), ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', adminUrl, '-c', sql]);
}

/**
 * A PostgreSQL server with one fresh database. With `DATABASE_URL=postgres://…` set, that server
 * is used (`external: true`) and `stop()` drops the databases created here; otherwise a
 * throw-away cluster is initialised in a temp dir (trust auth, fsync off), started on a free
 * port, and `stop()` is `pg_ctl stop -m immediate` plus removing the directory.
 *
 * Returns `{ url, adminUrl, external, createDatabase(name?) → url, dropDatabase(url), stop() }`;
 * `url` names the database `database` (a unique variant of it on an external server), or is null
 * when `database` is null (callers then create their own).
 */
export async function startPostgres({ database = 'switchboard' } = {}) {
  const external = process.env.DATABASE_URL?.startsWith('postgres') ? process.env.DATABASE_URL : null;
  let adminUrl;
  let binDir = null;
  let stopCluster = async () => {};

  if (external) {
    adminUrl = external;
  } else {
    binDir = postgresBinDir();
    if (!binDir) throw new Error(NO_POSTGRES);
    const owner = clusterOwner();
    const base = mkdtempSync(path.join(os.tmpdir(), 'switchboard-test-pg-'));
    const data = path.join(base, 'data');
    const sockets = path.join(base, 'sockets');
    const log = path.join(base, 'postgres.log');
    mkdirSync(sockets, { recursive: true });
    if (owner) {
      const chown = spawnSync('chown', ['-R', `${owner}:`, base], { encoding: 'utf8' });
      if (chown.status !== 0) throw new Error(`chown ${base}: ${chown.stderr}`);
    }
    const pgCtl = path.join(binDir, 'pg_ctl');
    const stopSync = () => {
      const [file, args] = asOwner(owner, pgCtl, ['-D', data, '-m', 'immediate', 'stop']);
      spawnSync(file, args, { stdio: 'ignore', timeout: 30_000 });
      rmSync(base, { recursive: true, force: true });
    };

    // The watchdog stops the cluster and removes the directory once this process is gone,
    // however it ended. Its own process group, no pipes, unref'd: it never holds the run up.
    const watchdog = spawn(
      'sh',
      [
        '-c',
        `while kill -0 "$1" 2>/dev/null; do sleep 1; done
if [ -d "$3/data" ]; then
  if [ -n "$4" ]; then runuser -u "$4" -- "$2" -D "$3/data" -m immediate stop; else "$2" -D "$3/data" -m immediate stop; fi
fi
rm -rf "$3"`,
        'switchboard-test-pg-watchdog',
        String(process.pid),
        pgCtl,
        base,
        owner ?? '',
      ],
      { cwd: '/', stdio: 'ignore', detached: true },
    );
    watchdog.unref();
    const cancelExitHook = onProcessExit(stopSync);

    try {
      const [initFile, initArgs] = asOwner(owner, path.join(binDir, 'initdb'), [
        '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--locale=C', '--no-sync', '-D', data,
      ]);
      await run(initFile, initArgs);
      let started = null;
      const failures = [];
      for (let attempt = 0; attempt < 3 && !started; attempt += 1) {
        const port = await freePort();
        const opts = `-p ${port} -k ${sockets} -c listen_addresses=127.0.0.1 -c fsync=off ` +
          '-c synchronous_commit=off -c full_page_writes=off -c max_connections=300';
        const [ctlFile, ctlArgs] = asOwner(owner, pgCtl, ['-D', data, '-l', log, '-o', opts, '-w', '-t', '60', 'start']);
        try {
          await run(ctlFile, ctlArgs, { timeoutMs: 90_000 });
          started = port;
        } catch (err) {
          failures.push(err.message);
        }
      }
      if (!started) {
        let serverLog = '';
        try {
          serverLog = readFileSync(log, 'utf8');
        } catch {
          // no log
        }
        throw new Error(`starting a throw-away PostgreSQL failed:\n${failures.join('\n')}\n--- ${log} ---\n${serverLog}`);
      }
      adminUrl = `postgres://postgres@127.0.0.1:${started}/postgres`;
    } catch (err) {
      stopSync();
      cancelExitHook();
      throw err;
    }
    let stopped = false;
    stopCluster = async () => {
      if (stopped) return;
      stopped = true;
      const [file, args] = asOwner(owner, pgCtl, ['-D', data, '-m', 'immediate', 'stop']);
      await run(file, args).catch(() => {});
      rmSync(base, { recursive: true, force: true });
      cancelExitHook();
      try {
        process.kill(watchdog.pid);
      } catch {
        // already gone
      }
    };
  }

  const created = new Set();
  const createDatabase = async (name = uniqueName('switchboard_test')) => {
    await psql(binDir, adminUrl, `CREATE DATABASE ${quoteIdent(name)}`);
    const url = withDatabase(adminUrl, name);
    created.add(url);
    return url;
  };
  const dropDatabase = async (url) => {
    const name = decodeURIComponent(new URL(url).pathname.slice(1));
    created.delete(url);
    await psql(binDir, adminUrl, `DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`);
  };

  const url = database ? await createDatabase(external ? uniqueName(database) : database) : null;
  return {
    url,
    adminUrl,
    external: Boolean(external),
    createDatabase,
    dropDatabase,
    stop: async () => {
      if (external) {
        for (const db of [...created]) await dropDatabase(db).catch(() => {});
      } else {
        await stopCluster();
      }
    },
  };
}

let sharedPg = null;

/**
 * One PostgreSQL per test process (started on first use, stopped when the process exits), so a
 * test file pays for one cluster whatever the number of `describe` blocks.
 */
export function sharedPostgres() {
  sharedPg ??= startPostgres({ database: null }).catch((err) => {
    sharedPg = null;
    throw err;
  });
  return sharedPg;
}

/** A fresh database in the shared PostgreSQL: `{ url, drop() }`. */
export async function freshDatabase() {
  const pg = await sharedPostgres();
  const url = await pg.createDatabase();
  return { url, drop: () => pg.dropDatabase(url) };
}
