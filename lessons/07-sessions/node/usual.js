// Lesson 07's Node twin: the usual answer to "how do you keep sessions
// across workers?", behind cluster's round-robin. `--store memory` is the
// answer's problem (a sessions object per worker), `--store redis` its
// first solution (SETEX with a one-hour TTL, read back with GET). The
// second solution, sticky routing, is `sticky.js`.
//
//   node lessons/07-sessions/node/usual.js --store memory
//   curl -c jar -X POST localhost:8000/login; curl -b jar localhost:8000/profile   # again and again
//   REDIS_URL=redis://127.0.0.1:6379 node lessons/07-sessions/node/usual.js --store redis
//
// `twin.js` adds only the workbook's flags and event lines (see its header);
// `--demo` runs the users of `demo.js` once every worker listens.

'use strict';

const cluster = require('node:cluster');
const os = require('node:os');
const twin = require('../../../shared/node-twin/twin.js');
const { createServer, checkStore } = require('./app.js');

const opts = twin.setup({
  title: "Lesson 07's Node twin: sessions in each worker's memory or in Redis, behind round-robin",
  flags: {
    store: { type: 'string', default: 'redis', help: 'memory (per worker) or redis [default: redis]' },
    demo: { type: 'boolean', default: false, help: 'users log in and come back; prints a `sessions` event' },
  },
});
const store = checkStore(opts.store);

if (cluster.isPrimary) {
  const workers = opts.workers ?? os.cpus().length;
  for (let i = 0; i < workers; i++) {
    cluster.fork();
  }
  if (opts.demo) {
    let listening = 0;
    cluster.on('listening', (_worker, address) => {
      listening += 1;
      if (listening === workers) {
        require('./demo.js')
          .run(`${address.address}:${address.port}`)
          .then((outcome) => twin.emit('sessions', { store, workers, ...outcome }));
      }
    });
  }
} else {
  createServer(store).listen(opts.port, opts.host);
}
