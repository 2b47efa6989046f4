// Lesson 12's Node twin: the usual answer to "how do you rate-limit across
// workers?" — a Redis sorted set per client address, trimmed, counted,
// added to and given an expiry in one MULTI, and 429 once the count
// reaches the limit. Its defaults are the answer's: 100 requests a minute.
//
//   REDIS_URL=redis://127.0.0.1:6379 node lessons/12-rate-limiting/node/usual.js
//   for i in $(seq 105); do curl -s -o /dev/null -w '%{http_code}\n' localhost:8000/; done
//
// `twin.js` adds only the workbook's flags and event lines (see its header).
// Beyond the answer, for the scenarios: `--max` and `--window` shorten the
// limit, `--skew-ms` moves one worker's clock, and `GET /debug/zcard` (not
// limited) answers how many members the caller's set holds.

'use strict';

const cluster = require('node:cluster');
const http = require('node:http');
const os = require('node:os');
const twin = require('../../../shared/node-twin/twin.js');

const opts = twin.setup({
  title: "Lesson 12's Node twin: the usual MULTI rate limiter in Redis, keyed by client address",
  flags: {
    max: { type: 'string', default: '100', help: 'requests a client may make per window [default: 100]' },
    window: { type: 'string', default: '60s', help: 'the sliding window, like 60s or 1000ms [default: 60s]' },
    'skew-ms': {
      type: 'string',
      default: '0',
      help: "milliseconds added to Date.now() in one worker: its clock runs ahead [default: 0]",
    },
    'skewed-worker': { type: 'string', default: '2', help: 'the worker whose clock --skew-ms moves [default: 2]' },
  },
});

if (cluster.isPrimary) {
  let left = opts.workers ?? os.cpus().length;
  while (left-- > 0) cluster.fork();
} else {
  const skew = Number(opts['skew-ms']);
  if (skew !== 0 && String(cluster.worker.id) === opts['skewed-worker']) {
    // A machine whose clock is off: every Date.now() in this worker reads
    // `skew` ms later than the others', the answer's code unchanged.
    const realNow = Date.now;
    Date.now = () => realNow() + skew;
  }

  const Redis = twin.dependency('ioredis');
  // ioredis's defaults, as in the answer; only the address is the runner's.
  const redis = connect(Redis);

  // ANCHOR: limiter
  // One sorted set per key; every attempt is a member, scored by this
  // worker's clock, so the set's size is the number of recent attempts.
  class SlidingLog {
    constructor(limit, spanMs) {
      this.limit = limit;
      this.spanMs = spanMs;
    }

    async admits(key) {
      const at = Date.now(); // this worker's clock, not Redis's
      const replies = await redis
        .multi()
        .zremrangebyscore(key, 0, at - this.spanMs) // drop attempts older than the span
        .zcard(key) // size before this attempt
        .zadd(key, at, `${at}-${Math.random()}`) // this attempt, whether it is let in or not
        .pexpire(key, this.spanMs)
        .exec(); // one [error, reply] pair per queued command
      const before = replies[1][1];
      return before < this.limit;
    }
  }
  // ANCHOR_END: limiter

  const spanMs = Math.round(twin.seconds(opts.window, '--window') * 1000);
  const log = new SlidingLog(Number(opts.max), spanMs);

  // ANCHOR: middleware
  const server = http.createServer(async (req, res) => {
    if (req.url === '/debug/zcard') return debugZcard(req, res); // the workbook's, not limited
    const key = `rate-limit:${req.socket.remoteAddress}`; // what express calls req.ip
    // Awaited bare, as the answer does: a Redis error rejects here.
    if (!(await log.admits(key))) {
      res.writeHead(429, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({ error: 'rate limit reached, try again later' }));
    }
    res.end(`worker ${cluster.worker.id} says hello\n`); // the route after the middleware
  });
  // ANCHOR_END: middleware
  twin.tag(server).listen(opts.port, opts.host);

  /// How many members the caller's set holds now (`{"zcard": N}`).
  async function debugZcard(req, res) {
    const zcard = await redis.zcard(`rate-limit:${req.socket.remoteAddress}`);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ zcard }));
  }
}

/// ioredis on REDIS_URL: `redis://…`, or `redis+unix:///path` (the runner's
/// private server), which ioredis takes as `{ path }`. Unset: `new Redis()`,
/// localhost:6379, as the answer has it.
function connect(Redis) {
  const url = process.env.REDIS_URL;
  if (!url) return new Redis();
  const unix = /^redis\+unix:\/\/(\/[^?]*)/.exec(url);
  return unix ? new Redis({ path: unix[1] }) : new Redis(url);
}
