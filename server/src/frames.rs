//! Frames the server writes itself: datums framed once, message ids kept as slices of the
//! frames they came in, and the two answers sent for (nearly) every message, built from
//! pre-encoded bytes instead of being formatted and msgpack-encoded each time.
//!
//! The hand-written encodings here produce exactly the bytes `Datum::to_frame` would (the tests
//! compare them), so a client cannot tell them apart.

use bytes::{BufMut, Bytes, BytesMut};
use flexim_protocol::datum::Status;
use flexim_protocol::frame::PREFIX_LEN;
use flexim_protocol::{Datum, MAX_BODY};

/// Type byte of a Status datum.
const STATUS: u8 = 6;

/// Frames a datum the server built itself. Server datums are far below 64 KiB by construction
/// (rosters are trimmed, receipts split), so a failure is a bug.
pub(crate) fn frame(datum: impl Into<Datum>) -> Bytes {
    Bytes::from(
        datum
            .into()
            .to_frame()
            .expect("server datums fit in a frame"),
    )
}

/// A Status frame.
pub(crate) fn status_frame(code: i8, text: impl Into<String>) -> Bytes {
    frame(Status::new(code, text))
}

/// A Message's id, checked already (ASCII letters, digits, `-` and `_`, at most 64). It shares
/// the memory of the frame it came in, so remembering the id of a relayed message until its
/// acknowledgement costs no allocation.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Id(Bytes);

impl Id {
    /// The id `id`, which must be borrowed from `frame` (as `MessageRef` borrows it).
    pub(crate) fn in_frame(frame: &Bytes, id: &str) -> Id {
        Id(frame.slice_ref(id.as_bytes()))
    }

    /// The id as text.
    pub(crate) fn as_str(&self) -> &str {
        // Ids are ASCII by the time they get here (checked by `status::validate_id` or written
        // by this server), so this never fails.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl From<String> for Id {
    fn from(id: String) -> Id {
        Id(Bytes::from(id))
    }
}

impl std::fmt::Debug for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// Appends a msgpack string header for `len` bytes.
fn str_header(out: &mut BytesMut, len: usize) {
    match len {
        0..=31 => out.put_u8(0xa0 | len as u8),
        32..=255 => {
            out.put_u8(0xd9);
            out.put_u8(len as u8);
        }
        256..=65535 => {
            out.put_u8(0xda);
            out.put_u16(len as u16);
        }
        _ => {
            out.put_u8(0xdb);
            out.put_u32(len as u32);
        }
    }
}

/// Appends a msgpack string.
fn str(out: &mut BytesMut, s: &[u8]) {
    str_header(out, s.len());
    out.put_slice(s);
}

/// Appends a Status code as msgpack writes an i8 (the shortest form).
fn code(out: &mut BytesMut, code: i8) {
    if code >= -32 {
        // Positive and negative fixints are the byte itself.
        out.put_u8(code as u8);
    } else {
        out.put_u8(0xd0);
        out.put_i8(code);
    }
}

/// The start of a Status frame's body with `entries` map entries: the code and the payload.
fn status_head(out: &mut BytesMut, entries: u8, status: i8, payload: &str) {
    out.put_u8(STATUS);
    out.put_u16(0); // The length, patched by `finish`.
    out.put_u8(0x80 | entries);
    str(out, b"status");
    code(out, status);
    str(out, b"payload");
    str(out, payload.as_bytes());
}

/// Writes the body's length into the frame's prefix.
fn finish(mut out: BytesMut) -> Bytes {
    let len = out.len() - PREFIX_LEN;
    debug_assert!(len <= MAX_BODY, "a server frame over the body limit");
    out[1..PREFIX_LEN].copy_from_slice(&(len as u16).to_be_bytes());
    out.freeze()
}

/// The answer to Messages relayed to one recipient (`3 relayed to KEY`), framed once at login:
/// the answer without an id is these bytes as they are, the answer with an id is a copy of the
/// pre-encoded head with the id appended.
pub(crate) struct Answers {
    /// The whole answer for a Message without an id.
    plain: Bytes,
    /// The answer for a Message with an id, up to and including the `id` key (its length
    /// field is patched per answer).
    head: Bytes,
}

impl Answers {
    /// The answers `code` with `payload`, with and without an id.
    pub(crate) fn new(status: i8, payload: &str) -> Answers {
        let mut plain = BytesMut::with_capacity(32 + payload.len());
        status_head(&mut plain, 2, status, payload);
        let mut head = BytesMut::with_capacity(36 + payload.len());
        status_head(&mut head, 3, status, payload);
        str(&mut head, b"id");
        Answers {
            plain: finish(plain),
            head: head.freeze(),
        }
    }

