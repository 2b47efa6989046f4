//! Rate limiting shared by every worker of every cluster, in Redis.
//!
//! Three ways to decide "may this client make one more request?", each
//! keyed by client, each one call to [`Limiter::check`]:
//!
//! * [`Algorithm::Usual`] — the usual answer's sliding log, as it is
//!   written: one `MULTI` of `ZREMRANGEBYSCORE`, `ZCARD`, `ZADD` (a member
//!   per attempt), `PEXPIRE`, with the time from the worker's clock, and
//!   the decision from the count before the attempt. `MULTI` keeps the
//!   count exact, even in a burst. Two faults hide in it. It logs every
//!   attempt, refused or not, so a client that keeps retrying keeps its
//!   own window full and is refused for ever, and the set grows with every
//!   attempt. And each worker (each machine) reads its own clock.
//! * [`Algorithm::Sliding`] — the same log, decided by a Lua script in
//!   Redis (`sliding.lua`): one round trip, time from Redis's `TIME`, only
//!   admitted requests logged (with unique members), so memory is bounded
//!   by the limit.
//! * [`Algorithm::Gcra`] — the generic cell rate algorithm (`gcra.lua`):
//!   one number per client (when its next request is due), so memory does
//!   not grow with the limit. The trade-off: it limits the *rate* — `limit`
//!   per `window` on average, one per `window / limit`, with a burst of up
//!   to `limit` allowed — not the count in every window. A busy client's
//!   first window sees the burst *and* the steady rate (19 for 10 a
//!   second); every window after it, 10.
//!
//! * [`Algorithm::Fixed`] — a fixed window (`fixed.lua`): one counter per
//!   client per window, reset when the clock crosses into the next. Two
//!   numbers per client; a client may spend two windows' worth across a
//!   boundary.
//! * [`Algorithm::Counter`] — the sliding-window counter (`counter.lua`):
//!   the fixed window's count plus the previous window's, weighted by how
//!   much of it the sliding window still covers. Three numbers per client;
//!   an estimate, exact only if the previous window's requests were spread
//!   evenly.
//! * [`Algorithm::Watch`] — the sliding log decided without a script:
//!   `WATCH` the key, read it, decide here, then `MULTI … EXEC` only if
//!   admitted; `EXEC` fails if anyone changed the key in between, and the
//!   decision is made again. Optimistic: exact, and each conflict costs a
//!   retry. `WATCH` belongs to a connection, so each decision in flight
//!   needs a connection of its own.
//!
//! A Lua script runs atomically in Redis: no other command runs between
//! its reads and its writes, which is what makes the limit exact across
//! every worker of every machine without a lock. `MULTI` alone cannot
//! decide: Redis answers each command inside it with `QUEUED`, and the
//! results arrive together at `EXEC`, too late to choose whether to add.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use serde::Serialize;

/// How to decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// The usual answer: MULTI of ZREMRANGEBYSCORE, ZCARD, ZADD, PEXPIRE.
    Usual,
    /// A sliding-window log in one Lua script, with Redis's clock.
    Sliding,
    /// GCRA in one Lua script: one number per client.
    Gcra,
    /// A fixed window in one Lua script: a counter per client per window.
    Fixed,
    /// A sliding-window counter in one Lua script: two windows' counts, weighted.
    Counter,
    /// The sliding log with WATCH, MULTI and a retry on conflict: no script.
    Watch,
}

/// How many requests a client may make per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub limit: u64,
    pub window: Duration,
}

/// One decision, and what to tell the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u64,
    /// The policy's window, for `RateLimit-Policy`.
    pub window_ms: u64,
    /// Requests left now.
    pub remaining: u64,
    /// Milliseconds until a request will be admitted again (refused), or
    /// until a place frees up (admitted).
    pub reset_ms: u64,
    /// When it was decided, in ms since the epoch, by the clock that
    /// decided (Redis's, but for `usual`): the demo counts windows by it.
    pub decided_at_ms: u64,
}

// ANCHOR: headers
impl Decision {
    /// The four fields of the IETF draft up to version 06
    /// (draft-ietf-httpapi-ratelimit-headers-06, what express-rate-limit
    /// sends with `standardHeaders: 'draft-6'`): `RateLimit-Policy` (the
    /// quota and its window, `10;w=1`), `RateLimit-Limit`, `-Remaining`,
    /// and `-Reset` (seconds, rounded up); and `Retry-After` when refused.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let reset = self.reset_ms.div_ceil(1000);
        let mut headers = vec![
            (
                "ratelimit-policy",
                format!("{};w={}", self.limit, self.window_ms.div_ceil(1000)),
            ),
            ("ratelimit-limit", self.limit.to_string()),
            ("ratelimit-remaining", self.remaining.to_string()),
            ("ratelimit-reset", reset.to_string()),
        ];
        if !self.allowed {
            headers.push(("retry-after", reset.max(1).to_string()));
        }
        headers
    }
}
// ANCHOR_END: headers

