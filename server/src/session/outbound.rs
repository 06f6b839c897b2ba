//! The outbound side of a session: the sink frames go to, the link that seals them once the
//! handshake is done, and whether any were fed since the last flush. Frames fed between two flushes go out together (one system call on TCP), and
//! the session flushes once the datums at hand are handled.

use std::io;

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
}

impl<Si: Sink<Bytes, Error = io::Error> + Unpin> Outbound<Si> {
    /// An outbound side with nothing fed yet.
    pub(crate) fn new(sink: Si) -> Self {
        Outbound {
            sink,
            unflushed: false,
            link: None,
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
        let frame = match &mut self.link {
            Some(link) => Bytes::from(link.seal(&frame).map_err(io::Error::other)?),
            None => frame,
        };
        self.sink.feed(frame).await
    }

    /// Writes what was fed, if anything was.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        if !self.unflushed {
            return Ok(());
        }
        self.unflushed = false;
        self.sink.flush().await
    }

    /// Feeds a frame and flushes at once.
    pub(crate) async fn send(&mut self, frame: Bytes) -> io::Result<()> {
        self.feed(frame).await?;
        self.flush().await
    }
}
