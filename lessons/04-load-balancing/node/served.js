// Lesson 04's second Node twin: the usual load-balancing sample with the
// worker branch it lacks — an HTTP server in each worker that sends the
// primary the `request` message the sample counts — so that what the
// chapter says about Node's policies can be measured: how round-robin and
// SCHED_NONE spread new connections, what keep-alive does to that, and
// what setting the policy after the first fork changes.
//
//   node lessons/04-load-balancing/node/served.js                  # SCHED_RR, four workers
//   node lessons/04-load-balancing/node/served.js --sched shared   # SCHED_NONE
//   node lessons/04-load-balancing/node/served.js --late-sched shared
//
// What the twin adds: `twin.setup` (the workbook's flags and events, see
// its header; `--sched` picks the policy before the first fork, as the
// sample's first line does), the `policy` event (Node's default and the
// policy in force at the first fork), the `distribution` event where the
// sample logs its table, a `connection` message from the workers and its
// `connections` table (so connections can be counted apart from
// requests), and `--late-sched`, which sets `cluster.schedulingPolicy`
// again once the workers are forked.

'use strict';

const cluster = require('node:cluster');
const http = require('node:http');
const twin = require('../../../shared/node-twin/twin.js');

const POLICIES = { [cluster.SCHED_RR]: 'rr', [cluster.SCHED_NONE]: 'shared' };
// Node's own choice, before this file or twin.js sets anything.
const nodeDefault = POLICIES[cluster.schedulingPolicy] ?? String(cluster.schedulingPolicy);

const opts = twin.setup({
  title: "Lesson 04's second Node twin: the sample with a worker branch",
  flags: {
    'late-sched': { type: 'string', help: 'rr|shared: set the policy again after the workers are forked' },
  },
});

if (cluster.isMaster) {
  twin.emit('policy', { default: nodeDefault, at_first_fork: POLICIES[cluster.schedulingPolicy] });

  // ANCHOR: primary
  for (let n = 0; n < (opts.workers ?? 4); n++) cluster.fork();

  const perWorker = {};
  cluster.on('message', (from, note) => {
    if (note.type !== 'request') return;
    perWorker[from.id] = (perWorker[from.id] ?? 0) + 1;
    console.log('requests per worker:', perWorker);
    twin.emit('distribution', table(perWorker));
  });
  // ANCHOR_END: primary

  // Twin only: the connections the workers report, tallied the same way.
  const connectionsPerWorker = {};
  cluster.on('message', (from, note) => {
    if (note.type !== 'connection') return;
    connectionsPerWorker[from.id] = (connectionsPerWorker[from.id] ?? 0) + 1;
    twin.emit('connections', table(connectionsPerWorker));
  });

  if (opts['late-sched'] !== undefined) {
    // Too late: the policy was frozen by the first fork (or setupPrimary).
    cluster.schedulingPolicy = opts['late-sched'] === 'shared' ? cluster.SCHED_NONE : cluster.SCHED_RR;
    twin.emit('policy_set', { now: POLICIES[cluster.schedulingPolicy] });
  }
} else {
  const server = serve();
  // Twin only: each worker also reports every connection it accepts, so
  // that the spread of connections can be told from the spread of requests.
  server.on('connection', () => process.send({ type: 'connection' }));
}

// ANCHOR: worker
/// The worker branch the sample leaves out: tell the primary about each
/// request, then answer it.
function serve() {
  const server = http.createServer((req, res) => {
    process.send({ type: 'request' });
    res.end(`worker ${cluster.worker.id} answering\n`);
  });
  return twin.tag(server).listen(opts.port, opts.host);
}
// ANCHOR_END: worker

/// The sample's table as an event: the counts and their total.
function table(counts) {
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  return { counts: { ...counts }, total };
}
