// Lesson 10's Node twin for the usual answer's "Worker Threads: for
// CPU-intensive tasks (shared memory)": what worker threads share, what
// they cost, and what a crash in one takes down, each an event.
//
//   node lessons/10-limitations/node/threads.js --threads 4
//
// Not a usual answer's code (it has none for threads): small probes with
// node:worker_threads, in the order the events come.
//
// - `isolation`: a global set in the main thread, and an object a thread
//   changes, seen from the other side;
// - `shared_memory`: a SharedArrayBuffer every thread adds to with Atomics;
//   a plain ArrayBuffer posted (copied), and one transferred (moved);
// - `listen_in_a_thread`: a thread listening on the main thread's port;
// - `memory`: the process's resident memory before and after starting the
//   threads, and a cluster worker's, for comparison;
// - `thread_threw`, `thread_out_of_memory`: a thread that throws, and one
//   that passes its heap limit (`resourceLimits`): does the process live?
// - then one thread sends the process SIGABRT, the signal native code's
//   abort() raises (`process.abort()` itself is refused in a thread): the
//   whole process ends, every thread with it.
//
// `twin.js` adds only the workbook's flags and event lines (see its header).

'use strict';

const { Worker, isMainThread, parentPort, workerData } = require('node:worker_threads');

if (!isMainThread) {
  thread(workerData);
} else {
  main();
}

/// The threads' side: one job each, named by the main thread.
function thread({ job, shared, plain }) {
  if (job === 'look') {
    // ANCHOR: isolation
    globalThis.seenByMain ??= 'no';
    parentPort.postMessage({
      global_from_main: typeof globalThis.fromMain, // 'undefined': another heap
    });
    // ANCHOR_END: isolation
  } else if (job === 'add') {
    // ANCHOR: shared
    Atomics.add(new Int32Array(shared), 0, 1); // the same memory as the main thread's
    new Uint8Array(plain)[0] = 42; // this thread's copy only
    // ANCHOR_END: shared
    parentPort.postMessage({ plain_here: new Uint8Array(plain)[0] });
  } else if (job === 'idle') {
    require('node:http'); // as a thread that serves would
    parentPort.postMessage('up');
    parentPort.on('message', () => parentPort.postMessage('still here'));
  } else if (job === 'throw') {
    throw new Error('a bug in one thread');
  } else if (job === 'grow') {
    const hoard = [];
    for (;;) hoard.push(new Array(1e5).fill(hoard.length));
  } else if (job === 'listen') {
    // The port the main thread listens on: threads share no listening socket.
    require('node:net')
      .createServer()
      .on('error', (error) => parentPort.postMessage(error.code))
      .listen(workerData.port, '127.0.0.1', () => parentPort.postMessage('listening'));
  } else if (job === 'try-abort') {
    try {
      process.abort();
    } catch (error) {
      parentPort.postMessage(error.code); // refused in a thread
    }
  } else if (job === 'abort') {
    process.kill(process.pid, 'SIGABRT');
  }
}

function main() {
  const cluster = require('node:cluster');
  const http = require('node:http');
  const twin = require('../../../shared/node-twin/twin.js');
  const opts = twin.setup({
    title: "Lesson 10's Node twin: what worker threads share, cost, and take down when one crashes",
    flags: { threads: { type: 'string', default: '4', help: 'worker threads to start [default: 4]' } },
  });

  if (!cluster.isPrimary) {
    // A cluster worker serving HTTP, for the memory comparison.
    http.createServer((req, res) => res.end('OK\n')).listen(0, opts.host, () => {
      process.send({ rss_mib: mib(process.memoryUsage().rss) }, () => process.exit(0));
    });
    return;
  }

  // Each thread's first message, error and exit, listened for from its start.
  const run = (job, data = {}, options = {}) => {
    const thread = new Worker(__filename, { workerData: { job, ...data }, ...options });
    thread.said = first(thread, 'message');
    thread.failed = first(thread, 'error');
    thread.ended = first(thread, 'exit');
    return thread;
  };
  const first = (emitter, name) => new Promise((resolve) => emitter.once(name, (...args) => resolve(args)));

  (async () => {
    // What a thread sees of the main thread's heap.
    globalThis.fromMain = 'set in the main thread';
    const looker = run('look');
    const [seen] = await looker.said;
    await looker.ended;
    twin.emit('isolation', { ...seen, global_from_thread: typeof globalThis.seenByMain });

    // Shared, copied, moved.
    const n = Number(opts.threads);
    const shared = new SharedArrayBuffer(4);
    const plain = new ArrayBuffer(1);
    const adders = [];
    for (let i = 0; i < n; i++) adders.push(run('add', { shared, plain }));
    const saw = await Promise.all(adders.map((t) => t.said));
    await Promise.all(adders.map((t) => t.ended));
    const moved = new ArrayBuffer(1024);
    const mover = run('idle');
    mover.postMessage(moved, [moved]); // transferred: no longer ours
    await mover.said;
    await mover.terminate();
    twin.emit('shared_memory', {
      threads: n,
      shared_counter: new Int32Array(shared)[0], // n: every thread's add landed here
      plain_in_threads: saw.map(([m]) => m.plain_here),
      plain_in_main: new Uint8Array(plain)[0], // 0: each thread changed its copy
      transferred_byte_length_in_main: moved.byteLength, // 0: detached
    });

    // A thread listening on the port this thread listens on.
    const server = require('node:net').createServer();
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    const [answer] = await run('listen', { port: server.address().port }).said;
    server.close();
    twin.emit('listen_in_a_thread', { same_port: answer });

    // What a thread costs, against what a cluster worker costs.
    const before = process.memoryUsage().rss;
    const idle = [];
    for (let i = 0; i < n; i++) idle.push(run('idle'));
    await Promise.all(idle.map((t) => t.said));
    const after = process.memoryUsage().rss;
    const worker = cluster.fork();
    const exited = first(worker, 'exit');
    const [{ rss_mib: clusterWorker }] = await first(worker, 'message');
    await exited;
    twin.emit('memory', {
      threads: n,
      rss_before_mib: mib(before),
      rss_after_mib: mib(after),
      per_thread_mib: mib((after - before) / n),
      cluster_worker_rss_mib: clusterWorker,
    });

    // The idle threads that answer a message now.
    const answering = () =>
      Promise.all(
        idle.map((t) => {
          const answered = first(t, 'message');
          t.postMessage('are you there?');
          return answered;
        }),
      ).then((answers) => answers.length);

    // A thread that throws: its 'error' event in this thread, and the
    // others go on.
    const thrower = run('throw');
    const [error] = await thrower.failed;
    twin.emit('thread_threw', { error: error.message, others_answering: await answering() });

    // A thread past its own heap limit: only that thread ends.
    const grower = run('grow', {}, { resourceLimits: { maxOldGenerationSizeMb: 32 } });
    const [oom] = await grower.failed;
    twin.emit('thread_out_of_memory', { code: oom.code, others_answering: await answering() });

    // A signal that ends the process ends every thread.
    const [refused] = await run('try-abort').said;
    twin.emit('aborting', { process_abort_in_a_thread: refused, others_answering: await answering() });
    run('abort');
  })().catch((error) => {
    twin.log(error.stack);
    process.exit(1);
  });
}

function mib(bytes) {
  return Math.round((bytes / 1048576) * 10) / 10;
}
