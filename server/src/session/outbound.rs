//! The outbound side of a session: the sink frames go to, and whether any were fed since the
//! last flush. Frames fed between two flushes go out together (one system call on TCP), and
//! the session flushes once the datums at hand are handled.

use std::io;

use bytes::Bytes;
use futures_util::{Sink, SinkExt};

/// A session's sink of frames.
pub(crate) struct Outbound<Si> {
    /// Where frames go (a TCP writer, a WebSocket, a channel in tests).
    sink: Si,
    /// Frames were fed and not flushed yet.
    unflushed: bool,
}

impl<Si: Sink<Bytes, Error = io::Error> + Unpin> Outbound<Si> {
    /// An outbound side with nothing fed yet.
    pub(crate) fn new(sink: Si) -> Self {
        Outbound {
            sink,
            unflushed: false,
        }
    }

    /// Queues a frame for the next flush.
    pub(crate) async fn feed(&mut self, frame: Bytes) -> io::Result<()> {
        self.unflushed = true;
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
