// A worker of lesson 05's `early.js`: `early-worker.mjs` line for line,
// as CommonJS.

'use strict';

const cluster = require('node:cluster');
const http = require('node:http');
const twin = require('../../../shared/node-twin/twin.js');

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
