// Lesson 08's Node twin: the usual answer to "how do you restart every
// worker without downtime?", run as interviewees write it. The primary
// holds its workers in an array of its own (four), and SIGUSR2 replaces
// them in order, one at a time: fork the replacement; when it is
// 'listening', ask the old worker by message to stop, and arm a 10 s timer
// that SIGKILLs it if it is still alive then; when it has exited, wait 2 s
// and go on with the next. A worker that crashes is forked again at once.
// Asked to stop, a worker calls server.close() and exits in its callback,
// or after 5 s, whichever comes first.
//
//   node lessons/08-rolling-restart/node/usual.js            # port 8000
//   kill -USR2 <primary pid>                                 # roll
//   node lessons/08-rolling-restart/node/usual.js --handler-ms 200
//
// `twin.js` adds only the workbook's flags and event lines (see its header).
// Two flags of its own put the scenarios' faults on it: `--handler-ms`
// makes every response wait, so that clients are "chatty" (a request in
// progress on every connection, nearly always); `--bad-release` makes the
// workers forked after SIGUSR2 hang in their start-up, never listening.

'use strict';

const cluster = require('node:cluster');
const http = require('node:http');
const twin = require('../../../shared/node-twin/twin.js');

const opts = twin.setup({
  title: "Lesson 08's Node twin: the usual one-by-one rolling restart on SIGUSR2",
  flags: {
    'handler-ms': {
      type: 'string',
      default: '0',
      help: 'ms each response waits before it is sent (0: at once) [default: 0]',
    },
    'bad-release': {
      type: 'boolean',
      help: 'workers forked after SIGUSR2 never listen (a release whose start-up hangs)',
    },
  },
});
if (!/^[0-9]+$/.test(opts['handler-ms'])) twin.fail('--handler-ms takes a whole number of milliseconds');
const handlerMs = Number(opts['handler-ms']);
const STOP = { cmd: 'stop' }; // the message that asks a worker to leave

if (cluster.isPrimary) {
  const pool = Array.from({ length: opts.workers ?? 4 }, () => cluster.fork());

  // Replaces pool[slot], then (2 s after the old one is gone) the next slot.
  // Every step waits on an event, and nothing bounds the wait for 'listening'.
  function rollFrom(slot, swaps, finished) {
    if (slot >= pool.length) return finished(swaps);
    // ANCHOR: replace
    const leaving = pool[slot];
    const arriving = cluster.fork();

    arriving.once('listening', () => {
      leaving.send(STOP); // 'listening' is taken to mean "ready"

      leaving.once('exit', () => {
        twin.emit('replaced', { old: leaving.id, new: arriving.id });
        swaps.push([leaving.id, arriving.id]);
        pool[slot] = arriving;
        setTimeout(() => rollFrom(slot + 1, swaps, finished), 2000); // a pause between workers
      });

      // The deadline for leaving, counted from the new worker's 'listening'.
      setTimeout(() => {
        if (!leaving.isDead()) leaving.kill('SIGKILL');
      }, 10000);
    });
    // ANCHOR_END: replace
  }

  process.on('SIGUSR2', () => {
    twin.emit('rollout_started', { workers: pool.length });
    // --bad-release: the workers forked from now on run the new release.
    if (opts['bad-release']) process.env.TWIN_BAD_RELEASE = '1';
    // No guard: a second SIGUSR2 starts a second rollout beside the first.
    rollFrom(0, [], (replaced) => twin.emit('rollout_finished', { outcome: 'completed', replaced }));
  });

  // A worker that dies on its own (not after disconnect()) takes its slot back.
  cluster.on('exit', (dead, code) => {
    if (code === 0 || dead.exitedAfterDisconnect) return;
    const slot = pool.indexOf(dead);
    const again = cluster.fork();
    if (slot >= 0) pool[slot] = again;
  });
} else if (process.env.TWIN_BAD_RELEASE) {
  // A start-up that never finishes (a dependency that never answers): the
  // worker lives, with its IPC channel open, and never listens.
} else {
  const server = http.createServer((req, res) => {
    const reply = () => res.end(`served by worker ${cluster.worker.id}, pid ${process.pid}\n`);
    if (handlerMs > 0) setTimeout(reply, handlerMs);
    else reply();
  });
  twin.tag(server).listen(opts.port, opts.host);

  // ANCHOR: shutdown
  process.on('message', (note) => {
    if (note.cmd !== STOP.cmd) return;
    server.close(() => process.exit(0)); // called back once every connection has closed
    setTimeout(() => process.exit(0), 5000); // or leave after 5 s regardless
  });
  // ANCHOR_END: shutdown
}
