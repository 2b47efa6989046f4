// Lesson 10's Node twin for WebSockets: the usual answer's chat worker —
// `ws` on the worker's HTTP server, and Redis pub/sub (ioredis) to pass a
// message to the clients of every worker. `--no-pubsub` sends to this
// worker's own clients instead: what a cluster does without the relay.
//
//   REDIS_URL=redis://127.0.0.1:6379 node lessons/10-limitations/node/chat.js --room 8
//
// The load generator speaks HTTP only, so with `--room N` the primary plays
// the room (as the Rust lesson's primary does): once every worker listens
// it connects N clients, has client 0 say one line, and emits `websocket
// {clients, workers_with_clients, on_senders_worker, heard}` after a second.
// `twin.js` adds only the workbook's flags and event lines (see its header).

'use strict';

const cluster = require('node:cluster');
const http = require('node:http');
const os = require('node:os');
const twin = require('../../../shared/node-twin/twin.js');

const opts = twin.setup({
  title: "Lesson 10's Node twin: a ws chat relayed through Redis pub/sub",
  flags: {
    room: { type: 'string', default: '0', help: 'the primary connects this many clients and counts who hears client 0 [default: 0, none]' },
    'no-pubsub': { type: 'boolean', default: false, help: "send to this worker's own clients, without Redis" },
    outage: {
      type: 'boolean',
      default: false,
      help: 'after the first line, wait for Redis to go and come back, then have client 0 speak again',
    },
  },
});
const WebSocket = twin.dependency('ws');

if (cluster.isPrimary) {
  const workers = opts.workers ?? os.cpus().length;
  for (let i = 0; i < workers; i++) {
    cluster.fork();
  }
  let listening = 0;
  cluster.on('listening', (_worker, address) => {
    listening += 1;
    if (listening === workers && Number(opts.room) > 0) {
      room(Number(opts.room), address.port).catch((error) => twin.log(`room: ${error.stack}`));
    }
  });
} else {
  const Redis = twin.dependency('ioredis');
  const server = http.createServer();
  // ANCHOR: chat
  const wss = new WebSocket.Server({ server }); // wss.clients: this worker's sockets only
  const redis = connect(Redis);
  const subscriber = connect(Redis); // subscribed, a RESP2 connection only listens

  subscriber.subscribe('broadcast');
  subscriber.on('message', (channel, message) => {
    wss.clients.forEach((client) => {
      if (client.readyState === WebSocket.OPEN) client.send(message);
    });
  });

  wss.on('connection', (ws) => {
    ws.on('message', (msg) => {
      if (opts['no-pubsub']) {
        wss.clients.forEach((client) => client.send(msg.toString())); // this worker's only
      } else {
        redis.publish('broadcast', msg); // every worker, through Redis
      }
    });
  });
  // ANCHOR_END: chat
  // Not part of the usual answer: once subscribed (a second SUBSCRIBE to
  // the same channel only waits for it), try a GET on that connection.
  subscriber.subscribe('broadcast').then(() => probe(subscriber));
  // The handshake's answer names the worker, as twin.tag does for HTTP.
  wss.on('headers', (headers) => headers.push(`x-worker-id: ${cluster.worker.id}`));
  server.listen(opts.port, opts.host);
}

/// The primary's test room: N clients, client 0 speaks, count who heard it.
async function room(count, port) {
  // Not part of the usual answer: with --outage the primary watches Redis
  // with a client of its own, from before the first line.
  const watcher = opts.outage ? connect(twin.dependency('ioredis')) : null;
  if (watcher) await new Promise((resolve) => watcher.once('ready', resolve));
  const clients = [];
  for (let i = 0; i < count; i++) {
    const ws = new WebSocket(`ws://${opts.host}:${port}/`);
    const client = { ws, worker: null, heard: [] };
    ws.on('upgrade', (res) => (client.worker = res.headers['x-worker-id']));
    ws.on('message', (data) => client.heard.push(data.toString()));
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    clients.push(client);
  }
  const heard = await say(clients, 'hello from client 0');
  const onSenders = clients.filter((c) => c.worker === clients[0].worker).length;
  twin.emit('websocket', {
    clients: count,
    workers_with_clients: new Set(clients.map((c) => c.worker)).size,
    senders_worker: Number(clients[0].worker),
    on_senders_worker: onSenders,
    heard,
  });
  if (watcher) await outage(watcher, clients);
  for (const c of clients) c.ws.close();
}

/// Client 0 says `line`; how many clients have heard it a second later.
async function say(clients, line) {
  clients[0].ws.send(line);
  await new Promise((resolve) => setTimeout(resolve, 1000));
  return clients.filter((c) => c.heard.includes(line)).length;
}

/// Redis goes (the scenario stops it) and comes back: once Redis counts a
/// subscriber per worker again, client 0 speaks. Nothing is said during the
/// outage: ioredis would queue that PUBLISH and send it on reconnecting,
/// and whether a subscriber is back by then is a race.
async function outage(watcher, clients) {
  await new Promise((resolve) => watcher.once('close', resolve));
  twin.emit('redis_gone', {});
  await new Promise((resolve) => watcher.once('ready', resolve));
  const workers = Object.keys(cluster.workers).length;
  let subscribers = 0;
  for (let tries = 0; tries < 100 && subscribers < workers; tries++) {
    const [, n] = await watcher.pubsub('NUMSUB', 'broadcast');
    subscribers = n;
    if (n < workers) await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const heard = await say(clients, 'said after the outage');
  twin.emit('after_outage', { subscribers, heard });
}

/// Not part of the usual answer: what a subscribed ioredis connection says
/// to a GET, sent to the primary (a `message` event).
function probe(subscriber) {
  subscriber.get('anything').then(
    () => process.send({ subscribed_get: 'answered' }),
    (error) => process.send({ subscribed_get: error.message }),
  );
}

/// ioredis on REDIS_URL (`redis+unix:///path` is the runner's private server).
function connect(Redis) {
  const url = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
  const unix = /^redis\+unix:\/\/(\/[^?]*)/.exec(url);
  return unix ? new Redis({ path: unix[1] }) : new Redis(url);
}
