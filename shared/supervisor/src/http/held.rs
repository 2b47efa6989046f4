//! The connections one server holds, and how it takes another.
//!
//! Each connection is a task in one set, known to the [`Crowd`] so that a
//! full server can close its quietest. A connection arrives by three ways
//! (accepted, taken from a closing socket's queue, or the last batch of a
//! drain) and a heartbeat's in-memory one by a fourth; all of them start
//! here the same way, so the accept loop in [`super::Server::serve`] says
//! only *when* to take one.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::conn::Conn;
use super::crowd::Crowd;
use super::probe::probe;
use super::{Request, Response};
use crate::ipc::{self, ToPrimary};

/// A server's connections, and what it needs to serve one more.
pub(super) struct Held<H> {
    conn: Conn,
    handler: H,
    /// Becomes true when the drain begins; every connection watches it.
    drain: watch::Receiver<bool>,
    tasks: JoinSet<()>,
    crowd: Crowd,
}

impl<H, F> Held<H>
where
    H: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    pub(super) fn new(conn: Conn, handler: H, drain: watch::Receiver<bool>) -> Self {
        Held {
            conn,
            handler,
            drain,
            tasks: JoinSet::new(),
            crowd: Crowd::new(),
        }
    }

    /// Connections held now (heartbeats included, while they last).
    pub(super) fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Serves `stream`; `late` if it arrived after the drain began, so its
    /// first response already says `Connection: close`.
    pub(super) fn take(&mut self, stream: TcpStream, late: bool) {
        self.conn.stats.connections.fetch_add(1, Ordering::Relaxed);
        let presence = self.crowd.join();
        let run = (self.conn.clone()).run(
            stream,
            self.handler.clone(),
            self.drain.clone(),
            late,
            Some(presence),
        );
        self.tasks.spawn(run);
    }

    /// Answers heartbeat `seq` through the handler (see `probe`).
    pub(super) fn probe(&mut self, seq: u64, reply: Option<ipc::Sender<ToPrimary>>) {
        let answer = probe(
            self.conn.clone(),
            self.handler.clone(),
            self.drain.clone(),
            seq,
            reply,
        );
        self.tasks.spawn(answer);
    }

    /// At `max`: closes what has been quiet long enough, and says when the
    /// next quiet one will be, to come back then.
    pub(super) fn make_room(&mut self, max: usize) -> Option<Instant> {
        while self.tasks.len() >= max && self.crowd.close_quietest(Instant::now()) {
            // Each close ends its task soon; one is enough per turn
            // unless the set is still over the limit.
            if self.tasks.try_join_next().is_none() {
                break;
            }
        }
        self.crowd.next_quiet_at()
    }

    /// Nearly full: closes the quietest now, before the limit is reached.
    pub(super) fn close_quietest(&mut self) {
        self.crowd.close_quietest(Instant::now());
    }

    /// Waits until one connection ends.
    pub(super) async fn one_ended(&mut self) -> Option<()> {
        self.tasks.join_next().await.map(drop)
    }

    /// Forgets the connections that ended, so the set does not grow
    /// without bound.
    pub(super) fn reap(&mut self) {
        while self.tasks.try_join_next().is_some() {}
    }

    /// Waits for every connection to end.
    pub(super) async fn finish(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}