/// A limiter for one worker: its connection, and the scripts by hash.
#[derive(Debug)]
pub struct Limiter {
    algorithm: Algorithm,
    connection: ConnectionManager,
    sliding: redis::Script,
    gcra: redis::Script,
    fixed: redis::Script,
    counter: redis::Script,
    /// Connections of their own for `WATCH`, one per decision in flight.
    watching: Option<Watching>,
    /// Unique request ids: who we are, and a counter.
    who: String,
    next: AtomicU64,
}

/// `WATCH` is a connection's state: each decision takes a connection no
/// other decision uses meanwhile, from here, and puts it back.
#[derive(Debug)]
struct Watching {
    client: redis::Client,
    idle: std::sync::Mutex<Vec<redis::aio::MultiplexedConnection>>,
    /// `EXEC`s that failed because another decision changed the key first.
    conflicts: AtomicU64,
}

impl Limiter {
    /// `who` names this process in request ids (a worker id and a pid):
    /// ids must differ across every worker of every machine.
    pub fn new(algorithm: Algorithm, connection: ConnectionManager, who: String) -> Self {
        Limiter {
            algorithm,
            connection,
            sliding: redis::Script::new(include_str!("sliding.lua")),
            gcra: redis::Script::new(include_str!("gcra.lua")),
            fixed: redis::Script::new(include_str!("fixed.lua")),
            counter: redis::Script::new(include_str!("counter.lua")),
            watching: None,
            who,
            next: AtomicU64::new(0),
        }
    }

    /// Where `--algorithm watch` opens the connections it needs.
    pub fn with_client(mut self, client: redis::Client) -> Self {
        self.watching = Some(Watching {
            client,
            idle: std::sync::Mutex::new(Vec::new()),
            conflicts: AtomicU64::new(0),
        });
        self
    }

    /// How many `EXEC`s failed on a conflict so far (`watch` only).
    pub fn conflicts(&self) -> u64 {
        self.watching
            .as_ref()
            .map_or(0, |w| w.conflicts.load(Ordering::Relaxed))
    }

    // ANCHOR: check
    /// May `client` make one more request under `policy`? One round trip
    /// (the script's hash is sent; the script itself only once, if Redis
    /// does not know it yet).
    pub async fn check(&self, client: &str, policy: Policy) -> Result<Decision, redis::RedisError> {
        let mut connection = self.connection.clone();
        let window_ms = u64::try_from(policy.window.as_millis()).unwrap_or(u64::MAX);
        let key = |kind: &str| format!("ratelimit:{kind}:{client}");
        let (allowed, remaining, reset_ms, decided_at_ms): (u64, u64, i64, u64) = match self
            .algorithm
        {
            Algorithm::Usual => {
                let attempt = format!("{}-{}", self.who, self.next.fetch_add(1, Ordering::Relaxed));
                return usual(&mut connection, &key("usual"), policy, &attempt).await;
            }
            Algorithm::Sliding => {
                let id = format!("{}-{}", self.who, self.next.fetch_add(1, Ordering::Relaxed));
                self.sliding
                    .key(key("sliding"))
                    .arg(policy.limit)
                    .arg(window_ms)
                    .arg(id)
                    .invoke_async(&mut connection)
                    .await?
            }
            Algorithm::Gcra => {
                self.gcra
                    .key(key("gcra"))
                    .arg(policy.limit)
                    .arg(window_ms)
                    .invoke_async(&mut connection)
                    .await?
            }
            Algorithm::Fixed | Algorithm::Counter => {
                let (script, kind) = match self.algorithm {
                    Algorithm::Fixed => (&self.fixed, "fixed"),
                    _ => (&self.counter, "counter"),
                };
                script
                    .key(key(kind))
                    .arg(policy.limit)
                    .arg(window_ms)
                    .invoke_async(&mut connection)
                    .await?
            }
            Algorithm::Watch => {
                let id = format!("{}-{}", self.who, self.next.fetch_add(1, Ordering::Relaxed));
                return self.watch(&key("watch"), policy, &id).await;
            }
        };
        Ok(Decision {
            allowed: allowed == 1,
            limit: policy.limit,
            window_ms,
            remaining,
            reset_ms: u64::try_from(reset_ms).unwrap_or(0),
            decided_at_ms,
        })
    }
    // ANCHOR_END: check
}

