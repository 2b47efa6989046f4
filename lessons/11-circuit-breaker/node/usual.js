// Lesson 11's Node twin: the usual answer's `CircuitBreaker` class, as it
// is — CLOSED → OPEN after `threshold` failures, OPEN → HALF_OPEN on the
// first call after the reset timeout, HALF_OPEN → CLOSED on one success,
// each call raced against a timer — in front of an upstream, one breaker
// per worker, as the usual answer's module-scope `new CircuitBreaker(...)`.
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
  title: "Lesson 11's Node twin: the usual CircuitBreaker, one per worker, before an upstream",
  flags: {
    threshold: { type: 'string', default: '5', help: 'failures that open the breaker [default: 5]' },
    timeout: { type: 'string', default: '5s', help: "each call's race against a timer [default: 5s, the usual answer's]" },
    'reset-timeout': { type: 'string', default: '30s', help: 'how long the breaker stays open [default: 30s]' },
    slow: { type: 'string', default: '3s', help: 'how long the slow upstream takes to send its body [default: 3s]' },
    abort: { type: 'boolean', default: false, help: "the fix, not the usual answer: getData() passes AbortSignal.timeout(--timeout) to the request" },
  },
});

if (cluster.isPrimary) {
  upstream().then((url) => {
    const workers = opts.workers ?? os.cpus().length;
    for (let i = 0; i < workers; i++) {
      cluster.fork({ UPSTREAM_URL: url });
    }
  });
} else {
  // ANCHOR: breaker
  class CircuitBreaker {
    constructor(threshold = 5, timeout = 60000, resetTimeout = 30000) {
      this.failureThreshold = threshold;
      this.timeout = timeout;
      this.resetTimeout = resetTimeout;
      this.state = 'CLOSED';
      this.failures = 0;
      this.nextAttempt = Date.now();
    }

    async execute(fn) {
      if (this.state === 'OPEN') {
        if (Date.now() < this.nextAttempt) {
          throw new Error('Circuit breaker is OPEN');
        }
        this.state = 'HALF_OPEN'; // every caller from now on goes through
      }
      try {
        const result = await Promise.race([
          fn(), // runs on when the timer wins
          new Promise((_, reject) => setTimeout(() => reject(new Error('Timeout')), this.timeout)), // never cleared
        ]);
        this.onSuccess();
        return result;
      } catch (error) {
        this.onFailure();
        throw error;
      }
    }

    onSuccess() {
      this.failures = 0;
      if (this.state === 'HALF_OPEN') {
        this.state = 'CLOSED';
        said('Circuit breaker: HALF_OPEN → CLOSED');
      }
    }

    onFailure() {
      this.failures++;
      if (this.failures >= this.failureThreshold) {
        this.state = 'OPEN';
        this.nextAttempt = Date.now() + this.resetTimeout;
        said(`Circuit breaker: CLOSED → OPEN (${this.failures} failures)`);
      }
    }
  }
  // ANCHOR_END: breaker

  const ms = (flag) => twin.seconds(opts[flag], `--${flag}`) * 1000;
  // ANCHOR: usage
  const breaker = new CircuitBreaker(Number(opts.threshold), ms('timeout'), ms('reset-timeout')); // one per worker

  async function data(req, res) {
    try {
      const data = await breaker.execute(async () => {
        return await getData();
      });
      res.end(JSON.stringify(data));
    } catch (error) {
      if (error.message === 'Circuit breaker is OPEN') {
        res.statusCode = 503;
        res.end(JSON.stringify({ error: 'Service temporarily unavailable' }));
      } else {
        res.statusCode = 500;
        res.end(JSON.stringify({ error: error.message }));
      }
    }
  }
  // ANCHOR_END: usage

  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname === '/api/data') {
      data(req, res);
    } else if (url.pathname === '/breaker') {
      const timers = process.getActiveResourcesInfo().filter((kind) => kind === 'Timeout').length;
      res.end(JSON.stringify({ state: breaker.state, failures: breaker.failures, timers }));
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

  /// The usual answer's console.log lines, also sent to the primary (a
  /// `message` event), since a worker's stdout is not the event stream.
  function said(line) {
    twin.log(line);
    process.send({ breaker: line.replace(/^Circuit breaker: /, '').replace(/ \(.*\)$/, '') });
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
