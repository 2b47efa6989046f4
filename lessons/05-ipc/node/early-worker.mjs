// A worker of lesson 05's `early.js`, written as an ES module. It listens
// for messages at the top of the module, says `ready` once its server
// listens, and reports what it received (sorted) once both the primary's
// `on_listening` and `on_ready` messages have come.

// ANCHOR: worker
import cluster from 'node:cluster';
import http from 'node:http';
import twin from '../../../shared/node-twin/twin.js';

const opts = twin.setup({ flags: { worker: { type: 'string' } } });
const got = [];

process.on('message', (msg) => {
  got.push(msg.type);
  if (got.includes('on_listening') && got.includes('on_ready')) {
    process.send({ type: 'got', types: [...got].sort() });
  }
});

const server = http.createServer((req, res) => res.end(`hello from worker ${cluster.worker.id}\n`));
twin.tag(server).listen(opts.port, opts.host, () => process.send({ type: 'ready' }));
// ANCHOR_END: worker