// ANCHOR: usual
/// The usual answer, line for line: trim the window, count it, log this
/// attempt under a member of its own (the answer's `${now}-${Math.random()}`;
/// here `attempt` is unique to this process and request), expire the set —
/// one `MULTI` — and admit if the count *before* this attempt is under the
/// limit. Every attempt is logged, admitted or not, and `now` is this
/// worker's clock.
async fn usual(
    connection: &mut ConnectionManager,
    key: &str,
    policy: Policy,
    attempt: &str,
) -> Result<Decision, redis::RedisError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64);
    let window_ms = policy.window.as_millis() as u64;
    let (count,): (u64,) = redis::pipe()
        .atomic() // MULTI … EXEC
        .zrembyscore(key, 0, now.saturating_sub(window_ms))
        .ignore()
        .zcard(key)
        .zadd(key, format!("{now}-{attempt}"), now) // logged whether admitted or not
        .ignore()
        .pexpire(key, i64::try_from(window_ms).unwrap_or(i64::MAX))
        .ignore()
        .query_async(connection)
        .await?;
    Ok(Decision {
        allowed: count < policy.limit,
        limit: policy.limit,
        window_ms,
        remaining: policy.limit.saturating_sub(count + 1),
        reset_ms: window_ms,
        decided_at_ms: now,
    })
}
// ANCHOR_END: usual

// ANCHOR: watch
/// How often one decision may lose the race before it gives up.
const WATCH_TRIES: u32 = 100;

impl Limiter {
    /// The sliding log without a script: read under `WATCH`, decide here,
    /// write in `MULTI` only if admitted. `EXEC` answers nil if the key
    /// changed after `WATCH` — another decision won — and we decide again
    /// on what is there now.
    async fn watch(
        &self,
        key: &str,
        policy: Policy,
        id: &str,
    ) -> Result<Decision, redis::RedisError> {
        let watching = self.watching.as_ref().ok_or_else(|| {
            redis::RedisError::from((
                redis::ErrorKind::Client,
                "--algorithm watch needs connections of its own: Limiter::with_client",
            ))
        })?;
        let idle = watching.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut connection = match idle {
            Some(connection) => connection,
            None => watching.client.get_multiplexed_async_connection().await?,
        };
        let window_ms = policy.window.as_millis() as u64;
        for _ in 0..WATCH_TRIES {
            // One round trip: watch, Redis's clock, the log.
            let ((seconds, micros), log): ((u64, u64), Vec<(String, u64)>) = redis::pipe()
                .cmd("WATCH")
                .arg(key)
                .ignore()
                .cmd("TIME")
                .cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query_async(&mut connection)
                .await?;
            let now = seconds * 1000 + micros / 1000;
            let live: Vec<u64> = log
                .iter()
                .map(|(_, at)| *at)
                .filter(|at| *at + window_ms > now)
                .collect();
            let oldest = live.iter().min().copied().unwrap_or(now);
            let count = live.len() as u64;
            if count >= policy.limit {
                redis::cmd("UNWATCH")
                    .query_async::<()>(&mut connection)
                    .await?;
                self.give_back(connection);
                return Ok(Decision {
                    allowed: false,
                    limit: policy.limit,
                    window_ms,
                    remaining: 0,
                    reset_ms: (oldest + window_ms).saturating_sub(now),
                    decided_at_ms: now,
                });
            }
            // The second round trip: nil if the key changed since WATCH.
            let written: Option<(i64,)> = redis::pipe()
                .atomic()
                .zrembyscore(key, "-inf", now.saturating_sub(window_ms))
                .ignore()
                .zadd(key, format!("{now}-{id}"), now)
                .ignore()
                .pexpire(key, window_ms as i64)
                .query_async(&mut connection)
                .await?;
            if written.is_some() {
                self.give_back(connection);
                return Ok(Decision {
                    allowed: true,
                    limit: policy.limit,
                    window_ms,
                    remaining: policy.limit - count - 1,
                    reset_ms: (oldest + window_ms).saturating_sub(now),
                    decided_at_ms: now,
                });
            }
            watching.conflicts.fetch_add(1, Ordering::Relaxed);
        }
        Err(redis::RedisError::from((
            redis::ErrorKind::Client,
            "WATCH: lost the race too many times in a row",
        )))
    }

