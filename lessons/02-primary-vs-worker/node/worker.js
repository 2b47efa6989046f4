// The workers of lesson 02's `exec.js`: a file that is only ever a worker.
// The primary starts it with `cluster.setupPrimary({ exec })`, and cluster
// gives it the primary's arguments.

'use strict';

const cluster = require('node:cluster');
const http = require('node:http');
const twin = require('../../../shared/node-twin/twin.js');
const { whoami } = require('./probes.js');

const opts = twin.setup({ title: "Lesson 02's exec twin: a worker's file" });

// ANCHOR: worker
process.send(whoami());
const server = http.createServer((req, res) => {
  if (req.url === '/whoami') return res.end(`${JSON.stringify(whoami())}\n`);
  res.end(`worker ${cluster.worker.id} says hi\n`);
});
twin.tag(server).listen(opts.port, opts.host);
// ANCHOR_END: worker
