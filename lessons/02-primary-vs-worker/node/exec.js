// Lesson 02's second Node twin: the primary and the worker in two files.
// `cluster.setupPrimary({ exec })` tells `fork()` to start another file
// instead of the primary's own, so neither file asks which role it has.
//
//   node lessons/02-primary-vs-worker/node/exec.js --workers 2
//   curl -s localhost:8000/whoami    # "file": ".../worker.js"
//
// `twin.js` adds the workbook's flags and event lines (see its header);
// `whoami` (in `probes.js`) is each process's account of itself, which the
// primary prints as a `role` event and each worker sends it.

'use strict';

const cluster = require('node:cluster');
const path = require('node:path');
const twin = require('../../../shared/node-twin/twin.js');
const { whoami } = require('./probes.js');

const opts = twin.setup({ title: "Lesson 02's exec twin: the workers run worker.js" });

twin.emit('role', whoami());
// ANCHOR: exec
// setupPrimary since v16 (setupMaster before): fork() now starts worker.js.
cluster.setupPrimary({ exec: path.join(__dirname, 'worker.js') });
for (let n = 0; n < (opts.workers ?? 2); n++) cluster.fork();
// ANCHOR_END: exec
