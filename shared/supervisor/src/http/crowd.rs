//! Making room: which connections a full worker may close.
//!
//! A worker serves at most so many connections at once (its file limit less
//! a reserve), and a connection that sends nothing holds its place until
//! hyper's header timeout, 30 s. So a few hundred clients that connect and
//! say nothing — a load balancer's spare connections, a slow-loris — used
//! to lock every new client out for those 30 s, all strategies alike.
//!
//! Under pressure the quiet ones go first. Every connection says here
//! whether it is busy (a request in flight) or idle, and since when. When
//! the worker is nearly full, each new connection closes the connection
//! that has been idle longest, if it has been idle a while; when it is
//! full, it closes every such connection it needs. Closing uses hyper's
//! graceful shutdown: a connection between requests closes at once, one
//! serving a request finishes it first. A client that was about to send on
//! a connection idle that long can lose that request, which beats every new
//! client waiting half a minute.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// How long a connection must have been idle before pressure may close it:
/// long enough that a client using its connection is never taken for a
/// quiet one.
pub(super) const QUIET_FOR: Duration = Duration::from_secs(1);

/// Marks a connection as busy rather than idle.
const BUSY: u64 = u64::MAX;

/// The connections of one server.
#[derive(Debug)]
pub(super) struct Crowd {
    epoch: Instant,
    live: Vec<Weak<Presence>>,
}

/// One connection's state, shared by its task and the [`Crowd`].
#[derive(Debug)]
pub(super) struct Presence {
    epoch: Instant,
    /// Microseconds after `epoch` since which it is idle, or [`BUSY`].
    idle_since: AtomicU64,
    evict: Notify,
}

impl Crowd {
    pub(super) fn new() -> Crowd {
        Crowd {
            epoch: Instant::now(),
            live: Vec::new(),
        }
    }

    /// A new connection, idle until its first request.
    pub(super) fn join(&mut self) -> Arc<Presence> {
        let presence = Arc::new(Presence {
            epoch: self.epoch,
            idle_since: AtomicU64::new(micros(self.epoch, Instant::now())),
            evict: Notify::new(),
        });
        self.live.push(Arc::downgrade(&presence));
        presence
    }

    /// Closes the connection idle longest, if it has been idle at least
    /// [`QUIET_FOR`] at `now`; false if there is none.
    pub(super) fn close_quietest(&mut self, now: Instant) -> bool {
        self.live.retain(|weak| weak.strong_count() > 0);
        let quietest = self
            .live
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|presence| presence.idle_since.load(Ordering::Relaxed) != BUSY)
            .min_by_key(|presence| presence.idle_since.load(Ordering::Relaxed));
        match quietest {
            Some(presence) if presence.idle_for(now) >= QUIET_FOR => {
                // Busy from now on for the crowd's purposes: it is going.
                presence.idle_since.store(BUSY, Ordering::Relaxed);
                presence.evict.notify_one();
                true
            }
            _ => false,
        }
    }

    /// When the connection idle longest will have been idle [`QUIET_FOR`]:
    /// the moment a full worker can next make room. `None` if none is idle.
    pub(super) fn next_quiet_at(&self) -> Option<Instant> {
        self.live
            .iter()
            .filter_map(Weak::upgrade)
            .map(|presence| presence.idle_since.load(Ordering::Relaxed))
            .filter(|since| *since != BUSY)
            .min()
            .map(|since| self.epoch + Duration::from_micros(since) + QUIET_FOR)
    }
}

impl Presence {
    pub(super) fn busy(&self) {
        self.idle_since.store(BUSY, Ordering::Relaxed);
    }

    pub(super) fn idle(&self) {
        self.idle_since
            .store(micros(self.epoch, Instant::now()), Ordering::Relaxed);
    }

    /// Resolves when pressure asks this connection to close.
    pub(super) async fn evicted(&self) {
        self.evict.notified().await;
    }

    fn idle_for(&self, now: Instant) -> Duration {
        match self.idle_since.load(Ordering::Relaxed) {
            BUSY => Duration::ZERO,
            since => now.saturating_duration_since(self.epoch + Duration::from_micros(since)),
        }
    }
}

fn micros(epoch: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch).as_micros()).unwrap_or(BUSY - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_quiet_longest_goes_first_and_only_when_quiet_enough() {
        let mut crowd = Crowd::new();
        let start = crowd.epoch;
        let first = crowd.join();
        let second = crowd.join();
        let busy = crowd.join();
        busy.busy();
        // Nobody quiet for a second yet.
        assert!(!crowd.close_quietest(start));
        assert!(
            crowd
                .next_quiet_at()
                .is_some_and(|at| at >= start + QUIET_FOR)
        );

        let later = start + QUIET_FOR * 2;
        second
            .idle_since
            .store(micros(start, start), Ordering::Relaxed);
        first
            .idle_since
            .store(micros(start, start + QUIET_FOR / 2), Ordering::Relaxed);
        assert!(crowd.close_quietest(later));
        // `second` was idle longer: it was asked to go, and is not asked twice.
        assert_eq!(second.idle_since.load(Ordering::Relaxed), BUSY);
        assert_ne!(first.idle_since.load(Ordering::Relaxed), BUSY);
        assert!(crowd.close_quietest(later));
        assert_eq!(first.idle_since.load(Ordering::Relaxed), BUSY);
        // Only the busy one is left.
        assert!(!crowd.close_quietest(later));

        // Gone connections are forgotten.
        drop((first, second, busy));
        assert!(!crowd.close_quietest(later));
        assert!(crowd.live.is_empty());
    }
}
