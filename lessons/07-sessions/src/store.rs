//! Where sessions live: in this worker's memory, or in Redis.
//!
//! The memory store is the usual first version — a map in the process — and
//! it is exactly as good as the routing in front of it: a session made by
//! worker 1 does not exist in worker 2. The Redis store keeps every session
//! in one place that every worker (and every machine) reads: a key per
//! session, the value as JSON, and a time to live refreshed on each use
//! (`GETEX … EX`, one round trip), so an idle session expires by itself and
//! an active one does not.
//!
//! Session ids are 128 random bits from the operating system's CSPRNG, in
//! hex: unguessable, so knowing one session id tells nothing about another.
//! (A counter, a timestamp or `Math.random()` would be guessable.)

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use supervisor::WorkerId;

/// What a session remembers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub user: String,
    /// The worker that made it, to show in answers where it came from.
    pub made_by: WorkerId,
}

/// Why a store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("a stored session is not valid JSON: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("no random bytes from the operating system: {0}")]
    Random(getrandom::Error),
    #[error("the session store is full of live sessions: try again later")]
    Full,
}

/// A session store. Either way, a session expires `ttl` after its last
/// use, in whole seconds (at least one).
#[derive(Debug)]
pub enum Store {
    /// A map in this worker's memory: other workers never see it.
    Memory { map: Mutex<Sessions>, ttl: Duration },
    /// One Redis for every worker.
    Redis {
        connection: ConnectionManager,
        ttl: Duration,
    },
}

/// The in-memory store's sessions, bounded twice.
///
/// Redis removes an expired key by itself; a map does not. A session that
/// is never read again would stay for ever, and `POST /login` costs a
/// client nothing: 1.5 M logins with a one-second TTL took each worker from
/// 5 to 139 MB. So expired sessions are swept out, and the map has a
/// capacity past which a login is refused (503) rather than admitted.
#[derive(Debug)]
pub struct Sessions {
    map: HashMap<String, (Session, Instant)>,
    capacity: usize,
    /// The next sweep comes when the map reaches this size: twice what was
    /// left after the last one, so sweeping costs O(1) per login on average.
    sweep_at: usize,
}

/// The smallest size at which a sweep is worth it.
const FIRST_SWEEP: usize = 1024;

impl Sessions {
    pub fn new(capacity: usize) -> Sessions {
        Sessions {
            map: HashMap::new(),
            capacity: capacity.max(1),
            sweep_at: FIRST_SWEEP,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }

    /// Stores `session` until `expires`; false if the store is full of
    /// sessions that are all still alive.
    fn insert(&mut self, id: String, session: Session, expires: Instant, now: Instant) -> bool {
        if self.map.len() >= self.sweep_at.min(self.capacity) {
            self.map.retain(|_, (_, expires)| *expires > now);
            self.sweep_at = (self.map.len() * 2).max(FIRST_SWEEP);
        }
        if self.map.len() >= self.capacity {
            return false;
        }
        self.map.insert(id, (session, expires));
        true
    }
}

/// Redis keys of sessions start with this.
const PREFIX: &str = "session:";

// ANCHOR: store
impl Store {
    /// True for the store in Redis, which can be away.
    pub fn is_redis(&self) -> bool {
        matches!(self, Store::Redis { .. })
    }

    /// A session's time to live, in the whole seconds Redis and a cookie's
    /// `Max-Age` both count in.
    pub fn ttl_secs(&self) -> u64 {
        match self {
            Store::Memory { ttl, .. } | Store::Redis { ttl, .. } => ttl.as_secs().max(1),
        }
    }

    /// Saves `session` under a new id, and returns the id.
    pub async fn create(&self, session: &Session) -> Result<String, StoreError> {
        let id = new_id()?;
        let ttl = self.ttl_secs();
        match self {
            Store::Memory { map, .. } => {
                let now = Instant::now();
                let expires = now + Duration::from_secs(ttl);
                if !lock(map).insert(id.clone(), session.clone(), expires, now) {
                    return Err(StoreError::Full);
                }
            }
            Store::Redis { connection, .. } => {
                let value = serde_json::to_string(session)?;
                redis::cmd("SET")
                    .arg(format!("{PREFIX}{id}"))
                    .arg(value)
                    .arg("EX")
                    .arg(ttl)
                    .query_async::<()>(&mut connection.clone())
                    .await?;
            }
        }
        Ok(id)
    }

    /// The session with this id, if it exists here and has not expired;
    /// its time to live starts again.
    pub async fn get(&self, id: &str) -> Result<Option<Session>, StoreError> {
        let ttl = self.ttl_secs();
        match self {
            Store::Memory { map, .. } => {
                let map = &mut lock(map).map;
                let now = Instant::now();
                match map.get_mut(id) {
                    Some((session, expires)) if *expires > now => {
                        *expires = now + Duration::from_secs(ttl);
                        Ok(Some(session.clone()))
                    }
                    Some(_) => {
                        map.remove(id);
                        Ok(None)
                    }
                    None => Ok(None),
                }
            }
            Store::Redis { connection, .. } => {
                let value: Option<String> = redis::cmd("GETEX")
                    .arg(format!("{PREFIX}{id}"))
                    .arg("EX")
                    .arg(ttl)
                    .query_async(&mut connection.clone())
                    .await?;
                Ok(value.map(|v| serde_json::from_str(&v)).transpose()?)
            }
        }
    }
}

/// 128 random bits from the operating system, as 32 hex digits.
fn new_id() -> Result<String, StoreError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(StoreError::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
// ANCHOR_END: store

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session {
            user: "ada".into(),
            made_by: WorkerId(1),
        }
    }

    #[test]
    fn expired_sessions_are_swept_and_live_ones_bounded() {
        let mut sessions = Sessions::new(50_000);
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        // A million logins, 20,000 a second, each session living a second
        // and never read again: about 20,000 are alive at any moment, and
        // a sweep leaves the map at most twice that.
        for n in 0..1_000_000u64 {
            let now = t0 + Duration::from_micros(n * 50);
            assert!(sessions.insert(n.to_string(), session(), now + second, now));
        }
        assert!(sessions.len() <= 40_000, "{} sessions kept", sessions.len());

        // Full of live sessions: a new login is refused, not admitted.
        let mut full = Sessions::new(3);
        for n in 0..3 {
            assert!(full.insert(n.to_string(), session(), t0 + second, t0));
        }
        assert!(!full.insert("x".into(), session(), t0 + second, t0));
        // Once they have expired, there is room again.
        assert!(full.insert("y".into(), session(), t0 + 3 * second, t0 + 2 * second));
        assert_eq!(full.len(), 1);
    }

    #[test]
    fn ids_are_128_bits_and_do_not_repeat() -> Result<(), StoreError> {
        let ids: std::collections::HashSet<String> =
            (0..1000).map(|_| new_id()).collect::<Result<_, _>>()?;
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| id.len() == 32));
        Ok(())
    }
}
