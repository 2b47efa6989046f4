// Lesson 11's Node twin: the usual answer's hand-written breaker, run as
// it is written. It counts failures in a row and opens after `threshold`
// of them; once open, it refuses calls until the reset time has passed,
// then the next call turns it half-open and lets everything through; one
// success closes it. Each call is raced against a timer that is never
// cleared. The breaker lives at module scope, so each worker has its own.
//
//   node lessons/11-circuit-breaker/node/usual.js --workers 2
//   curl localhost:8000/api/data
//   curl 'localhost:8000/upstream?set=fail'    # or slow, or healthy
//
// Not part of the usual answer (it calls "externalService"): the upstream.
// The primary runs it, as the Rust lesson does, and prints each call it
// gets (`upstream_call {mode, calls_in_mode}`) and how each ended
// (`upstream_end {mode, completed}`: written to the end, or the caller
// went first). `/upstream?set=MODE` on any worker switches it; `/breaker`
// says this worker's breaker state and its live timers.
// `twin.js` adds only the workbook's flags and event lines (see its header).

'use strict';

const cluster = require('node:cluster');
const http = require('node:http');
const os = require('node:os');
const twin = require('../../../shared/node-twin/twin.js');

const opts = twin.setup({
  title: "Lesson 11's Node twin: the usual failure-counting breaker, one per worker, before an upstream",
  flags: {
    threshold: { type: 'string', default: '5', help: 'failures in a row that open the breaker [default: 5]' },
    timeout: { type: 'string', default: '5s', help: "the timer each call is raced against [default: 5s, as in the usual answer's usage]" },
    'reset-timeout': { type: 'string', default: '30s', help: 'how long an open breaker refuses calls [default: 30s]' },
    slow: { type: 'string', default: '3s', help: 'how long the slow upstream takes to send its body [default: 3s]' },
    abort: { type: 'boolean', default: false, help: "the fix, not the usual answer: getData() passes AbortSignal.timeout(--timeout) to the request" },
  },
});

if (cluster.isPrimary) {
  upstream().then((url) => {
    const count = opts.workers ?? os.cpus().length;
    for (let n = 0; n < count; n++) cluster.fork({ UPSTREAM_URL: url });
  });
} else {
  // ANCHOR: breaker
  class BreakerOpen extends Error {} // refused without calling: a 503, not a 500

  class Breaker {
    constructor({ openAfter, deadline, openFor }) {
      Object.assign(this, { openAfter, deadline, openFor });
      this.state = 'CLOSED';
      this.inARow = 0; // failures in a row; only a success sets it back to 0
      this.retryAt = Date.now();
    }

    async call(work) {
      if (this.state === 'OPEN') {
        if (Date.now() < this.retryAt) throw new BreakerOpen('breaker open: call refused');
        this.state = 'HALF_OPEN'; // no limit: every call from now on goes through
      }
      let value;
      try {
        // Losing the race stops nothing: work() runs on, and so does the timer.
        value = await Promise.race([work(), this.expiry()]);
      } catch (error) {
        this.failed();
        throw error;
      }
      this.succeeded();
      return value;
    }

    expiry() {
      return new Promise((_, reject) => {
        setTimeout(() => reject(new Error(`no answer within ${this.deadline} ms`)), this.deadline);
      });
    }

    succeeded() {
      this.inARow = 0;
      if (this.state !== 'HALF_OPEN') return;
      this.state = 'CLOSED'; // one success is enough
      changed('HALF_OPEN → CLOSED');
    }

    failed() {
      this.inARow += 1;
      if (this.inARow < this.openAfter) return;
      this.state = 'OPEN'; // again at every failure past the threshold
      this.retryAt = Date.now() + this.openFor;
      changed('CLOSED → OPEN', `after ${this.inARow} failures`); // whatever the state was
    }
  }
  // ANCHOR_END: breaker

  const ms = (flag) => twin.seconds(opts[flag], `--${flag}`) * 1000;
  // ANCHOR: usage
  // At module scope: each worker process builds its own.
  const breaker = new Breaker({ openAfter: Number(opts.threshold), deadline: ms('timeout'), openFor: ms('reset-timeout') });

  async function apiData(req, res) {
    let status = 200;
    let body;
    try {
      body = await breaker.call(() => getData());
    } catch (error) {
      const refused = error instanceof BreakerOpen;
      status = refused ? 503 : 500;
      body = { error: refused ? 'upstream paused by the breaker, retry later' : error.message };
    }
    res.statusCode = status;
    res.end(JSON.stringify(body));
  }
  // ANCHOR_END: usage

  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname === '/api/data') {
      apiData(req, res);
    } else if (url.pathname === '/breaker') {
      const timers = process.getActiveResourcesInfo().filter((kind) => kind === 'Timeout').length;
      res.end(JSON.stringify({ state: breaker.state, failures: breaker.inARow, timers }));
    } else if (url.pathname === '/upstream') {
      http.get(`${process.env.UPSTREAM_URL}/mode?set=${url.searchParams.get('set')}`, (answer) => {
        res.statusCode = answer.statusCode;
        answer.pipe(res);
      });
    } else {
      res.statusCode = 404;
      res.end();
    }
  });
  twin.tag(server).listen(opts.port, opts.host);

  /// The external service: a GET whose promise settles with the whole body.
  function getData() {
    return new Promise((resolve, reject) => {
      // ANCHOR: abort
      const options = opts.abort ? { signal: AbortSignal.timeout(ms('timeout')) } : {};
      // ANCHOR_END: abort
      http
        .get(`${process.env.UPSTREAM_URL}/data`, options, (res) => {
          if (res.statusCode !== 200) {
            res.resume();
            reject(new Error(`upstream answered ${res.statusCode}`));
            return;
          }
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (chunk) => (body += chunk));
          res.on('end', () => resolve(JSON.parse(body)));
          res.on('error', reject);
        })
        .on('error', reject);
    });
  }

  /// A change of state: a line for people, and a `message` to the primary
  /// with the change alone (a worker's stdout is not the event stream).
  function changed(change, why = '') {
    twin.log(`breaker (worker ${cluster.worker.id}): ${change}${why && `, ${why}`}`);
    process.send({ breaker: change });
  }
}

/// The flaky upstream, in the primary: healthy (200 at once), fail (500 at
/// once) or slow (200 at once, then the body in ten steps over --slow; a
/// caller gone is seen at the next step). Resolves with its URL.
function upstream() {
  let mode = 'healthy';
  let calls = 0;
  const slowMs = twin.seconds(opts.slow, '--slow') * 1000;
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname === '/mode') {
      mode = url.searchParams.get('set');
      calls = 0;
      twin.emit('upstream_mode', { mode });
      res.end(`${mode}\n`);
      return;
    }
    calls += 1;
    const seen = mode;
    twin.emit('upstream_call', { mode: seen, calls_in_mode: calls });
    if (seen === 'fail') {
      res.statusCode = 500;
      res.end('{"error":"failing"}');
      return;
    }
    if (seen === 'healthy') {
      res.end('{"data":"ok"}');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.write('{"data":"');
    let step = 0;
    const timer = setInterval(() => {
      if (res.destroyed) {
        clearInterval(timer);
        twin.emit('upstream_end', { mode: seen, completed: false });
        return;
      }
      step += 1;
      if (step < 10) {
        res.write('.');
      } else {
        clearInterval(timer);
        res.end('"}');
        twin.emit('upstream_end', { mode: seen, completed: true });
      }
    }, slowMs / 10);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${server.address().port}`));
  });
}
