//! Request/response over IPC: a question, and the answer to *that* question.
//!
//! Node has no built-in for this: it is `worker.send` plus a correlation id
//! that the reply carries back, so that answers cannot be mixed up when
//! several questions are out at once. Each question waits on its own
//! one-shot channel, found by its id when the reply arrives (the worker's
//! watcher delivers it directly, without queueing behind events). A worker
//! that exits fails its questions at once; one that never answers fails
//! them at the timeout.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::oneshot;

use super::{Cluster, lock};
use crate::ipc::{Beat, ToWorker};
use crate::role::WorkerId;

/// Why a question got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    #[error("worker {id} did not answer within {}ms", after.as_millis())]
    Timeout { id: WorkerId, after: Duration },
    #[error("worker {id} is gone")]
    Gone { id: WorkerId },
    /// The question has no JSON form; nothing was sent.
    #[error("the question for worker {id} cannot be sent: it has no JSON form ({reason})")]
    NotJson { id: WorkerId, reason: String },
    /// A heartbeat's answer came back for a question, or a reply for a
    /// heartbeat: the worker speaks the protocol wrongly.
    #[error("worker {id} answered with the wrong kind of reply")]
    WrongKind { id: WorkerId },
}

/// What came back for a question: a lesson's reply, or a heartbeat's. The
/// two share the correlation ids and the table of waiting questions; each
/// asker takes only the kind it asked for.
#[derive(Debug)]
pub(super) enum Answer {
    Reply(serde_json::Value),
    Beat(Beat),
}

/// The answers to [`Cluster::ask_all`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gathered {
    /// Who answered, and what.
    pub answers: BTreeMap<WorkerId, serde_json::Value>,
    /// Who did not, and why.
    pub missing: BTreeMap<WorkerId, AskError>,
}

impl Cluster {
    /// Asks one worker a question and waits, at most `timeout`, for its
    /// answer ([`crate::Worker::questions`] and [`crate::Worker::reply`] on
    /// the other side).
    pub async fn ask(
        &self,
        id: WorkerId,
        body: &impl serde::Serialize,
        timeout: Duration,
    ) -> Result<serde_json::Value, AskError> {
        let body = serde_json::to_value(body).map_err(|error| AskError::NotJson {
            id,
            reason: error.to_string(),
        })?;
        match self
            .ask_with(id, |seq| ToWorker::Request { seq, body }, timeout)
            .await?
        {
            Answer::Reply(body) => Ok(body),
            Answer::Beat(_) => Err(AskError::WrongKind { id }),
        }
    }

    /// Sends worker `id` a heartbeat and waits, at most `timeout`, for
    /// what its server made of it.
    pub(super) async fn heartbeat(
        &self,
        id: WorkerId,
        timeout: Duration,
    ) -> Result<Beat, AskError> {
        match self
            .ask_with(id, |seq| ToWorker::Heartbeat { seq }, timeout)
            .await?
        {
            Answer::Beat(beat) => Ok(beat),
            Answer::Reply(_) => Err(AskError::WrongKind { id }),
        }
    }

    /// Sends what `message` builds from a fresh correlation id, and waits
    /// for the reply that carries it back.
    pub(super) async fn ask_with(
        &self,
        id: WorkerId,
        message: impl FnOnce(u64) -> ToWorker,
        timeout: Duration,
    ) -> Result<Answer, AskError> {
        let seq = self
            .inner
            .next_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (answer_tx, answer) = oneshot::channel();
        lock(&self.inner.pending).insert(seq, (id, answer_tx));
        let to_worker = self.view(|s| s.workers.get(&id).map(|seen| seen.to_worker.clone()));
        let sent = to_worker.is_some_and(|to_worker| to_worker.send(&message(seq)).is_ok());
        if !sent {
            lock(&self.inner.pending).remove(&seq);
            return Err(AskError::Gone { id });
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(answer)) => Ok(answer),
            // The worker exited; its questions were dropped.
            Ok(Err(_)) => Err(AskError::Gone { id }),
            Err(_) => {
                lock(&self.inner.pending).remove(&seq);
                Err(AskError::Timeout { id, after: timeout })
            }
        }
    }

    /// Hands the answer to question `seq` to whoever waits for it. No
    /// waiter means the question timed out already: the answer is dropped.
    pub(super) fn answer(&self, seq: u64, answer: Answer) {
        if let Some((_, waiter)) = lock(&self.inner.pending).remove(&seq) {
            let _ = waiter.send(answer);
        }
    }

    /// Fails the questions worker `id` will never answer (its channel
    /// closed), now rather than at their timeout.
    pub(super) fn forget_questions(&self, id: WorkerId) {
        lock(&self.inner.pending).retain(|_, (asked, _)| *asked != id);
    }

    /// Asks every running worker the same question at once and gathers the
    /// answers that arrive within `timeout`; the rest are listed as missing,
    /// with the reason.
    pub async fn ask_all(&self, body: &impl serde::Serialize, timeout: Duration) -> Gathered {
        let body = match serde_json::to_value(body) {
            Ok(body) => body,
            // Not sent to anyone: each worker is missing, with the reason
            // (sending `null` in its place would be a different question).
            Err(error) => {
                let missing = (self.workers().into_iter())
                    .map(|id| {
                        (
                            id,
                            AskError::NotJson {
                                id,
                                reason: error.to_string(),
                            },
                        )
                    })
                    .collect();
                return Gathered {
                    answers: BTreeMap::new(),
                    missing,
                };
            }
        };
        let mut asks = tokio::task::JoinSet::new();
        for id in self.workers() {
            let cluster = self.clone();
            let body = body.clone();
            asks.spawn(async move { (id, cluster.ask(id, &body, timeout).await) });
        }
        let mut gathered = Gathered::default();
        while let Some(Ok((id, answer))) = asks.join_next().await {
            match answer {
                Ok(body) => {
                    gathered.answers.insert(id, body);
                }
                Err(error) => {
                    gathered.missing.insert(id, error);
                }
            }
        }
        gathered
    }
}
