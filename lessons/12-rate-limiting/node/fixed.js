// Lesson 12's Node twin for the fix: the same sliding log as the lesson,
// decided in Redis by its Lua script (`../src/sliding.lua`, sent by hash
// with ioredis's defineCommand), keyed by API key, with the draft-06
// RateLimit fields, and a decision for when Redis is down (fail open by
// default), said once per outage.
//
//   REDIS_URL=redis://127.0.0.1:6379 node lessons/12-rate-limiting/node/fixed.js
//   curl -i -H 'x-api-key: ada' localhost:8000/
//
// `twin.js` adds only the workbook's flags and event lines (see its header).
// Each outage line is also sent to the primary (a `message` event), so the
// scenario can count them.

'use strict';

const cluster = require('node:cluster');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const twin = require('../../../shared/node-twin/twin.js');

const opts = twin.setup({
  title: "Lesson 12's Node twin: the fix — one Lua script per decision, Redis's clock, and a choice when Redis is down",
  flags: {
    limit: { type: 'string', default: '10', help: 'requests a client may make per window [default: 10]' },
    window: { type: 'string', default: '1s', help: 'the sliding window [default: 1s]' },
    'redis-down': { type: 'string', default: 'open', help: 'when Redis is down: open (let requests through) or closed (503) [default: open]' },
  },
});

if (cluster.isPrimary) {
  const workers = opts.workers ?? os.cpus().length;
  for (let i = 0; i < workers; i++) {
    cluster.fork();
  }
} else {
  const Redis = twin.dependency('ioredis');
  const limit = Number(opts.limit);
  const windowMs = Math.round(twin.seconds(opts.window, '--window') * 1000);

  // ANCHOR: client
  const redis = connect(Redis, {
    enableOfflineQueue: false, // no connection: fail now, not after 20 retries
    maxRetriesPerRequest: 1,
    commandTimeout: 2000, // a Redis that hangs: fail after 2 s
  });
  redis.on('error', () => {}); // said once per outage below, not per reconnection
  redis.defineCommand('slidingLog', {
    numberOfKeys: 1,
    lua: fs.readFileSync(path.join(__dirname, '../src/sliding.lua'), 'utf8'), // EVALSHA, EVAL if unknown
  });
  // ANCHOR_END: client

  let seq = 0;
  let down = false;

  // ANCHOR: middleware
  const server = http.createServer(async (req, res) => {
    const key = `ratelimit:sliding:${req.headers['x-api-key'] ?? 'anonymous'}`;
    const id = `${os.hostname()}.${process.pid}-${seq++}`; // unique on every machine
    let decision;
    try {
      decision = await redis.slidingLog(key, limit, windowMs, id);
    } catch (error) {
      if (!down) {
        down = true;
        twin.log(`[worker ${cluster.worker.id}] Redis is unreachable (${error.message}): failing ${opts['redis-down']}`);
        process.send({ redis: 'unreachable' });
      }
      if (opts['redis-down'] === 'closed') {
        res.writeHead(503).end('{"error":"the rate limiter is unavailable"}');
      } else {
        res.end(`Hello from worker ${cluster.worker.id} (not limited: Redis is down)\n`);
      }
      return;
    }
    if (down) {
      down = false;
      process.send({ redis: 'back' });
    }
    const [allowed, remaining, resetMs] = decision;
    const reset = Math.ceil(resetMs / 1000);
    res.setHeader('RateLimit-Policy', `${limit};w=${Math.ceil(windowMs / 1000)}`);
    res.setHeader('RateLimit-Limit', limit);
    res.setHeader('RateLimit-Remaining', remaining);
    res.setHeader('RateLimit-Reset', reset);
    if (!allowed) {
      res.setHeader('Retry-After', Math.max(reset, 1));
      res.writeHead(429, { 'content-type': 'application/json' });
      return res.end('{"error":"Too many requests"}');
    }
    res.end(`Hello from worker ${cluster.worker.id}\n`);
  });
  // ANCHOR_END: middleware
  // Without the offline queue, a command sent before the connection is up
  // fails: listen only once it is.
  redis.once('ready', () => twin.tag(server).listen(opts.port, opts.host));
}

/// ioredis on REDIS_URL with `options`: `redis://…`, or `redis+unix:///path`
/// (the runner's private server), which ioredis takes as `{ path }`.
function connect(Redis, options) {
  const url = process.env.REDIS_URL;
  if (!url) return new Redis(options);
  const unix = /^redis\+unix:\/\/(\/[^?]*)/.exec(url);
  return unix ? new Redis({ path: unix[1], ...options }) : new Redis(url, options);
}
