// The worker half of lesson 07's Node twin: the usual answer's two routes,
// `POST /login` and `GET /profile`, with the session kept in this worker's
// memory (the answer's "problem") or in Redis with a TTL (its first
// solution). `usual.js` runs it behind cluster's round-robin, `sticky.js`
// behind the primary's own sticky server.
//
// Express is replaced by `node:http`: `res.cookie(name, value)` is a
// `Set-Cookie: name=value; Path=/` header, `req.cookies` (cookie-parser)
// a few lines below. The answer's handlers stop at `res.cookie()` and never
// end the response, so in Express a login would wait for ever; here they
// end it, or nothing after the login could be measured.

'use strict';

const crypto = require('node:crypto');
const http = require('node:http');
const twin = require('../../../shared/node-twin/twin.js');

/// The worker's server, its sessions in `store` (`memory` or `redis`).
function createServer(store) {
  const routes = store === 'redis' ? redisRoutes() : memoryRoutes();
  const server = http.createServer((req, res) => {
    const path = req.url.split('?')[0];
    if (req.method === 'POST' && path === '/login') return routes.login(req, res);
    if (req.method === 'GET' && path === '/profile') return routes.profile(req, res);
    res.writeHead(404).end('not found\n');
  });
  return twin.tag(server);
}

function memoryRoutes() {
  // ANCHOR: memory
  const byId = {}; // one object per worker process: the others never see it

  function login(req, res) {
    const id = newSessionId();
    byId[id] = { user: 42 };
    res.setHeader('set-cookie', `sid=${id}; Path=/`); // what res.cookie() sends
    res.end();
  }

  function profile(req, res) {
    const found = byId[cookies(req).sid]; // missing when another worker did the login
    if (found === undefined) return unauthorized(res);
    json(res, { user: found.user });
  }
  // ANCHOR_END: memory
  return { login, profile };
}

function redisRoutes() {
  const redis = connect(twin.dependency('ioredis')); // ioredis's defaults
  // ANCHOR: redis
  const HOUR = 60 * 60; // the key's TTL, in seconds

  async function login(req, res) {
    const id = newSessionId();
    await redis.setex(`session:${id}`, HOUR, JSON.stringify({ user: 42 }));
    res.setHeader('set-cookie', `sid=${id}; Path=/`);
    res.end();
  }

  async function profile(req, res) {
    const stored = await redis.get(`session:${cookies(req).sid}`); // any worker can read it
    if (stored === null) return unauthorized(res);
    json(res, { user: JSON.parse(stored).user });
  }
  // ANCHOR_END: redis
  return { login, profile };
}

/// The answer leaves its id generator undefined; 128 random bits.
function newSessionId() {
  return crypto.randomBytes(16).toString('hex');
}

/// `req.cookies`, as cookie-parser makes it.
function cookies(req) {
  const jar = {};
  for (const pair of (req.headers.cookie || '').split(';')) {
    const at = pair.indexOf('=');
    if (at > 0) jar[pair.slice(0, at).trim()] = decodeURIComponent(pair.slice(at + 1).trim());
  }
  return jar;
}

function unauthorized(res) {
  res.statusCode = 401;
  res.end('no session here\n');
}

function json(res, body) {
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify(body));
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

/// `--store`, checked in the primary before anything forks.
function checkStore(store) {
  if (store !== 'memory' && store !== 'redis') {
    twin.fail(`--store takes memory or redis, not ${JSON.stringify(store)}`);
  }
  return store;
}

module.exports = { createServer, checkStore };
