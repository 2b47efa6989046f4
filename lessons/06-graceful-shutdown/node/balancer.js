// Lesson 06's keep-alive twin: a Node server behind a load balancer. The
// workers serve HTTP with `server.keepAliveTimeout` and
// `server.headersTimeout` set from flags (Node's defaults: 5 s and 60 s),
// and the primary plays the balancer in front of them, on plain sockets:
//
// - for each `--reuse-after` duration, one connection that sends a request,
//   stays idle that long after the answer, and then sends its next request
//   on the same connection without looking first, as a balancer does when
//   its own idle timeout (AWS ALB: 60 s) says the connection is still good
//   (event `reuse`);
// - with `--preopen`, one connection opened ahead of time, idle that long
//   before its first request, as balancers that keep spare connections do
//   (event `preopen`).
//
// Each reports whether its request was answered; if not, when the server
// closed the connection, what (if anything) it said first, and what the
// next write on that connection met (a reset from the server's kernel
// shows as EPIPE or ECONNRESET).
//
//   node lessons/06-graceful-shutdown/node/balancer.js --keep-alive-timeout 1s --reuse-after 0.5s,3.5s
//
// `twin.js` adds the workbook's flags and event lines (see its header).
// One setting is the twin's own: `connectionsCheckingInterval` (how often
// Node looks for connections past `headersTimeout`; 30 s by default) is
// 250 ms, so that a scenario sees `headersTimeout` act within seconds.

'use strict';

const cluster = require('node:cluster');
const http = require('node:http');
const net = require('node:net');
const twin = require('../../../shared/node-twin/twin.js');

const opts = twin.setup({
  title: "Lesson 06's keep-alive twin: keepAliveTimeout and headersTimeout behind a balancer",
  flags: {
    'keep-alive-timeout': { type: 'string', default: '5s', help: "DURATION: server.keepAliveTimeout (Node's default 5 s)" },
    'headers-timeout': { type: 'string', default: '60s', help: "DURATION: server.headersTimeout (Node's default 60 s)" },
    'reuse-after': { type: 'string', default: '', help: 'DURATIONS, comma-separated: reuse a connection after this long idle' },
    preopen: { type: 'string', help: 'DURATION: open a connection this long before its first request' },
  },
});
const ms = (text, flag) => Math.round(twin.seconds(text, flag) * 1000);

if (cluster.isPrimary) {
  for (let i = 0; i < (opts.workers ?? 1); i++) {
    cluster.fork();
  }
  let listening = 0;
  cluster.on('listening', (_worker, address) => {
    listening += 1;
    if (listening === (opts.workers ?? 1)) balance(address.port, address.address || '127.0.0.1');
  });
} else {
  // ANCHOR: server
  const server = http.createServer({ connectionsCheckingInterval: 250 }, (req, res) => {
    res.end('ok\n');
  });
  server.keepAliveTimeout = ms(opts['keep-alive-timeout'], '--keep-alive-timeout');
  server.headersTimeout = ms(opts['headers-timeout'], '--headers-timeout');
  // ANCHOR_END: server
  twin.tag(server).listen(opts.port, opts.host);
}

/// The balancer: every connection at once, each reporting when it is done.
function balance(port, host) {
  const reuses = opts['reuse-after'] === '' ? [] : opts['reuse-after'].split(',');
  for (const idle of reuses) {
    const idleMs = ms(idle, '--reuse-after');
    connection(port, host, { idleMs, first: true }).then((report) => twin.emit('reuse', report));
  }
  if (opts.preopen !== undefined) {
    const idleMs = ms(opts.preopen, '--preopen');
    connection(port, host, { idleMs, first: false }).then((report) => twin.emit('preopen', report));
  }
}

const REQUEST = 'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n';

/// One connection of the balancer's pool: a first request (or none), `idleMs`
/// of silence, then a request written without checking whether the server
/// has closed the connection meanwhile.
function connection(port, host, { idleMs, first }) {
  return new Promise((resolve) => {
    // allowHalfOpen: a server's close does not end our side, so the next
    // write goes out as a balancer's would.
    const socket = net.connect({ port, host, allowHalfOpen: true });
    const opened = Date.now();
    const responses = [];
    let buffer = '';
    let idleFrom = null;
    let closedAt = null;
    let sent = null;
    let settled = false;

    socket.setEncoding('latin1');
    socket.on('data', (chunk) => {
      buffer += chunk;
      for (;;) {
        const end = buffer.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buffer.slice(0, end).split('\r\n');
        const header = (key) =>
          head.find((line) => line.toLowerCase().startsWith(`${key}:`))?.slice(key.length + 1).trim() ?? null;
        const length = Number(header('content-length') ?? 0);
        if (buffer.length < end + 4 + length) return;
        buffer = buffer.slice(end + 4 + length);
        responses.push({ status: Number(head[0].split(' ')[1]), keep_alive: header('keep-alive'), at: Date.now() });
        if (first && responses.length === 1) {
          idleFrom = Date.now();
          setTimeout(send, idleMs);
        } else if (sent !== null) {
          finish(null);
        }
      }
    });
    socket.on('end', () => {
      closedAt ??= Date.now();
    });
    socket.on('error', () => {});
    socket.on('connect', () => {
      if (first) {
        socket.write(REQUEST);
      } else {
        idleFrom = opened;
        setTimeout(send, idleMs);
      }
    });

    function send() {
      sent = Date.now();
      socket.write(REQUEST);
      // No answer within a second: write once more, to see what the
      // server's kernel did with the request (a reset makes this fail).
      setTimeout(() => {
        if (settled) return;
        socket.write(REQUEST, (error) => finish(error?.code ?? null));
      }, 1000);
    }

    function finish(writeError) {
      if (settled) return;
      settled = true;
      const answer = responses.find((r) => r.at >= sent) ?? null;
      const early = responses.filter((r) => r.at < sent).slice(first ? 1 : 0)[0] ?? null;
      resolve({
        idle_ms: idleMs,
        first_status: first ? (responses[0]?.status ?? null) : null,
        keep_alive: first ? (responses[0]?.keep_alive ?? null) : null,
        said_before: early?.status ?? null,
        closed_after_ms: closedAt === null || closedAt > sent ? null : closedAt - idleFrom,
        answered: answer !== null,
        status: answer?.status ?? null,
        next_write: writeError,
      });
      socket.destroy();
    }
  });
}
