//! From what a transport delivers to whole frames: a TCP byte stream is cut into frames (check,
//! then split), a WebSocket message must be exactly one frame.

use flexim_protocol::MAX_BODY;
use flexim_protocol::frame::{self, FrameError};

/// How the transport under the engine delivers frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// A byte stream (raw TCP): frames back to back, cut anywhere by the reads.
    Stream,
    /// Messages (WebSocket binary messages): each is exactly one frame.
    Messages,
}

/// Cuts what the transport delivers into frames.
#[derive(Debug)]
pub(crate) struct Reader {
    /// How the transport delivers frames.
    framing: Framing,
    /// Bytes of a stream read but not yet a whole frame.
    buf: Vec<u8>,
}

impl Reader {
    /// A reader with nothing buffered.
    pub(crate) fn new(framing: Framing) -> Reader {
        Reader {
            framing,
            buf: Vec::new(),
        }
    }

    /// Forgets a partial frame (the connection it came from is gone).
    pub(crate) fn reset(&mut self) {
        self.buf = Vec::new();
    }

    /// How many bytes of an unfinished frame are buffered.
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Takes the bytes of an unfinished frame.
    pub(crate) fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Takes `bytes` and returns each whole frame in it, or why a message is not one frame.
    /// On a stream, an incomplete frame stays buffered for the next call.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<Result<Vec<u8>, FrameError>> {
        match self.framing {
            Framing::Messages => vec![frame::split_exact(bytes, MAX_BODY).map(|_| bytes.to_vec())],
            Framing::Stream => {
                self.buf.extend_from_slice(bytes);
                let mut frames = Vec::new();
                let mut at = 0;
                // With the protocol's own maximum as the limit, no prefix is ever too large, so
                // `check` only ever says "whole" or "not yet".
                while let Ok(Some(info)) = frame::check(&self.buf[at..], MAX_BODY) {
                    frames.push(Ok(self.buf[at..at + info.total()].to_vec()));
                    at += info.total();
                }
                self.buf.drain(..at);
                frames
            }
        }
    }
}
