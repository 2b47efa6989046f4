//! A private nginx for the lessons and their tests: the real one (Debian's
//! `nginx` package), started from a generated config, never the system's.
//!
//! Lesson 10 puts two clusters behind a load balancer, and the question an
//! interviewer asks there names nginx (`ip_hash`), so the lesson runs nginx
//! itself rather than an imitation. [`Nginx::start`] does what the system
//! service would never do for a test:
//!
//! * everything lives in a fresh temporary folder — the config, the pid
//!   file, the logs, the temporary files — and nginx is started with
//!   `-p <folder> -c <folder>/nginx.conf -e <folder>/logs/error.log
//!   -g 'daemon off;'`, after `nginx -t` has read the same config: it never
//!   reads `/etc/nginx` nor writes `/var/log/nginx`;
//! * on a free port (nginx cannot listen on port 0 and say which port it
//!   got), chosen below the ephemeral range, where no client socket takes
//!   one, and tried again on another if the bind fails anyway;
//! * waited for: until its port accepts and its workers run, a bounded
//!   number of tries;
//! * reloaded the way an operator does, `nginx -s reload`, after `nginx -t`
//!   of the new config; [`Reload::settled`] waits, without polling, until
//!   every worker of the old config has exited (pidfds), since an old
//!   worker keeps serving the connections it has under the old config;
//! * gone with its owner. nginx is a master process and its workers, and a
//!   worker does not exit when its master dies — it goes on serving. So the
//!   master is killed by the kernel when the owner dies (`PR_SET_PDEATHSIG`)
//!   and, for the workers, a *guardian* waits: a tiny `sh` whose standard
//!   input is a pipe only the owner holds. When the owner is gone — dropped,
//!   or killed with `kill -9` — the pipe ends, and the guardian kills
//!   nginx's process group (master and workers: nginx runs in a group of
//!   its own). No nginx outlives a lesson or a test. The folder of an owner
//!   killed that way is removed by the next start, as `redis-helper` does.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::io::unix::AsyncFd;
use tokio::process::{Child, ChildStdin, Command};

/// How long nginx may take to accept on its port with all its workers.
const START_WITHIN: Duration = Duration::from_secs(10);

/// How long a graceful stop (`SIGQUIT`) may take before nginx is killed.
const QUIT_WITHIN: Duration = Duration::from_secs(5);

/// Ports tried before giving up, when a bind fails on the chosen one.
const PORT_TRIES: usize = 8;

/// Why nginx could not be had.
#[derive(Debug, thiserror::Error)]
pub enum NginxError {
    #[error(
        "nginx is not installed: install it (Debian/Ubuntu: sudo apt-get install nginx; macOS: brew install nginx); the lesson starts its own, never the system service"
    )]
    NotInstalled,
    #[error("cannot make a folder for nginx: {0}")]
    Folder(std::io::Error),
    #[error("cannot run nginx: {0}")]
    Spawn(std::io::Error),
    #[error("nginx -t refused the generated config: {said}")]
    BadConfig { said: String },
    #[error("nginx exited at start ({status}); its error log: {said}")]
    ExitedAtStart { status: String, said: String },
    #[error(
        "nginx did not accept on {addr} with its workers within {}s; its error log: {said}",
        START_WITHIN.as_secs()
    )]
    NoAnswer { addr: SocketAddr, said: String },
    #[error("no free port for nginx on {0} after {PORT_TRIES} tries")]
    NoFreePort(IpAddr),
    #[error("nginx -s reload failed: {said}")]
    Reload { said: String },
    #[error("the old workers of a reload were still running after {}s: {pids:?}", .within.as_secs_f64())]
    NotSettled { pids: Vec<i32>, within: Duration },
}

/// Where the generated config may point: the address nginx listens on
/// (the `listen` line is the caller's to write) and its logs folder.
#[derive(Debug, Clone)]
pub struct Site {
    pub listen: SocketAddr,
    pub logs: PathBuf,
}

