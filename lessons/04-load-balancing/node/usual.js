// Lesson 04's Node twin: the usual answer to "how does cluster balance the
// load?", as interviewees write it — set SCHED_RR, fork four workers, and
// count the `request` messages they send — run in Node exactly as written.
// It has no worker branch: the workers start, run this file, find nothing
// to do and wait. Nobody listens, nobody sends a message, and the sample's
// table is never printed. `served.js` is the same sample with the worker
// branch it needs.
//
//   node lessons/04-load-balancing/node/usual.js     # four workers, and silence
//
// What the twin adds: `twin.setup` (the workbook's flags and events, see
// its header; it fixes the policy from `--sched`, rr by default, so the
// sample's own SCHED_RR line comes after the policy froze and changes
// nothing), the `distribution` event where the sample logs its table,
// and a `start` event naming the address a client would try — twin.js
// prints `start` at the first listen, and here there is none. With
// `--port 0` that address is a port that was free a moment ago.

'use strict';

const cluster = require('node:cluster');
const net = require('node:net');
const twin = require('../../../shared/node-twin/twin.js');

const opts = twin.setup({ title: "Lesson 04's Node twin: the usual load-balancing sample, as written" });

// ANCHOR: usual
cluster.schedulingPolicy = cluster.SCHED_RR; // round-robin, by name

if (cluster.isMaster) {
  for (let n = 0; n < (opts.workers ?? 4); n++) cluster.fork();

  // Requests per worker id, tallied from the workers' `request` messages.
  const perWorker = {};
  cluster.on('message', (from, note) => {
    if (note.type !== 'request') return;
    perWorker[from.id] = (perWorker[from.id] ?? 0) + 1;
    console.log('requests per worker:', perWorker);
    twin.emit('distribution', { counts: perWorker });
  });
}
// ANCHOR_END: usual

// Twin only: where a client would look for the service.
if (cluster.isPrimary) {
  const probe = net.createServer().listen(opts.port, opts.host, () => {
    const { address, port } = probe.address();
    probe.close(() => twin.emit('start', { pid: process.pid, addr: `${address}:${port}`, listening: false }));
  });
}
