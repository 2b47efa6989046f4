// Three keep-alive clients that a load generator cannot play, played by the
// primary of lesson 06's twin with `--clients` (the Rust lesson's
// `--idle-client` plays the first). Not part of the usual answer: an
// instrument, on plain sockets, so that a clean end of file and a reset
// cannot be confused, and the `Connection` header of each answer is seen.
//
// Once every worker listens (the silent and busy connections are opened
// first, then the idle one; `clients_ready` once the idle one is answered):
// - idle: one request on a keep-alive connection, answered; then silence
//   (event `idle_client`);
// - silent: a connection that never sends a request;
// - busy: a connection that sends one request when the primary gets SIGUSR2
//   (a scenario's cue: the usual answer has no SIGUSR2 handler of its own),
//   and reports `busy_client` 0.3 s later, while the request (1 s) is in
//   flight, so that a scenario can send SIGTERM then; each answer is
//   reported (`busy_client_answered`: status and `Connection` header); after
//   the first it sends a second request on the same connection, and after
//   the second, nothing.
// How each connection ends is reported as `idle_client_closed`,
// `silent_client_closed` or `busy_client_closed`, with `how` ("end of
// file", "reset", "error …") and `after_ms`, counted from SIGTERM.

'use strict';

const cluster = require('node:cluster');
const net = require('node:net');
const twin = require('../../../shared/node-twin/twin.js');

let sigtermAt = null;

function play(workers) {
  process.on('SIGTERM', () => {
    sigtermAt ??= Date.now();
  });
  let listening = 0;
  cluster.on('listening', (_worker, address) => {
    listening += 1;
    if (listening === workers) {
      run(address.port, address.address || '127.0.0.1');
    }
  });
}

async function run(port, host) {
  // The silent and busy connections first, the idle client's request (1 s)
  // last: by `clients_ready` every worker has long taken the connections
  // handed to it, so round-robin hands the next burst of connections to
  // both workers (a worker still busy taking one gets none meanwhile).
  client('silent', port, host);
  const busy = client('busy', port, host);

  const idle = client('idle', port, host);
  const first = await idle.request();
  twin.emit('idle_client', { worker: first.worker });

  process.once('SIGUSR2', async () => {
    setTimeout(() => twin.emit('busy_client', {}), 300);
    for (let n = 1; n <= 2; n++) {
      const response = await busy.request();
      twin.emit('busy_client_answered', { n, ...response });
    }
  });
  twin.emit('clients_ready', {});
}

/// One connection; `request()` sends a GET and resolves with the answer.
function client(name, port, host) {
  const socket = net.connect(port, host);
  let buffer = '';
  let waiting = null;
  socket.setEncoding('latin1');
  socket.on('data', (chunk) => {
    buffer += chunk;
    const end = buffer.indexOf('\r\n\r\n');
    if (end < 0 || !waiting) return;
    const head = buffer.slice(0, end).split('\r\n');
    const header = (key) =>
      head.find((line) => line.toLowerCase().startsWith(`${key}:`))?.slice(key.length + 1).trim() ?? null;
    const length = Number(header('content-length') ?? 0);
    if (buffer.length < end + 4 + length) return;
    buffer = buffer.slice(end + 4 + length);
    const resolve = waiting;
    waiting = null;
    resolve({
      status: Number(head[0].split(' ')[1]),
      connection: header('connection'),
      worker: header('x-worker-id'),
    });
  });
  let how = null;
  socket.on('error', (error) => {
    how = error.code === 'ECONNRESET' ? 'reset' : `error ${error.code}`;
  });
  socket.on('close', () => {
    const after_ms = sigtermAt === null ? null : Date.now() - sigtermAt;
    twin.emit(`${name}_client_closed`, { how: how ?? 'end of file', after_ms });
  });
  return {
    request() {
      socket.write('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n');
      return new Promise((resolve) => {
        waiting = resolve;
      });
    },
  };
}

module.exports = { play };
