//! The connection header and the datum framing.
//!
//! After the 5-byte header every datum travels as `type: u8 | length: u16 big-endian | body`,
//! where the body is `length` bytes of msgpack. Parsing follows the check-then-parse pattern:
//! [`check`] looks at buffered bytes without consuming anything and says whether a whole frame
//! is there, so the caller owns all buffering and I/O.

/// The client's first five bytes: `\xa4FLEX`, which is also the msgpack string `"FLEX"`.
pub const HEADER: [u8; 5] = [0xA4, b'F', b'L', b'E', b'X'];

/// Bytes before the body: one type byte and two length bytes.
pub const PREFIX_LEN: usize = 3;

/// The largest body the framing can express. A server may enforce a lower limit.
pub const MAX_BODY: usize = u16::MAX as usize;

/// A framing problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length field announces more bytes than the receiver accepts. The frame's full size is
    /// `PREFIX_LEN + len`, so a stream receiver can skip it and stay in sync.
    #[error("datum of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The datum type byte of the refused frame.
        kind: u8,
        /// The body length the frame announced.
        len: usize,
        /// The receiver's limit.
        max: usize,
    },
    /// The input ended inside a frame.
    #[error("truncated datum: {have} of {need} bytes")]
    Truncated {
        /// Bytes that arrived.
        have: usize,
        /// Bytes the frame announced, prefix included.
        need: usize,
    },
    /// A frame held more bytes than its length field announced (only possible on message-based
    /// transports such as WebSocket, where one message must carry exactly one frame).
    #[error("{extra} bytes after the datum")]
    TrailingBytes {
        /// How many bytes were left over.
        extra: usize,
    },
    /// An encoder was asked to frame a body longer than 65535 bytes.
    #[error("datum body of {0} bytes cannot be framed (maximum 65535)")]
    BodyTooLong(usize),
}

/// A complete frame found in a buffer, as positions; the caller slices its own buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// The datum type byte.
    pub kind: u8,
    /// The body length.
    pub len: usize,
}

impl FrameInfo {
    /// The number of bytes the whole frame occupies, prefix included.
    pub fn total(&self) -> usize {
        PREFIX_LEN + self.len
    }
}

/// Checks whether `buf` begins with a complete frame whose body is at most `max_body` bytes.
///
/// Returns `Ok(None)` when more bytes are needed, `Ok(Some(info))` when `buf[..info.total()]`
/// is a whole frame, and `Err(FrameError::TooLarge)` as soon as the prefix announces too much,
/// so that the receiver never has to buffer an oversized body.
pub fn check(buf: &[u8], max_body: usize) -> Result<Option<FrameInfo>, FrameError> {
    if buf.len() < PREFIX_LEN {
        return Ok(None);
    }
    let kind = buf[0];
    let len = u16::from_be_bytes([buf[1], buf[2]]) as usize;
    if len > max_body {
        return Err(FrameError::TooLarge {
            kind,
            len,
            max: max_body,
        });
    }
    if buf.len() < PREFIX_LEN + len {
        return Ok(None);
    }
    Ok(Some(FrameInfo { kind, len }))
}

/// The error for input that ended inside a frame: how much of it arrived, and how much the
/// frame needs (its prefix, or its prefix and announced body). `buf` holds what arrived.
pub fn truncated(buf: &[u8]) -> FrameError {
    let need = if buf.len() < PREFIX_LEN {
        PREFIX_LEN
    } else {
        PREFIX_LEN + u16::from_be_bytes([buf[1], buf[2]]) as usize
    };
    FrameError::Truncated {
        have: buf.len(),
        need,
    }
}

/// Splits one message-transport payload (a WebSocket binary message) that must hold exactly
/// one frame into its type byte and body.
pub fn split_exact(buf: &[u8], max_body: usize) -> Result<(u8, &[u8]), FrameError> {
    match check(buf, max_body)? {
        None => Err(truncated(buf)),
        Some(info) if info.total() < buf.len() => Err(FrameError::TrailingBytes {
            extra: buf.len() - info.total(),
        }),
        Some(info) => Ok((info.kind, &buf[PREFIX_LEN..])),
    }
}

/// Frames a body: appends `kind | len | body` to `out`.
pub fn encode_into(kind: u8, body: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    let len = u16::try_from(body.len()).map_err(|_| FrameError::BodyTooLong(body.len()))?;
    out.reserve(PREFIX_LEN + body.len());
    out.push(kind);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_waits_for_whole_frames() {
        let mut f = Vec::new();
        encode_into(3, b"\x80", &mut f).unwrap();
        assert_eq!(f, [3, 0, 1, 0x80]);
        assert_eq!(check(&f[..2], 100), Ok(None));
        assert_eq!(check(&f[..3], 100), Ok(None));
        assert_eq!(check(&f, 100), Ok(Some(FrameInfo { kind: 3, len: 1 })));
    }

    #[test]
    fn oversized_length_is_refused_from_the_prefix_alone() {
        assert_eq!(
            check(&[3, 0xff, 0xff], 1000),
            Err(FrameError::TooLarge {
                kind: 3,
                len: 65535,
                max: 1000
            })
        );
    }

    #[test]
    fn split_exact_wants_one_whole_frame() {
        assert_eq!(split_exact(&[6, 0, 1, 0x80], 100), Ok((6, &[0x80][..])));
        assert_eq!(
            split_exact(&[6, 0, 2, 0x80], 100),
            Err(FrameError::Truncated { have: 4, need: 5 })
        );
        assert_eq!(
            split_exact(&[6, 0], 100),
            Err(FrameError::Truncated { have: 2, need: 3 })
        );
        assert_eq!(
            split_exact(&[6, 0, 0, 1], 100),
            Err(FrameError::TrailingBytes { extra: 1 })
        );
    }

    #[test]
    fn bodies_over_65535_bytes_cannot_be_framed() {
        let mut out = Vec::new();
        assert_eq!(
            encode_into(3, &vec![0; 65536], &mut out),
            Err(FrameError::BodyTooLong(65536))
        );
    }
}
