// Lesson 02's Node twin: the usual answer to "isMaster or isWorker?", as
// interviewees write it — one file, an `isMaster` branch that forks and an
// `else if (cluster.isWorker)` branch that does the work — run in Node so
// the workbook can check what each process really sees.
//
//   node lessons/02-primary-vs-worker/node/usual.js                # one worker, as the answer forks
//   node lessons/02-primary-vs-worker/node/usual.js --workers 3 --port 0
//   curl -s localhost:8000/whoami    # a worker's account of itself
//   curl -s localhost:8000/child     # … and of a process that worker starts
//   curl -s localhost:8000/listeners # who holds a listening socket on the port
//   curl -s localhost:8000/marked    # what NODE_UNIQUE_ID set by hand does
//
// The usual answer's worker only says "handle requests" in a comment; here
// it does, with an HTTP server, so that there is traffic to follow. What the
// twin adds for the scenarios: each process's account of itself (`whoami`),
// sent by the primary as a `role` event, by each worker to the primary as a
// message and to any client as `/whoami`; and `/child`, the account of a
// plain `node` process that a worker starts; `/listeners` and `/marked`,
// two experiments in `probes.js`. `twin.js` adds the workbook's flags and
// event lines (see its header).

'use strict';

const cluster = require('node:cluster');
const http = require('node:http');
const { execFileSync } = require('node:child_process');
const twin = require('../../../shared/node-twin/twin.js');
const { whoami, listeners, marked } = require('./probes.js');

const opts = twin.setup({ title: "Lesson 02's Node twin: one file, two roles" });

// ANCHOR: branch
if (cluster.isMaster) {
  console.log(`primary: pid ${process.pid}`);
  twin.emit('role', whoami());
  // The usual answer forks one worker; --workers asks for more.
  for (let n = 0; n < (opts.workers ?? 1); n++) cluster.fork();
} else if (cluster.isWorker) {
  console.log(`worker ${cluster.worker.id}: pid ${process.pid}`);
  process.send(whoami());
  const server = http.createServer((req, res) => {
    if (req.url === '/whoami') return json(res, whoami());
    if (req.url === '/child') return json(res, child());
    if (req.url === '/listeners') return json(res, listeners(req.socket.localPort));
    if (req.url === '/marked') return json(res, marked());
    res.end(`worker ${cluster.worker.id} says hi\n`);
  });
  twin.tag(server).listen(opts.port, opts.host);
}
// ANCHOR_END: branch

// ANCHOR: child
/// The same questions, asked by a plain `node` that this worker starts with
/// its own environment (what `child_process` gives a child by default).
function child() {
  const probe = `const cluster = require('node:cluster');
    console.log(JSON.stringify({
      pid: process.pid,
      ppid: process.ppid,
      is_primary: cluster.isPrimary,
      is_worker: cluster.isWorker,
      node_unique_id: process.env.NODE_UNIQUE_ID ?? null,
      process_send: typeof process.send,
    }));`;
  const answer = JSON.parse(execFileSync(process.execPath, ['-e', probe], { timeout: 10_000 }));
  return { worker_pid: process.pid, ...answer };
}
// ANCHOR_END: child

function json(res, body) {
  res.setHeader('content-type', 'application/json');
  res.end(`${JSON.stringify(body)}\n`);
}