    fn give_back(&self, connection: redis::aio::MultiplexedConnection) {
        if let Some(watching) = &self.watching
            && let Ok(mut idle) = watching.idle.lock()
        {
            idle.push(connection);
        }
    }
}
// ANCHOR_END: watch

#[cfg(test)]
mod tests {
    use super::*;

    async fn limiter(algorithm: Algorithm) -> (redis_helper::Redis, Limiter) {
        let redis = match redis_helper::Redis::start_private().await {
            Ok(redis) => redis,
            Err(error) => panic!("these tests need redis-server: {error}"),
        };
        let connection = match redis.connect().await {
            Ok(connection) => connection,
            Err(error) => panic!("{error}"),
        };
        let client = match redis::Client::open(redis.url()) {
            Ok(client) => client,
            Err(error) => panic!("{error}"),
        };
        let limiter = Limiter::new(algorithm, connection, "test".into()).with_client(client);
        (redis, limiter)
    }

    const ALL: [Algorithm; 6] = [
        Algorithm::Usual,
        Algorithm::Sliding,
        Algorithm::Gcra,
        Algorithm::Fixed,
        Algorithm::Counter,
        Algorithm::Watch,
    ];

    /// Long enough that a test never straddles a fixed window's edge.
    const TEN_PER_HOUR: Policy = Policy {
        limit: 10,
        window: Duration::from_secs(3600),
    };

    const TEN_PER_MINUTE: Policy = Policy {
        limit: 10,
        window: Duration::from_secs(60),
    };

    #[tokio::test]
    async fn each_admits_exactly_the_limit_then_refuses_with_a_wait()
    -> Result<(), redis::RedisError> {
        for algorithm in ALL {
            let (_redis, limiter) = limiter(algorithm).await;
            let mut decisions = Vec::new();
            // Back to back, many in the same millisecond: every algorithm
            // counts each attempt on its own.
            for _ in 0..25 {
                decisions.push(limiter.check("ada", TEN_PER_HOUR).await?);
            }
            let admitted = decisions.iter().filter(|d| d.allowed).count();
            assert_eq!(admitted, 10, "{algorithm:?}");
            // The remaining count goes down to 0 on the tenth.
            let remaining: Vec<u64> = decisions[..10].iter().map(|d| d.remaining).collect();
            assert_eq!(remaining, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0], "{algorithm:?}");
            let last = decisions[decisions.len() - 1];
            assert!(
                !last.allowed && last.reset_ms > 0 && last.reset_ms <= 3_600_000,
                "{algorithm:?}: {last:?}"
            );
            let headers = last.headers();
            let header = |name: &str| {
                headers
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            assert_eq!(header("ratelimit-policy"), "10;w=3600", "{algorithm:?}");
            assert_eq!(header("ratelimit-limit"), "10", "{algorithm:?}");
            assert_eq!(header("ratelimit-remaining"), "0", "{algorithm:?}");
            let reset: u64 = header("ratelimit-reset").parse().unwrap_or(0);
            assert!((1..=3600).contains(&reset), "{algorithm:?}: {headers:?}");
            assert_eq!(header("retry-after"), reset.to_string(), "{algorithm:?}");
        }
        Ok(())
    }

    /// The header fields of draft-ietf-httpapi-ratelimit-headers-06, value
    /// by value.
    #[test]
    fn the_headers_are_draft_06_s_four_fields_and_retry_after() {
        let refused = Decision {
            allowed: false,
            limit: 10,
            window_ms: 1000,
            remaining: 0,
            reset_ms: 250,
            decided_at_ms: 0,
        };
        assert_eq!(
            refused.headers(),
            [
                ("ratelimit-policy", "10;w=1".to_string()),
                ("ratelimit-limit", "10".to_string()),
                ("ratelimit-remaining", "0".to_string()),
                ("ratelimit-reset", "1".to_string()),
                ("retry-after", "1".to_string()),
            ]
        );
        let admitted = Decision {
            allowed: true,
            limit: 100,
            window_ms: 60_000,
            remaining: 7,
            reset_ms: 59_001,
            decided_at_ms: 0,
        };
        assert_eq!(
            admitted.headers(),
            [
                ("ratelimit-policy", "100;w=60".to_string()),
                ("ratelimit-limit", "100".to_string()),
                ("ratelimit-remaining", "7".to_string()),
                ("ratelimit-reset", "60".to_string()),
            ]
        );
    }

