// The experiments lesson 02's Node scenarios check, kept apart from the
// usual answer (`usual.js`) and the `exec` variant (`exec.js`):
//
// - `whoami()`: what a process can tell about its own role;
// - `listeners(port)`: which of this worker and its primary hold a
//   listening socket on the port, read from /proc as `ss -ltnp` reads it;
// - `marked()`: what `NODE_UNIQUE_ID` set by hand does — it runs `usual.js`
//   with the marker in its environment, then `marked.js` (a bare server
//   that sends nothing) the same way, and reports what each did.

'use strict';

const cluster = require('node:cluster');
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

// ANCHOR: whoami
/// What this process can tell about its own role.
function whoami() {
  return {
    role: cluster.isPrimary ? 'primary' : 'worker',
    file: require.main?.filename ?? process.argv[1],
    pid: process.pid,
    ppid: process.ppid,
    is_primary: cluster.isPrimary,
    is_master: cluster.isMaster,
    is_worker: cluster.isWorker,
    cluster_worker: cluster.worker === undefined ? 'undefined' : `worker ${cluster.worker.id}`,
    node_unique_id: process.env.NODE_UNIQUE_ID ?? null,
    process_send: typeof process.send,
  };
}
// ANCHOR_END: whoami

/// Does this worker hold a listening socket on `port`? Does its primary
/// (its parent)? The kernel's tables of TCP sockets (`st` 0A is LISTEN)
/// against each process's open descriptors (`socket:[INODE]`).
function listeners(port) {
  const listening = new Set();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = fs.readFileSync(table, 'utf8');
    } catch {
      continue; // no IPv6
    }
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields.length < 10 || fields[3] !== '0A') continue;
      if (parseInt(fields[1].split(':').pop(), 16) === port) listening.add(fields[9]);
    }
  }
  const holds = (pid) =>
    fs.readdirSync(`/proc/${pid}/fd`).some((fd) => {
      try {
        const inode = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
        return inode !== null && listening.has(inode[1]);
      } catch {
        return false; // closed meanwhile
      }
    });
  return { port, sockets: listening.size, worker: holds(process.pid), primary: holds(process.ppid) };
}

// ANCHOR: marked
/// Starts a process with NODE_UNIQUE_ID set by hand, as if a primary had
/// forked it: Node believes it, whatever started it.
function runMarked(file, args) {
  const env = { ...process.env, NODE_UNIQUE_ID: '7' };
  const run = spawnSync(process.execPath, [path.join(__dirname, file), ...args], {
    env,
    encoding: 'utf8',
    timeout: 10_000,
  });
  return { status: run.status, signal: run.signal, stdout: run.stdout, stderr: run.stderr };
}
// ANCHOR_END: marked

function marked() {
  // The usual answer's own file: it takes the worker branch.
  const usual = runMarked('usual.js', ['--port', '0', '--events', 'quiet']);
  // A worker branch that only listens.
  const bare = runMarked('marked.js', []);
  const lines = bare.stdout.trim().split('\n').filter(Boolean).map((line) => JSON.parse(line));
  return {
    usual: { status: usual.status, stdout: usual.stdout, stderr: usual.stderr },
    bare: { status: bare.status, stderr: bare.stderr, ...Object.assign({}, ...lines) },
  };
}

module.exports = { whoami, listeners, marked };
