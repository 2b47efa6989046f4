//! Another primary of this same program: a second machine, for a demo.
//!
//! Lessons 07 and 12 ask what holds when the service runs on two machines
//! behind a load balancer: sessions made on one must be read on the other,
//! a rate limit must hold across both. Two primaries on two ports, sharing
//! one Redis, are the same situation on one machine. [`OtherPrimary::start`]
//! runs this program again as a primary, with the lesson's flags plus
//! `--port 0 --events json`, reads its events until it is ready, and keeps
//! it on a short leash: it dies with this process (`PR_SET_PDEATHSIG`), and
//! [`OtherPrimary::stop`] drains it like any cluster.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long the other primary may take to have its workers ready.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// Why the other primary did not come up.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("cannot find this program to start it again: {0}")]
    Exe(std::io::Error),
    #[error("cannot start the other primary: {0}")]
    Spawn(std::io::Error),
    #[error("the other primary was not ready within {}s{}", READY_WITHIN.as_secs(), said(.0))]
    NotReady(String),
    #[error("the other primary exited before it was ready{}", said(.0))]
    Exited(String),
}

fn said(line: &str) -> String {
    if line.is_empty() {
        String::new()
    } else {
        format!(" (its last error: {line})")
    }
}

/// A second primary of this program, serving on its own port.
#[derive(Debug)]
pub struct OtherPrimary {
    child: Child,
    /// Where it serves.
    pub addr: SocketAddr,
}

impl OtherPrimary {
    /// Starts this program as a primary with `args` and `env`, and waits
    /// until `ready` of its workers are ready.
    pub async fn start(
        args: &[&str],
        env: &[(&str, &str)],
        ready: usize,
    ) -> Result<OtherPrimary, PeerError> {
        let any_port = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0));
        OtherPrimary::start_on(args, env, ready, any_port).await
    }

    /// [`OtherPrimary::start`], serving on `at` (port 0: any free port):
    /// lesson 10's hosts are two primaries on 127.0.0.2 and 127.0.0.3,
    /// one port.
    pub async fn start_on(
        args: &[&str],
        env: &[(&str, &str)],
        ready: usize,
        at: SocketAddr,
    ) -> Result<OtherPrimary, PeerError> {
        let exe = std::env::current_exe().map_err(PeerError::Exe)?;
        let mut command = Command::new(exe);
        command
            .args(args)
            .arg("--port")
            .arg(at.port().to_string())
            .arg("--host")
            .arg(at.ip().to_string())
            .args(["--events", "json"])
            .envs(env.iter().copied())
            .env_remove(crate::role::WORKER_ID_VAR)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // Its log would read as ours; kept only to say why it failed.
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe and touches only the child.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let mut child = command.spawn().map_err(PeerError::Spawn)?;

        let last_error = Arc::new(Mutex::new(String::new()));
        if let Some(stderr) = child.stderr.take() {
            let last = Arc::clone(&last_error);
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.contains("error")
                        && let Ok(mut last) = last.lock()
                    {
                        *last = line;
                    }
                }
            });
        }
        let last = || last_error.lock().map(|l| l.clone()).unwrap_or_default();

        let Some(stdout) = child.stdout.take() else {
            return Err(PeerError::Exited(last()));
        };
        let mut lines = BufReader::new(stdout).lines();
        let (mut addr, mut seen_ready) = (None, 0);
        let wait = async {
            while let Ok(Some(line)) = lines.next_line().await {
                let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                match event["event"].as_str() {
                    Some("start") => addr = event["addr"].as_str().and_then(|a| a.parse().ok()),
                    Some("ready") => seen_ready += 1,
                    _ => {}
                }
                if let Some(addr) = addr.filter(|_| seen_ready >= ready) {
                    return Some(addr);
                }
            }
            None
        };
        let addr = match tokio::time::timeout(READY_WITHIN, wait).await {
            Ok(Some(addr)) => addr,
            Ok(None) => return Err(PeerError::Exited(last())),
            Err(_) => return Err(PeerError::NotReady(last())),
        };
        // Keep reading its events, or it would block once the pipe is full.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(OtherPrimary { child, addr })
    }

    /// The other primary's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// `kill -9`: the primary dies at once, running none of its code (its
    /// workers follow it: they die with their primary).
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM, then wait for it to drain (killed if it takes too long).
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
