// Lesson 03's Node twin: detecting a dead worker and restarting it the way
// most interviewees do — one `exit` listener on the cluster that logs
// `code || signal` and forks a replacement every time, and a worker that
// ends itself with `process.exit(1)` on `/crash` — run in Node so the
// workbook can check what `exit` carries and what forking on every exit does.
//
//   node lessons/03-restart-dead-workers/node/usual.js --workers 2
//   curl localhost:8000/crash          # a crash: exit code 1
//   kill -9 <a worker's pid>           # a signal: code null
//   kill -HUP <primary pid>            # the primary calls worker.disconnect()
//   kill -USR2 <primary pid>           # the primary calls worker.kill()
//   node lessons/03-restart-dead-workers/node/usual.js --workers 2 --crash-at-start
//
// What the twin adds for the scenarios: `--workers` (the usual answer forks
// one); `--crash-at-start` (every worker exits with code 1 before it
// listens: a bad release); `--crash-after 1s` (/crash first keeps its
// worker busy, as a long synchronous task would); the `died` and
// `restarting` events at the two lines the usual handler logs; and two
// signals that make the primary stop its oldest worker the two ways the
// cluster API offers, `disconnect()` (SIGHUP) and `kill()` (SIGUSR2), so a
// script can see what `exit` says about each. `twin.js` adds the
// workbook's flags and event lines (see its header).

'use strict';

const cluster = require('node:cluster');
const http = require('node:http');
const twin = require('../../../shared/node-twin/twin.js');

const opts = twin.setup({
  title: "Lesson 03's Node twin: log the exit, fork again",
  flags: {
    'crash-at-start': { type: 'boolean', help: 'every worker exits with code 1 as it starts' },
    'crash-after': { type: 'string', help: 'DURATION: /crash keeps its worker busy this long first' },
  },
});

// Twin only, in a worker: the faults the scenarios need.
if (cluster.isWorker && opts['crash-at-start']) {
  process.exit(1); // a bad release: say, a setting it cannot do without
}
if (cluster.isWorker && opts['crash-after'] !== undefined) {
  // A crash at the end of a long synchronous task: `process.exit` first
  // keeps the event loop busy, so the worker takes in nothing meanwhile.
  const ms = twin.seconds(opts['crash-after'], '--crash-after') * 1000;
  const exit = process.exit;
  process.exit = (code) => {
    const until = Date.now() + ms;
    while (Date.now() < until);
    exit(code);
  };
}

// ANCHOR: usual
if (cluster.isMaster) {
  for (let n = 0; n < (opts.workers ?? 1); n++) cluster.fork();

  // Every exit, whatever its cause, gets a log line and a new fork.
  cluster.on('exit', (gone, code, signal) => {
    const cause = code || signal; // exit code 0 is falsy: a clean exit shows its signal, null
    console.log(`lost worker ${gone.id}: ${cause}`);
    twin.emit('died', { id: gone.id, reported: cause });
    console.log('replacing it');
    twin.emit('restarting', { after: gone.id });
    cluster.fork();
  });
} else {
  const server = http.createServer((req, res) => {
    if (req.url === '/crash') process.exit(1); // the simulated crash
    res.end('alive\n');
  });
  twin.tag(server).listen(opts.port, opts.host);
}
// ANCHOR_END: usual

// Twin only, in the primary: stop the oldest worker on purpose, one way or
// the other, so that a script can read what `exit` says about each.
if (cluster.isPrimary) {
  const oldest = () => Object.values(cluster.workers).sort((a, b) => a.id - b.id)[0];
  process.on('SIGHUP', () => oldest()?.disconnect());
  process.on('SIGUSR2', () => oldest()?.kill());
}
