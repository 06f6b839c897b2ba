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

/// A Status frame without an id, encoded straight into its buffer (the bytes the encoder
/// would write: see the tests), because the server sends one for most datums it answers.
pub(crate) fn status_frame(code: i8, text: impl AsRef<str>) -> Bytes {
    let text = text.as_ref();
    let mut out = BytesMut::with_capacity(24 + text.len());
    status_head(&mut out, 2, code, text);
    finish(out)
}

/// A Status as a frame: hand-encoded when it names no message, by the encoder otherwise.
pub(crate) fn status(s: Status) -> Bytes {
    if s.id.is_none() && s.ids.is_empty() {
        status_frame(s.status, &s.payload)
    } else {
        frame(s)
    }
}

/// The code of a Status frame (type, length, body), read in place: its map's first key is
/// `status` however it was encoded (by hand here, or by serde in field order). `None` for any
/// other frame.
pub(crate) fn status_code(frame: &[u8]) -> Option<i8> {
    const KEY: &[u8] = b"\xa6status";
    if frame.first() != Some(&(flexim_protocol::DatumKind::Status as u8)) {
        return None;
    }
    let body = frame.get(PREFIX_LEN..)?;
    if !(0x80..=0x8f).contains(body.first()?) || body.get(1..1 + KEY.len())? != KEY {
        return None;
    }
    match *body.get(1 + KEY.len())? {
        b @ (0x00..=0x7f | 0xe0..=0xff) => Some(b as i8),
        0xd0 => body.get(2 + KEY.len()).map(|&b| b as i8),
        _ => None,
    }
}

/// A Message's id, checked already (ASCII letters, digits, `-` and `_`, at most 64). It shares
/// the memory of the frame it came in, so remembering the id of a relayed message until its
/// acknowledgement costs no allocation, and it carries a hash of itself, made once, so that
/// an ACK finds it among many without comparing every id byte by byte.
#[derive(Clone)]
pub(crate) struct Id {
    /// The id's bytes.
    bytes: Bytes,
    /// [`hash_id`] of the bytes.
    hash: u64,
}

/// A quick hash of an id's bytes, 8 at a time. Not keyed: it only narrows a search within one
/// session's unacknowledged messages, where the bytes are compared after it, so ids chosen to
/// collide can cost their sender time but never a wrong match.
pub(crate) fn hash_id(id: &[u8]) -> u64 {
    let mix = |h: u64, word: u64| {
        (h ^ word)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29)
    };
    let mut h = id.len() as u64;
    let mut words = id.chunks_exact(8);
    for word in &mut words {
        h = mix(h, u64::from_le_bytes(word.try_into().expect("8 bytes")));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        h = mix(h, u64::from_le_bytes(word));
    }
    h
}

impl Id {
    /// The id `id`, which must be borrowed from `frame` (as `MessageRef` borrows it).
    pub(crate) fn in_frame(frame: &Bytes, id: &str) -> Id {
        Id::of(frame.slice_ref(id.as_bytes()))
    }

    fn of(bytes: Bytes) -> Id {
        Id {
            hash: hash_id(&bytes),
            bytes,
        }
    }

    /// The id's bytes (ASCII).
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// [`hash_id`] of the id.
    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }

    /// The id as text.
    pub(crate) fn as_str(&self) -> &str {
        // Ids are ASCII by the time they get here (checked by `status::validate_id` or written
        // by this server), so this never fails.
        std::str::from_utf8(&self.bytes).unwrap_or("")
    }
}

impl PartialEq for Id {
    fn eq(&self, other: &Id) -> bool {
        self.hash == other.hash && self.bytes == other.bytes
    }
}

impl Eq for Id {}

