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
//! * kept: started again if it dies (see [`Redis::start_private`]);
//! * stopped when the [`Redis`] is dropped, and killed by the kernel if the
//!   process that started it dies, even by `kill -9` (`PR_SET_PDEATHSIG`):
//!   no redis-server outlives a lesson or a test. The folder of a process
//!   killed that way is removed by the next private start on the machine.
//!
//! [`Outages`] turns a stream of failed commands into one line when Redis
//! goes away and one when it is back, instead of a line per request.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};

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
    #[error("the task that keeps the private redis-server is gone (its runtime ended)")]
    KeeperGone,
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

/// A redis-server we started: its folder, and the task that keeps it.
#[derive(Debug)]
struct PrivateServer {
    /// Orders for the keeper; dropping it ends the keeper and the server.
    control: mpsc::UnboundedSender<Control>,
    /// Where the keeper's news goes (see [`Redis::on_news`]).
    news: News,
    // Last, so the server is told to go before its folder is removed.
    _folder: tempfile::TempDir,
}

/// What the keeper is asked to do.
#[derive(Debug)]
enum Control {
    /// Stop the server and keep it stopped: an outage on purpose.
    Stop(oneshot::Sender<()>),
    /// Start it (again), and say whether it answers.
    Start(oneshot::Sender<Result<(), RedisError>>),
}

/// Where a private server's news goes: a line when it dies and one when it
/// is back. Printed on stderr until somebody says otherwise.
type Say = Box<dyn Fn(&str) + Send + Sync>;

#[derive(Clone)]
struct News(Arc<Mutex<Say>>);

impl News {
    fn say(&self, line: &str) {
        if let Ok(say) = self.0.lock() {
            say(line);
        }
    }
}

impl std::fmt::Debug for News {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("News")
    }
}

