// The experiments lesson 05's scenarios check, kept apart from the usual
// answer in `usual.js`. Each reports what it saw as an event (`twin.emit`)
// or, in a worker, as a message to the primary, in plain JSON-safe values.
//
// Primary, once every worker has acknowledged its config and reload:
// - `delivered {orders}`: the types each worker received, in the order it
//   received them (workers report each with `{ type: 'received', of }`);
// - `copies`: sends worker 1 a Date, a Map, a Set, a field set to
//   `undefined` and a class instance (`copied` reports what each arrived
//   as: `Date`, `string`, `Map`, `{}` …, and the instance's class and
//   method); then a function (`function_send {threw}`, `function_arrived
//   {fn}`: its type on arrival, if it was sent), then a BigInt
//   (`bigint_send {threw}`: did `send` throw; `bigint_arrived {n}`: its
//   type on arrival);
// - `flood {sent, first_false, falses}`: 200 sends of 64 KiB to worker 1,
//   stopped (SIGSTOP) until the last is sent, and what `send` returned; `flood_received {count, in_order}`: what
//   the worker got;
// - `internal_message {id, cmd}`: a message whose `cmd` starts with `NODE_`
//   (worker 1 sends one, then an ordinary one);
// - `listeners_heard {order, cluster_args, cluster_worker, worker_args}`:
//   worker 1's `status` message as `cluster.on('message')` and
//   `worker.on('message')` each received it, in the order they ran;
// - `handle_passed {reply, primary_handle_closed, error}`: once the flood
//   has arrived, a TCP connection the primary accepted on a server of its
//   own, passed to worker 1 with `worker.send(msg, socket)`; the worker
//   answers on it, and the client reports what it read.
// On SIGUSR2 (a scenario's cue): kills the last worker with SIGKILL, waits
// until the kernel has closed its end (a zombie with no thread left), and sends
// to it before Node has noticed: `send_to_dead {connected, returned}` at
// once, `send_to_dead_failed {error, connected}` from the callback; then,
// after its `exit`, `send_after_exit {returned, error}`. With
// `--no-callback` the first send has no callback, as in the usual answer.

'use strict';

const cluster = require('node:cluster');
const fs = require('node:fs');
const net = require('node:net');
const twin = require('../../../shared/node-twin/twin.js');

function primary(opts) {
  const orders = new Map();
  const expected = opts.workers ?? 4;
  cluster.on('fork', (worker) => {
    worker.process.on('internalMessage', (msg) => {
      // Not cluster's own protocol, nor the one that passes handles.
      const node = ['NODE_CLUSTER', 'NODE_HANDLE', 'NODE_SOCKET'].some((prefix) => msg.cmd?.startsWith?.(prefix));
      if (typeof msg.cmd === 'string' && !node) {
        twin.emit('internal_message', { id: worker.id, cmd: msg.cmd });
      }
    });
  });
  // ANCHOR: listeners
  const heard = [];
  cluster.on('fork', (worker) => {
    worker.on('message', function (msg) {
      if (worker.id === 1 && msg.type === 'status') heard.push({ by: 'worker.on', args: arguments.length });
    });
  });
  cluster.on('message', function (worker, msg) {
    if (worker.id === 1 && msg.type === 'status') {
      heard.push({ by: 'cluster.on', args: arguments.length, worker: worker.id });
      setImmediate(() => twin.emit('listeners_heard', summary(heard)));
    }
  });
  // ANCHOR_END: listeners
  cluster.on('message', (worker, msg) => {
    if (['copied', 'function_arrived', 'bigint_arrived', 'flood_received'].includes(msg.type)) {
      const { type, ...fields } = msg;
      twin.emit(type, fields);
    }
    if (msg.type === 'flood_received') passHandle(worker);
    if (msg.type === 'received' && ['config', 'reload'].includes(msg.of)) {
      const order = orders.get(worker.id) ?? [];
      order.push(msg.of);
      orders.set(worker.id, order);
      const done = [...orders.values()].filter((o) => o.length === 2).length;
      if (orders.size === expected && done === expected) {
        const ids = [...orders.keys()].sort((a, b) => a - b);
        twin.emit('delivered', { orders: ids.map((id) => orders.get(id)) });
        experiments(cluster.workers[ids[0]]);
      }
    }
  });
  process.on('SIGUSR2', () => sendToDead(opts));
}

/// A class instance, to see what arrives of it.
class Point {
  constructor(x, y) {
    this.x = x;
    this.y = y;
  }
  norm() {
    return Math.hypot(this.x, this.y);
  }
}

