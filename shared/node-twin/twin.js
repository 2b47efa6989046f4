// The plumbing every Node twin shares, so that a twin's own file reads as
// the usual interview answer and nothing else.
//
// A twin is the usual answer to one lesson's question, run in Node itself.
// The scenario runner drives it exactly as it drives the Rust lesson: the
// same flags (`--workers 4 --port 0 --host 127.0.0.1 --events json`), the
// same event lines on stdout, the same load and the same faults. This module
// is that contract, and only that:
//
// - `setup()` reads the flags, fixes the scheduling policy before the first
//   fork (Node reads it once), and in the primary prints cluster's own
//   events (`fork`, `online`, `listening`, `message`, `disconnect`, `exit`)
//   under the names and fields the Rust supervisor uses;
// - `emit()` prints a twin's own event (`rollout_started`, `shutdown`, …);
// - `log()` prints a line for people: on stderr when stdout carries events;
// - `tag(server)` names the worker in an `x-worker-id` response header, the
//   header the load generator counts workers by.
//
// Two things here are not part of any usual answer, and neither changes what
// Node does while the primary lives:
//
// - with `--events json`, a worker's stdout is its primary's stderr, and the
//   primary's `console.log` writes to stderr: stdout carries events only;
// - every worker runs under `setpriv --pdeathsig SIGKILL` (util-linux), so it
//   is killed if its primary is. A Node worker whose primary dies exits by
//   itself when its IPC channel closes — unless its event loop is blocked,
//   and a blocked worker is exactly what some lessons show. The tests'
//   promise is that no process outlives them, `kill -9` included.

'use strict';

const cluster = require('node:cluster');
const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');

/// The flags every twin takes, named and defaulted as the Rust lessons do.
const COMMON = {
  workers: { type: 'string', short: 'w' },
  port: { type: 'string', short: 'p', default: '8000' },
  host: { type: 'string', default: '127.0.0.1' },
  sched: { type: 'string', default: 'rr' },
  events: { type: 'string', default: process.env.CLUSTER_EVENTS || 'human' },
  help: { type: 'boolean', short: 'h' },
};

let format = 'human';
let generation = 1;
let announced = false;

/// Reads the command line (the primary's; cluster gives workers the same),
/// and in the primary starts printing cluster's events. `flags` are the
/// twin's own, in `util.parseArgs` form, with a `help` line each.
function setup({ title = '', flags = {} } = {}) {
  const options = { ...COMMON };
  for (const [name, spec] of Object.entries(flags)) {
    const { help: _help, ...parse } = spec;
    options[name] = parse;
  }
  let values;
  try {
    ({ values } = parseArgs({ options, strict: true, allowPositionals: false }));
  } catch (error) {
    fail(`${error.message} (try --help)`);
  }
  if (values.help) {
    usage(title, flags);
    process.exit(0);
  }

  const opts = { ...values };
  opts.port = whole(values.port, '--port', 0, 65535);
  opts.workers = values.workers === undefined ? undefined : whole(values.workers, '--workers', 1, 256);
  if (!['human', 'json', 'quiet'].includes(values.events)) {
    fail(`--events takes human, json or quiet, not ${JSON.stringify(values.events)}`);
  }
  format = values.events;

  if (cluster.isPrimary) {
    cluster.schedulingPolicy = schedulingPolicy(values.sched);
    const settings = {};
    if (format === 'json') {
      // Worker stdout → our stderr; our own console.log → stderr.
      settings.stdio = [0, 2, 2, 'ipc'];
      console.log = console.error;
      console.info = console.error;
    }
    const setpriv = ['/usr/bin/setpriv', '/bin/setpriv'].find((file) => fs.existsSync(file));
    if (setpriv) {
      // cluster forks `process.execPath` with `execArgv`: point it at
      // setpriv, which sets the death signal and then runs node itself
      // (same pid, same IPC channel, same arguments).
      settings.execArgv = ['--pdeathsig', 'SIGKILL', process.execPath, ...process.execArgv];
      process.execPath = setpriv;
    }
    cluster.setupPrimary(settings);
    watch(opts);
  }
  return opts;
}

/// `rr` → SCHED_RR (the primary accepts), `shared` → SCHED_NONE (the
/// workers accept on one socket). cluster has no third policy.
function schedulingPolicy(name) {
  switch (name) {
    case 'rr':
      return cluster.SCHED_RR;
    case 'shared':
      return cluster.SCHED_NONE;
    case 'reuseport':
      return fail(
        `cluster has no reuseport policy (net's listen({ reusePort: true }) exists since v22.12, without cluster): use --sched rr or shared`,
      );
    default:
      return fail(`--sched takes rr or shared, not ${JSON.stringify(name)}`);
  }
}

/// Prints cluster's events as they happen, in the supervisor's names.
function watch(opts) {
  cluster.on('fork', (worker) => {
    emit('fork', { id: worker.id, pid: worker.process.pid, generation });
  });
  cluster.on('online', (worker) => emit('online', { id: worker.id }));
  cluster.on('listening', (worker, address) => {
    const addr = formatAddress(address);
    if (!announced) {
      // The supervisor says where it listens before it forks; in Node the
      // primary learns the address (port 0 resolved) at the first listen.
      announced = true;
      emit('start', {
        pid: process.pid,
        addr,
        sched: opts.sched,
        workers: Object.keys(cluster.workers).length,
      });
    }
    emit('listening', { id: worker.id, addr });
  });
  cluster.on('message', (worker, body) => emit('message', { id: worker.id, body }));
  cluster.on('disconnect', (worker) => emit('disconnect', { id: worker.id }));
  cluster.on('exit', (worker, code, signal) => {
    emit('exit', {
      id: worker.id,
      pid: worker.process.pid,
      code,
      signal,
      exited_after_disconnect: worker.exitedAfterDisconnect === true,
    });
  });
}

