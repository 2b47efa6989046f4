//! Redis for the lessons and their tests: the one in `REDIS_URL`, or a
//! private `redis-server` started here.
//!
//! Lessons 07, 10 and 12 keep state in Redis, and each must run on a fresh
//! machine with nothing configured. So [`Redis::from_env_or_start`] uses
//! `REDIS_URL` when it is set and otherwise starts a private server:
//!
//! * on a Unix socket in a fresh temporary folder, not on a TCP port: no
//!   port to find free, none another process could take between our check
//!   and redis-server's bind, nothing reachable from the network;
//! * with persistence off (`--save ""`, no append-only file): the data is
//!   the lesson's, for the lesson's life;
//! * waited for — the server is asked `PING` until it answers, a bounded
//!   number of times — instead of slept for;
//! * stopped when the [`Redis`] is dropped, and killed by the kernel if the
//!   process that started it dies, even by `kill -9` (`PR_SET_PDEATHSIG`):
//!   no redis-server outlives a lesson or a test. The folder of a process
//!   killed that way is removed by the next private start on the machine.
//!
//! [`Outages`] turns a stream of failed commands into one line when Redis
//! goes away and one when it is back, instead of a line per request.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::process::{Child, Command};

/// The environment variable naming an existing Redis.
pub const REDIS_URL_VAR: &str = "REDIS_URL";

/// How long a private server may take to answer its first `PING`.
const START_WITHIN: Duration = Duration::from_secs(10);

/// Why Redis could not be had.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error(
        "redis-server is not installed, and REDIS_URL is not set: install it (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis) or point REDIS_URL at a running Redis"
    )]
    NotInstalled,
    #[error("cannot start redis-server: {0}")]
    Spawn(std::io::Error),
    #[error("redis-server exited at start ({status}); its last words: {said}")]
    ExitedAtStart { status: String, said: String },
    #[error("redis-server did not answer PING within {}s", START_WITHIN.as_secs())]
    NoAnswer,
    #[error("cannot make a folder for redis-server: {0}")]
    Folder(std::io::Error),
    #[error("REDIS_URL={url:?} is not usable: {cause}")]
    BadUrl {
        url: String,
        cause: redis::RedisError,
    },
    #[error("cannot reach Redis at {url}: {cause} (is it running? is REDIS_URL right?)")]
    Unreachable {
        url: String,
        cause: redis::RedisError,
    },
}

/// A Redis to use: someone else's (`REDIS_URL`), or our private one.
#[derive(Debug)]
pub struct Redis {
    url: String,
    private: Option<PrivateServer>,
}

/// A redis-server we started, and the folder it lives in.
#[derive(Debug)]
struct PrivateServer {
    child: Option<Child>,
    folder: tempfile::TempDir,
    socket: PathBuf,
}

impl Redis {
    /// `REDIS_URL` if it is set (checked with a `PING`), otherwise a private
    /// server started for this process.
    pub async fn from_env_or_start() -> Result<Redis, RedisError> {
        match std::env::var(REDIS_URL_VAR) {
            Ok(url) if !url.trim().is_empty() => {
                let redis = Redis { url, private: None };
                redis.ping().await?;
                Ok(redis)
            }
            _ => Redis::start_private().await,
        }
    }

    /// Starts a private redis-server and waits until it answers.
    pub async fn start_private() -> Result<Redis, RedisError> {
        let temp = std::env::temp_dir();
        sweep_stale_folders(&temp);
        let folder = tempfile::Builder::new()
            .prefix(&format!("{FOLDER_PREFIX}{}-", std::process::id()))
            .tempdir_in(&temp)
            .map_err(RedisError::Folder)?;
        let socket = folder.path().join("redis.sock");
        let mut redis = Redis {
            url: format!("redis+unix://{}", socket.display()),
            private: Some(PrivateServer {
                child: None,
                folder,
                socket,
            }),
        };
        redis.start().await?;
        Ok(redis)
    }

    /// Where to connect: pass it to workers (they connect themselves).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// True for a server this process started.
    pub fn is_private(&self) -> bool {
        self.private.is_some()
    }

    /// A connection that reconnects by itself (see [`connect`]).
    pub async fn connect(&self) -> Result<ConnectionManager, RedisError> {
        connect(&self.url).await
    }

