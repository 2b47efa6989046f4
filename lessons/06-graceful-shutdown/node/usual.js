// Lesson 06's Node twin: the usual answer to "what is a graceful shutdown,
// and how do you implement it?", as interviewees write it. The primary keeps
// its own array of workers; on SIGTERM it sends each one `{ type: 'shutdown' }`
// and sets a 10 s timer that SIGKILLs them all and exits 0. Each worker
// counts its requests in a Set (every request takes 1 s), and on `shutdown`
// calls `server.close()`, then checks every second until the Set is empty
// and calls `process.exit(0)` — or after 10 s, whatever is left.
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
  const workers = [];

  for (let i = 0; i < (opts.workers ?? 4); i++) {
    workers.push(cluster.fork());
  }

  process.on('SIGTERM', () => {
    twin.emit('shutdown', { reason: 'SIGTERM' }); // "shutting down gracefully..."
    const began = Date.now();

    workers.forEach((worker) => {
      worker.send({ type: 'shutdown' });
    });

    // Force kill after 10 seconds
    setTimeout(() => {
      // Not in the usual answer: who is still running when the timer fires.
      const alive = workers.filter((worker) => !worker.isDead()).map((worker) => worker.id);
      twin.emit('stopped', { reason: 'SIGTERM', took_ms: Date.now() - began, alive });
      workers.forEach((worker) => worker.kill('SIGKILL'));
      process.exit(0);
    }, 10000);
  });
  // ANCHOR_END: primary
} else {
  // ANCHOR: worker
  const activeConnections = new Set();

  const server = http.createServer((req, res) => {
    const connId = Date.now() + Math.random();
    activeConnections.add(connId);
    process.send({ request_started: 1000 }); // instrument: see the header

    setTimeout(() => {
      res.end('Done');
      activeConnections.delete(connId);
    }, 1000);
  });

  twin.tag(server).listen(opts.port, opts.host);

  process.on('message', (msg) => {
    if (msg.type === 'shutdown') {
      twin.log('shutting down...');

      // Stop accepting new connections
      server.close(() => {
        twin.log('server closed');
      });

      // Wait for active connections to complete
      const checkInterval = setInterval(() => {
        if (activeConnections.size === 0) {
          clearInterval(checkInterval);
          process.exit(0);
        } else {
          twin.log(`waiting for ${activeConnections.size} requests...`);
        }
      }, 1000);

      // Force exit after timeout
      setTimeout(() => {
        clearInterval(checkInterval);
        process.exit(0);
      }, 10000);
    }
  });
  // ANCHOR_END: worker
}
