// Lesson 05's second Node twin: when can the primary first send a worker a
// message? It forks workers from another file (`cluster.setupPrimary({
// exec })`), an ES module by default (`early-worker.mjs`, as the chapter's
// snippets are written) or the same code as CommonJS (`--worker cjs`,
// `early-worker.cjs`), and sends each worker four messages at the four
// moments a primary might choose: right after `fork()`, on the worker's
// `'online'` event, on its `'listening'` event, and when the worker's own
// `ready` message arrives. Each worker reports what it received (`got`).
//
//   node lessons/05-ipc/node/early.js --workers 2               # ES module workers
//   node lessons/05-ipc/node/early.js --workers 2 --worker cjs  # CommonJS workers
//
// `twin.js` adds the workbook's flags and event lines (see its header).

'use strict';

const cluster = require('node:cluster');
const path = require('node:path');
const twin = require('../../../shared/node-twin/twin.js');

const opts = twin.setup({
  title: "Lesson 05's early-messages twin: send at fork, online, listening or ready",
  flags: {
    worker: { type: 'string', default: 'esm', help: 'esm (early-worker.mjs) or cjs (early-worker.cjs): the workers’ module system' },
  },
});

const file = { esm: 'early-worker.mjs', cjs: 'early-worker.cjs' }[opts.worker];
if (file === undefined) {
  console.error(`--worker takes esm or cjs, not ${JSON.stringify(opts.worker)}`);
  process.exit(2);
}
cluster.setupPrimary({ exec: path.join(__dirname, file) });

// ANCHOR: primary
for (let i = 0; i < (opts.workers ?? 2); i++) {
  const worker = cluster.fork();
  worker.send({ type: 'at_fork' });
  worker.on('online', () => worker.send({ type: 'on_online' }));
  worker.on('listening', () => worker.send({ type: 'on_listening' }));
  worker.on('message', (msg) => {
    if (msg.type === 'ready') worker.send({ type: 'on_ready' });
  });
}
// ANCHOR_END: primary

cluster.on('message', (worker, msg) => {
  if (msg.type === 'got') {
    const got = (type) => msg.types.includes(type);
    twin.emit('got', {
      id: worker.id,
      module: opts.worker,
      at_fork: got('at_fork'),
      on_online: got('on_online'),
      on_listening: got('on_listening'),
      on_ready: got('on_ready'),
    });
  }
});
