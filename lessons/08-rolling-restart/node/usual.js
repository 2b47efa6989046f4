// Lesson 08's Node twin: the usual answer to "how do you restart every
// worker without downtime?", as interviewees write it. The primary keeps its
// own array of four workers; on SIGUSR2 it replaces them one at a time:
// fork, wait for 'listening', send the old worker {type: 'shutdown'}, wait
// for its 'exit', pause 2 s, next. An old worker still alive 10 s after its
// replacement listened is killed with SIGKILL. A worker that crashes is
// replaced. The worker's 'shutdown' handler calls server.close() and exits
// when it calls back — or after 5 s, whichever comes first.
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
  title: "Lesson 08's Node twin: the usual rolling restart on SIGUSR2",
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

if (cluster.isPrimary) {
  const workers = [];
  const numWorkers = opts.workers ?? 4;
  for (let i = 0; i < numWorkers; i++) {
    workers.push(cluster.fork());
  }

  function rollingRestart() {
    return new Promise((resolve) => {
      let index = 0;
      const replaced = [];

      function replaceNext() {
        if (index >= workers.length) {
          twin.emit('rollout_finished', { outcome: 'completed', replaced });
          resolve();
          return;
        }
        // ANCHOR: replace
        const oldWorker = workers[index];
        const newWorker = cluster.fork();

        newWorker.once('listening', () => {
          // 'listening' taken for ready; then the old worker is asked to go.
          oldWorker.send({ type: 'shutdown' });

          oldWorker.once('exit', () => {
            twin.emit('replaced', { old: oldWorker.id, new: newWorker.id });
            replaced.push([oldWorker.id, newWorker.id]);
            workers[index] = newWorker;
            index++;
            setTimeout(replaceNext, 2000); // let the new worker settle
          });

          setTimeout(() => {
            if (!oldWorker.isDead()) {
              oldWorker.kill('SIGKILL');
            }
          }, 10000);
        });
        // ANCHOR_END: replace
      }

      replaceNext();
    });
  }

  process.on('SIGUSR2', async () => {
    twin.emit('rollout_started', { workers: workers.length });
    // --bad-release: the workers forked from now on run the new release.
    if (opts['bad-release']) process.env.TWIN_BAD_RELEASE = '1';
    await rollingRestart();
  });

  // A crash (not a disconnect) is replaced at once.
  cluster.on('exit', (worker, code) => {
    if (code !== 0 && !worker.exitedAfterDisconnect) {
      const newWorker = cluster.fork();
      const idx = workers.indexOf(worker);
      if (idx !== -1) workers[idx] = newWorker;
    }
  });
} else if (process.env.TWIN_BAD_RELEASE) {
  // A start-up that never finishes (a dependency that never answers): the
  // worker lives, with its IPC channel open, and never listens.
} else {
  const server = http.createServer((req, res) => {
    const answer = () => res.end(`Worker ${cluster.worker.id} (PID: ${process.pid})\n`);
    if (handlerMs > 0) setTimeout(answer, handlerMs);
    else answer();
  });
  twin.tag(server).listen(opts.port, opts.host);

  // ANCHOR: shutdown
  process.on('message', (msg) => {
    if (msg.type === 'shutdown') {
      server.close(() => process.exit(0));
      setTimeout(() => process.exit(0), 5000);
    }
  });
  // ANCHOR_END: shutdown
}
