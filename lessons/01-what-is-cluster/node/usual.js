// Lesson 01's Node twin: the usual answer to "what is cluster, and why?",
// as interviewees write it — `isMaster`, one worker per `os.cpus()`, and
// every worker listening on the same port.
//
//   node lessons/01-what-is-cluster/node/usual.js            # port 8000
//   node lessons/01-what-is-cluster/node/usual.js --workers 2 --port 0
//
// `twin.js` adds only the workbook's flags and event lines (see its header).

'use strict';

const cluster = require('node:cluster');
const http = require('node:http');
const os = require('node:os');
const twin = require('../../../shared/node-twin/twin.js');

const opts = twin.setup({ title: "Lesson 01's Node twin: one worker per CPU on one port" });

// `isMaster` is the deprecated name of `isPrimary`; both still work on Node 20.
if (cluster.isMaster) {
  // os.cpus() counts the host's CPUs, not the ones this process may use.
  const count = opts.workers ?? os.cpus().length;
  for (let n = 0; n < count; n++) cluster.fork();
} else {
  // Every worker builds its own server and calls listen() on the same port.
  const server = http.createServer((req, res) => res.end(`worker ${cluster.worker.id} says hi`));
  twin.tag(server).listen(opts.port, opts.host);
}
