//! A session's two ends as the relay sees them: [`Peer`], what the routing table holds (the
//! bounded queue of frames to write, never awaited, and the session's two signals), and
//! [`Mailbox`], what the session itself keeps (the queue's receiving end and the same signals).
//! [`Queued`] is the server-wide count of the bytes waiting in all those queues, and the
//! budget it keeps.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use flexim_protocol::datum::Status;
use flexim_protocol::status;
use tokio::sync::{Notify, mpsc};

use crate::metrics::{Limit, Metrics};
use crate::table::{Outlet, Refused};

/// The bytes waiting in every session's queue, against a server-wide budget.
///
/// When the budget is reached, a frame for a session that already has more than
/// `shed_above` bytes waiting is refused as if its queue were full: that session is a slow
/// reader, its messages go to the store and it is disconnected, while sessions that keep up
/// (whose queues stay nearly empty) are still written to. So the budget sheds the slowest
/// and never the fast path of others; it can be passed by up to `shed_above` bytes per
/// session that keeps up, which is bounded by the number of connections.
pub(crate) struct Queued {
    /// Bytes queued now, all sessions together.
    bytes: AtomicUsize,
    /// Frames queued now, all sessions together, for `/metrics` only.
    frames: AtomicUsize,
    /// The budget (`Limits::queued_bytes_budget`).
    budget: usize,
    /// Bytes per session's queue (`Limits::outbound_bytes`).
    per_session: usize,
    /// Above how many queued bytes a session is shed once the budget is reached.
    shed_above: usize,
    /// Where the limits that fire are counted.
    metrics: Arc<Metrics>,
}

impl Queued {
    /// A budget of `budget` bytes over all queues, `per_session` bytes for each.
    pub(crate) fn new(budget: usize, per_session: usize, metrics: Arc<Metrics>) -> Self {
        Queued {
            bytes: AtomicUsize::new(0),
            frames: AtomicUsize::new(0),
            budget,
            per_session,
            // A session that keeps up has at most a few frames waiting; one with a sixteenth
            // of its queue's bytes waiting is falling behind.
            shed_above: per_session / 16,
            metrics,
        }
    }

    /// Bytes queued now, for `/metrics`.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Frames queued now, for `/metrics`.
    pub(crate) fn frames(&self) -> usize {
        self.frames.load(Ordering::Relaxed)
    }

    /// Whether a session with `mine` bytes queued may queue `len` more; counts the limit
    /// that says no.
    fn admits(&self, mine: usize, len: usize) -> bool {
        if mine + len > self.per_session {
            self.metrics.hit(Limit::OutboundQueue);
            return false;
        }
        if self.bytes.load(Ordering::Relaxed) + len > self.budget && mine >= self.shed_above {
            self.metrics.hit(Limit::QueuedBudget);
            return false;
        }
        true
    }
}

/// The signals the relay gives a session besides frames.
#[derive(Default)]
struct Signals {
    /// Wakes the session to close; a permit is stored if it is not waiting yet.
    close: Notify,
    /// The Status to send before closing; the first reason wins.
    reason: Mutex<Option<Status>>,
    /// Wakes the session to deliver from the store: messages for it were stored after it
    /// looked (while it was catching up, or when it was made the active session).
    stored: Notify,
    /// Bytes in the session's queue now, against `Limits::outbound_bytes`: a frame count
    /// alone lets a queue of large messages pin tens of megabytes.
    queued: AtomicUsize,
}

/// The relay's handle on one session.
#[derive(Clone)]
pub(crate) struct Peer {
    /// Frames for the session's writer; bounded by `Limits::outbound_queue` frames and by
    /// `Limits::outbound_bytes`, never awaited: a full queue refuses the frame. Each frame
    /// goes with when it was queued, for the delivery histogram.
    tx: mpsc::Sender<(Bytes, Instant)>,
    /// Its signals.
    signals: Arc<Signals>,
    /// The server-wide count of queued bytes.
    queued: Arc<Queued>,
}

/// The session's end: what the relay sends it.
pub(crate) struct Mailbox {
    /// Frames to write (messages, presence, receipts), with when each was queued.
    rx: mpsc::Receiver<(Bytes, Instant)>,
    /// Its signals.
    signals: Arc<Signals>,
    /// The server-wide count of queued bytes, given back as frames leave the queue.
    queued: Arc<Queued>,
}

/// A new session's two ends, its queue bounded to `capacity` frames and counted in `queued`.
pub(crate) fn pair(capacity: usize, queued: Arc<Queued>) -> (Peer, Mailbox) {
    let (tx, rx) = mpsc::channel(capacity);
    let signals = Arc::new(Signals::default());
    (
        Peer {
            tx,
            signals: signals.clone(),
            queued: queued.clone(),
        },
        Mailbox {
            rx,
            signals,
            queued,
        },
    )
}

