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
//! A Lua script runs atomically in Redis: no other command runs between
//! its reads and its writes, which is what makes the limit exact across
//! every worker of every machine without a lock.

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
    /// Requests left now.
    pub remaining: u64,
    /// Milliseconds until a request will be admitted again (refused), or
    /// until a place frees up (admitted).
    pub reset_ms: u64,
}

// ANCHOR: headers
impl Decision {
    /// `RateLimit-Limit`, `-Remaining`, `-Reset` (seconds, rounded up), and
    /// `Retry-After` when refused: what a well-behaved client reads.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let reset = self.reset_ms.div_ceil(1000);
        let mut headers = vec![
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
    /// Unique request ids: who we are, and a counter.
    who: String,
    next: AtomicU64,
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
            who,
            next: AtomicU64::new(0),
        }
    }

    // ANCHOR: check
    /// May `client` make one more request under `policy`? One round trip
    /// (the script's hash is sent; the script itself only once, if Redis
    /// does not know it yet).
    pub async fn check(&self, client: &str, policy: Policy) -> Result<Decision, redis::RedisError> {
        let mut connection = self.connection.clone();
        let window_ms = u64::try_from(policy.window.as_millis()).unwrap_or(u64::MAX);
        let key = |kind: &str| format!("ratelimit:{kind}:{client}");
        let (allowed, remaining, reset_ms): (u64, u64, i64) = match self.algorithm {
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
        };
        Ok(Decision {
            allowed: allowed == 1,
            limit: policy.limit,
            remaining,
            reset_ms: u64::try_from(reset_ms).unwrap_or(0),
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
        remaining: policy.limit.saturating_sub(count + 1),
        reset_ms: window_ms,
    })
}
// ANCHOR_END: usual

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
        (redis, Limiter::new(algorithm, connection, "test".into()))
    }

    const TEN_PER_MINUTE: Policy = Policy {
        limit: 10,
        window: Duration::from_secs(60),
    };

    #[tokio::test]
    async fn each_admits_exactly_the_limit_then_refuses_with_a_wait()
    -> Result<(), redis::RedisError> {
        for algorithm in [Algorithm::Usual, Algorithm::Sliding, Algorithm::Gcra] {
            let (_redis, limiter) = limiter(algorithm).await;
            let mut decisions = Vec::new();
            // Back to back, many in the same millisecond: every algorithm
            // counts each attempt on its own.
            for _ in 0..25 {
                decisions.push(limiter.check("ada", TEN_PER_MINUTE).await?);
            }
            let admitted = decisions.iter().filter(|d| d.allowed).count();
            assert_eq!(admitted, 10, "{algorithm:?}");
            let last = decisions[decisions.len() - 1];
            assert!(
                !last.allowed && last.reset_ms > 0,
                "{algorithm:?}: {last:?}"
            );
            assert!(
                last.headers()
                    .iter()
                    .any(|(name, _)| *name == "retry-after")
            );
        }
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
