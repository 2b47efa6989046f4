// Lesson 06's Node twin: the graceful shutdown most interviewees describe,
// written out so that Node can show what it does. The primary forks its
// workers into a plain array of its own and never updates it; SIGTERM makes
// it send every worker in that array a `shutdown` message and start a 10 s
// timer, which SIGKILLs the array and exits 0 whatever happened meanwhile.
// A worker keeps each request (1 s long) in a Set; on `shutdown` it closes
// its server, looks at the Set once a second and exits 0 when it is empty,
// and exits 0 anyway after 10 s.
//
//   node lessons/06-graceful-shutdown/node/usual.js            # port 8000
//   node lessons/06-graceful-shutdown/node/usual.js --workers 2 --clients
//
// `twin.js` adds only the workbook's flags and event lines (see its header).
// Two more lines are instruments, not part of the answer: each request tells
// the primary it has started (so that a scenario can send SIGTERM while
// requests are certainly in flight), and `--clients` makes the primary play
// three keep-alive clients a load generator cannot play (`clients.js`).

'use strict';

const cluster = require('node:cluster');
const http = require('node:http');
const twin = require('../../../shared/node-twin/twin.js');

const opts = twin.setup({
  title: "Lesson 06's Node twin: the usual graceful shutdown",
  flags: {
    clients: {
      type: 'boolean',
      help: 'play three keep-alive clients (idle, silent, busy) and report how each connection ends',
    },
  },
});

if (cluster.isMaster) {
  if (opts.clients) {
    require('./clients.js').play(opts.workers ?? 4);
  }

  // ANCHOR: primary
  // Forked once; an exited worker is never taken out.
  const forked = Array.from({ length: opts.workers ?? 4 }, () => cluster.fork());

  process.on('SIGTERM', () => {
    twin.emit('shutdown', { reason: 'SIGTERM' });
    const t0 = Date.now();

    // Every worker in the array is told, the dead ones too.
    for (const w of forked) w.send({ type: 'shutdown' });

    // 10 s later, however the workers are doing: kill, and report success.
    setTimeout(() => {
      const alive = forked.filter((w) => !w.isDead()).map((w) => w.id); // twin only
      twin.emit('stopped', { reason: 'SIGTERM', took_ms: Date.now() - t0, alive });
      for (const w of forked) w.kill('SIGKILL');
      process.exit(0);
    }, 10_000);
  });
  // ANCHOR_END: primary
} else {
  // ANCHOR: worker
  const inFlight = new Set(); // the requests being served, not the connections

  const server = http.createServer((req, res) => {
    inFlight.add(res);
    process.send({ request_started: 1000 }); // instrument: see the header
    setTimeout(() => {
      res.end('answered after 1 s\n');
      inFlight.delete(res);
    }, 1000);
  });
  twin.tag(server).listen(opts.port, opts.host);

  process.on('message', (msg) => {
    if (msg.type !== 'shutdown') return;
    twin.log(`worker ${cluster.worker.id}: draining`);
    server.close(() => twin.log(`worker ${cluster.worker.id}: listener closed`));

    // Poll: exit at the first look that finds no request in flight…
    const poll = setInterval(() => {
      if (inFlight.size > 0) {
        twin.log(`worker ${cluster.worker.id}: ${inFlight.size} in flight`);
        return;
      }
      clearInterval(poll);
      process.exit(0);
    }, 1000);

    // …or after 10 s, with whatever is left.
    setTimeout(() => {
      clearInterval(poll);
      process.exit(0);
    }, 10_000);
  });
  // ANCHOR_END: worker
}
