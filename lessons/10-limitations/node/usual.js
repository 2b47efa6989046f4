// Lesson 10's Node twin: the usual answer's limitations and anti-patterns,
// run as one app. The worker serves an in-memory counter (the "won't work"
// half), the same counter in Redis (`INCR`, the "use Redis" half) and a slow
// page; the primary has the usual crash handler ("always restart") and the
// usual abrupt SIGTERM handler.
//
//   REDIS_URL=redis://127.0.0.1:6379 node lessons/10-limitations/node/usual.js
//   curl localhost:8000/count; curl localhost:8000/count-redis
//   curl 'localhost:8000/exit?code=0'     # a worker that exits 0: never replaced
//
// `twin.js` adds only the workbook's flags and event lines (see its header).
// The endpoints /slow and /exit are the lesson's faults, as in the Rust lesson.

'use strict';

const cluster = require('node:cluster');
const http = require('node:http');
const os = require('node:os');
const twin = require('../../../shared/node-twin/twin.js');

const opts = twin.setup({ title: "Lesson 10's Node twin: a counter per worker and in Redis, the usual crash and SIGTERM handlers" });

if (cluster.isPrimary) {
  // "Match CPU cores" (os.cpus(): the host's, not this process's).
  const numWorkers = opts.workers ?? os.cpus().length;
  for (let i = 0; i < numWorkers; i++) {
    cluster.fork();
  }

  // Not part of the usual answer: the file limit this process got from
  // whoever started it, and whether Node can change it (`limits`).
  twin.emit('limits', { open_files: openFiles(), setrlimit: typeof process.setrlimit });

  // ANCHOR: crash
  // The usual "always restart": only a non-zero code that no one asked for.
  cluster.on('exit', (worker, code, signal) => {
    if (code !== 0 && !worker.exitedAfterDisconnect) {
      twin.log(`Worker ${worker.id} crashed (code ${code}, signal ${signal}), restarting...`);
      cluster.fork();
    }
  });
  // ANCHOR_END: crash

  // ANCHOR: abrupt
  // The usual "abrupt shutdown": the primary leaves at once.
  process.on('SIGTERM', () => {
    process.exit(0);
  });
  // ANCHOR_END: abrupt
} else {
  process.send({ open_files: openFiles() }); // inherited from the primary
  const redis = connect(twin.dependency('ioredis'));

  // ANCHOR: count
  let requestCount = 0; // one per worker process

  function count(req, res) {
    requestCount++; // only this worker's share
    res.end(JSON.stringify({ count: requestCount }));
  }

  async function countRedis(req, res) {
    const count = await redis.incr('request-count'); // every worker's, atomically
    res.end(JSON.stringify({ count }));
  }
  // ANCHOR_END: count

  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname === '/count') {
      count(req, res);
    } else if (url.pathname === '/count-redis') {
      countRedis(req, res);
    } else if (url.pathname === '/slow') {
      setTimeout(() => res.end('slow\n'), Number(url.searchParams.get('ms') || 300));
    } else if (url.pathname === '/exit') {
      // A worker that exits by itself, with the code asked for.
      res.end(`worker ${cluster.worker.id} exits with code ${url.searchParams.get('code')}\n`, () =>
        process.exit(Number(url.searchParams.get('code') || 0)),
      );
    } else {
      res.end('OK\n');
    }
  });
  twin.tag(server).listen(opts.port, opts.host);
}

/// This process's soft limit on open files (RLIMIT_NOFILE).
function openFiles() {
  return process.report.getReport().userLimits.open_files.soft;
}

/// ioredis on REDIS_URL: `redis://…`, or `redis+unix:///path` (the runner's
/// private server), which ioredis takes as `{ path }`.
function connect(Redis) {
  const url = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
  const unix = /^redis\+unix:\/\/(\/[^?]*)/.exec(url);
  return unix ? new Redis({ path: unix[1] }) : new Redis(url);
}
