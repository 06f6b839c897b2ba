//! The outbound side of a session: the sink frames go to, the link that seals them once the
//! handshake is done, and whether any were fed since the last flush. Frames fed between two flushes go out together (one system call on TCP), and
//! the session flushes once the datums at hand are handled.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flexim_protocol::{Link, LinkError};
use futures_util::{Sink, SinkExt};

/// A session's sink of frames.
pub(crate) struct Outbound<Si> {
    /// Where frames go (a TCP writer, a WebSocket, a channel in tests).
    sink: Si,
    /// Frames were fed and not flushed yet.
    unflushed: bool,
    /// The connection's Noise link once the handshake is done: every frame fed after it goes
    /// out as a record, and every frame that comes in is opened with it. It lives here because
    /// sealing must follow the order frames are written in (the nonces count them).
    link: Option<Link>,
    /// How long one feed or flush may take ([`crate::config::Limits::write_timeout`]).
    deadline: Duration,
    /// The relay whose metrics count every error Status written, by code (`/metrics`): all
    /// of them pass here, whichever part of the server made them.
    relay: Arc<crate::relay::Relay>,
}

/// A write that did not finish within its deadline: the client stopped reading.
fn timed_out(deadline: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("the client read nothing for {deadline:?}"),
    )
}

impl<Si: Sink<Bytes, Error = io::Error> + Unpin> Outbound<Si> {
    /// An outbound side with nothing fed yet.
    pub(crate) fn new(sink: Si, deadline: Duration, relay: Arc<crate::relay::Relay>) -> Self {
        Outbound {
            sink,
            unflushed: false,
            link: None,
            deadline,
            relay,
        }
    }

    /// The handshake is done: from now on frames are sealed and records opened.
    pub(crate) fn link(&mut self, link: Link) {
        self.link = Some(link);
    }

    /// Whether the link is up.
    pub(crate) fn is_linked(&self) -> bool {
        self.link.is_some()
    }

    /// Opens a record from the client (the link must be up).
    pub(crate) fn open(&mut self, record: &[u8]) -> Result<Vec<u8>, LinkError> {
        match &mut self.link {
            Some(link) => link.open(record),
            None => Err(LinkError::NotARecord(record.first().copied().unwrap_or(0))),
        }
    }

    /// Queues a frame for the next flush, sealed if the link is up.
    pub(crate) async fn feed(&mut self, frame: Bytes) -> io::Result<()> {
        self.unflushed = true;
        if let Some(code) = crate::frames::status_code(&frame)
            && code < 0
        {
            self.relay.metrics.refused(code);
        }
        let frame = match &mut self.link {
            Some(link) => Bytes::from(link.seal(&frame).map_err(io::Error::other)?),
            None => frame,
        };
        match tokio::time::timeout(self.deadline, self.sink.feed(frame)).await {
            Ok(fed) => fed,
            Err(_) => Err(timed_out(self.deadline)),
        }
    }

    /// Writes what was fed, if anything was.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        if !self.unflushed {
            return Ok(());
        }
        self.unflushed = false;
        match tokio::time::timeout(self.deadline, self.sink.flush()).await {
            Ok(flushed) => flushed,
            Err(_) => Err(timed_out(self.deadline)),
        }
    }

    /// Feeds a frame and flushes at once.
    pub(crate) async fn send(&mut self, frame: Bytes) -> io::Result<()> {
        self.feed(frame).await?;
        self.flush().await
    }
}
