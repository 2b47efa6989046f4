//! Round-robin's rotation: which workers the dispatcher may hand a
//! connection to, owned by the supervising loop.
//!
//! Node keeps this in a `RoundRobinHandle` per listening address: `add`
//! puts a worker in the rotation, `remove` takes it out, `close` ends the
//! handle. [`RoundRobin`] is that object on the primary's side. It owns
//! every worker's hand-off channel from the fork to the exit, and publishes
//! the ready ones ([`Routes`]) to the dispatcher's thread, which reads them
//! once per change, not once per connection, and never takes a lock the
//! loop holds. The loop calls `add` when a worker says it is ready,
//! `remove` when it is told to go or its channel closes, and `close` when
//! the cluster stops; nothing else changes the rotation.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::watch;

use super::Cluster;
use crate::handles::HandleSender;
use crate::role::WorkerId;

/// Connections a worker may have been handed and not yet taken.
pub(crate) const MAX_UNACKED: u32 = 4;

/// One worker, as the dispatcher sees it.
#[derive(Debug)]
pub(crate) struct Target {
    /// The worker's slot: what sticky routing keys on, so a replacement
    /// keeps its predecessor's clients.
    pub slot: u32,
    pub sender: HandleSender,
    /// Handed over and not yet acknowledged.
    pub unacked: AtomicU32,
}

impl Target {
    pub fn new(slot: u32, fd: OwnedFd) -> io::Result<Self> {
        Ok(Target {
            slot,
            sender: HandleSender::new(fd)?,
            unacked: AtomicU32::new(0),
        })
    }

    pub fn has_room(&self) -> bool {
        self.unacked.load(Ordering::Relaxed) < MAX_UNACKED
    }

    /// No more connections for this worker: it reads end-of-stream after
    /// the ones already sent, and drains.
    pub fn close(&self) {
        self.sender.close();
    }

    /// Counts the worker's acknowledgements until it closes its end; each
    /// one frees a place and wakes the dispatcher.
    pub async fn count_acks(self: Arc<Self>, cluster: Cluster) {
        while let Ok(acks @ 1..) = self.sender.acks().await {
            let _ = self
                .unacked
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_sub(acks))
                });
            cluster.inner.capacity.notify_one();
        }
    }
}

/// The rotation as the dispatcher reads it.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    /// The workers that take connections now, in id order.
    pub targets: Vec<Arc<Target>>,
    /// The cluster is stopping: hand out what is queued, then stop.
    pub closed: bool,
}

/// The primary's side of round-robin (Node's `RoundRobinHandle`).
#[derive(Debug)]
pub(crate) struct RoundRobin {
    /// Every running worker's hand-off channel.
    channels: BTreeMap<WorkerId, Arc<Target>>,
    /// Those in the rotation.
    serving: BTreeSet<WorkerId>,
    routes: watch::Sender<Routes>,
}

impl RoundRobin {
    /// An empty rotation, and the dispatcher's end of it.
    pub fn new() -> (Self, watch::Receiver<Routes>) {
        let (routes, receiver) = watch::channel(Routes::default());
        let round_robin = RoundRobin {
            channels: BTreeMap::new(),
            serving: BTreeSet::new(),
            routes,
        };
        (round_robin, receiver)
    }

    /// A new worker's hand-off channel, kept until it leaves; not in the
    /// rotation yet.
    pub fn join(&mut self, id: WorkerId, channel: Arc<Target>) {
        self.channels.insert(id, channel);
    }

    /// Worker `id` is ready: it takes its turn from now on.
    pub fn add(&mut self, id: WorkerId) {
        if self.channels.contains_key(&id) && self.serving.insert(id) {
            self.publish();
        }
    }

    /// Worker `id` is leaving (or gone): out of the rotation first, then
    /// its channel is closed, so that it reads end-of-stream after the
    /// connections already sent and drains.
    pub fn remove(&mut self, id: WorkerId) {
        if self.serving.remove(&id) {
            self.publish();
        }
        if let Some(channel) = self.channels.remove(&id) {
            channel.close();
        }
    }

