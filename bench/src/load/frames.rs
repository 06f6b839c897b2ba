//! The frames of the load: a Message sealed once and patched per message (its sequence number
//! in `date`, and in ids mode its id), the receivers' ACKs, and reading the few fields the
//! generator checks straight from msgpack bytes, without decoding the datum: all cheap enough
//! to do for every frame.

use anyhow::bail;
use flexim_client::protocol::{Datum, Message};

/// A sealed Message frame whose `date` (and `id`) can be overwritten in place.
#[derive(Debug, Clone)]
pub struct Template {
    /// The whole frame (prefix and body), with the sentinels in `date` and `id`.
    frame: Vec<u8>,
    /// Offset in `frame` of the 8 big-endian bytes of `date`.
    seq_at: usize,
    /// Offset in `frame` of the 32 bytes of `id`, in ids mode.
    id_at: Option<usize>,
}

/// The `date` the template is encoded with: negative and below -2^31, so msgpack writes it as
/// an int64 (marker 0xd3 and 8 bytes) and any sequence number written over it later keeps the
/// frame's length; its bytes are distinctive enough to be found exactly once.
const SENTINEL: i64 = -0x0123_4567_89ab_cdef;

/// Length of a message id in ids mode: 32 characters, as real clients write 16 random bytes
/// in hex.
pub const ID_LEN: usize = 32;

/// The id the template is encoded with; each message's own id is written over it.
const ID_SENTINEL: &[u8; ID_LEN] = b"ZzZzZzZzZzZzZzZzZzZzZzZzZzZzZzZz";

/// Where `pattern` is in `frame` (just after it when `after`), if it is there exactly once.
fn find_once(frame: &[u8], pattern: &[u8], what: &str) -> anyhow::Result<usize> {
    let mut found = frame
        .windows(pattern.len())
        .enumerate()
        .filter(|(_, w)| *w == pattern)
        .map(|(i, _)| i + pattern.len());
    let Some(end) = found.next() else {
        bail!("the encoded message has no {what} to patch");
    };
    if found.next().is_some() {
        bail!("the {what} sentinel occurs twice in the encoded message");
    }
    Ok(end)
}

impl Template {
    /// The frame of `message` (sealed once by the client library): without an id, so that the
    /// server takes its plain relay path (no ACK, no receipts), or, with `ids`, with a 32-char
    /// id patched per message, the path real clients take.
    pub fn new(message: &Message, ids: bool) -> anyhow::Result<Template> {
        let mut m = message.clone();
        m.id = ids.then(|| String::from_utf8_lossy(ID_SENTINEL).into_owned());
        m.date = SENTINEL;
        let frame = Datum::Message(m).to_frame()?;
        let mut date = vec![0xd3];
        date.extend_from_slice(&SENTINEL.to_be_bytes());
        let seq_at = find_once(&frame, &date, "int64 date")? - 8;
        let id_at = if ids {
            let mut id = vec![0xd9, ID_LEN as u8];
            id.extend_from_slice(ID_SENTINEL);
            Some(find_once(&frame, &id, "id")? - ID_LEN)
        } else {
            None
        };
        Ok(Template {
            frame,
            seq_at,
            id_at,
        })
    }

    /// Length of every frame built from this template.
    pub fn len(&self) -> usize {
        self.frame.len()
    }

    /// Whether its messages carry ids.
    pub fn has_ids(&self) -> bool {
        self.id_at.is_some()
    }

    /// Appends the frame for sequence number `seq` to `out` (its id, in ids mode, is `seq` in
    /// 32 hex digits: unique per sender, which is what the server and the receiver need).
    pub fn write(&self, seq: u64, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.frame);
        let at = start + self.seq_at;
        out[at..at + 8].copy_from_slice(&(seq as i64).to_be_bytes());
        if let Some(id_at) = self.id_at {
            let at = start + id_at;
            hex_id(seq, &mut out[at..at + ID_LEN]);
        }
    }
}

/// Writes `seq` as 32 lower-case hex digits: 16 zeros (the high half of a 128-bit number),
/// then 16 digits of `seq`.
fn hex_id(seq: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let (high, low) = out.split_at_mut(ID_LEN / 2);
    high.fill(b'0');
    for (i, b) in low.iter_mut().enumerate() {
        *b = DIGITS[((seq >> ((ID_LEN / 2 - 1 - i) * 4)) & 0xf) as usize];
    }
}

/// Most ids in one ACK, as the clients send them.
pub const ACK_BATCH: usize = 256;

/// Appends the frame of `ACK [ids...]` (at most [`ACK_BATCH`] ids of [`ID_LEN`] bytes).
pub fn ack_frame(ids: &[[u8; ID_LEN]], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[
        2, 0, 0, 0x82, 0xa3, b'c', b'm', b'd', 0xa3, b'A', b'C', b'K',
    ]);
    out.extend_from_slice(&[0xa7, b'p', b'a', b'y', b'l', b'o', b'a', b'd']);
    match ids.len() {
        n @ 0..=15 => out.push(0x90 | n as u8),
        n => {
            out.push(0xdc);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    for id in ids {
        out.extend_from_slice(&[0xd9, ID_LEN as u8]);
        out.extend_from_slice(id);
    }
    let len = (out.len() - start - 3) as u16;
    out[start + 1..start + 3].copy_from_slice(&len.to_be_bytes());
}

/// A msgpack value as far as the receiver cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Value<'a> {
    /// A string's bytes.
    Str(&'a [u8]),
    /// Any integer that fits in an i64.
    Int(i64),
    /// An array (skipped) of this many elements.
    Array(u64),
    /// Anything else (skipped).
    Other,
}

/// A cursor over msgpack bytes.
struct Reader<'a> {
    /// The bytes.
    b: &'a [u8],
    /// Where the next value starts.
    at: usize,
}