impl From<String> for Id {
    fn from(id: String) -> Id {
        Id::of(Bytes::from(id))
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
/// the answer without an id is these bytes as they are, the answer with an id is one copy of
/// the pre-encoded head with the id appended.
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
        let id = id.bytes.as_ref();
        // One allocation and two copies: ids are at most 64 bytes, so str8 at most.
        let mut out = Vec::with_capacity(self.head.len() + 2 + id.len());
        out.extend_from_slice(&self.head);
        if id.len() < 32 {
            out.push(0xa0 | id.len() as u8);
        } else {
            out.extend_from_slice(&[0xd9, id.len() as u8]);
        }
        out.extend_from_slice(id);
        let len = (out.len() - PREFIX_LEN) as u16;
        out[1..PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
        Bytes::from(out)
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
                bytes += id.bytes.len() + 2;
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
    let size: usize = ids.iter().map(|id| id.bytes.len() + 2).sum();
    let mut out = BytesMut::with_capacity(40 + payload.len() + size);
    status_head(&mut out, 3, status, payload);
    if let [one] = ids {
        str(&mut out, b"id");
        str(&mut out, &one.bytes);
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
            str(&mut out, &id.bytes);
        }
    }
    finish(out)
}

/// The ids of an ACK Command body in its usual encoding: a map of exactly `cmd` (the string
/// `ACK`) and `payload` (a non-empty array of ASCII strings), borrowed from the body, so that
/// the busiest command costs no String per id. `None` for anything else; the caller decodes
/// that the general way, which gives the same datum for every body this accepts.
pub(crate) fn ack_ids(body: &[u8]) -> Option<Vec<&str>> {
    let mut r = Reader { b: body, at: 0 };
    if r.byte()? != 0x82 {
        return None;
    }
    let (mut cmd, mut ids) = (false, None);
    for _ in 0..2 {
        match r.str()? {
            b"cmd" if !cmd => cmd = r.str()? == b"ACK",
            b"payload" if ids.is_none() => ids = Some(r.strings()?),
            _ => return None,
        }
    }
    let ids = ids?;
    (cmd && r.at == body.len() && !ids.is_empty()).then_some(ids)
}

/// A cursor over msgpack bytes, for [`ack_ids`].
struct Reader<'a> {
    /// The bytes.
    b: &'a [u8],
    /// Where the next value starts.
    at: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.b.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    /// A string's bytes (fixstr, str8 or str16).
    fn str(&mut self) -> Option<&'a [u8]> {
        let n = match self.byte()? {
            m @ 0xa0..=0xbf => usize::from(m & 0x1f),
            0xd9 => usize::from(self.byte()?),
            0xda => usize::from(u16::from_be_bytes([self.byte()?, self.byte()?])),
            _ => return None,
        };
        self.take(n)
    }

    /// An array of ASCII strings (fixarray or array16).
    fn strings(&mut self) -> Option<Vec<&'a str>> {
        let n = match self.byte()? {
            m @ 0x90..=0x9f => usize::from(m & 0x0f),
            0xdc => usize::from(u16::from_be_bytes([self.byte()?, self.byte()?])),
            _ => return None,
        };
        let mut out = Vec::with_capacity(n.min(self.b.len()));
        for _ in 0..n {
            let s = self.str()?;
            if !s.is_ascii() {
                return None;
            }
            out.push(std::str::from_utf8(s).ok()?);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_status_code_is_read_from_either_encoding() {
        for code in [1i8, 3, 7, 10, -1, -8, -10, -13, -19] {
            let by_hand = status_frame(code, "x");
            assert_eq!(status_code(&by_hand), Some(code), "{code} by hand");
            let by_serde = frame(Status::new(code, "x").with_id(Some("m-1".into())));
            assert_eq!(status_code(&by_serde), Some(code), "{code} by serde");
        }
        let not_a_status = frame(flexim_protocol::datum::Roster { users: vec![] });
        assert_eq!(status_code(&not_a_status), None);
        assert_eq!(status_code(&[6, 0, 1, 0x80]), None);
        assert_eq!(status_code(&[]), None);
    }

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
                assert_eq!(a.about(None), frame(Status::new(code, payload)));
                assert_eq!(
                    status_frame(code, payload),
                    frame(Status::new(code, payload))
                );
                let with = Status::new(code, payload).with_id(Some("x".into()));
                assert_eq!(status(with.clone()), frame(with));
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
    fn the_usual_ack_is_read_in_place_and_anything_else_is_left_to_the_decoder() {
        use flexim_protocol::datum::Command;
        let body = |d: Datum| d.encode_body();
        let ids: Vec<String> = (0..40).map(|i| format!("{i:032x}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        for n in [1, 15, 16, 40] {
            let b = body(Command::new("ACK", &refs[..n]).into());
            assert_eq!(ack_ids(&b).as_deref(), Some(&refs[..n]));
            // What it accepts, the decoder reads the same way.
            let Ok(Datum::Command(c)) = Datum::decode(2, &b) else {
                panic!("decodes");
            };
            assert_eq!((c.cmd.as_str(), c.payload.as_slice()), ("ACK", &ids[..n]));
        }
        // Keys in the other order are the same command.
        let swapped = [
            &[0x82, 0xa7][..],
            b"payload",
            &[0x91, 0xa3],
            b"a-1",
            &[0xa3],
            b"cmd",
            &[0xa3],
            b"ACK",
        ]
        .concat();
        assert_eq!(ack_ids(&swapped), Some(vec!["a-1"]));
        // Another command, no ids, a duplicate key, an extra key, trailing bytes, a non-ASCII
        // id, a cut-off body: all left to the general decoder.
        assert_eq!(ack_ids(&body(Command::new("ROSTER", &["x"]).into())), None);
        assert_eq!(ack_ids(&body(Command::new("ACK", &[]).into())), None);
        let dup = [
            &[0x82, 0xa3][..],
            b"cmd",
            &[0xa3],
            b"ACK",
            &[0xa3],
            b"cmd",
            &[0xa3],
            b"ACK",
        ]
        .concat();
        assert_eq!(ack_ids(&dup), None);
        let mut extra = body(Command::new("ACK", &["a"]).into());
        extra[0] = 0x83;
        extra.extend_from_slice(&[0xa1, b'x', 0x01]);
        assert_eq!(ack_ids(&extra), None);
        let mut trailing = body(Command::new("ACK", &["a"]).into());
        trailing.push(0xc0);
        assert_eq!(ack_ids(&trailing), None);
        assert_eq!(ack_ids(&body(Command::new("ACK", &["ü"]).into())), None);
        let whole = body(Command::new("ACK", &["abc"]).into());
        assert_eq!(ack_ids(&whole[..whole.len() - 1]), None);
    }

    #[test]
    fn an_id_shares_its_frame() {
        let frame = Bytes::from_static(b"....the-id....");
        let text = std::str::from_utf8(&frame[4..10]).unwrap();
        let id = Id::in_frame(&frame, text);
        assert_eq!(id.as_str(), "the-id");
        assert_eq!(id.as_bytes().as_ptr(), frame[4..].as_ptr());
    }
}
