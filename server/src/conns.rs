//! The server's connections as a whole: how many may be open at once
//! (`Limits::max_connections`), how many from one address and how fast
//! (`Limits::max_connections_per_address`, `Limits::connection_rate`), how a connection over
//! a limit is refused, and the tasks that serve them, which shutdown waits for.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TrackedFuture;

use crate::config::Limits;
use crate::frames::status_frame;
use crate::rates::{Buckets, address_key, wait_text};
use flexim_protocol::status;

/// Every connection's task and the slots they hold.
pub(crate) struct Connections {
    /// The connection tasks (both transports, refused ones too): shutdown waits for them.
    tracker: TaskTracker,
    /// One permit per connection that may be open; a connection holds one until it closes.
    slots: Arc<Semaphore>,
    /// The limit, for the refusal's text.
    max: usize,
    /// Open connections by address ([`address_key`]); an address leaves the map when its
    /// last connection closes, so the map holds only addresses with connections open.
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// The most connections one address may have open (0: no such limit).
    per_address: usize,
    /// New connections per address and second: one handshake per connection, so this is
    /// also the rate of handshakes (each costs the server X25519 operations) one address
    /// can make it do.
    rate: Buckets<IpAddr>,
}

/// A connection's place under the limits; dropping it frees the place.
pub(crate) struct Slot {
    /// Held for the connection's lifetime: its place under `max_connections`.
    _permit: OwnedSemaphorePermit,
    /// Its address's count, given back on drop.
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// The address counted.
    address: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("address count lock");
        if let Some(n) = open.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.address);
            }
        }
    }
}

/// Why a new connection is refused; the refusal tells the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The server has `max_connections` open.
    ServerFull,
    /// The address has `max_connections_per_address` open.
    AddressFull,
    /// The address opened connections faster than `connection_rate`; one is allowed again
    /// after this long.
    TooFast(Duration),
}

impl Refusal {
    /// The Status code the client is told.
    pub(crate) fn code(self) -> i8 {
        match self {
            Refusal::ServerFull => status::SERVER_FULL,
            Refusal::AddressFull | Refusal::TooFast(_) => status::ADDRESS_FULL,
        }
    }
}

impl Connections {
    /// Room for the connections `limits` allow.
    pub(crate) fn new(limits: &Limits) -> Self {
        let max = limits.max_connections;
        Connections {
            tracker: TaskTracker::new(),
            slots: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            max,
            open: Arc::new(Mutex::new(HashMap::new())),
            per_address: limits.max_connections_per_address,
            rate: Buckets::new(limits.connection_rate),
        }
    }

    /// A place for a new connection from `peer`, or why there is none. The rate is checked
    /// first, so that connections refused for the count still spend the address's tokens: an
    /// address that keeps knocking at its limit is slowed too.
    pub(crate) fn admit(&self, peer: IpAddr) -> Result<Slot, Refusal> {
        let address = address_key(peer);
        self.rate
            .take(address, Instant::now())
            .map_err(Refusal::TooFast)?;
        let mut open = self.open.lock().expect("address count lock");
        let n = open.entry(address).or_insert(0);
        if self.per_address > 0 && *n >= self.per_address {
            return Err(Refusal::AddressFull);
        }
        let permit = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::ServerFull)?;
        *n += 1;
        drop(open);
        Ok(Slot {
            _permit: permit,
            open: self.open.clone(),
            address,
        })
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

    /// The Status a connection over a limit is told before it is closed.
    pub(crate) fn refusal(&self, why: Refusal) -> bytes::Bytes {
        match why {
            Refusal::ServerFull => status_frame(
                status::SERVER_FULL,
                format!(
                    "the server is full ({} connections); try again later",
                    self.max
                ),
            ),
            Refusal::AddressFull => status_frame(
                status::ADDRESS_FULL,
                format!(
                    "your address has {} connections open, as many as one address may; \
                     close one or try again later",
                    self.per_address
                ),
            ),
            Refusal::TooFast(wait) => status_frame(
                status::ADDRESS_FULL,
                format!(
                    "your address opens connections faster than {} allows; try again in {}",
                    self.rate.rate().words(),
                    wait_text(wait)
                ),
            ),
        }
    }

    /// Connection tasks running now.
    pub(crate) fn len(&self) -> usize {
        self.tracker.len()
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