    /// Stops the private server, as an outage would (tests and lessons
    /// that show what happens while Redis is away). Data is lost: it was
    /// never persisted. A no-op for someone else's Redis.
    pub async fn stop(&mut self) {
        if let Some(server) = &mut self.private
            && let Some(mut child) = server.child.take()
        {
            if let Some(pid) = child.id() {
                let pid = nix::unistd::Pid::from_raw(pid as i32);
                let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            let _ = child.kill().await;
        }
    }

    /// Starts the private server again, on the same socket.
    pub async fn restart(&mut self) -> Result<(), RedisError> {
        self.stop().await;
        self.start().await
    }

    async fn start(&mut self) -> Result<(), RedisError> {
        let Some(server) = &mut self.private else {
            return Ok(());
        };
        let _ = std::fs::remove_file(&server.socket);
        let child = spawn(server.folder.path(), &server.socket)?;
        server.child = Some(child);
        let begun = Instant::now();
        let client =
            redis::Client::open(self.url.as_str()).map_err(|cause| RedisError::BadUrl {
                url: self.url.clone(),
                cause,
            })?;
        loop {
            // Polled, because nothing tells us when it is up: a short
            // pause between tries, and a bound on the whole wait.
            if let Ok(mut connection) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            if let Some(child) = server.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let said = last_words(child).await;
                server.child = None;
                return Err(RedisError::ExitedAtStart {
                    status: status.to_string(),
                    said,
                });
            }
            if begun.elapsed() > START_WITHIN {
                return Err(RedisError::NoAnswer);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn ping(&self) -> Result<(), RedisError> {
        let unreachable = |cause| RedisError::Unreachable {
            url: self.url.clone(),
            cause,
        };
        let client =
            redis::Client::open(self.url.as_str()).map_err(|cause| RedisError::BadUrl {
                url: self.url.clone(),
                cause,
            })?;
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .map_err(unreachable)?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map_err(unreachable)?;
        Ok(())
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            // The runtime may be gone already: a plain kill, then the
            // child is reaped by tokio's orphan queue or by init.
            let _ = child.start_kill();
        }
    }
}

/// Starts a cluster whose workers use `redis`, when there is one.
///
/// Each worker finds the Redis address in its environment, where
/// [`Redis::from_env_or_start`] looks first, so every worker talks to the
/// server the primary uses and none starts its own. A private server is
/// then named in the cluster's log, so the reader knows where the state
/// lives; one from `REDIS_URL` needs no introduction.
pub async fn start_cluster(
    redis: Option<&Redis>,
    mut options: supervisor::ClusterOptions,
) -> Result<supervisor::Cluster, supervisor::ClusterError> {
    if let Some(redis) = redis {
        (options.worker_env).push((REDIS_URL_VAR.into(), redis.url().to_owned()));
    }
    let cluster = supervisor::Cluster::start(options).await?;
    if let Some(redis) = redis.filter(|redis| redis.is_private()) {
        cluster.note_line(&format!(
            "REDIS_URL is not set: started a private redis-server at {}",
            redis.url()
        ));
    }
    Ok(cluster)
}

/// A private server's folder is named `workbook-redis-<owner pid>-<random>`.
const FOLDER_PREFIX: &str = "workbook-redis-";

/// Removes the folders of private servers whose owner is gone.
///
/// A dropped [`Redis`] removes its own folder, and the kernel kills its
/// redis-server when the owner dies, but nothing runs in a process killed
/// with `kill -9`: its folder (a socket, nothing else) stays behind. So the
/// next start cleans up after the dead. The owner's pid in the name is what
/// makes that safe: a folder whose owner is alive — another lesson that is
/// starting its server this very moment — is never touched. (A pid reused by
/// an unrelated process only keeps a stale folder a while longer.)
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
        if owner > 0 && is_gone(owner) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// True if no process `pid` runs: none exists, or only its exit status is
/// left (a zombie, until its parent — or an init that reaps — collects it).
fn is_gone(pid: i32) -> bool {
    let missing = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
        == Err(nix::errno::Errno::ESRCH);
    missing
        || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            // The state follows the command name, which is in parentheses.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                == Some("Z")
        })
}

