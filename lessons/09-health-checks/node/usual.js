// Lesson 09's Node twin: the usual answer's health monitor, run as it is
// written. The primary keeps one record per worker id (a class, in a Map),
// asks every worker for its vitals over IPC every 5 s, and 2 s later counts
// a miss against every record whose last answer is older than that; three
// misses in a row, or a heap over the limit, mean a restart, allowed five
// times an hour by a history kept in the record. A restart forks the
// replacement and `kill()`s the sick worker once the replacement listens.
// There is no 'exit' handler: a worker that dies is not replaced.
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
  title: "Lesson 09's Node twin: the usual IPC health monitor, with restarts by fork-then-kill",
  flags: {
    interval: { type: 'string', default: '5s', help: 'how often the primary asks every worker for its vitals [default: 5s]' },
    timeout: { type: 'string', default: '2s', help: 'how long after asking it looks for answers older than this [default: 2s]' },
    'max-memory': { type: 'string', default: '500', help: 'the limit in MiB, compared with heapUsed [default: 500]' },
    dashboard: { type: 'string', default: '10s', help: "the dashboard's interval [default: 10s]" },
    'listen-after': { type: 'string', default: '0s', help: 'each worker waits this long before it listens (a slow start) [default: 0s]' },
    pool: { type: 'string', default: '0', help: "connections in each worker's database pool, checked out by every request; /stuck keeps its own (0: no pool) [default: 0]" },
  },
});
const ms = (flag) => twin.seconds(opts[flag], `--${flag}`) * 1000;

