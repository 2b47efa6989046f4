// Lesson 05's Node twin: the usual answer to "how do workers communicate
// with the primary?", as interviewees write it. Each worker sends a status
// with `process.send` and listens with `process.on('message')`, exiting on
// `{ type: 'shutdown' }`; the primary listens with `worker.on('message')`,
// sends each worker a config with `worker.send`, and broadcasts by looping
// over `cluster.workers`. On SIGTERM it broadcasts `shutdown` the same way
// (one of the "graceful shutdown signals" the answer lists).
//
//   node lessons/05-ipc/node/usual.js                 # port 8000, 4 workers
//   node lessons/05-ipc/node/usual.js --workers 3 --serialization advanced
//
// `twin.js` adds only the workbook's flags and event lines (see its header).
// The workers also serve HTTP (every request takes 1 s, so that a request
// can be in flight when `shutdown` arrives), and `probes.js` adds the
// experiments the scenarios check: what a copy keeps, backpressure, ordering,
// `NODE_` messages and sends to a worker that has just died.

'use strict';

const cluster = require('node:cluster');
const http = require('node:http');
const twin = require('../../../shared/node-twin/twin.js');
const probes = require('./probes.js');

const opts = twin.setup({
  title: "Lesson 05's Node twin: process.send, worker.send and a broadcast loop",
  flags: {
    serialization: {
      type: 'string',
      default: 'json',
      help: "json (Node's default) or advanced (structured clone): how messages are copied",
    },
    'no-callback': {
      type: 'boolean',
      help: 'on SIGUSR2, send to the worker that has just died without a callback',
    },
  },
});

if (cluster.isMaster) {
  if (opts.serialization !== 'json') {
    // setupPrimary since v16 (setupMaster before); read at each fork.
    cluster.setupPrimary({ serialization: opts.serialization });
  }

  // ANCHOR: primary
  for (let i = 0; i < (opts.workers ?? 4); i++) {
    const worker = cluster.fork();

    // Master receives message from worker
    worker.on('message', (msg) => {
      twin.log(`received from worker ${worker.id}:`, msg.type ?? msg.cmd ?? '?');
    });

    // Master sends message to worker
    worker.send({ type: 'config', data: { maxConnections: 1000 } });
  }

  // Broadcast to all workers
  for (const id in cluster.workers) {
    cluster.workers[id].send({ type: 'reload' });
  }
  // ANCHOR_END: primary

  process.on('SIGTERM', () => {
    twin.emit('shutdown', { reason: 'SIGTERM' });
    for (const id in cluster.workers) {
      cluster.workers[id].send({ type: 'shutdown' });
    }
  });

  probes.primary(opts);
} else {
  // ANCHOR: worker
  process.send({
    type: 'status',
    workerId: cluster.worker.id,
    memory: process.memoryUsage().heapUsed,
  });

  process.on('message', (msg) => {
    twin.log('received:', msg.type);
    if (msg.type === 'shutdown') {
      process.exit(0);
    }
  });
  // ANCHOR_END: worker

  const server = http.createServer((req, res) => {
    process.send({ request_started: 1000 }); // so a scenario knows it is in flight
    setTimeout(() => res.end(`Done by worker ${cluster.worker.id}\n`), 1000);
  });
  twin.tag(server).listen(opts.port, opts.host);

  probes.worker();
}
