// Lesson 10's Node twin for file limits: the cap people put in front of the
// limit, `server.maxConnections`, per worker, with a `'drop'` listener.
//
//   node lessons/10-limitations/node/maxconn.js --workers 2 --max-connections 2
//   node lessons/10-limitations/node/maxconn.js --workers 2 --max-connections 2 --sched shared
//
// `/slow?ms=N` answers after N ms, so a client holds its connection.
// `twin.js` adds only the workbook's flags and event lines (see its header).

'use strict';

const cluster = require('node:cluster');
const http = require('node:http');
const os = require('node:os');
const twin = require('../../../shared/node-twin/twin.js');

const opts = twin.setup({
  title: "Lesson 10's Node twin: server.maxConnections in each worker",
  flags: {
    'max-connections': { type: 'string', default: '4000', help: 'server.maxConnections in each worker [default: 4000]' },
  },
});

if (cluster.isPrimary) {
  const workers = opts.workers ?? os.cpus().length;
  for (let i = 0; i < workers; i++) {
    cluster.fork();
  }
  // Not part of the usual answer: SIGUSR2 makes the primary say how much
  // CPU it used since the last time asked (`cpu {primary_ms}`), so that a
  // scenario can see what the primary does while every worker is full.
  let last = process.cpuUsage();
  process.on('SIGUSR2', () => {
    const used = process.cpuUsage(last);
    last = process.cpuUsage();
    twin.emit('cpu', { primary_ms: Math.round((used.user + used.system) / 1000) });
  });
} else {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    const ms = url.pathname === '/slow' ? Number(url.searchParams.get('ms') || 300) : 0;
    setTimeout(() => res.end('OK\n'), ms);
  });
  // ANCHOR: cap
  server.maxConnections = Number(opts['max-connections']); // per worker
  server.on('drop', (info) => {
    console.warn('connection dropped', info.remoteAddress);
    process.send({ dropped: info.remotePort }); // the primary prints it as a `message` event
  });
  // ANCHOR_END: cap
  twin.tag(server).listen(opts.port, opts.host);
}
