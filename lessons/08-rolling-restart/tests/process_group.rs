//! Signals sent to the whole process group, as a terminal sends them:
//! Ctrl-C is SIGINT to every process of the foreground job, and a closing
//! terminal sends SIGHUP to all of them. The primary is started here as the
//! leader of a group of its own (`process_group(0)`, what a shell does for
//! a job), and the signals go to the group (`kill -- -PGID`), so each
//! worker gets them too.
//!
//! What the chapter's signal table says, checked:
//!
//! * workers ignore SIGINT and SIGHUP: after Ctrl-C to the group, every
//!   worker drains and exits 0, told by the primary, none killed by the
//!   SIGINT; after SIGHUP to the group, every worker is replaced by the
//!   rolling restart and exits 0, none killed by the SIGHUP;
//! * a second Ctrl-C stops at once: with a request that takes 5 s in
//!   flight and 30 s of grace, the draining worker is killed and the
//!   primary is gone within a second or two of the second SIGINT.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::Value;

type Failure = Box<dyn std::error::Error>;

/// A primary leading its own process group, and its event stream.
struct Group {
    child: Child,
    events: Receiver<Value>,
    seen: Vec<Value>,
    stderr: Option<std::thread::JoinHandle<String>>,
    /// The primary has finished starting: it said where it serves.
    serving: Receiver<()>,
}

impl Group {
    fn start(args: &[&str]) -> Result<Group, Failure> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lesson-08"))
            .args(args)
            .args(["--port", "0", "--host", "127.0.0.1", "--events", "json"])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut stderr = child.stderr.take().ok_or("no stderr")?;
        let (tx, events) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str::<Value>(&line)
                    && tx.send(event).is_err()
                {
                    return;
                }
            }
        });
        let (said_serving, serving) = channel();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let mut lines = BufReader::new(&mut stderr);
            let mut line = String::new();
            while lines.read_line(&mut line).is_ok_and(|n| n > 0) {
                if line.contains("serving on http://") {
                    let _ = said_serving.send(());
                }
                text.push_str(&line);
                line.clear();
            }
            text
        });
        Ok(Group {
            child,
            events,
            seen: Vec::new(),
            stderr: Some(stderr),
            serving,
        })
    }

    /// `kill -NAME -- -PGID`: every process of the group.
    fn signal_group(&self, name: &str) -> Result<(), Failure> {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg("--")
            .arg(format!("-{}", self.child.id()))
            .status()?;
        match status.success() {
            true => Ok(()),
            false => Err(format!("kill -{name} to the group: {status}").into()),
        }
    }

    /// Waits until `count` events of `kind` have been seen in all.
    fn wait_for(&mut self, kind: &str, count: usize, within: Duration) -> Result<(), Failure> {
        let deadline = Instant::now() + within;
        while self.count(kind) < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) => self.seen.push(event),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("{count} × {kind} not seen within {within:?}").into());
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("the primary exited before {count} × {kind}").into());
                }
            }
        }
        Ok(())
    }

    /// Waits until the primary has started: its workers are ready, and it
    /// has left its start-up wait (a signal before that is a stop during
    /// start-up, another story).
    fn wait_serving(&mut self) -> Result<(), Failure> {
        self.serving
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| "the primary never said it serves".into())
    }

    fn count(&self, kind: &str) -> usize {
        self.of(kind).count()
    }

    fn of<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.seen.iter().filter(move |e| e["event"] == kind)
    }

    fn addr(&mut self) -> Result<String, Failure> {
        self.wait_for("start", 1, Duration::from_secs(20))?;
        let start = self.of("start").next().ok_or("no start")?;
        Ok(start["addr"].as_str().ok_or("no addr")?.to_owned())
    }

    /// Waits for the primary to exit, reads the rest of its events.
    fn wait_exit(&mut self, within: Duration) -> Result<std::process::ExitStatus, Failure> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                while let Ok(event) = self.events.recv_timeout(Duration::from_secs(2)) {
                    self.seen.push(event);
                }
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err(format!("the primary did not exit within {within:?}").into());
            }
            match self.events.recv_timeout(Duration::from_millis(50)) {
                Ok(event) => self.seen.push(event),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Everything the primary and its workers wrote on stderr, once the
    /// primary has exited.
    fn stderr(&mut self) -> String {
        self.stderr
            .take()
            .and_then(|reader| reader.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // A failed test leaves nothing behind: the whole group goes.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .status();
            let _ = self.child.wait();
        }
    }
}