impl Outlet for Peer {
    fn offer(&self, frame: Bytes) -> Result<(), Refused> {
        let len = frame.len();
        let mine = &self.signals.queued;
        if self.tx.is_closed() {
            return Err(Refused::Closed);
        }
        if !self.queued.admits(mine.load(Ordering::Relaxed), len) {
            return Err(Refused::Full);
        }
        // Counted before the frame is queued, so that the receiving end never takes back
        // more than was added.
        mine.fetch_add(len, Ordering::Relaxed);
        self.queued.bytes.fetch_add(len, Ordering::Relaxed);
        self.queued.frames.fetch_add(1, Ordering::Relaxed);
        self.tx.try_send((frame, Instant::now())).map_err(|e| {
            mine.fetch_sub(len, Ordering::Relaxed);
            self.queued.bytes.fetch_sub(len, Ordering::Relaxed);
            self.queued.frames.fetch_sub(1, Ordering::Relaxed);
            match e {
                mpsc::error::TrySendError::Full(_) => {
                    self.queued.metrics.hit(Limit::OutboundQueue);
                    Refused::Full
                }
                mpsc::error::TrySendError::Closed(_) => Refused::Closed,
            }
        })
    }
}

impl Peer {
    /// Asks the session to close after telling the client `code` and `text`.
    pub(crate) fn close(&self, code: i8, text: &str) {
        let mut reason = self.signals.reason.lock().expect("close reason lock");
        if reason.is_none() {
            *reason = Some(Status::new(code, text));
        }
        self.signals.close.notify_one();
    }

    /// Tells the session that the store has messages for it.
    pub(crate) fn wake(&self) {
        self.signals.stored.notify_one();
    }
}

/// What the relay has for a session.
pub(crate) enum FromRelay {
    /// A frame to write.
    Frame(Bytes),
    /// The relay let the session go (it was taken over): it is told why by [`Mailbox::closed`].
    Gone,
    /// Close after telling the client this.
    Close(Status),
    /// The store has messages for the session.
    Stored,
}

impl Mailbox {
    /// Waits for the next thing the relay has for the session. Cancel-safe: a frame stays
    /// queued and a signal stays pending if this is dropped before it completes.
    pub(crate) async fn next(&mut self) -> FromRelay {
        let signals = &self.signals;
        tokio::select! {
            frame = self.rx.recv() => match frame {
                Some(frame) => FromRelay::Frame(self.taken(frame)),
                None => FromRelay::Gone,
            },
            () = signals.close.notified() => FromRelay::Close(reason(signals)),
            () = signals.stored.notified() => FromRelay::Stored,
        }
    }

    /// A frame already queued, if any.
    pub(crate) fn try_recv(&mut self) -> Option<Bytes> {
        let frame = self.rx.try_recv().ok()?;
        Some(self.taken(frame))
    }

    /// A frame left the queue to be written: its bytes no longer count, and how long it
    /// waited is the delivery histogram's.
    fn taken(&self, (frame, queued_at): (Bytes, Instant)) -> Bytes {
        self.release(&frame);
        self.queued
            .metrics
            .delivery_time
            .observe(queued_at.elapsed());
        frame
    }

    /// A frame left the queue (written or dropped): its bytes no longer count.
    fn release(&self, frame: &Bytes) {
        self.signals
            .queued
            .fetch_sub(frame.len(), Ordering::Relaxed);
        self.queued.bytes.fetch_sub(frame.len(), Ordering::Relaxed);
        self.queued.frames.fetch_sub(1, Ordering::Relaxed);
    }

    /// Waits until the relay asks the session to close, and says why.
    pub(crate) async fn closed(&self) -> Status {
        self.signals.close.notified().await;
        reason(&self.signals)
    }

    /// A handle that wakes this session as the relay would (to look at the store again later).
    pub(crate) fn waker(&self) -> impl Fn() + Send + 'static {
        let signals = self.signals.clone();
        move || signals.stored.notify_one()
    }
}

impl Drop for Mailbox {
    /// The frames still queued when the session ends are dropped with it: their bytes are
    /// given back to the budget.
    fn drop(&mut self) {
        self.rx.close();
        while let Ok((frame, _)) = self.rx.try_recv() {
            self.release(&frame);
        }
    }
}

/// Why the session is asked to close.
fn reason(signals: &Signals) -> Status {
    signals
        .reason
        .lock()
        .expect("close reason lock")
        .clone()
        .unwrap_or_else(|| Status::new(status::TAKEN_OVER, "closed by the server"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_the_budget_only_sessions_that_fall_behind_are_refused() {
        let queued = Queued::new(1000, 1600, Arc::new(Metrics::default()));
        // Under the budget, a session may fill its own queue, not more.
        assert!(queued.admits(0, 1600));
        assert!(!queued.admits(1000, 601));
        queued.bytes.store(1000, Ordering::Relaxed);
        // Over it, a session with a sixteenth of its queue (100 bytes) waiting is shed, and
        // one that keeps up (less waiting) is still written to.
        assert!(!queued.admits(100, 10));
        assert!(queued.admits(99, 10));
        assert!(queued.admits(0, 500));
    }

    #[test]
    fn bytes_come_back_as_frames_leave_and_when_the_session_ends() {
        let queued = Arc::new(Queued::new(1 << 20, 1 << 20, Arc::new(Metrics::default())));
        let (peer, mut mailbox) = pair(8, queued.clone());
        peer.offer(Bytes::from_static(b"12345")).unwrap();
        peer.offer(Bytes::from_static(b"678")).unwrap();
        assert_eq!(queued.bytes(), 8);
        assert_eq!(mailbox.try_recv().as_deref(), Some(&b"12345"[..]));
        assert_eq!(queued.bytes(), 3);
        drop(mailbox);
        assert_eq!(queued.bytes(), 0);
        assert!(matches!(
            peer.offer(Bytes::from_static(b"x")),
            Err(Refused::Closed)
        ));
        assert_eq!(queued.bytes(), 0);
    }
}