impl<'a> Reader<'a> {
    /// The next `n` bytes.
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    /// A big-endian unsigned number of `n` bytes (1, 2, 4 or 8).
    fn uint(&mut self, n: usize) -> Option<u64> {
        Some(
            self.take(n)?
                .iter()
                .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)),
        )
    }

    /// The next value; nested arrays and maps are skipped whole (depth-limited).
    fn value(&mut self, depth: u32) -> Option<Value<'a>> {
        if depth > 8 {
            return None;
        }
        let m = *self.b.get(self.at)?;
        self.at += 1;
        Some(match m {
            0x00..=0x7f => Value::Int(i64::from(m)),
            0xe0..=0xff => Value::Int(i64::from(m as i8)),
            0xa0..=0xbf => Value::Str(self.take(usize::from(m & 0x1f))?),
            0xd9..=0xdb => {
                let n = self.uint(1 << (m - 0xd9))? as usize;
                Value::Str(self.take(n)?)
            }
            0xcc..=0xcf => Value::Int(i64::try_from(self.uint(1 << (m - 0xcc))?).ok()?),
            0xd0 => Value::Int(i64::from(self.uint(1)? as u8 as i8)),
            0xd1 => Value::Int(i64::from(self.uint(2)? as u16 as i16)),
            0xd2 => Value::Int(i64::from(self.uint(4)? as u32 as i32)),
            0xd3 => Value::Int(self.uint(8)? as i64),
            0xc0 | 0xc2 | 0xc3 => Value::Other,
            0xca => self.take(4).map(|_| Value::Other)?,
            0xcb => self.take(8).map(|_| Value::Other)?,
            0xc4..=0xc6 => {
                let n = self.uint(1 << (m - 0xc4))? as usize;
                self.take(n).map(|_| Value::Other)?
            }
            0x90..=0x9f | 0xdc | 0xdd | 0x80..=0x8f | 0xde | 0xdf => {
                let (n, per) = match m {
                    0x90..=0x9f => (u64::from(m & 0x0f), 1),
                    0x80..=0x8f => (u64::from(m & 0x0f), 2),
                    0xdc => (self.uint(2)?, 1),
                    0xdd => (self.uint(4)?, 1),
                    0xde => (self.uint(2)?, 2),
                    _ => (self.uint(4)?, 2),
                };
                for _ in 0..n * per {
                    self.value(depth + 1)?;
                }
                if per == 1 {
                    Value::Array(n)
                } else {
                    Value::Other
                }
            }
            // Ext types (and the unused 0xc1) never occur in FLEX datums.
            _ => return None,
        })
    }
}

/// Calls `f` with each key and value of the msgpack map `body`; `None` if it is not one.
pub fn map_fields<'a>(body: &'a [u8], mut f: impl FnMut(&'a [u8], Value<'a>)) -> Option<()> {
    let mut r = Reader { b: body, at: 0 };
    let m = *body.first()?;
    r.at = 1;
    let n = match m {
        0x80..=0x8f => u64::from(m & 0x0f),
        0xde => r.uint(2)?,
        0xdf => r.uint(4)?,
        _ => return None,
    };
    for _ in 0..n {
        let Value::Str(key) = r.value(0)? else {
            return None;
        };
        f(key, r.value(0)?);
    }
    (r.at == body.len()).then_some(())
}

/// The fields of a Message body the receiver checks.
#[derive(Debug, PartialEq, Eq)]
pub struct MessageFields<'a> {
    /// `from`.
    pub from: &'a [u8],
    /// `to`.
    pub to: &'a [u8],
    /// `date`: the sequence number.
    pub seq: i64,
    /// `id`, if there is one.
    pub id: Option<&'a [u8]>,
}

/// The fields of a Message body the receiver checks; `None` if it is not a Message's map.
pub fn message_fields(body: &[u8]) -> Option<MessageFields<'_>> {
    let (mut from, mut to, mut date, mut id) = (None, None, None, None);
    map_fields(body, |k, v| match (k, v) {
        (b"from", Value::Str(s)) => from = Some(s),
        (b"to", Value::Str(s)) => to = Some(s),
        (b"date", Value::Int(d)) => date = Some(d),
        (b"id", Value::Str(s)) => id = Some(s),
        _ => {}
    })?;
    Some(MessageFields {
        from: from?,
        to: to?,
        seq: date?,
        id,
    })
}

/// The code of a Status body, and how many messages it names (`id`, and each of `ids`).
pub fn status_fields(body: &[u8]) -> Option<(i64, u64)> {
    let (mut code, mut named) = (None, 0);
    map_fields(body, |k, v| match (k, v) {
        (b"status", Value::Int(c)) => code = Some(c),
        (b"id", Value::Str(_)) => named += 1,
        (b"ids", Value::Array(n)) => named += n,
        _ => {}
    })?;
    Some((code?, named))
}

/// The code of a Status body.
pub fn status_code(body: &[u8]) -> Option<i64> {
    status_fields(body).map(|(code, _)| code)
}
