// Lesson 05's Node twin: the IPC most interviewees describe, written out
// so that Node can show what it does. Each worker, as it starts, reports
// its id and heap size with `process.send` and reacts to the primary's
// messages in `process.on('message')`, ending itself with `process.exit(0)`
// on `shutdown`. The primary hears each worker on its own Worker object
// (`worker.on('message')`), sends each a config right after forking it, and
// then one `reload` to everybody by walking `cluster.workers`; on SIGTERM it
// walks them again with `shutdown` (one of the "graceful shutdown signals"
// the answer lists as a use of IPC).
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
  for (let n = 0; n < (opts.workers ?? 4); n++) {
    const w = cluster.fork();
    // Heard on this worker's own object: only what this worker sends.
    w.on('message', (m) => twin.log(`primary <- worker ${w.id}:`, m.type ?? m.cmd ?? '?'));
    // Sent at once, before the worker runs: the channel queues it.
    w.send({ type: 'config', settings: { maxConnections: 1000 } });
  }

  // Everybody at once: one send per entry of cluster.workers.
  for (const w of Object.values(cluster.workers)) w.send({ type: 'reload' });
  // ANCHOR_END: primary

  process.on('SIGTERM', () => {
    twin.emit('shutdown', { reason: 'SIGTERM' });
    for (const w of Object.values(cluster.workers)) w.send({ type: 'shutdown' });
  });

  probes.primary(opts);
} else {
  // ANCHOR: worker
  const me = cluster.worker.id;
  // Unasked, once, at start: who this is and how much heap it uses.
  process.send({ type: 'status', id: me, heapUsed: process.memoryUsage().heapUsed });

  // Whatever the primary sends. `shutdown` ends the process there and then.
  process.on('message', (m) => {
    twin.log(`worker ${me} <-`, m.type);
    if (m.type === 'shutdown') process.exit(0);
  });
  // ANCHOR_END: worker

  const server = http.createServer((req, res) => {
    process.send({ request_started: 1000 }); // so a scenario knows it is in flight
    setTimeout(() => res.end(`worker ${me} answered after 1 s\n`), 1000);
  });
  twin.tag(server).listen(opts.port, opts.host);

  probes.worker();
}