/// A running nginx of our own.
#[derive(Debug)]
pub struct Nginx {
    master: Child,
    guardian: Option<Guardian>,
    site: Site,
    workers: usize,
    conf: PathBuf,
    // Last, so nginx is gone before its folder is removed.
    folder: tempfile::TempDir,
}

/// The `sh` that kills nginx's process group when the owner is gone.
#[derive(Debug)]
struct Guardian {
    child: Child,
    /// The pipe's only write end: when it closes, the guardian acts.
    _stdin: ChildStdin,
}

impl Nginx {
    /// Starts nginx with `workers` worker processes, listening on a free
    /// port of `ip` (loopback only: this is for lessons and tests), with
    /// `http(&site)` as the body of its `http { }` block — the `upstream`
    /// and `server` blocks; the `server` block must `listen` on
    /// `site.listen`. Returns once the port accepts and the workers run.
    pub async fn start(
        ip: Ipv4Addr,
        workers: usize,
        http: impl Fn(&Site) -> String,
    ) -> Result<Nginx, NginxError> {
        let workers = workers.max(1);
        let temp = std::env::temp_dir();
        sweep_stale_folders(&temp);
        let folder = tempfile::Builder::new()
            .prefix(&format!("{FOLDER_PREFIX}{}-", std::process::id()))
            .tempdir_in(&temp)
            .map_err(NginxError::Folder)?;
        // As root, nginx's workers run as `nobody`: they must be able to
        // reach the temporary files' folder.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(folder.path(), std::fs::Permissions::from_mode(0o755))
                .map_err(NginxError::Folder)?;
        }
        let logs = folder.path().join("logs");
        std::fs::create_dir_all(&logs).map_err(NginxError::Folder)?;
        std::fs::create_dir_all(folder.path().join("tmp")).map_err(NginxError::Folder)?;
        let conf = folder.path().join("nginx.conf");

