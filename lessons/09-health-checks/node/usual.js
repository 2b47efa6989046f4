// Lesson 09's Node twin: the usual answer's health monitor, as it is — a
// `WorkerHealthTracker` per worker id, a health check over IPC every 5 s,
// a 2 s timeout, 3 consecutive failures, a memory limit on `heapUsed`,
// "5 restarts per hour" kept in the tracker, and `restartWorker`, which
// forks a new worker and `kill()`s the old one when the new one listens.
//
//   node lessons/09-health-checks/node/usual.js --workers 2
//   curl 'localhost:8000/block?ms=20000'     # a busy loop: no health reply
//   curl 'localhost:8000/leak?mb=100'        # 100 MiB kept on the JS heap
//   curl 'localhost:8000/leak?mb=100&in=buffer'  # … in Buffers, off the heap
//   (with --pool 4) curl localhost:8000/stuck, four times: the pool is empty
//
// The timers and the memory limit are flags, so that a scenario can shorten
// them (and says so). The primary prints, as events, what the usual answer
// logs: `health_check_failed`, `over_memory`, `restarting`,
// `too_many_restarts`, and its dashboard (`dashboard {workers: […]}`).
// `twin.js` adds only the workbook's flags and event lines (see its header).

'use strict';

const cluster = require('node:cluster');
const http = require('node:http');
const twin = require('../../../shared/node-twin/twin.js');

const opts = twin.setup({
  title: "Lesson 09's Node twin: the usual WorkerHealthTracker and restartWorker",
  flags: {
    interval: { type: 'string', default: '5s', help: 'HEALTH_CHECK_INTERVAL [default: 5s]' },
    timeout: { type: 'string', default: '2s', help: 'HEALTH_TIMEOUT [default: 2s]' },
    'max-memory': { type: 'string', default: '500', help: 'MAX_MEMORY in MiB, compared with heapUsed [default: 500]' },
    dashboard: { type: 'string', default: '10s', help: "the dashboard's interval [default: 10s]" },
    'listen-after': { type: 'string', default: '0s', help: 'each worker waits this long before it listens (a slow start) [default: 0s]' },
    pool: { type: 'string', default: '0', help: "connections in each worker's database pool, checked out by every request; /stuck keeps its own (0: no pool) [default: 0]" },
  },
});
const ms = (flag) => twin.seconds(opts[flag], `--${flag}`) * 1000;

