// Plays the terminal (or systemd) around lesson 06's twin: runs `usual.js`
// as a process group of its own, the way a shell runs a foreground job, and
// passes each SIGINT or SIGTERM it gets to every process of that group, the
// way Ctrl-C does (SIGINT to the foreground group) and `systemctl stop` does
// under its default `KillMode=control-group` (SIGTERM to every process of
// the service). A `signal` step signals only the process it started; with
// this file in front, it reaches the workers too.
//
//   node lessons/06-graceful-shutdown/node/group.js --workers 2   # then Ctrl-C
//
// It takes usual.js's flags, and exits as usual.js's primary does (the same
// code, or the same signal).

'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const usual = path.join(__dirname, 'usual.js');
// Die with whoever started us, like the twin's workers (see twin.js).
const setpriv = ['/usr/bin/setpriv', '/bin/setpriv'].find((file) => fs.existsSync(file));
const [program, args] = setpriv
  ? [setpriv, ['--pdeathsig', 'SIGKILL', process.execPath, usual, ...process.argv.slice(2)]]
  : [process.execPath, [usual, ...process.argv.slice(2)]];

// detached: the child calls setsid(), so it leads a new process group, and
// its workers, forked by it, join that group.
const primary = spawn(program, args, { stdio: 'inherit', detached: true });

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    try {
      process.kill(-primary.pid, signal);
    } catch (error) {
      if (error.code !== 'ESRCH') throw error;
    }
  });
}

primary.on('exit', (code, signal) => {
  if (signal) {
    process.removeAllListeners(signal);
    process.kill(process.pid, signal);
  } else {
    process.exit(code);
  }
});