if (cluster.isPrimary) {
  // ANCHOR: tracker
  const ASK_EVERY = ms('interval');
  const ANSWER_WITHIN = ms('timeout');
  const STRIKES = 3; // misses in a row before a restart
  const HEAP_LIMIT = Number(opts['max-memory']) * 2 ** 20;
  const RESTARTS_PER_HOUR = 5;
  const HOUR = 60 * 60 * 1000;
  const records = new Map(); // worker id -> its HealthRecord

  class HealthRecord {
    constructor(id) {
      this.id = id;
      this.misses = 0;
      this.answeredAt = Date.now();
      this.restartedAt = []; // this worker's own history: a new record starts empty
      this.vitals = { heap: 0, cpuSeconds: 0, served: 0 };
    }

    // A check went unanswered (or answered "unwell"). True: restart it.
    missed() {
      this.misses += 1;
      twin.emit('health_check_failed', {
        id: this.id,
        failures: this.misses,
        since_ok_ms: Date.now() - this.answeredAt, // age of its last answer
      });
      return this.misses >= STRIKES && this.mayRestart();
    }

    // An answer came: the count starts again. True: restart it anyway.
    answered(vitals) {
      this.misses = 0;
      this.answeredAt = Date.now();
      this.vitals = vitals;
      if (vitals.heap <= HEAP_LIMIT) return false;
      twin.emit('over_memory', { id: this.id, memory_mib: mib(vitals.heap) });
      return this.mayRestart();
    }

    // Five restarts in the last hour at most; deciding one records it.
    mayRestart() {
      const now = Date.now();
      this.restartedAt = this.restartedAt.filter((at) => now - at < HOUR);
      if (this.restartedAt.length >= RESTARTS_PER_HOUR) {
        twin.emit('too_many_restarts', { id: this.id, restarts: this.restartedAt.length });
        return false;
      }
      this.restartedAt.push(now);
      return true;
    }
  }
  // ANCHOR_END: tracker

  const count = opts.workers ?? 4;
  for (let n = 0; n < count; n++) {
    const child = cluster.fork();
    records.set(child.id, new HealthRecord(child.id));
  }

  // ANCHOR: checks
  cluster.on('message', (child, note) => {
    if (note.kind !== 'vitals') return;
    const record = records.get(child.id);
    if (record === undefined) return; // its restart is done: record dropped
    const restart = note.ok ? record.answered(note.vitals) : record.missed();
    if (restart) {
      announce(child, note.ok ? 'memory' : 'unhealthy', record);
      replace(child);
    }
  });

  setInterval(() => {
    for (const child of Object.values(cluster.workers)) child.send({ kind: 'ask-vitals' });
    // No per-request timeout: one sweep, ANSWER_WITHIN later, over every record.
    setTimeout(() => {
      for (const [id, record] of records) {
        if (Date.now() - record.answeredAt <= ANSWER_WITHIN) continue;
        if (!record.missed()) continue;
        const child = cluster.workers[id]; // undefined once it has died
        if (child) {
          announce(child, 'unresponsive', record);
          replace(child);
        }
      }
    }, ANSWER_WITHIN);
  }, ASK_EVERY);

  // Fork first; the sick one goes (SIGTERM, no drain) when the new one listens.
  function replace(sick) {
    const fresh = cluster.fork();
    records.set(fresh.id, new HealthRecord(fresh.id));
    fresh.once('listening', () => {
      sick.kill();
      records.delete(sick.id); // and its restart history with it
    });
  }
  // ANCHOR_END: checks

  function announce(child, reason, record) {
    twin.emit('restarting', { id: child.id, reason, restarts_in_hour: record.restartedAt.length });
  }

  // The dashboard: a line per worker for people, a `dashboard` event for
  // scenarios. Its "CPU %" is the answer's cumulative CPU seconds, as is.
  setInterval(() => {
    const rows = [...records].map(([id, record]) => ({
      id,
      failures: record.misses,
      memory_mib: mib(record.vitals.heap),
      cpu_pct: record.vitals.cpuSeconds,
      restarts: record.restartedAt.length,
    }));
    for (const row of rows) {
      twin.log(`#${row.id}  misses ${row.failures} of ${STRIKES}  heap ${row.memory_mib} MiB  cpu ${row.cpu_pct.toFixed(2)} %  restarts this hour ${row.restarts} of ${RESTARTS_PER_HOUR}`);
    }
    twin.emit('dashboard', { workers: rows });
  }, ms('dashboard'));
} else {
  let served = 0;
  const hoard = []; // what /leak keeps alive

  // --pool: a database pool in front of every request (the usual answer
  // has none; an app that talks to a database has one).
  const pool = Number(opts.pool) > 0 ? connectionPool(Number(opts.pool)) : null;

  const server = http.createServer((req, res) => {
    if (!pool) return route(req, res);
    pool.checkOut(() => {
      if (req.url === '/stuck') return; // a query that never returns: the connection is never given back
      res.on('close', pool.release);
      route(req, res);
    });
  });

  function route(req, res) {
    served += 1;
    const url = new URL(req.url, 'http://x');
    const number = (name, fallback) => Number(url.searchParams.get(name) || fallback);
    switch (url.pathname) {
      case '/block': {
        // A busy loop: the event loop, health checks included, waits.
        const spin = number('ms', 1000);
        const end = Date.now() + spin;
        while (Date.now() < end) {}
        const cpu = process.cpuUsage();
        return res.end(JSON.stringify({ blocked_ms: spin, cpu_s: (cpu.user + cpu.system) / 1e6 }));
      }
      case '/leak': {
        leak(number('mb', 10), url.searchParams.get('in') || 'heap');
        const memory = process.memoryUsage();
        return res.end(JSON.stringify({ heap_used_mib: mib(memory.heapUsed), rss_mib: mib(memory.rss) }));
      }
      case '/slow':
        return setTimeout(() => res.end('slow\n'), number('ms', 500));
      default:
        return res.end('served\n');
    }
  }
  // A worker that takes a while to start (it loads something first):
  // --listen-after delays its listen(), and so its 'listening'.
  setTimeout(() => twin.tag(server).listen(opts.port, opts.host), ms('listen-after'));

  // ANCHOR: reply
  // Answered by the event loop that serves requests: always "ok", whatever
  // the requests are going through.
  process.on('message', (note) => {
    if (note.kind !== 'ask-vitals') return;
    const cpu = process.cpuUsage(); // microseconds since this process started
    process.send({
      kind: 'vitals',
      ok: true,
      vitals: {
        heap: process.memoryUsage().heapUsed, // the V8 heap, not the process
        cpuSeconds: (cpu.user + cpu.system) / 1e6,
        served,
      },
    });
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
        if (free === 0) process.send({ kind: 'pool', pool: 'empty' });
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
      hoard.push(where === 'buffer' ? Buffer.alloc(1 << 20, 1) : new Array(1 << 17).fill(i + 0.5));
    }
  }
}

function mib(bytes) {
  return Math.round(bytes / (1 << 20));
}