if (cluster.isPrimary) {
  // ANCHOR: tracker
  const workerHealth = new Map();
  const HEALTH_CHECK_INTERVAL = ms('interval');
  const HEALTH_TIMEOUT = ms('timeout');
  const MAX_FAILURES = 3;
  const MAX_MEMORY = Number(opts['max-memory']) * 1024 * 1024;
  const MAX_RESTARTS_PER_HOUR = 5;

  class WorkerHealthTracker {
    constructor(workerId) {
      this.workerId = workerId;
      this.consecutiveFailures = 0;
      this.lastHealthCheck = Date.now();
      this.restarts = []; // a new tracker, so a new, empty history, per worker
      this.metrics = { memory: 0, cpu: 0, requests: 0 };
    }

    recordFailure() {
      this.consecutiveFailures++;
      twin.emit('health_check_failed', {
        id: this.workerId,
        failures: this.consecutiveFailures,
        since_ok_ms: Date.now() - this.lastHealthCheck, // its last answer, this long ago
      });
      if (this.consecutiveFailures >= MAX_FAILURES) {
        return this.shouldRestart();
      }
      return false;
    }

    recordSuccess(metrics) {
      this.consecutiveFailures = 0;
      this.lastHealthCheck = Date.now();
      this.metrics = metrics;
      if (metrics.memory > MAX_MEMORY) {
        twin.emit('over_memory', { id: this.workerId, memory_mib: mib(metrics.memory) });
        return this.shouldRestart();
      }
      return false;
    }

    shouldRestart() {
      const oneHourAgo = Date.now() - 3600000;
      this.restarts = this.restarts.filter((t) => t > oneHourAgo);
      if (this.restarts.length >= MAX_RESTARTS_PER_HOUR) {
        twin.emit('too_many_restarts', { id: this.workerId, restarts: this.restarts.length });
        return false;
      }
      this.restarts.push(Date.now());
      return true;
    }
  }
  // ANCHOR_END: tracker

  const workers = opts.workers ?? 4;
  for (let i = 0; i < workers; i++) {
    const worker = cluster.fork();
    workerHealth.set(worker.id, new WorkerHealthTracker(worker.id));
  }

  // ANCHOR: checks
  cluster.on('message', (worker, msg) => {
    if (msg.type === 'health') {
      const tracker = workerHealth.get(worker.id);
      if (!tracker) return;
      if (msg.healthy) {
        if (tracker.recordSuccess(msg.metrics)) {
          restarting(worker, 'memory', tracker);
          restartWorker(worker);
        }
      } else if (tracker.recordFailure()) {
        restarting(worker, 'unhealthy', tracker);
        restartWorker(worker);
      }
    }
  });

  setInterval(() => {
    for (const id in cluster.workers) {
      cluster.workers[id].send({ type: 'health-check' });
    }
    setTimeout(() => {
      for (const [workerId, tracker] of workerHealth) {
        const timeSinceCheck = Date.now() - tracker.lastHealthCheck;
        if (timeSinceCheck > HEALTH_TIMEOUT) {
          if (tracker.recordFailure()) {
            const worker = cluster.workers[workerId];
            if (worker) {
              restarting(worker, 'unresponsive', tracker);
              restartWorker(worker);
            }
          }
        }
      }
    }, HEALTH_TIMEOUT);
  }, HEALTH_CHECK_INTERVAL);

  function restartWorker(oldWorker) {
    const newWorker = cluster.fork();
    workerHealth.set(newWorker.id, new WorkerHealthTracker(newWorker.id));
    newWorker.once('listening', () => {
      oldWorker.kill(); // no drain: SIGTERM now
      workerHealth.delete(oldWorker.id);
    });
  }
  // ANCHOR_END: checks

  function restarting(worker, reason, tracker) {
    twin.emit('restarting', { id: worker.id, reason, restarts_in_hour: tracker.restarts.length });
  }

  // The dashboard: a table for people, a `dashboard` event for scenarios.
  setInterval(() => {
    const rows = [];
    for (const [workerId, tracker] of workerHealth) {
      const m = tracker.metrics;
      rows.push({
        id: workerId,
        failures: tracker.consecutiveFailures,
        memory_mib: mib(m.memory),
        cpu_pct: m.cpu, // printed below as `CPU ${cpu.toFixed(2)}%`
        restarts: tracker.restarts.length,
      });
      twin.log(`Worker ${workerId}: failures ${tracker.consecutiveFailures}/${MAX_FAILURES}, memory ${mib(m.memory)}MB, CPU ${m.cpu.toFixed(2)}%, restarts (1h) ${tracker.restarts.length}/${MAX_RESTARTS_PER_HOUR}`);
    }
    twin.emit('dashboard', { workers: rows });
  }, ms('dashboard'));
} else {
  let requestCount = 0;
  const kept = []; // what /leak keeps

  // --pool: a database pool in front of every request (the usual answer
  // has none; an app that talks to a database has one).
  const pool = Number(opts.pool) > 0 ? connectionPool(Number(opts.pool)) : null;

  const server = http.createServer((req, res) => {
    if (!pool) return handle(req, res);
    pool.checkOut(() => {
      if (req.url === '/stuck') return; // a query that never returns: the connection is never given back
      res.on('close', pool.release);
      handle(req, res);
    });
  });

  function handle(req, res) {
    requestCount++;
    const url = new URL(req.url, 'http://x');
    if (url.pathname === '/block') {
      // A busy loop: the event loop, health checks included, waits.
      const until = Date.now() + Number(url.searchParams.get('ms') || 1000);
      while (Date.now() < until) {}
      const cpu = process.cpuUsage();
      res.end(JSON.stringify({ blocked_ms: Number(url.searchParams.get('ms') || 1000), cpu_s: (cpu.user + cpu.system) / 1e6 }));
    } else if (url.pathname === '/leak') {
      leak(Number(url.searchParams.get('mb') || 10), url.searchParams.get('in') || 'heap');
      const memory = process.memoryUsage();
      res.end(JSON.stringify({ heap_used_mib: mib(memory.heapUsed), rss_mib: mib(memory.rss) }));
    } else if (url.pathname === '/slow') {
      setTimeout(() => res.end('slow\n'), Number(url.searchParams.get('ms') || 500));
    } else {
      res.end('OK');
    }
  }
  // A worker that takes a while to start (it loads something first):
  // --listen-after delays its listen(), and so its 'listening'.
  setTimeout(() => twin.tag(server).listen(opts.port, opts.host), ms('listen-after'));

  // ANCHOR: reply
  process.on('message', (msg) => {
    if (msg.type === 'health-check') {
      const memUsage = process.memoryUsage();
      const cpuUsage = process.cpuUsage(); // since the process started
      process.send({
        type: 'health',
        healthy: true,
        metrics: {
          memory: memUsage.heapUsed, // the JS heap only
          cpu: (cpuUsage.user + cpuUsage.system) / 1000000, // seconds, shown as "%"
          requests: requestCount,
        },
      });
    }
  });
  // ANCHOR_END: reply

  /// `size` connections; a request waits in line for one when none is
  /// free. Says so (a `message` to the primary) each time the last one goes.
  function connectionPool(size) {
    let free = size;
    const waiting = [];
    return {
      checkOut(use) {
        if (free === 0) return waiting.push(use);
        free--;
        if (free === 0) process.send({ type: 'pool', pool: 'empty' });
        use();
      },
      release() {
        const next = waiting.shift();
        if (next) next();
        else free++;
      },
    };
  }

  /// Keeps `mb` MiB: numbers in JS arrays (the V8 heap), or Buffers
  /// (outside it), each page written so that it is really held.
  function leak(mb, where) {
    for (let i = 0; i < mb; i++) {
      kept.push(where === 'buffer' ? Buffer.alloc(1 << 20, 1) : new Array(1 << 17).fill(i + 0.5));
    }
  }
}

function mib(bytes) {
  return Math.round(bytes / (1 << 20));
}
