// Lesson 07's Node twin's demo: users who log in and come back, as the Rust
// lesson's demo does, run by the primary with `--demo` so that a scenario
// can read the outcome as one `sessions` event. Not part of any answer.
//
// Each user logs in (`POST /login`), then asks `GET /profile` with its
// cookie `asks` times, from its own address (127.0.1.10, .11, …: all of
// 127.0.0.0/8 is this machine), one user after the other. It does so twice:
// with a new connection per request, and with one keep-alive connection
// per user.

'use strict';

const http = require('node:http');

/// Runs both rounds against `addr` (`host:port`); resolves to the counts.
async function run(addr, { users = 12, asks = 4, timeoutMs = 5000 } = {}) {
  const [host, port] = splitAddr(addr);
  const outcome = {};
  for (const mode of ['new_connection', 'keep_alive']) {
    const round = { logins: 0, requests: 0, found: 0, lost: 0, failed: 0, stuck: 0, workers_seen: 0 };
    const seen = new Set();
    for (let user = 0; user < users; user++) {
      const agent = mode === 'keep_alive' ? new http.Agent({ keepAlive: true, maxSockets: 1 }) : false;
      const base = { host, port, agent, localAddress: `127.0.1.${10 + user}`, timeoutMs };
      const workers = new Set();
      const login = await send({ ...base, method: 'POST', path: '/login' });
      if (login.status !== 200) {
        round.failed += 1;
        if (agent) agent.destroy();
        continue;
      }
      round.logins += 1;
      workers.add(login.worker);
      const cookie = String(login.cookie || '').split(';')[0];
      for (let ask = 0; ask < asks; ask++) {
        const answer = await send({ ...base, method: 'GET', path: '/profile', headers: { cookie } });
        round.requests += 1;
        if (answer.status === 200) round.found += 1;
        else if (answer.status === 401) round.lost += 1;
        else round.failed += 1;
        if (answer.worker) workers.add(answer.worker);
      }
      if (workers.size === 1) round.stuck += 1;
      for (const worker of workers) seen.add(worker);
      if (agent) agent.destroy();
    }
    round.workers_seen = seen.size;
    outcome[mode] = round;
  }
  return outcome;
}

/// One request; `{status, worker, cookie}`, status 0 if it failed.
function send({ host, port, agent, localAddress, method, path, headers = {}, timeoutMs }) {
  return new Promise((resolve) => {
    const request = http.request(
      { host, port, agent, localAddress, method, path, headers: agent ? headers : { ...headers, connection: 'close' } },
      (response) => {
        response.resume();
        response.on('end', () =>
          resolve({
            status: response.statusCode,
            worker: response.headers['x-worker-id'],
            cookie: (response.headers['set-cookie'] || [])[0],
          }),
        );
      },
    );
    request.setTimeout(timeoutMs, () => request.destroy(new Error('timeout')));
    request.on('error', () => resolve({ status: 0 }));
    request.end();
  });
}

function splitAddr(addr) {
  const at = addr.lastIndexOf(':');
  return [addr.slice(0, at).replace(/^\[|\]$/g, ''), Number(addr.slice(at + 1))];
}

module.exports = { run };
