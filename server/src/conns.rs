//! The server's connections as a whole: how many may be open at once
//! (`Limits::max_connections`), how a connection over the limit is refused, and the tasks
//! that serve them, which shutdown waits for.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TrackedFuture;

use crate::frames::status_frame;
use flexim_protocol::status;

/// Every connection's task and the slots they hold.
pub(crate) struct Connections {
    /// The connection tasks (both transports, refused ones too): shutdown waits for them.
    tracker: TaskTracker,
    /// One permit per connection that may be open; a connection holds one until it closes.
    slots: Arc<Semaphore>,
    /// The limit, for the refusal's text.
    max: usize,
}

/// A connection's place under the limit; dropping it frees the place.
pub(crate) struct Slot(
    /// Held for the connection's lifetime.
    #[allow(dead_code)]
    OwnedSemaphorePermit,
);

impl Connections {
    /// Room for `max` connections at once.
    pub(crate) fn new(max: usize) -> Self {
        Connections {
            tracker: TaskTracker::new(),
            slots: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            max,
        }
    }

    /// A place for a new connection, or `None` when the server is full.
    pub(crate) fn try_slot(&self) -> Option<Slot> {
        self.slots.clone().try_acquire_owned().ok().map(Slot)
    }

    /// Spawns a connection's task.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task);
    }

    /// A connection's future that shutdown waits for (WebSocket sessions are spawned by the
    /// HTTP server, not by us).
    pub(crate) fn track<F: Future>(&self, task: F) -> TrackedFuture<F> {
        self.tracker.track_future(task)
    }

    /// The Status a connection over the limit is told before it is closed.
    pub(crate) fn refusal(&self) -> bytes::Bytes {
        status_frame(
            status::SERVER_FULL,
            format!(
                "the server is full ({} connections); try again later",
                self.max
            ),
        )
    }

    /// Waits, at most `grace`, until every connection task has ended (no new ones may start
    /// then). Returns whether they all did.
    pub(crate) async fn wait(&self, grace: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }
}