function experiments(worker) {
  worker.send({
    type: 'copies',
    date: new Date(0),
    map: new Map([['a', 1]]),
    set: new Set([1]),
    gone: undefined,
    point: new Point(3, 4),
  });
  let fnThrew = null;
  try {
    worker.send({ type: 'function', fn() {} });
  } catch (error) {
    fnThrew = `${error.name}: ${error.message}`;
  }
  twin.emit('function_send', { threw: fnThrew });
  let threw = null;
  try {
    worker.send({ type: 'bigint', n: 1n });
  } catch (error) {
    threw = `${error.name}: ${error.message}`;
  }
  twin.emit('bigint_send', { threw });

  // Worker 1 is stopped while the primary sends, as a worker busy with
  // something else would be: nothing drains the channel, and the queue
  // grows by every send. Left running on the other core, the worker now
  // and then kept up with the loop, and `send` never returned false.
  const big = 'x'.repeat(64 * 1024);
  const returned = [];
  process.kill(worker.process.pid, 'SIGSTOP');
  try {
    for (let i = 0; i < 200; i++) {
      returned.push(worker.send({ type: 'flood', i, big }));
    }
  } finally {
    process.kill(worker.process.pid, 'SIGCONT');
  }
  twin.emit('flood', {
    sent: returned.length,
    first_false: returned.indexOf(false),
    falses: returned.filter((r) => r === false).length,
  });
}

/// What each kind of listener got for worker 1's status, in order.
function summary(heard) {
  const byCluster = heard.find((h) => h.by === 'cluster.on');
  const byWorker = heard.find((h) => h.by === 'worker.on');
  return {
    order: heard.map((h) => h.by),
    cluster_args: byCluster?.args ?? null,
    cluster_worker: byCluster?.worker ?? null,
    worker_args: byWorker?.args ?? null,
  };
}

/// Accepts one connection on a server of the primary's own and hands the
/// socket to `worker`; a client reports what it read on that connection.
function passHandle(worker) {
  // ANCHOR: handle
  const server = net.createServer({ pauseOnConnect: true }, (socket) => {
    worker.send({ type: 'socket' }, socket, (error) => {
      // Sent: the primary's copy of the connection is closed.
      closed = socket._handle === null;
      sendError = error?.code ?? null;
      server.close();
    });
  });
  // ANCHOR_END: handle
  let closed = null;
  let sendError = null;
  server.listen(0, '127.0.0.1', () => {
    const client = net.connect(server.address().port, '127.0.0.1');
    let reply = '';
    client.setEncoding('utf8');
    client.on('data', (chunk) => {
      reply += chunk;
    });
    client.on('error', (error) => {
      reply += `[${error.code}]`;
    });
    client.on('close', () => {
      twin.emit('handle_passed', { reply: reply.trim(), primary_handle_closed: closed, error: sendError });
    });
  });
}

function sendToDead(opts) {
  const ids = Object.keys(cluster.workers).map(Number);
  const worker = cluster.workers[Math.max(...ids)];
  const pid = worker.process.pid;
  worker.process.kill('SIGKILL');
  // Synchronously, so that Node cannot notice in the meantime.
  const began = Date.now();
  while (Date.now() - began < 2000 && !gone(pid)) {
    // spin: wait for the kernel to finish the process, not for Node to notice
  }
  const connected = worker.isConnected();
  const msg = { type: 'config', settings: { maxConnections: 2000 } };
  const returned = opts['no-callback']
    ? worker.send(msg)
    : worker.send(msg, (error) => {
        twin.emit('send_to_dead_failed', { error: error?.code ?? null, connected: worker.isConnected() });
      });
  twin.emit('send_to_dead', { id: worker.id, gone: gone(pid), connected, returned });
  worker.once('exit', () => {
    const again = worker.send(msg, (error) => {
      twin.emit('send_after_exit', { returned: again, error: error?.code ?? null });
    });
  });
}

/// True once `pid` is a zombie with no thread left but its leader: only
/// then are its descriptors (its end of the channel) closed. The leader
/// alone turns `Z` while the other threads still exit, sharing the files.
function gone(pid) {
  try {
    const state = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1][0];
    return state === 'Z' && fs.readdirSync(`/proc/${pid}/task`).length === 1;
  } catch {
    return false;
  }
}

function worker() {
  let floods = 0;
  let inOrder = true;
  process.on('message', (msg, handle) => {
    if (msg.type === 'socket') {
      handle.end(`handled by worker ${cluster.worker.id}\n`);
    } else if (msg.type === 'config' || msg.type === 'reload') {
      process.send({ type: 'received', of: msg.type });
    } else if (msg.type === 'copies') {
      const kind = (value) =>
        value instanceof Date
          ? 'Date'
          : value instanceof Map
            ? 'Map'
            : value instanceof Set
              ? 'Set'
              : typeof value === 'string'
                ? 'string'
                : JSON.stringify(value);
      process.send({
        type: 'copied',
        date: kind(msg.date),
        map: kind(msg.map),
        set: kind(msg.set),
        undefined_kept: 'gone' in msg,
        point: msg.point.constructor.name,
        point_norm: typeof msg.point.norm,
      });
    } else if (msg.type === 'function') {
      process.send({ type: 'function_arrived', fn: typeof msg.fn });
    } else if (msg.type === 'bigint') {
      process.send({ type: 'bigint_arrived', n: typeof msg.n });
    } else if (msg.type === 'flood') {
      if (msg.i !== floods) inOrder = false;
      floods += 1;
      if (floods === 200) process.send({ type: 'flood_received', count: floods, in_order: inOrder });
    }
  });
  if (cluster.worker.id === 1) {
    process.send({ cmd: 'NODE_status', workerId: 1 });
    process.send({ cmd: 'status', workerId: 1 });
  }
}

module.exports = { primary, worker };