    /// The answer about the Message with `id`, or without one.
    pub(crate) fn about(&self, id: Option<&Id>) -> Bytes {
        let Some(id) = id else {
            return self.plain.clone();
        };
        let id = id.0.as_ref();
        let mut out = BytesMut::with_capacity(self.head.len() + 2 + id.len());
        out.put_slice(&self.head);
        str(&mut out, id);
        finish(out)
    }
}

/// Body bytes a receipt may take: under the protocol's 65535 with room for the head.
const RECEIPT_BODY: usize = 60_000;

/// Receipts `status` with `payload` about the messages with `ids`: one frame naming one id in
/// `id` and several in `ids` (as `Status::with_ids` does), or several frames when so many ids
/// do not fit in one datum. Each is encoded straight into its buffer: no String per id.
pub(crate) fn receipts(status: i8, payload: &str, ids: &[Id]) -> Vec<Bytes> {
    let mut frames = Vec::new();
    let mut rest = ids;
    while !rest.is_empty() {
        // As many ids as fit: each costs its bytes and a header of at most 2.
        let mut bytes = 0;
        let n = rest
            .iter()
            .take_while(|id| {
                bytes += id.0.len() + 2;
                bytes <= RECEIPT_BODY
            })
            .count()
            .max(1);
        let (chunk, more) = rest.split_at(n);
        frames.push(receipt(status, payload, chunk));
        rest = more;
    }
    frames
}

/// One receipt about `ids` (at least one, all fitting in one frame).
fn receipt(status: i8, payload: &str, ids: &[Id]) -> Bytes {
    let size: usize = ids.iter().map(|id| id.0.len() + 2).sum();
    let mut out = BytesMut::with_capacity(40 + payload.len() + size);
    status_head(&mut out, 3, status, payload);
    if let [one] = ids {
        str(&mut out, b"id");
        str(&mut out, &one.0);
    } else {
        str(&mut out, b"ids");
        match ids.len() {
            n @ 0..=15 => out.put_u8(0x90 | n as u8),
            n @ 16..=65535 => {
                out.put_u8(0xdc);
                out.put_u16(n as u16);
            }
            n => {
                out.put_u8(0xdd);
                out.put_u32(n as u32);
            }
        }
        for id in ids {
            str(&mut out, &id.0);
        }
    }
    finish(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flexim_protocol::status;

    fn ids(n: usize, len: usize) -> Vec<Id> {
        (0..n).map(|i| Id::from(format!("{i:0>len$}"))).collect()
    }

    fn strings(ids: &[Id]) -> Vec<String> {
        ids.iter().map(|i| i.as_str().to_string()).collect()
    }

    #[test]
    fn answers_are_the_bytes_the_encoder_writes() {
        for payload in ["relayed to x", &"k".repeat(64), &"long ".repeat(60)] {
            for code in [status::RELAYED, status::STORED, -13, -100, 100] {
                let a = Answers::new(code, payload);
                assert_eq!(a.about(None), status_frame(code, payload));
                for id in ["a", &"7".repeat(31), &"8".repeat(32), &"9".repeat(64)] {
                    let want = frame(Status::new(code, payload).with_id(Some(id.into())));
                    assert_eq!(a.about(Some(&Id::from(id.to_string()))), want, "{id}");
                }
            }
        }
    }

    #[test]
    fn receipts_are_the_bytes_the_encoder_writes() {
        for n in [1, 2, 15, 16, 300] {
            let ids = ids(n, 32);
            let got = receipts(status::DELIVERED, "delivered to k", &ids);
            let want =
                frame(Status::new(status::DELIVERED, "delivered to k").with_ids(strings(&ids)));
            assert_eq!(got, [want], "{n} ids");
        }
    }

    #[test]
    fn receipts_for_very_many_ids_are_split_into_frames_that_fit() {
        let ids = ids(3000, 64);
        let frames = receipts(status::STORED_LATER, "stored", &ids);
        assert!(frames.len() > 1);
        let mut named = Vec::new();
        for f in &frames {
            let (kind, body) = flexim_protocol::frame::split_exact(f, MAX_BODY).unwrap();
            let Datum::Status(s) = Datum::decode(kind, body).unwrap() else {
                panic!("not a Status");
            };
            assert_eq!(s.status, status::STORED_LATER);
            named.extend(s.about().map(str::to_string));
        }
        assert_eq!(named, strings(&ids));
    }

    #[test]
    fn an_id_shares_its_frame() {
        let frame = Bytes::from_static(b"....the-id....");
        let text = std::str::from_utf8(&frame[4..10]).unwrap();
        let id = Id::in_frame(&frame, text);
        assert_eq!(id.as_str(), "the-id");
        assert_eq!(id.0.as_ptr(), frame[4..].as_ptr());
    }
}
