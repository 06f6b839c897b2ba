//! The link after the handshake: every datum is one Noise transport message (docs/PROTOCOL.md
//! §4.3).
//!
//! A record is framed like a datum, with its own type byte: `0x80 | length (u16 BE) |
//! ciphertext`, where the ciphertext is ChaCha20-Poly1305 under the direction's key with
//! Noise's counter nonce, and its plaintext is exactly one datum frame (`type | length |
//! msgpack`). The same record is one WebSocket binary message or the next bytes of the TCP
//! stream, so both transports keep one framing and a reader needs no second parser. Nonces
//! count the records of one direction from 0: a record that was replayed, reordered, altered,
//! dropped before or injected does not authenticate, and the connection ends.

use crate::frame::{FrameError, MAX_BODY, PREFIX_LEN};

/// The type byte of a link record. It is no datum type, so a peer that expects records and gets
/// a clear datum (or the other way round) knows at the first byte.
pub const RECORD: u8 = 0x80;
/// Bytes the AEAD tag adds to every record.
pub const TAG_LEN: usize = 16;
/// The largest datum body that fits in one record: the record's body is at most
/// [`MAX_BODY`], and holds the datum's prefix, its body and the tag.
pub const MAX_LINKED_BODY: usize = MAX_BODY - PREFIX_LEN - TAG_LEN;

/// Why a record could not be sealed or opened. Any of these ends the connection: the two
/// directions' nonces no longer agree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// A clear datum (this type byte) where only records are accepted.
    #[error("a clear {0:#04x} frame arrived on the encrypted link")]
    NotARecord(u8),
    /// The datum is too long for one record.
    #[error("a datum of {0} bytes does not fit in one record")]
    TooLong(usize),
    /// The record is cut short, or more than one frame.
    #[error("not one whole record: {0}")]
    Framing(#[from] FrameError),
    /// The record does not authenticate under the next nonce: replayed, reordered, altered or
    /// injected.
    #[error("a record does not authenticate (replayed, reordered, altered or injected)")]
    Forged,
}

/// One connection's keys and nonces for both directions, after the handshake.
pub struct Link {
    /// snow's transport state: one cipher and one counter per direction.
    state: snow::TransportState,
}

impl Link {
    /// Wraps the transport state of a finished handshake.
    pub(crate) fn new(state: snow::TransportState) -> Link {
        Link { state }
    }

    /// Seals one whole datum frame and appends its record to `out`, encrypting straight into
    /// `out` (no copy of the ciphertext).
    pub fn seal_into(&mut self, frame: &[u8], out: &mut Vec<u8>) -> Result<(), LinkError> {
        let len = frame.len() + TAG_LEN;
        if len > MAX_BODY {
            return Err(LinkError::TooLong(frame.len()));
        }
        let start = out.len();
        out.resize(start + PREFIX_LEN + len, 0);
        out[start] = RECORD;
        out[start + 1..start + PREFIX_LEN].copy_from_slice(&(len as u16).to_be_bytes());
        if self
            .state
            .write_message(frame, &mut out[start + PREFIX_LEN..])
            .is_err()
        {
            out.truncate(start);
            return Err(LinkError::TooLong(frame.len()));
        }
        Ok(())
    }

    /// Seals one whole datum frame into a record of its own.
    pub fn seal(&mut self, frame: &[u8]) -> Result<Vec<u8>, LinkError> {
        let mut out = Vec::with_capacity(PREFIX_LEN + frame.len() + TAG_LEN);
        self.seal_into(frame, &mut out)?;
        Ok(out)
    }

    /// Opens one whole record (prefix included) and returns the datum frame inside. The frame's
    /// own framing is the caller's to check, with its own body limit.
    pub fn open(&mut self, record: &[u8]) -> Result<Vec<u8>, LinkError> {
        let (kind, body) = crate::frame::split_exact(record, MAX_BODY)?;
        if kind != RECORD {
            return Err(LinkError::NotARecord(kind));
        }
        self.open_body(body)
    }

    /// Opens a record's body (its ciphertext) and returns the datum frame inside.
    pub fn open_body(&mut self, ciphertext: &[u8]) -> Result<Vec<u8>, LinkError> {
        let mut plain = vec![0u8; ciphertext.len()];
        let n = self
            .state
            .read_message(ciphertext, &mut plain)
            .map_err(|_| LinkError::Forged)?;
        plain.truncate(n);
        Ok(plain)
    }
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The keys never reach a log.
        f.debug_struct("Link")
            .field("sent", &self.state.sending_nonce())
            .field("received", &self.state.receiving_nonce())
            .finish()
    }
}