/// One GET on a thread of its own, returned once the request is sent: its
/// connection is then at least in the kernel's queue, and a stop hands it to
/// a worker that serves it (the last batch), so the request is in flight
/// whenever a signal lands. The thread ends with the answer, or why none.
fn get_in_flight(addr: &str) -> Result<std::thread::JoinHandle<Result<String, String>>, Failure> {
    let (sent, was_sent) = channel();
    let addr = addr.to_owned();
    let request = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(&addr).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let _ = sent.send(());
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .map_err(|e| e.to_string())?;
        match answer.is_empty() {
            true => Err("closed with no answer".into()),
            false => Ok(answer),
        }
    });
    match was_sent.recv_timeout(Duration::from_secs(10)) {
        Ok(()) => Ok(request),
        // The thread ended before it could send: say why.
        Err(RecvTimeoutError::Disconnected) => match request.join() {
            Ok(Err(why)) => Err(format!("the request could not be sent: {why}").into()),
            _ => Err("the request thread ended before it sent anything".into()),
        },
        Err(RecvTimeoutError::Timeout) => Err("the request was not sent within 10 s".into()),
    }
}

#[test]
fn ctrl_c_to_the_group_drains_the_workers_they_ignore_it() -> Result<(), Failure> {
    let mut group = Group::start(&["--serve", "--workers", "2", "--handler-ms", "800"])?;
    let addr = group.addr()?;
    group.wait_serving()?;
    // The request is sent (so queued at least) before SIGINT lands: the
    // primary hands what it accepted to a worker, which serves it. (Sent
    // only after the signal, it would be refused: the port is closed.)
    let request = get_in_flight(&addr)?;
    group.signal_group("INT")?;
    let status = group.wait_exit(Duration::from_secs(30))?;
    let exits: Vec<Value> = group.of("exit").cloned().collect();
    let answer = request.join().map_err(|_| "the request thread panicked")?;
    let stderr = group.stderr();

    assert!(status.success(), "primary: {status}\n{stderr}");
    assert_eq!(exits.len(), 2, "{exits:?}");
    for exit in &exits {
        // Not killed by the SIGINT: drained, exit code 0, told to go.
        assert_eq!(exit["signal"], Value::Null, "{exit}");
        assert_eq!(exit["code"], 0, "{exit}");
        assert_eq!(exit["reason"], "shutdown", "{exit}");
    }
    let answer = answer.map_err(|e| format!("the request in flight failed: {e}\n{stderr}"))?;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    Ok(())
}

#[test]
fn sighup_to_the_group_rolls_the_workers_they_ignore_it() -> Result<(), Failure> {
    let mut group = Group::start(&["--serve", "--workers", "2"])?;
    group.wait_serving()?;
    group.signal_group("HUP")?;
    group.wait_for("rollout_finished", 1, Duration::from_secs(30))?;
    let finished = group.of("rollout_finished").next().cloned().ok_or("none")?;
    let exits: Vec<Value> = group.of("exit").cloned().collect();
    // Only the primary now.
    let pid = group.child.id();
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    assert!(status.success());
    let status = group.wait_exit(Duration::from_secs(30))?;
    let stderr = group.stderr();

    assert!(status.success(), "primary: {status}\n{stderr}");
    assert_eq!(finished["outcome"], "completed", "{finished}");
    assert_eq!(exits.len(), 2, "{exits:?}");
    for exit in &exits {
        assert_eq!(exit["signal"], Value::Null, "{exit}");
        assert_eq!(exit["reason"], "replaced", "{exit}");
    }
    Ok(())
}

#[test]
fn a_second_ctrl_c_stops_at_once() -> Result<(), Failure> {
    let mut group = Group::start(&[
        "--serve",
        "--workers",
        "1",
        "--handler-ms",
        "5000",
        "--grace",
        "30s",
    ])?;
    let addr = group.addr()?;
    group.wait_serving()?;
    // Sent before the first Ctrl-C: a request still on its way then could
    // find the socket closed, and the idle worker would exit at once, 0,
    // before the second Ctrl-C (CI saw that once).
    let request = get_in_flight(&addr)?;
    group.signal_group("INT")?;
    // The first Ctrl-C is a graceful stop: the worker drains, and would
    // wait for the 5 s request.
    group.wait_for("draining", 1, Duration::from_secs(10))?;
    let second = Instant::now();
    group.signal_group("INT")?;
    let status = group.wait_exit(Duration::from_secs(20))?;
    let took = second.elapsed();
    let exits: Vec<Value> = group.of("exit").cloned().collect();
    let answer = request.join().map_err(|_| "the request thread panicked")?;
    let stderr = group.stderr();

    assert!(
        took < Duration::from_secs(3),
        "the primary took {took:?} after the second SIGINT\n{stderr}"
    );
    assert_eq!(exits.len(), 1, "{exits:?}");
    assert_eq!(exits[0]["signal"], "SIGKILL", "{}", exits[0]);
    assert!(answer.is_err(), "the 5 s request was answered: {answer:?}");
    assert!(
        stderr.contains("SIGINT again"),
        "primary {status}; stderr:\n{stderr}"
    );
    Ok(())
}
