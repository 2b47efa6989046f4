// A worker branch that only listens, for lesson 02's `/marked` probe
// (`probes.js`), which runs it with NODE_UNIQUE_ID set by hand and no
// primary. It prints what it sees as JSON lines: its role at start, then,
// a second later, whether `listen()` has called back, failed or done
// anything at all. Then nothing keeps it running.

'use strict';

const cluster = require('node:cluster');
const http = require('node:http');

const say = (fields) => console.log(JSON.stringify(fields));

say({
  is_worker: cluster.isWorker,
  worker_id: cluster.worker?.id ?? null,
  process_send: typeof process.send,
});

let calledBack = false;
let error = null;
const server = http.createServer((req, res) => res.end('hello\n'));
server.on('error', (e) => {
  error = e.code ?? e.message;
});
server.listen(0, '127.0.0.1', () => {
  calledBack = true;
});

setTimeout(() => {
  say({ after_ms: 1000, listen_called_back: calledBack, listen_error: error, listening: server.listening });
}, 1000);