/// Starts redis-server in `folder`, listening on `socket` only.
fn spawn(folder: &Path, socket: &Path) -> Result<Child, RedisError> {
    let mut command = Command::new("redis-server");
    command
        .args(["--port", "0", "--unixsocket"])
        .arg(socket)
        .args([
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(folder)
        .args(["--daemonize", "no", "--loglevel", "warning"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe and touches only the child. The
    // kernel kills redis-server when the thread that started it ends —
    // a runtime thread, which lives as long as its process.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
    command.spawn().map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => RedisError::NotInstalled,
        _ => RedisError::Spawn(error),
    })
}

/// What a redis-server that died at start wrote, as one line.
async fn last_words(child: &mut Child) -> String {
    use tokio::io::AsyncReadExt;
    let mut said = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ =
            tokio::time::timeout(Duration::from_secs(1), stderr.read_to_string(&mut said)).await;
    }
    let said = said.split_whitespace().collect::<Vec<_>>().join(" ");
    if said.is_empty() {
        "(nothing)".into()
    } else {
        said
    }
}

/// A connection to `url` that reconnects by itself. It connects lazily: a
/// worker starts even while Redis is away, and its commands fail — quickly,
/// with a timeout — until Redis is back.
pub async fn connect(url: &str) -> Result<ConnectionManager, RedisError> {
    let client = redis::Client::open(url).map_err(|cause| RedisError::BadUrl {
        url: url.to_owned(),
        cause,
    })?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(Duration::from_millis(500)))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client, config).map_err(|cause| {
        RedisError::Unreachable {
            url: url.to_owned(),
            cause,
        }
    })
}

/// Failed Redis commands, said once per outage.
#[derive(Debug, Default)]
pub struct Outages {
    down: Option<(Instant, u64)>,
}

impl Outages {
    /// A command failed with `error`: the line to print, for the first
    /// failure of an outage only.
    pub fn failed(&mut self, error: &redis::RedisError) -> Option<String> {
        match &mut self.down {
            Some((_, count)) => {
                *count += 1;
                None
            }
            None => {
                self.down = Some((Instant::now(), 1));
                Some(format!("Redis is unreachable: {error}"))
            }
        }
    }

    /// A command worked: the line to print if it ends an outage.
    pub fn worked(&mut self) -> Option<String> {
        let (since, count) = self.down.take()?;
        Some(format!(
            "Redis is back after {} ms; {count} command{} failed meanwhile",
            since.elapsed().as_millis(),
            if count == 1 { "" } else { "s" }
        ))
    }

    /// True while an outage lasts.
    pub fn is_down(&self) -> bool {
        self.down.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_private_server_answers_and_goes_with_its_owner()
    -> Result<(), Box<dyn std::error::Error>> {
        let redis = Redis::start_private().await?;
        let mut connection = redis.connect().await?;
        redis::cmd("SET")
            .arg("workbook")
            .arg("yes")
            .query_async::<()>(&mut connection)
            .await?;
        let got: String = redis::cmd("GET")
            .arg("workbook")
            .query_async(&mut connection)
            .await?;
        assert_eq!(got, "yes");

        let pid = redis
            .private
            .as_ref()
            .and_then(|p| p.child.as_ref())
            .and_then(Child::id)
            .ok_or("no child")?;
        let folder = redis
            .private
            .as_ref()
            .map(|p| p.folder.path().to_owned())
            .ok_or("no folder")?;
        drop(connection);
        drop(redis);
        // Gone: the process (within a bound) and its folder.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !is_gone(pid as i32) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(is_gone(pid as i32), "redis-server {pid} outlived its owner");
        assert!(!folder.exists());
        Ok(())
    }

    /// What `kill -9` of an owner leaves behind is removed by the next
    /// start; what belongs to a live owner is not.
    #[tokio::test]
    async fn a_start_removes_the_folders_of_dead_owners() -> Result<(), Box<dyn std::error::Error>>
    {
        // A pid that was surely in use a moment ago and is now free.
        let mut child = std::process::Command::new("true").spawn()?;
        let dead = child.id();
        child.wait()?;
        let temp = std::env::temp_dir();
        let stale = temp.join(format!("{FOLDER_PREFIX}{dead}-test"));
        let alive = temp.join(format!("{FOLDER_PREFIX}{}-test", std::process::id()));
        for folder in [&stale, &alive] {
            std::fs::create_dir_all(folder)?;
            std::fs::write(folder.join("redis.sock"), b"")?;
        }

        let redis = Redis::start_private().await?;
        let stale_gone = !stale.exists();
        let alive_kept = alive.exists();
        let _ = std::fs::remove_dir_all(&alive);
        let _ = std::fs::remove_dir_all(&stale);
        drop(redis);
        assert!(stale_gone, "{} outlived its dead owner", stale.display());
        assert!(
            alive_kept,
            "{} was removed while its owner lives",
            alive.display()
        );
        Ok(())
    }

    #[test]
    fn an_outage_is_one_line_down_and_one_line_back() {
        let mut outages = Outages::default();
        let error =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(outages.failed(&error).is_some());
        for _ in 0..100 {
            assert_eq!(outages.failed(&error), None);
        }
        let back = outages.worked().unwrap_or_default();
        assert!(back.contains("101 commands failed"), "{back}");
        assert_eq!(outages.worked(), None);
    }
}
