//! A session's two ends as the relay sees them: [`Peer`], what the routing table holds (the
//! bounded queue of frames to write, never awaited, and the session's two signals), and
//! [`Mailbox`], what the session itself keeps (the queue's receiving end and the same signals).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use flexim_protocol::datum::Status;
use flexim_protocol::status;
use tokio::sync::{Notify, mpsc};

use crate::table::{Outlet, Refused};

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
}

/// The relay's handle on one session.
#[derive(Clone)]
pub(crate) struct Peer {
    /// Frames for the session's writer; bounded by `Limits::outbound_queue`, never awaited.
    tx: mpsc::Sender<Bytes>,
    /// Its signals.
    signals: Arc<Signals>,
}

/// The session's end: what the relay sends it.
pub(crate) struct Mailbox {
    /// Frames to write (messages, presence, receipts).
    rx: mpsc::Receiver<Bytes>,
    /// Its signals.
    signals: Arc<Signals>,
}

/// A new session's two ends, its queue bounded to `capacity` frames.
pub(crate) fn pair(capacity: usize) -> (Peer, Mailbox) {
    let (tx, rx) = mpsc::channel(capacity);
    let signals = Arc::new(Signals::default());
    (
        Peer {
            tx,
            signals: signals.clone(),
        },
        Mailbox { rx, signals },
    )
}

impl Outlet for Peer {
    fn offer(&self, frame: Bytes) -> Result<(), Refused> {
        self.tx.try_send(frame).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Refused::Full,
            mpsc::error::TrySendError::Closed(_) => Refused::Closed,
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
                Some(frame) => FromRelay::Frame(frame),
                None => FromRelay::Gone,
            },
            () = signals.close.notified() => FromRelay::Close(reason(signals)),
            () = signals.stored.notified() => FromRelay::Stored,
        }
    }

    /// A frame already queued, if any.
    pub(crate) fn try_recv(&mut self) -> Option<Bytes> {
        self.rx.try_recv().ok()
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

/// Why the session is asked to close.
fn reason(signals: &Signals) -> Status {
    signals
        .reason
        .lock()
        .expect("close reason lock")
        .clone()
        .unwrap_or_else(|| Status::new(status::TAKEN_OVER, "closed by the server"))
}