        let mut last_said = String::new();
        for attempt in 0..PORT_TRIES {
            let port = free_port(ip, attempt).ok_or(NginxError::NoFreePort(IpAddr::V4(ip)))?;
            let site = Site {
                listen: SocketAddr::new(IpAddr::V4(ip), port),
                logs: logs.clone(),
            };
            let text = main_config(folder.path(), workers, &http(&site));
            std::fs::write(&conf, text).map_err(NginxError::Folder)?;
            test_config(folder.path(), &conf).await?;
            let guardian = Guardian::spawn()?;
            let mut master = spawn(folder.path(), &conf)?;
            let guardian = guardian.guard(&master).await;
            match wait_ready(&mut master, &site, workers, folder.path()).await {
                Ok(()) => {
                    return Ok(Nginx {
                        master,
                        guardian,
                        site,
                        workers,
                        conf,
                        folder,
                    });
                }
                Err(NginxError::ExitedAtStart { said, .. })
                    if said.contains("Address already in use") =>
                {
                    // Someone took the port between our check and nginx's
                    // bind: another port.
                    last_said = said;
                    drop(guardian);
                }
                Err(error) => {
                    kill_group(&master);
                    return Err(error);
                }
            }
        }
        Err(NginxError::ExitedAtStart {
            status: "bind failed on every port tried".into(),
            said: last_said,
        })
    }

    /// Where nginx listens.
    pub fn addr(&self) -> SocketAddr {
        self.site.listen
    }

    /// The private folder: `nginx.conf`, `nginx.pid`, `logs/`.
    pub fn folder(&self) -> &Path {
        self.folder.path()
    }

    /// The folder of the logs, for an `access_log` line of the caller's.
    pub fn logs(&self) -> &Path {
        &self.site.logs
    }

    /// The config nginx runs now.
    pub fn config(&self) -> String {
        std::fs::read_to_string(&self.conf).unwrap_or_default()
    }

    /// The master's process id, while it runs.
    pub fn master_pid(&self) -> Option<i32> {
        self.master.id().and_then(|pid| i32::try_from(pid).ok())
    }

    /// The worker processes running now (the master's children).
    pub fn worker_pids(&self) -> Vec<i32> {
        self.master_pid().map(children_of).unwrap_or_default()
    }

    /// The guardian's process id (for tests: it must not outlive the owner).
    pub fn guardian_pid(&self) -> Option<i32> {
        self.guardian
            .as_ref()
            .and_then(|g| g.child.id())
            .and_then(|pid| i32::try_from(pid).ok())
    }

    /// The last lines of nginx's error log, as one line.
    pub fn error_log_tail(&self) -> String {
        log_tail(self.folder.path())
    }

    /// Replaces the `http { }` body with `http` the way an operator does:
    /// `nginx -t` on the new config, then `nginx -s reload`. The master
    /// starts new workers with the new config and tells the old ones to
    /// finish: they close their idle keep-alive connections at once, each
    /// busy one after its response, and exit when none is left. Await
    /// [`Reload::settled`] for that.
    pub async fn reload(&mut self, http: &str) -> Result<Reload, NginxError> {
        let text = main_config(self.folder.path(), self.workers, http);
        let next = self.folder.path().join("nginx.next.conf");
        std::fs::write(&next, &text).map_err(NginxError::Folder)?;
        test_config(self.folder.path(), &next).await?;
        std::fs::rename(&next, &self.conf).map_err(NginxError::Folder)?;
        let old: Vec<(i32, Option<PidFd>)> = self
            .worker_pids()
            .into_iter()
            .map(|pid| (pid, PidFd::open(pid)))
            .collect();
        let sent = Instant::now();
        let output = nginx_command(self.folder.path(), &self.conf)
            .args(["-s", "reload"])
            .output()
            .await
            .map_err(spawn_error)?;
        if !output.status.success() {
            return Err(NginxError::Reload {
                said: one_line(&String::from_utf8_lossy(&output.stderr)),
            });
        }
        Ok(Reload { old, sent })
    }

    /// Stops nginx gracefully (`SIGQUIT`: every worker finishes what it
    /// has), killing what is left after a bound.
    pub async fn stop(mut self) {
        self.disarm();
        if let Some(pid) = self.master_pid() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGQUIT);
        }
        let _ = tokio::time::timeout(QUIT_WITHIN, self.master.wait()).await;
        kill_group(&self.master);
        let _ = self.master.kill().await;
    }

    /// The guardian goes first, while nginx's group surely exists: it must
    /// never kill a group id some later process may have taken.
    fn disarm(&mut self) {
        if let Some(mut guardian) = self.guardian.take() {
            let _ = guardian.child.start_kill();
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.disarm();
        kill_group(&self.master);
    }
}

/// A reload in progress: the old workers, and when it was asked for.
#[derive(Debug)]
pub struct Reload {
    old: Vec<(i32, Option<PidFd>)>,
    sent: Instant,
}

impl Reload {
    /// The old workers' process ids.
    pub fn old_workers(&self) -> Vec<i32> {
        self.old.iter().map(|(pid, _)| *pid).collect()
    }

    /// Waits until every worker of the old config has exited: from then
    /// on, only the new config serves. Returns how long it took since the
    /// reload was sent.
    pub async fn settled(self, within: Duration) -> Result<Duration, NginxError> {
        let pids = self.old_workers();
        let all = async {
            for (_, fd) in &self.old {
                if let Some(fd) = fd {
                    fd.exited().await;
                }
            }
        };
        tokio::time::timeout(within, all)
            .await
            .map_err(|_| NginxError::NotSettled {
                pids: pids.into_iter().filter(|&pid| is_running(pid)).collect(),
                within,
            })?;
        Ok(self.sent.elapsed())
    }
}