    #[tokio::test]
    async fn watch_is_exact_under_contention_and_retries_the_losers()
    -> Result<(), redis::RedisError> {
        let (_redis, limiter) = limiter(Algorithm::Watch).await;
        let limiter = std::sync::Arc::new(limiter);
        let mut decisions = tokio::task::JoinSet::new();
        for _ in 0..64 {
            let limiter = std::sync::Arc::clone(&limiter);
            decisions.spawn(async move { limiter.check("ada", TEN_PER_HOUR).await });
        }
        let mut admitted = 0;
        while let Some(decided) = decisions.join_next().await {
            if let Ok(decision) = decided {
                admitted += u64::from(decision?.allowed);
            }
        }
        // 64 at once, each decided on what it read: exactly 10.
        assert_eq!(admitted, 10);
        Ok(())
    }

    /// Why MULTI cannot decide: inside it, Redis answers every command with
    /// QUEUED; the count arrives with all the other results at EXEC, after
    /// the ZADD has run.
    #[tokio::test]
    async fn multi_queues_its_commands_blind() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (redis, _) = limiter(Algorithm::Usual).await;
        let socket = redis.url().trim_start_matches("redis+unix://").to_owned();
        let mut stream = match tokio::net::UnixStream::connect(&socket).await {
            Ok(stream) => stream,
            Err(error) => panic!("{error}"),
        };
        let commands = "MULTI\r\nZCARD log\r\nZADD log 1 a\r\nEXEC\r\n";
        if let Err(error) = stream.write_all(commands.as_bytes()).await {
            panic!("{error}");
        }
        let expected = "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:0\r\n:1\r\n";
        let mut replies = Vec::new();
        let mut buffer = [0u8; 256];
        while replies.len() < expected.len() {
            match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await {
                Ok(Ok(n)) if n > 0 => replies.extend_from_slice(&buffer[..n]),
                _ => break,
            }
        }
        assert_eq!(String::from_utf8_lossy(&replies), expected);
    }

    /// The variant with the time itself as the member: two attempts in the
    /// same millisecond are one member, so the count is of milliseconds.
    #[tokio::test]
    async fn the_time_as_the_member_counts_milliseconds_not_requests()
    -> Result<(), redis::RedisError> {
        let (redis, _) = limiter(Algorithm::Usual).await;
        let mut connection = match redis.connect().await {
            Ok(connection) => connection,
            Err(error) => panic!("{error}"),
        };
        let now: u64 = 1_700_000_000_000; // 25 attempts in one millisecond
        let mut admitted = 0;
        for _ in 0..25 {
            let (count,): (u64,) = redis::pipe()
                .atomic()
                .zrembyscore("log", 0, now - 60_000)
                .ignore()
                .zcard("log")
                .zadd("log", now, now)
                .ignore()
                .pexpire("log", 60_000)
                .ignore()
                .query_async(&mut connection)
                .await?;
            admitted += u64::from(count < 10);
        }
        assert_eq!(admitted, 25, "a burst in one millisecond passes whole");
        Ok(())
    }

    #[tokio::test]
    async fn the_usual_log_keeps_every_attempt_refused_or_not() -> Result<(), redis::RedisError> {
        let (redis, limiter) = limiter(Algorithm::Usual).await;
        for _ in 0..50 {
            limiter.check("ada", TEN_PER_MINUTE).await?;
        }
        let mut connection = match redis.connect().await {
            Ok(connection) => connection,
            Err(error) => panic!("{error}"),
        };
        let members: u64 = redis::cmd("ZCARD")
            .arg("ratelimit:usual:ada")
            .query_async(&mut connection)
            .await?;
        // 10 admitted, 40 refused, 50 kept: a retrying client fills its
        // own window, and memory grows with the attempts.
        assert_eq!(members, 50);
        Ok(())
    }

    #[tokio::test]
    async fn the_fixed_log_holds_at_most_the_limit() -> Result<(), redis::RedisError> {
        let (redis, limiter) = limiter(Algorithm::Sliding).await;
        for _ in 0..50 {
            limiter.check("bob", TEN_PER_MINUTE).await?;
        }
        let mut connection = match redis.connect().await {
            Ok(connection) => connection,
            Err(error) => panic!("{error}"),
        };
        let logged: u64 = redis::cmd("ZCARD")
            .arg("ratelimit:sliding:bob")
            .query_async(&mut connection)
            .await?;
        assert_eq!(logged, 10);
        Ok(())
    }
}