/// Prints one event: a JSON line on stdout with `--events json`, otherwise
/// a line for people. A `rollout_started` event opens a new generation, so
/// that `fork` events tell old workers from new ones as the Rust ones do.
function emit(kind, fields = {}) {
  if (kind === 'rollout_started') {
    generation += 1;
    fields = { generation, ...fields };
  }
  if (format === 'json') {
    process.stdout.write(`${JSON.stringify({ event: kind, ...fields })}\n`);
  } else if (format === 'human') {
    process.stdout.write(`[primary] ${human(kind, fields)}\n`);
  }
}

/// An event as a sentence; a twin's own events as `kind key=value …`.
function human(kind, f) {
  switch (kind) {
    case 'start':
      return `serving on http://${f.addr} (the first worker listens)`;
    case 'fork':
      return `worker ${f.id} forked (pid ${f.pid})`;
    case 'online':
      return `worker ${f.id} is online`;
    case 'listening':
      return `worker ${f.id} is listening on ${f.addr}`;
    case 'message':
      return `worker ${f.id} sent ${JSON.stringify(f.body)}`;
    case 'disconnect':
      return `worker ${f.id} disconnected`;
    case 'exit': {
      const how = f.signal ? `was killed by ${f.signal}` : `exited with code ${f.code}`;
      return `worker ${f.id} ${how}${f.exited_after_disconnect ? ' after disconnect()' : ''}`;
    }
    default: {
      const detail = Object.entries(f)
        .map(([key, value]) => `${key}=${typeof value === 'string' ? value : JSON.stringify(value)}`)
        .join(' ');
      return `${kind} ${detail}`.trimEnd();
    }
  }
}

/// A line for people, named after the process that says it.
function log(...words) {
  const who = cluster.isPrimary ? '[primary]' : `[worker ${cluster.worker.id}]`;
  const line = `${who} ${words.join(' ')}\n`;
  if (format === 'json' || !cluster.isPrimary) {
    process.stderr.write(line);
  } else {
    process.stdout.write(line);
  }
}

/// Every response of `server` names its worker (`x-worker-id`), set before
/// the twin's own handler runs.
function tag(server) {
  const id = String(cluster.worker ? cluster.worker.id : 0);
  server.prependListener('request', (_request, response) => response.setHeader('x-worker-id', id));
  return server;
}

/// Seconds as the Rust lessons read them: `10`, `0.5`, `10s`, `500ms`.
function seconds(text, flag) {
  const match = /^\s*([0-9]*\.?[0-9]+)\s*(ms|s)?\s*$/.exec(String(text));
  const value = match ? Number(match[1]) * (match[2] === 'ms' ? 0.001 : 1) : NaN;
  if (!Number.isFinite(value) || value > 86400) {
    fail(`${flag} takes a duration from 0 to a day, like 10, 0.5, 10s or 500ms, not ${JSON.stringify(text)}`);
  }
  return value;
}

function whole(text, flag, min, max) {
  const value = Number(text);
  if (!/^[0-9]+$/.test(String(text)) || value < min || value > max) {
    fail(`${flag} takes a whole number from ${min} to ${max}, not ${JSON.stringify(text)}`);
  }
  return value;
}

function formatAddress({ address, port }) {
  const host = address && address.includes(':') ? `[${address}]` : address || '0.0.0.0';
  return `${host}:${port}`;
}

function usage(title, flags) {
  const program = path.relative(process.cwd(), process.argv[1] || 'twin.js');
  const lines = [
    title,
    '',
    `usage: node ${program} [flags]`,
    '',
    '  -w, --workers N     workers to fork [default: the twin decides, as its answer does]',
    '  -p, --port N        port to listen on; 0 picks a free one [default: 8000]',
    '      --host ADDR     address to listen on [default: 127.0.0.1]',
    '      --sched NAME    rr (the primary accepts) or shared (the workers do) [default: rr]',
    '      --events FMT    human, json (one event per line on stdout) or quiet [default: human]',
  ];
  for (const [name, spec] of Object.entries(flags)) {
    const arg = spec.type === 'boolean' ? '' : ' X';
    lines.push(`      --${name}${arg}`.padEnd(22) + (spec.help || ''));
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}

/// A package the twins share (`ioredis`, `ws`), from this folder's
/// `node_modules`, which `npm ci` fills from the committed lock file.
function dependency(name) {
  try {
    return require(name);
  } catch (error) {
    if (error.code !== 'MODULE_NOT_FOUND') throw error;
    return fail(`the twin needs the npm package ${name}: run \`npm ci --prefix ${path.relative(process.cwd(), __dirname) || '.'}\``);
  }
}

/// One line that says what is wrong, then exit 2, as the Rust lessons do.
function fail(message) {
  process.stderr.write(`error: ${message}\n`);
  process.exit(2);
}

module.exports = { setup, emit, log, tag, seconds, dependency, fail };