/// A process's pidfd (Linux 5.3+): readable once the process has exited.
#[derive(Debug)]
struct PidFd(AsyncFd<OwnedFd>);

impl PidFd {
    /// `None` if the process is already gone.
    fn open(pid: i32) -> Option<PidFd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new
        // descriptor or -1; it touches no memory of ours.
        let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
        let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
        // SAFETY: a non-negative result is a descriptor we now own.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the AsyncFd owns the descriptor and keeps it open, the
        // same one, for as long as it lives.
        unsafe { AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE) }
            .ok()
            .map(PidFd)
    }

    async fn exited(&self) {
        // Readable means exited; a pidfd stays readable, so one wake is
        // the answer.
        let _ = self.0.readable().await;
    }
}

impl AsRawFd for PidFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

/// The whole config: the main context (pid, logs, temporary files, all
/// inside the folder) around the caller's `http` body.
fn main_config(folder: &Path, workers: usize, http: &str) -> String {
    let dir = folder.display();
    format!(
        "# Generated by nginx-helper for process {owner}. Started as
#   nginx -p {dir} -c {dir}/nginx.conf -e {dir}/logs/error.log -g 'daemon off;'
pid {dir}/nginx.pid;
error_log {dir}/logs/error.log notice;
worker_processes {workers};
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/client_body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
{http}
}}
",
        owner = std::process::id(),
    )
}

/// `nginx -p <folder> -c <conf> -e <folder>/logs/error.log`: the prefix,
/// config and startup error log are ours, never the system's.
fn nginx_command(folder: &Path, conf: &Path) -> Command {
    let mut command = Command::new(nginx_binary());
    command
        .arg("-p")
        .arg(folder)
        .arg("-c")
        .arg(conf)
        .arg("-e")
        .arg(folder.join("logs").join("error.log"))
        .stdin(Stdio::null());
    command
}

/// `nginx` on the `PATH`, else Debian's `/usr/sbin/nginx`: a user's `PATH`
/// often leaves out the `sbin` folders.
fn nginx_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nginx"))
            .find(|candidate| candidate.is_file())
    });
    on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"))
}

fn spawn_error(error: std::io::Error) -> NginxError {
    match error.kind() {
        std::io::ErrorKind::NotFound => NginxError::NotInstalled,
        _ => NginxError::Spawn(error),
    }
}

/// `nginx -t` on `conf`: refused configs never reach a running nginx.
async fn test_config(folder: &Path, conf: &Path) -> Result<(), NginxError> {
    let output = nginx_command(folder, conf)
        .arg("-t")
        .output()
        .await
        .map_err(spawn_error)?;
    if output.status.success() {
        Ok(())
    } else {
        Err(NginxError::BadConfig {
            said: one_line(&String::from_utf8_lossy(&output.stderr)),
        })
    }
}

/// Starts the master in a process group of its own, killed by the kernel
/// if this process dies.
fn spawn(folder: &Path, conf: &Path) -> Result<Child, NginxError> {
    let mut command = nginx_command(folder, conf);
    command
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe and touches only the child. The
    // kernel kills the master when the thread that started it ends: the
    // lessons' primaries run one thread, which lives as long as they do.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
    command.spawn().map_err(spawn_error)
}

impl Guardian {
    /// Started before nginx, so that nginx never runs unguarded; it learns
    /// nginx's group id from its first line ([`Guardian::guard`]).
    fn spawn() -> Result<Guardian, NginxError> {
        // Signals a terminal sends to a whole group are ignored: the owner
        // stops nginx itself; the guardian acts only when the pipe ends.
        const SCRIPT: &str = "trap '' INT HUP TERM QUIT
read -r group || exit 0
read -r _
kill -KILL -\"$group\" 2>/dev/null
exit 0";
        let mut child = Command::new("sh")
            .args(["-c", SCRIPT])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(NginxError::Spawn)?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| NginxError::Spawn(std::io::Error::other("no pipe to the guardian")))?;
        Ok(Guardian {
            child,
            _stdin: stdin,
        })
    }

    /// Tells the guardian which group to kill: the master's (its pid).
    async fn guard(mut self, master: &Child) -> Option<Guardian> {
        let group = master.id()?;
        self._stdin
            .write_all(format!("{group}\n").as_bytes())
            .await
            .ok()?;
        self._stdin.flush().await.ok()?;
        Some(self)
    }
}