/// The first wait before starting a server that died, doubled after each
/// failed start up to [`RESTART_MAX_DELAY`].
const RESTART_FIRST_DELAY: Duration = Duration::from_millis(50);
const RESTART_MAX_DELAY: Duration = Duration::from_secs(5);

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
    ///
    /// The server is *kept*: a task waits on it, and if it dies — killed,
    /// crashed, out of memory — says so once, starts it again on the same
    /// socket (waiting 50 ms, then twice as long after each failed try, up
    /// to 5 s) and says once when it is back. Workers reconnect by
    /// themselves. Before, a lesson whose private server died ran without
    /// Redis for the rest of its life, and said nothing.
    pub async fn start_private() -> Result<Redis, RedisError> {
        let temp = std::env::temp_dir();
        sweep_stale_folders(&temp);
        let folder = tempfile::Builder::new()
            .prefix(&format!("{FOLDER_PREFIX}{}-", std::process::id()))
            .tempdir_in(&temp)
            .map_err(RedisError::Folder)?;
        let socket = folder.path().join("redis.sock");
        let url = format!("redis+unix://{}", socket.display());
        let server = Server {
            folder: folder.path().to_owned(),
            socket,
            url: url.clone(),
        };
        let child = server.start().await?;
        let news = News(Arc::new(Mutex::new(Box::new(stderr_line))));
        let (control, orders) = mpsc::unbounded_channel();
        tokio::spawn(keep(server, child, orders, news.clone()));
        Ok(Redis {
            url,
            private: Some(PrivateServer {
                control,
                news,
                _folder: folder,
            }),
        })
    }

    /// Where to connect: pass it to workers (they connect themselves).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// True for a server this process started.
    pub fn is_private(&self) -> bool {
        self.private.is_some()
    }

    /// The variable that tells a worker where this server is, and its
    /// value: put it in the cluster's `worker_env`, and each worker's
    /// [`Redis::from_env_or_start`] finds this server instead of starting
    /// its own, so every worker shares the primary's.
    pub fn worker_env(&self) -> (String, String) {
        (REDIS_URL_VAR.to_owned(), self.url.clone())
    }

    /// Tells `say` (a cluster's log) what is worth knowing about this
    /// server: for a private one, a line naming it now, so the reader
    /// knows where the state lives, and its news from then on (see
    /// [`Redis::on_news`]). One from `REDIS_URL` needs no introduction.
    pub fn tell(&self, say: impl Fn(&str) + Send + Sync + 'static) {
        if self.is_private() {
            say(&format!(
                "REDIS_URL is not set: started a private redis-server at {}",
                self.url
            ));
            self.on_news(say);
        }
    }

    /// Sends a private server's news (it died; it is back) to `say`
    /// instead of stderr: a lesson's log, say.
    pub fn on_news(&self, say: impl Fn(&str) + Send + Sync + 'static) {
        if let Some(server) = &self.private
            && let Ok(mut slot) = server.news.0.lock()
        {
            *slot = Box::new(say);
        }
    }

    /// A connection that reconnects by itself (see [`connect`]).
    pub async fn connect(&self) -> Result<ConnectionManager, RedisError> {
        connect(&self.url).await
    }

    /// Stops the private server, as an outage would (tests and lessons
    /// that show what happens while Redis is away), and keeps it stopped
    /// until [`Redis::restart`]. Data is lost: it was never persisted. A
    /// no-op for someone else's Redis.
    pub async fn stop(&mut self) {
        if let Some(server) = &self.private {
            let (done, stopped) = oneshot::channel();
            if server.control.send(Control::Stop(done)).is_ok() {
                let _ = stopped.await;
            }
        }
    }

    /// Starts the private server again, on the same socket.
    pub async fn restart(&mut self) -> Result<(), RedisError> {
        let Some(server) = &self.private else {
            return Ok(());
        };
        let (done, started) = oneshot::channel();
        server
            .control
            .send(Control::Start(done))
            .map_err(|_| RedisError::KeeperGone)?;
        started.await.map_err(|_| RedisError::KeeperGone)?
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

/// How to start the private server, again and again.
#[derive(Debug)]
struct Server {
    folder: PathBuf,
    socket: PathBuf,
    url: String,
}

impl Server {
    /// Starts redis-server and waits until it answers `PING`.
    async fn start(&self) -> Result<Child, RedisError> {
        let _ = std::fs::remove_file(&self.socket);
        let mut child = spawn(&self.folder, &self.socket)?;
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
                return Ok(child);
            }
            if let Ok(Some(status)) = child.try_wait() {
                let said = last_words(&mut child).await;
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
}

/// Stops `child`: SIGTERM, a bounded wait, then SIGKILL.
async fn stop(mut child: Child) {
    if let Some(pid) = child.id() {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    let _ = child.kill().await;
}

/// The keeper: owns the running server, obeys [`Control`]s, and starts the
/// server again when it dies without being asked to. Ends — and the server
/// with it (`kill_on_drop`) — when the [`Redis`] is dropped.
async fn keep(
    server: Server,
    child: Child,
    mut orders: mpsc::UnboundedReceiver<Control>,
    news: News,
) {
    let mut running = Some(child);
    // Set while a server that died is being started again.
    let mut lost: Option<(Instant, Duration)> = None;
    loop {
        let waiting = async {
            match (&mut running, lost) {
                (Some(child), _) => Event::Died(child.wait().await),
                (None, Some((_, delay))) => {
                    tokio::time::sleep(delay).await;
                    Event::Retry
                }
                (None, None) => std::future::pending().await,
            }
        };
        let event = tokio::select! {
            order = orders.recv() => match order {
                Some(order) => Event::Order(order),
                None => return,
            },
            event = waiting => event,
        };
        match event {
            Event::Order(Control::Stop(done)) => {
                lost = None;
                if let Some(child) = running.take() {
                    stop(child).await;
                }
                let _ = done.send(());
            }
            Event::Order(Control::Start(done)) => {
                lost = None;
                if let Some(child) = running.take() {
                    stop(child).await;
                }
                let started = server.start().await;
                let _ = done.send(started.map(|child| {
                    running = Some(child);
                }));
            }
            Event::Died(status) => {
                running = None;
                let how = status.map_or_else(|error| error.to_string(), |s| s.to_string());
                news.say(&format!(
                    "the private redis-server died ({how}); starting it again at {}",
                    server.url
                ));
                lost = Some((Instant::now(), RESTART_FIRST_DELAY));
            }
            Event::Retry => {
                let Some((since, delay)) = lost else { continue };
                match server.start().await {
                    Ok(child) => {
                        running = Some(child);
                        lost = None;
                        news.say(&format!(
                            "the private redis-server is back after {} ms (its data is not: it was never saved)",
                            since.elapsed().as_millis()
                        ));
                    }
                    Err(_) => lost = Some((since, (delay * 2).min(RESTART_MAX_DELAY))),
                }
            }
        }
    }
}

/// What woke the keeper.
enum Event {
    Order(Control),
    Died(std::io::Result<std::process::ExitStatus>),
    Retry,
}

/// Writes `text` and its newline to stderr in one write, so that a line
/// of ours stays whole when a cluster's processes share stderr.
fn stderr_line(text: &str) {
    use std::io::Write;
    let line = format!("{text}\n");
    // Nowhere to report a failure to write to stderr.
    let _ = std::io::stderr().write_all(line.as_bytes());
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

/// While Redis is down, how often one command may go and find out whether
/// it is back. The others fail at once.
pub const PROBE_EVERY: Duration = Duration::from_millis(200);

/// Failed Redis commands, said once per outage — and not sent at all while
/// the outage lasts, but for one probe every [`PROBE_EVERY`].
///
/// A command to a Redis that is gone does not fail at once: the connection
/// manager first tries to connect again, with backoff, and every request
/// waited for that (about 150 ms each: lesson 12 fell from 50,860 to 415
/// requests a second). So while Redis is down a request asks
/// [`Outages::may_try`] first, and decides without Redis — fail open or
/// closed — when the answer is no. It is a small circuit breaker (lesson 11)
/// around one dependency.
#[derive(Debug, Default)]
pub struct Outages {
    down: Option<Outage>,
}

#[derive(Debug, Clone, Copy)]
struct Outage {
    since: Instant,
    /// Commands sent that failed.
    failed: u64,
    /// Commands not sent: decided without Redis.
    skipped: u64,
    last_try: Instant,
}

impl Outages {
    /// Whether this request should send its command: always while Redis
    /// works; during an outage, one request every [`PROBE_EVERY`].
    pub fn may_try(&mut self) -> bool {
        self.may_try_at(Instant::now())
    }

    fn may_try_at(&mut self, now: Instant) -> bool {
        match &mut self.down {
            None => true,
            Some(outage) if now.saturating_duration_since(outage.last_try) >= PROBE_EVERY => {
                outage.last_try = now;
                true
            }
            Some(outage) => {
                outage.skipped += 1;
                false
            }
        }
    }

    /// A command failed with `error`: the line to print, for the first
    /// failure of an outage only.
    pub fn failed(&mut self, error: &redis::RedisError) -> Option<String> {
        self.failed_at(error, Instant::now())
    }

    fn failed_at(&mut self, error: &redis::RedisError, now: Instant) -> Option<String> {
        match &mut self.down {
            Some(outage) => {
                outage.failed += 1;
                None
            }
            None => {
                self.down = Some(Outage {
                    since: now,
                    failed: 1,
                    skipped: 0,
                    last_try: now,
                });
                Some(format!("Redis is unreachable: {error}"))
            }
        }
    }

    /// A command worked: the line to print if it ends an outage.
    pub fn worked(&mut self) -> Option<String> {
        let outage = self.down.take()?;
        let plural = |n: u64| if n == 1 { "" } else { "s" };
        Some(format!(
            "Redis is back after {} ms; meanwhile {} command{} failed and {} request{} did not wait for it",
            outage.since.elapsed().as_millis(),
            outage.failed,
            plural(outage.failed),
            outage.skipped,
            plural(outage.skipped),
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

        let folder = redis
            .private
            .as_ref()
            .map(|p| p._folder.path().to_owned())
            .ok_or("no folder")?;
        let pid = server_pid(&folder).ok_or("no redis-server runs in the folder")?;
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

    /// The pid of the redis-server whose socket is in `folder`, from /proc.
    fn server_pid(folder: &Path) -> Option<i32> {
        let socket = folder.join("redis.sock");
        std::fs::read_dir("/proc")
            .ok()?
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
            .find(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|line| {
                    let line = String::from_utf8_lossy(&line);
                    line.contains("redis-server") && line.contains(&*socket.to_string_lossy())
                }) && !is_gone(*pid)
            })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_private_server_that_dies_is_started_again_and_said_once_each_way()
    -> Result<(), Box<dyn std::error::Error>> {
        let redis = Redis::start_private().await?;
        let (said, mut heard) = mpsc::unbounded_channel::<String>();
        redis.on_news(move |line| {
            let _ = said.send(line.to_owned());
        });
        let folder = redis
            .private
            .as_ref()
            .map(|p| p._folder.path().to_owned())
            .ok_or("no folder")?;
        let first = server_pid(&folder).ok_or("no redis-server")?;

        nix::sys::signal::kill(nix::unistd::Pid::from_raw(first), Signal::SIGKILL)?;
        let within = Duration::from_secs(10);
        let died = tokio::time::timeout(within, heard.recv())
            .await?
            .unwrap_or_default();
        assert!(died.contains("died"), "{died}");
        let back = tokio::time::timeout(within, heard.recv())
            .await?
            .unwrap_or_default();
        assert!(back.contains("is back after"), "{back}");
        redis.ping().await?;
        let second = server_pid(&folder).ok_or("no redis-server after the restart")?;
        assert_ne!(first, second);
        // Said once each way: nothing more while it runs.
        assert!(heard.try_recv().is_err());
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_stopped_on_purpose_stays_stopped_until_restarted()
    -> Result<(), Box<dyn std::error::Error>> {
        let mut redis = Redis::start_private().await?;
        let (said, mut heard) = mpsc::unbounded_channel::<String>();
        redis.on_news(move |line| {
            let _ = said.send(line.to_owned());
        });
        redis.stop().await;
        assert!(redis.ping().await.is_err());
        // The keeper's first retry would come after 50 ms: give it ten times
        // that to (wrongly) start the server again.
        tokio::time::sleep(RESTART_FIRST_DELAY * 10).await;
        assert!(redis.ping().await.is_err(), "a stop on purpose was undone");
        assert!(
            heard.try_recv().is_err(),
            "a stop on purpose was reported as a death"
        );
        redis.restart().await?;
        redis.ping().await?;
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

    #[test]
    fn while_redis_is_down_one_request_per_interval_tries_it() {
        let mut outages = Outages::default();
        let error =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let t0 = Instant::now();
        assert!(outages.may_try_at(t0), "Redis works: everyone tries");
        outages.failed_at(&error, t0);
        // Within the interval: nobody waits on a connection attempt.
        let tries = (1..100)
            .filter(|ms| outages.may_try_at(t0 + Duration::from_millis(*ms)))
            .count();
        assert_eq!(tries, 0);
        // Then exactly one probe per interval.
        let at = t0 + PROBE_EVERY;
        assert!(outages.may_try_at(at));
        assert!(!outages.may_try_at(at + Duration::from_millis(1)));
        assert!(outages.may_try_at(at + PROBE_EVERY));
        let back = outages.worked().unwrap_or_default();
        assert!(
            back.contains("1 command failed and 100 requests did not wait"),
            "{back}"
        );
        assert!(outages.may_try_at(at + PROBE_EVERY));
    }
}
