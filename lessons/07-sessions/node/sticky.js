// Lesson 07's Node twin, second solution: sticky sessions. The primary runs
// its own TCP server, hashes each client's address with MD5 and sends the
// socket to the worker at `parseInt(hex, 16) % n`; the workers keep
// sessions in memory (`app.js`) and never listen.
//
//   node lessons/07-sessions/node/sticky.js --workers 4
//   curl -c jar -X POST localhost:8000/login; curl -b jar localhost:8000/profile
//
// The answer shows only the primary; the worker's side here is the least
// that works. `--pause-on-connect` gives the primary's server the option
// the answer leaves out. `twin.js` adds the workbook's flags and events; the
// primary prints `start` itself (its workers never listen, so cluster has
// no `listening` event to print) and `hash_spread`: where the answer's hash
// sends 1,000 addresses (10.0.0.0 to 10.0.3.231) for 2, 3, 4 and 8 workers.

'use strict';

const cluster = require('node:cluster');
const crypto = require('node:crypto');
const net = require('node:net');
const os = require('node:os');
const twin = require('../../../shared/node-twin/twin.js');
const { createServer } = require('./app.js');

const HANDOFF = 'sticky-socket'; // the message that carries a client's socket

const opts = twin.setup({
  title: "Lesson 07's Node twin: the primary's own server routes each address to one worker",
  flags: {
    'pause-on-connect': {
      type: 'boolean',
      default: false,
      help: "net.createServer({ pauseOnConnect: true }): the primary reads nothing before the hand-off",
    },
    demo: { type: 'boolean', default: false, help: 'users log in and come back; prints a `sessions` event' },
  },
});

if (cluster.isPrimary) {
  const count = opts.workers ?? os.cpus().length;
  // ANCHOR: primary
  const children = [];
  while (children.length < count) children.push(cluster.fork());

  const server = net.createServer({ pauseOnConnect: opts['pause-on-connect'] }, (socket) => {
    children[pick(socket.remoteAddress, children.length)].send(HANDOFF, socket);
  });

  // The client's address, MD5 as 32 hex digits, read as one number, mod n.
  function pick(address, n) {
    const hex = crypto.createHash('md5').update(address).digest('hex');
    return parseInt(hex, 16) % n; // 128 bits do not fit a double: the low ones are lost
  }
  // ANCHOR_END: primary

  twin.emit('hash_spread', { rows: [2, 3, 4, 8].map((n) => spread(pick, n)) });

  let online = 0;
  let listening = false;
  const ready = () => {
    if (!opts.demo || online !== count || !listening) return;
    const { address, port } = server.address();
    require('./demo.js')
      .run(`${address}:${port}`)
      .then((outcome) => twin.emit('sessions', { store: 'memory', sticky: true, workers: count, ...outcome }));
  };
  cluster.on('online', () => {
    online += 1;
    ready();
  });
  server.listen(opts.port, opts.host, () => {
    const { address, port } = server.address();
    twin.emit('start', { pid: process.pid, addr: `${address}:${port}`, sched: 'sticky', workers: count });
    listening = true;
    ready();
  });
} else {
  // ANCHOR: worker
  const server = createServer('memory'); // its listen() is never called
  process.on('message', (note, socket) => {
    if (note === HANDOFF) server.emit('connection', socket);
  });
  // ANCHOR_END: worker
}

/// How many of 1,000 addresses `pick` sends to each of `n` workers.
function spread(pick, n) {
  const counts = new Array(n).fill(0);
  for (let i = 0; i < 1000; i++) {
    counts[pick(`10.0.${i >> 8}.${i & 255}`, n)] += 1;
  }
  return { workers: n, usual: counts };
}