impl Drop for Guardian {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Waits until nginx accepts on its port and runs all its workers.
async fn wait_ready(
    master: &mut Child,
    site: &Site,
    workers: usize,
    folder: &Path,
) -> Result<(), NginxError> {
    let begun = Instant::now();
    loop {
        if let Ok(Some(status)) = master.try_wait() {
            return Err(NginxError::ExitedAtStart {
                status: status.to_string(),
                said: log_tail(folder),
            });
        }
        let running = master
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .map_or(0, |pid| children_of(pid).len());
        // Polled: nothing announces that nginx is up. A short pause between
        // tries, and a bound on the whole wait.
        if running >= workers && tokio::net::TcpStream::connect(site.listen).await.is_ok() {
            return Ok(());
        }
        if begun.elapsed() > START_WITHIN {
            return Err(NginxError::NoAnswer {
                addr: site.listen,
                said: log_tail(folder),
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A port on `ip` that nothing holds now, chosen below the ephemeral
/// range: a port from the kernel (port 0) would be one of the ephemeral
/// ports that every client socket draws from, and one of them could take
/// it between this check and nginx's bind. `attempt` moves the choice on.
fn free_port(ip: Ipv4Addr, attempt: usize) -> Option<u16> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (from, to) = if low > 12_000 {
        (low - 12_000, low)
    } else {
        (60_000, 65_000)
    };
    let span = u32::from(to - from);
    let seed = std::process::id()
        .wrapping_mul(2_654_435_761)
        .wrapping_add(nanos());
    (0..64u32).find_map(|step| {
        let offset = (seed
            .wrapping_add((attempt as u32).wrapping_mul(7919))
            .wrapping_add(step.wrapping_mul(104_729)))
            % span;
        let port = from + u16::try_from(offset).ok()?;
        TcpListener::bind(SocketAddr::new(IpAddr::V4(ip), port))
            .ok()
            .map(|_| port)
    })
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

/// Kills nginx's whole process group: the master and every worker.
fn kill_group(master: &Child) {
    if let Some(pid) = master.id().and_then(|pid| i32::try_from(pid).ok()) {
        let _ = nix::sys::signal::killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// The last lines of the error log in `folder`, as one line.
fn log_tail(folder: &Path) -> String {
    let text = std::fs::read_to_string(folder.join("logs").join("error.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
    if tail.is_empty() {
        "(empty)".into()
    } else {
        tail
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A private nginx's folder is named `workbook-nginx-<owner pid>-<random>`.
const FOLDER_PREFIX: &str = "workbook-nginx-";

/// Removes what owners that are gone left behind: their folders and, if
/// their guardian could not act, their nginx processes.
///
/// A dropped [`Nginx`] removes its folder, and the guardian kills nginx
/// when its owner dies, but nothing runs in an owner killed with `kill -9`:
/// its folder stays. The owner's pid in the name is what makes the sweep
/// safe: a folder whose owner lives is never touched.
fn sweep_stale_folders(temp: &Path) {
    let Ok(entries) = std::fs::read_dir(temp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = (name.to_str())
            .and_then(|name| name.strip_prefix(FOLDER_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
        else {
            continue;
        };
        if owner <= 0 || !is_gone(owner) {
            continue;
        }
        // The master's pid is its group's id; what still runs in that
        // group under the name nginx is this folder's nginx.
        if let Some(group) = std::fs::read_to_string(entry.path().join("nginx.pid"))
            .ok()
            .and_then(|pid| pid.trim().parse::<i32>().ok())
            && !group_members(group, "nginx").is_empty()
        {
            let _ = nix::sys::signal::killpg(Pid::from_raw(group), Signal::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(entry.path());
    }
}

/// One process's `/proc/<pid>/stat`: its name, state, parent and group.
struct Stat {
    comm: String,
    state: char,
    ppid: i32,
    pgrp: i32,
}

fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = text.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_owned();
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(Stat {
        comm,
        state,
        ppid,
        pgrp,
    })
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The live processes whose parent is `parent`.
fn children_of(parent: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&pid| stat(pid).is_some_and(|s| s.ppid == parent && s.state != 'Z'))
        .collect()
}

/// The live processes named `comm` in process group `group`.
fn group_members(group: i32, comm: &str) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&pid| {
            stat(pid).is_some_and(|s| s.pgrp == group && s.comm == comm && s.state != 'Z')
        })
        .collect()
}

/// True while `pid` runs (not gone, not a zombie).
pub fn is_running(pid: i32) -> bool {
    !is_gone(pid)
}

/// True if no process `pid` runs: none exists, or only its exit status is
/// left (a zombie).
fn is_gone(pid: i32) -> bool {
    let missing = kill(Pid::from_raw(pid), None) == Err(nix::errno::Errno::ESRCH);
    missing || stat(pid).is_some_and(|s| s.state == 'Z')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site_returning(body: &'static str) -> impl Fn(&Site) -> String {
        move |site: &Site| {
            format!(
                "    server {{ listen {}; location / {{ return 200 \"{body}\\n\"; }} }}",
                site.listen
            )
        }
    }

    async fn get(addr: SocketAddr) -> std::io::Result<String> {
        use tokio::io::AsyncReadExt;
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        Ok(answer)
    }

    async fn gone_within(pids: &[i32], within: Duration) -> Vec<i32> {
        let deadline = Instant::now() + within;
        loop {
            let left: Vec<i32> = pids.iter().copied().filter(|&p| is_running(p)).collect();
            if left.is_empty() || Instant::now() > deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_private_nginx_answers_reloads_and_goes_with_its_owner()
    -> Result<(), Box<dyn std::error::Error>> {
        let mut nginx = Nginx::start(Ipv4Addr::LOCALHOST, 2, site_returning("one")).await?;
        assert!(get(nginx.addr()).await?.ends_with("one\n"));
        let before = nginx.worker_pids();
        assert_eq!(before.len(), 2);

        let body = site_returning("two")(&Site {
            listen: nginx.addr(),
            logs: nginx.logs().to_owned(),
        });
        let reload = nginx.reload(&body).await?;
        let mut old = reload.old_workers();
        old.sort_unstable();
        let mut expected = before.clone();
        expected.sort_unstable();
        assert_eq!(old, expected);
        reload.settled(Duration::from_secs(10)).await?;
        assert!(get(nginx.addr()).await?.ends_with("two\n"));
        let after = nginx.worker_pids();
        assert_eq!(after.len(), 2);
        assert!(after.iter().all(|pid| !before.contains(pid)));

        let folder = nginx.folder().to_owned();
        let mut all = after;
        all.extend(nginx.master_pid());
        all.extend(nginx.guardian_pid());
        drop(nginx);
        assert_eq!(
            gone_within(&all, Duration::from_secs(5)).await,
            Vec::<i32>::new()
        );
        assert!(!folder.exists());
        Ok(())
    }

    #[tokio::test]
    async fn a_config_nginx_refuses_is_never_started() {
        let refused = Nginx::start(Ipv4Addr::LOCALHOST, 1, |_: &Site| "bogus;".into()).await;
        assert!(
            matches!(&refused, Err(NginxError::BadConfig { said }) if said.contains("bogus")),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn a_graceful_stop_leaves_nothing() -> Result<(), Box<dyn std::error::Error>> {
        let nginx = Nginx::start(Ipv4Addr::LOCALHOST, 1, site_returning("x")).await?;
        let mut all = nginx.worker_pids();
        all.extend(nginx.master_pid());
        all.extend(nginx.guardian_pid());
        nginx.stop().await;
        assert_eq!(
            gone_within(&all, Duration::from_secs(5)).await,
            Vec::<i32>::new()
        );
        Ok(())
    }

    /// Set in the environment of the owner process the next test kills.
    const OWNER_VAR: &str = "NGINX_HELPER_TEST_OWNER";

    /// An owner killed with `kill -9` runs no code at all: its nginx (the
    /// master and, through the guardian, the workers) and its guardian go
    /// anyway. The owner is this test binary again, running only this test.
    #[test]
    fn an_owner_killed_with_sigkill_leaves_no_nginx() -> Result<(), Box<dyn std::error::Error>> {
        use std::io::BufRead;
        if std::env::var_os(OWNER_VAR).is_some() {
            return be_the_owner();
        }
        let mut owner = std::process::Command::new(std::env::current_exe()?)
            .args([
                "--exact",
                "tests::an_owner_killed_with_sigkill_leaves_no_nginx",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(OWNER_VAR, "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = owner.stdout.take().ok_or("no stdout")?;
        let pids: Vec<i32> = std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| {
                // The harness may have begun the line with the test's name.
                line.split_once("nginx pids:").map(|(_, pids)| {
                    pids.split_whitespace()
                        .filter_map(|pid| pid.parse().ok())
                        .collect()
                })
            })
            .ok_or("the owner never said its pids")?;
        // Master, two workers, guardian.
        assert_eq!(pids.len(), 4, "{pids:?}");
        kill(Pid::from_raw(i32::try_from(owner.id())?), Signal::SIGKILL)?;
        owner.wait()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let left = runtime.block_on(gone_within(&pids, Duration::from_secs(5)));
        assert_eq!(left, Vec::<i32>::new(), "outlived their owner");
        Ok(())
    }

    fn be_the_owner() -> Result<(), Box<dyn std::error::Error>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let nginx = Nginx::start(Ipv4Addr::LOCALHOST, 2, site_returning("x")).await?;
            let mut pids = nginx.worker_pids();
            pids.extend(nginx.master_pid());
            pids.extend(nginx.guardian_pid());
            let pids: Vec<String> = pids.iter().map(i32::to_string).collect();
            println!("nginx pids: {}", pids.join(" "));
            // Until the test kills us; bounded all the same.
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(nginx);
            Ok(())
        })
    }

    /// What `kill -9` of an owner leaves behind is removed by the next
    /// start; what belongs to a live owner is not.
    #[tokio::test]
    async fn a_start_removes_the_folders_of_dead_owners() -> Result<(), Box<dyn std::error::Error>>
    {
        let mut child = std::process::Command::new("true").spawn()?;
        let dead = child.id();
        child.wait()?;
        let temp = std::env::temp_dir();
        let stale = temp.join(format!("{FOLDER_PREFIX}{dead}-test"));
        let alive = temp.join(format!("{FOLDER_PREFIX}{}-test", std::process::id()));
        for folder in [&stale, &alive] {
            std::fs::create_dir_all(folder.join("logs"))?;
        }
        let nginx = Nginx::start(Ipv4Addr::LOCALHOST, 1, site_returning("x")).await?;
        let stale_gone = !stale.exists();
        let alive_kept = alive.exists();
        let _ = std::fs::remove_dir_all(&alive);
        let _ = std::fs::remove_dir_all(&stale);
        drop(nginx);
        assert!(stale_gone, "{} outlived its dead owner", stale.display());
        assert!(
            alive_kept,
            "{} was removed while its owner lives",
            alive.display()
        );
        Ok(())
    }
}
