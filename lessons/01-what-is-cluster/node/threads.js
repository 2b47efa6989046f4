// Lesson 01's second Node twin: the other way to use every core from
// Node — worker threads, inside one process.
//
// First it reports how many CPUs Node counts (`cpus`): `os.cpus().length`
// and `os.availableParallelism()` in this process, and the same two in a
// `node` started under `taskset -c 0` (allowed one CPU), with the libuv
// version that decides what `availableParallelism()` reads.
//
// Then (`threads`) the main thread runs a CPU-bound loop N times, one
// after another, and N worker threads run the same loop once each, at the
// same time. For both it reports the wall time, the CPU time the process
// used (user + system, every thread counted) and their ratio: how many
// cores' worth of time the process kept busy. That ratio also depends on
// what else the machine runs, so the threads also look for each other:
// now and then a thread runs on for 50 µs without a break (no gap over
// 10 µs between its clock readings, so the kernel did not stop it), and
// checks whether the next thread's progress counter moved meanwhile. If it
// did, the two ran JavaScript at the same moment on two cores: one such
// sighting (`witnessed`) proves it, whatever the load. The control
// (`threads_one_cpu`): the same run in a `node` started under `taskset -c
// 0`, where no two threads can run at once.
//
//   node lessons/01-what-is-cluster/node/threads.js --threads 4
//
// `twin.js` reads the workbook's flags (this twin forks no worker and
// listens nowhere) and prints the events.

'use strict';

const os = require('node:os');
const { spawnSync } = require('node:child_process');
const { Worker, isMainThread, workerData, parentPort } = require('node:worker_threads');

const ROUNDS = 60_000_000;
// Before twin.setup(), which points process.execPath at setpriv for forks.
const NODE = process.execPath;

/// A CPU-bound loop: no allocation, no I/O, nothing to wait for. With
/// `counters`, it publishes its progress every 1024 rounds and, every
/// 256 publications, watches the next thread's counter (see the header).
function spin(rounds, counters = null, me = 0) {
  let x = 0;
  let checks = 0;
  let witnessed = 0;
  const next = counters === null ? 0 : (me + 1) % counters.length;
  for (let i = 0; i < rounds; i++) {
    x = (x * 31 + i) % 1_000_003;
    if (counters !== null && (i & 1023) === 0) {
      Atomics.add(counters, me, 1);
      if ((i & 262_143) === 0) {
        checks += 1;
        // The clock is read before the first look and after the second,
        // so a break anywhere in between shows as a gap.
        const start = process.hrtime.bigint();
        const before = Atomics.load(counters, next);
        let last = start;
        let gap = 0n;
        while (last - start < 50_000n) {
          const now = process.hrtime.bigint();
          if (now - last > gap) gap = now - last;
          last = now;
        }
        const after = Atomics.load(counters, next);
        const end = process.hrtime.bigint();
        if (end - last > gap) gap = end - last;
        if (gap < 10_000n && after > before) witnessed += 1;
      }
    }
  }
  return { x, checks, witnessed };
}

if (!isMainThread) {
  const { rounds, counters, me } = workerData;
  parentPort.postMessage(spin(rounds, new Int32Array(counters), me));
} else {
  const twin = require('../../../shared/node-twin/twin.js');
  const opts = twin.setup({
    title: "Lesson 01's threads twin: one process, N threads of JavaScript",
    flags: {
      threads: { type: 'string', default: '4', help: 'N: worker threads, each running the loop once' },
      control: { type: 'boolean', help: 'the control run: threads only, no CPU count, no control of its own' },
    },
  });
  const n = Number(opts.threads);

  if (!opts.control) {
    // ANCHOR: cpus
    const count = 'const os = require("node:os"); console.log(JSON.stringify([os.cpus().length, os.availableParallelism()]))';
    const pinned = spawnSync('taskset', ['-c', '0', NODE, '-e', count], { encoding: 'utf8' });
    const [pinnedMachine, pinnedAvailable] = pinned.status === 0 ? JSON.parse(pinned.stdout) : [null, null];
    twin.emit('cpus', {
      uv: process.versions.uv,
      machine: os.cpus().length,
      available: os.availableParallelism(),
      pinned_machine: pinnedMachine,
      pinned_available: pinnedAvailable,
    });
    // ANCHOR_END: cpus
  }

  /// Wall and CPU time of `work`, in ms, and CPU ÷ wall.
  async function measure(work) {
    const cpu0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    const result = await work();
    const wall = Number(process.hrtime.bigint() - t0) / 1e6;
    const { user, system } = process.cpuUsage(cpu0);
    const cpu = (user + system) / 1000;
    const times = { wall_ms: Math.round(wall), cpu_ms: Math.round(cpu), parallelism: Math.round((cpu / wall) * 100) / 100 };
    return { times, result };
  }

  (async () => {
    spin(ROUNDS / 10); // warm up the JIT first
    const serial = await measure(async () => {
      for (let i = 0; i < n; i++) spin(ROUNDS);
    });
    const threaded = await measure(() => inThreads(n));
    const sum = (key) => threaded.result.reduce((total, r) => total + r[key], 0);
    const report = { threads: n, serial: serial.times, threaded: threaded.times, checks: sum('checks'), witnessed: sum('witnessed') };
    twin.log(JSON.stringify(report));
    twin.emit('threads', report);
    if (!opts.control) {
      // The control: the same run in a node allowed one CPU.
      const args = [NODE, __filename, '--threads', String(n), '--events', 'json', '--control'];
      const run = spawnSync('taskset', ['-c', '0', ...args], { encoding: 'utf8', timeout: 60_000 });
      const line = run.stdout?.split('\n').find((l) => l.includes('"event":"threads"'));
      const { event: _event, ...control } = line ? JSON.parse(line) : { witnessed: null };
      twin.emit('threads_one_cpu', control);
    }
  })();

  // ANCHOR: threads
  /// Runs the loop once in each of `n` worker threads, all at once.
  function inThreads(n) {
    const counters = new SharedArrayBuffer(4 * n);
    return Promise.all(
      Array.from({ length: n }, (_, me) => {
        const worker = new Worker(__filename, { workerData: { rounds: ROUNDS, counters, me } });
        return new Promise((resolve, reject) => {
          worker.once('message', resolve);
          worker.once('error', reject);
        });
      }),
    );
  }
  // ANCHOR_END: threads
}
