// Lesson 08's second Node twin: the shortest form of the usual rolling
// restart, the loop many answers (and this book's chapter) show. On SIGUSR2,
// for each worker: fork its replacement, wait for 'listening', call the old
// worker's disconnect() — which closes its server — and wait for its 'exit'.
// No pause, no timer, no SIGKILL: the loop waits as long as it takes.
//
//   node lessons/08-rolling-restart/node/disconnect.js      # port 8000
//   kill -USR2 <primary pid>                                # roll
//   node lessons/08-rolling-restart/node/disconnect.js --handler-ms 200
//
// `twin.js` adds only the workbook's flags and event lines (see its header);
// `--handler-ms` makes every response wait, as in usual.js.

'use strict';

const cluster = require('node:cluster');
const http = require('node:http');
const { once } = require('node:events');
const twin = require('../../../shared/node-twin/twin.js');

const opts = twin.setup({
  title: "Lesson 08's Node twin: the disconnect() loop on SIGUSR2",
  flags: {
    'handler-ms': {
      type: 'string',
      default: '0',
      help: 'ms each response waits before it is sent (0: at once) [default: 0]',
    },
  },
});
if (!/^[0-9]+$/.test(opts['handler-ms'])) twin.fail('--handler-ms takes a whole number of milliseconds');
const handlerMs = Number(opts['handler-ms']);

if (cluster.isPrimary) {
  for (let i = 0; i < (opts.workers ?? 4); i++) {
    cluster.fork();
  }

  // ANCHOR: loop
  process.on('SIGUSR2', async () => {
    twin.emit('rollout_started', { workers: Object.keys(cluster.workers).length });
    const replaced = [];
    for (const old of Object.values(cluster.workers)) { // a copy: new workers are not visited
      const next = cluster.fork();
      await once(next, 'listening'); // no deadline, and "listening" is not "ready"
      old.disconnect();              // its server closes: idle connections now, busy ones stay
      await once(old, 'exit');       // once its last connection has closed
      twin.emit('replaced', { old: old.id, new: next.id });
      replaced.push([old.id, next.id]);
    }
    twin.emit('rollout_finished', { outcome: 'completed', replaced });
  });
  // ANCHOR_END: loop
} else {
  const server = http.createServer((req, res) => {
    const reply = () => res.end(`served by worker ${cluster.worker.id}, pid ${process.pid}\n`);
    if (handlerMs > 0) setTimeout(reply, handlerMs);
    else reply();
  });
  twin.tag(server).listen(opts.port, opts.host);
}