    /// The cluster stops: the dispatcher hands out what the kernel has
    /// queued and ends. The workers keep their channels until each is told
    /// to go.
    pub fn close(&mut self) {
        self.routes.send_modify(|routes| routes.closed = true);
    }

    fn publish(&self) {
        let targets = (self.serving.iter())
            .filter_map(|id| self.channels.get(id).cloned())
            .collect();
        self.routes.send_modify(|routes| routes.targets = targets);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handles;

    /// A worker's hand-off channel, and the worker's end of it.
    fn channel(slot: u32) -> (Arc<Target>, OwnedFd) {
        let (primary, worker) = handles::pair().expect("a socketpair");
        let target = Target::new(slot, primary).expect("registered");
        (Arc::new(target), worker)
    }

    fn routed(routes: &watch::Receiver<Routes>) -> Vec<u32> {
        routes.borrow().targets.iter().map(|t| t.slot).collect()
    }

    /// What the worker's end reads now: `Some(0)` is end-of-stream.
    fn read_now(worker: &OwnedFd) -> Option<usize> {
        use std::os::fd::AsRawFd;
        let mut buf = [0u8; 8];
        let flags = nix::sys::socket::MsgFlags::MSG_DONTWAIT;
        nix::sys::socket::recv(worker.as_raw_fd(), &mut buf, flags).ok()
    }

    #[tokio::test]
    async fn only_ready_workers_are_in_the_rotation_in_id_order() {
        let (mut round_robin, routes) = RoundRobin::new();
        let (one, _w1) = channel(1);
        let (two, _w2) = channel(2);
        round_robin.join(WorkerId(2), two);
        round_robin.join(WorkerId(1), one);
        assert_eq!(routed(&routes), Vec::<u32>::new(), "joined, not ready");
        round_robin.add(WorkerId(2));
        round_robin.add(WorkerId(1));
        assert_eq!(routed(&routes), vec![1, 2]);
        round_robin.add(WorkerId(7));
        assert_eq!(routed(&routes), vec![1, 2], "no channel, no turn");
    }

    #[tokio::test]
    async fn remove_takes_it_out_and_closes_its_channel_once() {
        let (mut round_robin, routes) = RoundRobin::new();
        let (one, w1) = channel(1);
        let (two, w2) = channel(2);
        // As the dispatcher's copy of the rotation and the acknowledgement
        // counter do: dropping the channel would not close it.
        let _held = Arc::clone(&one);
        round_robin.join(WorkerId(1), one);
        round_robin.join(WorkerId(2), two);
        round_robin.add(WorkerId(1));
        round_robin.add(WorkerId(2));
        assert_eq!(read_now(&w1), None, "open: nothing to read yet");
        round_robin.remove(WorkerId(1));
        assert_eq!(routed(&routes), vec![2]);
        assert_eq!(read_now(&w1), Some(0), "its end reads end-of-stream");
        assert_eq!(read_now(&w2), None, "the other one's stays open");
        // A second remove (its exit after its departure) changes nothing,
        // and a removed worker cannot come back with a late `ready`.
        round_robin.remove(WorkerId(1));
        round_robin.add(WorkerId(1));
        assert_eq!(routed(&routes), vec![2]);
    }

    #[tokio::test]
    async fn close_tells_the_dispatcher_and_keeps_the_rotation() {
        let (mut round_robin, mut routes) = RoundRobin::new();
        let (one, w1) = channel(1);
        round_robin.join(WorkerId(1), one);
        round_robin.add(WorkerId(1));
        routes.borrow_and_update();
        round_robin.close();
        assert!(routes.has_changed().unwrap_or(false));
        assert!(routes.borrow().closed);
        // The last batch still goes to it; it is told to go separately.
        assert_eq!(routed(&routes), vec![1]);
        assert_eq!(read_now(&w1), None);
    }
}
