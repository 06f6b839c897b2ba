//! The datums: their msgpack maps and their type bytes.
//!
//! Every body is a msgpack MAP keyed by the RFC's field names. Unknown extra keys are ignored
//! when decoding, so optional extensions (such as `User.online`) never break a strict peer.

use serde::{Deserialize, Serialize};

use crate::frame::{self, FrameError};
use crate::keys::PublicKey;

/// The datum type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DatumKind {
    /// 0: the server's AUTH challenge.
    Auth = 0,
    /// 1: the client's answer to the challenge.
    AuthResponse = 1,
    /// 2: a command to the server (`AUTH`, `ROSTER`, ...).
    Command = 2,
    /// 3: a message from one user to another.
    Message = 3,
    /// 4: a list of users.
    Roster = 4,
    /// 5: one user (or the server itself, right after the header).
    User = 5,
    /// 6: the server's answer, error or notice.
    Status = 6,
    /// 7: members of a room (reserved; numbered as flexim-go did).
    RoomMemberList = 7,
    /// 8: a member joined a room (reserved).
    RoomMemberJoin = 8,
    /// 9: a member left a room (reserved).
    RoomMemberPart = 9,
    /// 10: the v1 draft's connection request (reserved).
    Request = 10,
    /// 11: the v1 draft's acknowledgement (reserved).
    Acknowledge = 11,
    /// 12: the v1 draft's connection description (reserved).
    Connection = 12,
}

impl DatumKind {
    /// The kind for a type byte, or `None` for a byte no datum uses.
    pub fn from_u8(b: u8) -> Option<Self> {
        use DatumKind::*;
        Some(match b {
            0 => Auth,
            1 => AuthResponse,
            2 => Command,
            3 => Message,
            4 => Roster,
            5 => User,
            6 => Status,
            7 => RoomMemberList,
            8 => RoomMemberJoin,
            9 => RoomMemberPart,
            10 => Request,
            11 => Acknowledge,
            12 => Connection,
            _ => return None,
        })
    }

    /// The datum's name as the documentation and error messages spell it.
    pub fn name(self) -> &'static str {
        use DatumKind::*;
        match self {
            Auth => "Auth",
            AuthResponse => "AuthResponse",
            Command => "Command",
            Message => "Message",
            Roster => "Roster",
            User => "User",
            Status => "Status",
            RoomMemberList => "RoomMemberList",
            RoomMemberJoin => "RoomMemberJoin",
            RoomMemberPart => "RoomMemberPart",
            Request => "Request",
            Acknowledge => "Acknowledge",
            Connection => "Connection",
        }
    }
}

/// The server's challenge (type 0). `challenge` is base64 of `nonce(24) || sealed secret`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth {
    /// When the challenge was made (Unix seconds); bound into the sealing as associated data.
    pub date: i64,
    /// The sealed challenge secret (see [`crate::handshake`]).
    pub challenge: String,
    /// The previous time this key was seen (Unix seconds), 0 if never.
    pub last_seen: i64,
}

/// The client's answer (type 1): the same secret sealed under the client-to-server key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthResponse {
    /// base64 of `nonce(24) || sealed secret`.
    pub challenge: String,
}

/// A command (type 2), e.g. `{cmd: "AUTH", payload: ["<hex key>"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The command name, see [`crate::status::cmd`].
    pub cmd: String,
    /// The command's arguments.
    #[serde(default)]
    pub payload: Vec<String>,
}

impl Command {
    /// A command with the given arguments.
    pub fn new(cmd: &str, payload: &[&str]) -> Self {
        Command {
            cmd: cmd.to_string(),
            payload: payload.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// A message (type 3). The server reads only `to` and `from`; `msg` is an end-to-end box.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The recipient: a key (64 hex digits) or a registered alias.
    pub to: String,
    /// The sender: its own key or one of its aliases; the server refuses anything else.
    pub from: String,
    /// Client-side flags such as `NOTIFY`; the server passes them through untouched.
    #[serde(default)]
    pub flags: Vec<String>,
    /// When the message was sent (Unix seconds).
    pub date: i64,
    /// The sealed body (see [`crate::e2e`]).
    pub msg: String,
    /// Extension: a sender-chosen id (see [`crate::status::validate_id`]). With it the message
    /// is kept until its recipient acknowledges it (ACK), the sender gets receipts carrying
    /// the id, and recipients drop repeats of an id they already processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Extension for a commit to a room (docs/PROTOCOL.md §16.4): the users (keys in hex) the
    /// commit adds, so that the server knows whom to fan the room out to from now on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
    /// Extension for a commit to a room: the users (keys in hex) the commit removes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
    /// Extension for a commit that adds users: the MLS Welcome for them, in base64, which the
    /// server hands each of them in a Request (an invitation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub welcome: Option<String>,
}

/// A Message read the way a relay needs it: every field checked exactly as [`Message`] is
/// (so the same bodies are refused), but its strings borrowed from the frame instead of copied.
/// The relay reads `to`, `from` and `id` of every message it forwards; copying the sealed body
/// (the bulk of the bytes) only to drop it again would be an allocation and a copy per message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MessageRef<'a> {
    /// See [`Message::to`].
    #[serde(borrow)]
    pub to: &'a str,
    /// See [`Message::from`].
    #[serde(borrow)]
    pub from: &'a str,
    /// See [`Message::flags`].
    #[serde(default, borrow)]
    pub flags: Vec<&'a str>,
    /// See [`Message::date`].
    pub date: i64,
    /// See [`Message::msg`].
    #[serde(borrow)]
    pub msg: &'a str,
    /// See [`Message::id`].
    #[serde(default, borrow)]
    pub id: Option<&'a str>,
    /// See [`Message::add`].
    #[serde(default, borrow)]
    pub add: Vec<&'a str>,
    /// See [`Message::remove`].
    #[serde(default, borrow)]
    pub remove: Vec<&'a str>,
    /// See [`Message::welcome`].
    #[serde(default, borrow)]
    pub welcome: Option<&'a str>,
}

impl<'a> MessageRef<'a> {
    /// Decodes a Message body (type 3) with the same checks as [`Datum::decode`].
    pub fn decode(body: &'a [u8]) -> Result<MessageRef<'a>, DatumError> {
        let kind = DatumKind::Message.name();
        if !starts_a_map(body) {
            return Err(DatumError::NotAMap { kind });
        }
        match value_len(body) {
            Some(n) if n == body.len() => {}
            Some(n) => {
                return Err(DatumError::Malformed {
                    kind,
                    reason: format!("{} bytes after the map", body.len() - n),
                });
            }
            // Cut short: let the decoder name what is missing.
            None => {}
        }
        let mut de = rmp_serde::Deserializer::from_read_ref(body);
        de.set_max_depth(MAX_DEPTH + 1); // rmp-serde refuses the n-th level of a limit of n.
        MessageRef::deserialize(&mut de).map_err(|e| DatumError::Malformed {
            kind,
            reason: e.to_string(),
        })
    }
}

/// The length in bytes of the msgpack value at the start of `buf`, or `None` if it is cut
/// short or uses the one reserved marker (0xc1). No allocation and no recursion: a count of
/// values still to skip is enough, since every container only adds values to skip.
fn value_len(buf: &[u8]) -> Option<usize> {
    let mut pos = 0usize;
    let mut pending: u64 = 1;
    let be = |at: usize, n: usize| -> Option<u64> {
        let bytes = buf.get(at..at + n)?;
        Some(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    };
    while pending > 0 {
        pending -= 1;
        let marker = *buf.get(pos)?;
        // (bytes of this value before any children, children to skip)
        let (head, children): (u64, u64) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (1, 0),
            0x80..=0x8f => (1, 2 * u64::from(marker & 0x0f)),
            0x90..=0x9f => (1, u64::from(marker & 0x0f)),
            0xa0..=0xbf => (1 + u64::from(marker & 0x1f), 0),
            0xc4 | 0xd9 => (2 + be(pos + 1, 1)?, 0),
            0xc5 | 0xda => (3 + be(pos + 1, 2)?, 0),
            0xc6 | 0xdb => (5 + be(pos + 1, 4)?, 0),
            0xc7 => (3 + be(pos + 1, 1)?, 0),
            0xc8 => (4 + be(pos + 1, 2)?, 0),
            0xc9 => (6 + be(pos + 1, 4)?, 0),
            0xca | 0xce | 0xd2 => (5, 0),
            0xcb | 0xcf | 0xd3 => (9, 0),
            0xcc | 0xd0 => (2, 0),
            0xcd | 0xd1 => (3, 0),
            0xd4 => (3, 0),
            0xd5 => (4, 0),
            0xd6 => (6, 0),
            0xd7 => (10, 0),
            0xd8 => (18, 0),
            0xdc => (3, be(pos + 1, 2)?),
            0xdd => (5, be(pos + 1, 4)?),
            0xde => (3, 2 * be(pos + 1, 2)?),
            0xdf => (5, 2 * be(pos + 1, 4)?),
            0xc1 => return None,
        };
        pos = pos.checked_add(usize::try_from(head).ok()?)?;
        if pos > buf.len() {
            return None;
        }
        pending += children;
        // Every value takes at least one byte: more pending values than bytes left is a
        // body cut short (and bounds the work on a forged count).
        if pending > (buf.len() - pos) as u64 {
            return None;
        }
    }
    Some(pos)
}

/// A list of users (type 4). Encoded as `{users: [...]}`; a bare array is also accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Roster {
    /// The users.
    pub users: Vec<User>,
}

impl<'de> Deserialize<'de> for Roster {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Map { users: Vec<User> },
            Bare(Vec<User>),
        }
        Ok(match Either::deserialize(d)? {
            Either::Map { users } | Either::Bare(users) => Roster { users },
        })
    }
}

/// One user (type 5): a key and what the server knows about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Aliases this key has registered (for the server's own User datum: the server's name).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The X25519 public key, msgpack `bin` of exactly 32 bytes.
    pub key: PublicKey,
    /// Last time the user was seen online (Unix seconds), 0 if never.
    #[serde(default)]
    pub last_seen: i64,
    /// Extension: whether the user is online now. Present in ROSTER, SEARCH and GETUSER answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
}

/// The server's answer (type 6): negative codes are errors, positive ones success or notices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The code, see [`crate::status`].
    pub status: i8,
    /// A human-readable explanation, or the code's documented argument (a key for presence).
    #[serde(default)]
    pub payload: String,
    /// Extension: the `id` of the Message this Status is about (answers and receipts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Extension: the ids of several Messages one receipt is about (`7`, `8` or `9` for many
    /// messages at once, docs/PROTOCOL.md §8.1). A Status is about its `id` and every one of
    /// its `ids` ([`Status::about`]); an empty list is left out of the encoding.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
}

impl Status {
    /// A status with the given code and text.
    pub fn new(status: i8, payload: impl Into<String>) -> Self {
        Status {
            status,
            payload: payload.into(),
            id: None,
            ids: Vec::new(),
        }
    }

    /// The same status about the message with `id` (no change when `id` is `None`).
    pub fn with_id(mut self, id: Option<String>) -> Self {
        self.id = id;
        self
    }

    /// The same status about the messages with these ids: one goes into `id`, several into
    /// `ids`, so that a receipt for one message looks as it always did.
    pub fn with_ids(mut self, mut ids: Vec<String>) -> Self {
        if ids.len() == 1 {
            self.id = ids.pop();
        } else {
            self.ids = ids;
        }
        self
    }

    /// The ids of the messages this Status is about: its `id`, then its `ids`.
    pub fn about(&self) -> impl Iterator<Item = &str> {
        self.id.iter().chain(self.ids.iter()).map(String::as_str)
    }
}

/// Members of a room (type 7, docs/PROTOCOL.md §16): the answer to MEMBERS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomMemberList {
    /// The room's id (32 hex digits).
    pub room: String,
    /// Its members, keys in lower-case hex, in the order they joined.
    #[serde(default)]
    pub members: Vec<String>,
    /// Extension: the members who may add and remove others (the creator, today).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admins: Vec<String>,
    /// Extension: the room's MLS epoch as the server orders it (§16.4), so that a client can
    /// tell whether it missed a commit.
    #[serde(default)]
    pub epoch: u64,
}

/// A member joined a room (type 8): sent to the room's members when a commit adds one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomMemberJoin {
    /// The room.
    pub room: String,
    /// Who joined (key in hex).
    pub member: String,
    /// Extension: who added it (key in hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// A member left a room (type 9): sent to the room's members when one leaves or is removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomMemberPart {
    /// The room.
    pub room: String,
    /// Who left (key in hex).
    pub member: String,
    /// Extension: who removed it (key in hex); the member itself when it left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// A request to talk (type 10, the v1 draft's, docs/PROTOCOL.md §14). From a client: "I want
/// to talk to these users" (one key or alias in `to`). From the server: "`from` wants to talk
/// to you", with the conversation's `id` to acknowledge.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Who the request is for: keys (hex) or aliases. The draft's `user@host:port/resource`
    /// names a device; flexim names users (§14.6).
    pub to: Vec<String>,
    /// The requester: its key in hex (or, from a client, one of its aliases).
    pub from: String,
    /// Protocol options; none are defined yet, and unknown ones are ignored.
    #[serde(default)]
    pub options: Vec<String>,
    /// The conversation's id (§14.1), set by the server when it delivers a request (an
    /// extension key: the draft has no id in a Request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Extension, set by the server for an invitation to a room (§16.3): the MLS Welcome in
    /// base64, and `id` is the room's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub welcome: Option<String>,
}

/// Accepts a request (type 11, the v1 draft's): the conversation id the Request carried, or
/// the requester's key in hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledge {
    /// The id advertised by the request.
    pub id: String,
}

/// A conversation (type 12, the v1 draft's Connection, docs/PROTOCOL.md §14).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// Connection id.
    pub id: String,
    /// Users involved.
    #[serde(default)]
    pub users: Vec<String>,
    /// Last activity (Unix seconds).
    #[serde(default)]
    pub last_active: i64,
    /// The users (keys in hex) who have not accepted the others yet (an extension key:
    /// docs/PROTOCOL.md §14.2); empty once everyone has.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<String>,
}

/// Any datum.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Datum {
    Auth(Auth),
    AuthResponse(AuthResponse),
    Command(Command),
    Message(Message),
    Roster(Roster),
    User(User),
    Status(Status),
    RoomMemberList(RoomMemberList),
    RoomMemberJoin(RoomMemberJoin),
    RoomMemberPart(RoomMemberPart),
    Request(Request),
    Acknowledge(Acknowledge),
    Connection(Connection),
}

/// Why a frame's body is not a datum. The framing itself is intact, so a connection can go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatumError {
    /// The type byte names no datum.
    #[error("unknown datum type {0}")]
    UnknownType(u8),
    /// The body is valid msgpack of the wrong shape at the top (an array, a string, ...), or not
    /// msgpack at all.
    #[error("{kind} body must be a msgpack map")]
    NotAMap {
        /// The datum's name.
        kind: &'static str,
    },
    /// The map is missing a field, has a field of the wrong type, or is cut short.
    #[error("malformed {kind}: {reason}")]
    Malformed {
        /// The datum's name.
        kind: &'static str,
        /// What the decoder found wrong.
        reason: String,
    },
}

/// The deepest nesting of maps and arrays a body may have, the datum's own map counted. The
/// deepest datum nests four (a Roster's map, its users, a User, its aliases); the rest leaves
/// room for extensions under keys this version ignores. The decoder recurses once per level:
/// msgpack's default of 1024 levels (1 KB of body) overflowed a 2 MB thread's stack in a debug
/// build (an input the `datums` fuzz target made, replayed by the test suite), and a browser's
/// stack is smaller still.
pub const MAX_DEPTH: usize = 32;

/// True when the first byte of `body` starts a msgpack map (fixmap, map16 or map32).
fn starts_a_map(body: &[u8]) -> bool {
    matches!(body.first(), Some(0x80..=0x8f | 0xde | 0xdf))
}

/// True when the first byte of `body` starts a msgpack array (fixarray, array16 or array32).
fn starts_an_array(body: &[u8]) -> bool {
    matches!(body.first(), Some(0x90..=0x9f | 0xdc | 0xdd))
}

fn decode_body<T: serde::de::DeserializeOwned>(
    kind: DatumKind,
    body: &[u8],
) -> Result<T, DatumError> {
    // Reading through `&[u8]` (an `io::Read` that advances) lets us see what is left over.
    let mut de = rmp_serde::Deserializer::new(body);
    de.set_max_depth(MAX_DEPTH + 1); // rmp-serde refuses the n-th level of a limit of n.
    let value = T::deserialize(&mut de).map_err(|e| DatumError::Malformed {
        kind: kind.name(),
        reason: e.to_string(),
    })?;
    let used = de.get_ref().len();
    if used != 0 {
        return Err(DatumError::Malformed {
            kind: kind.name(),
            reason: format!("{used} bytes after the map"),
        });
    }
    Ok(value)
}

impl Datum {
    /// The datum's kind.
    pub fn kind(&self) -> DatumKind {
        match self {
            Datum::Auth(_) => DatumKind::Auth,
            Datum::AuthResponse(_) => DatumKind::AuthResponse,
            Datum::Command(_) => DatumKind::Command,
            Datum::Message(_) => DatumKind::Message,
            Datum::Roster(_) => DatumKind::Roster,
            Datum::User(_) => DatumKind::User,
            Datum::Status(_) => DatumKind::Status,
            Datum::RoomMemberList(_) => DatumKind::RoomMemberList,
            Datum::RoomMemberJoin(_) => DatumKind::RoomMemberJoin,
            Datum::RoomMemberPart(_) => DatumKind::RoomMemberPart,
            Datum::Request(_) => DatumKind::Request,
            Datum::Acknowledge(_) => DatumKind::Acknowledge,
            Datum::Connection(_) => DatumKind::Connection,
        }
    }

    /// Decodes a frame body of the given type byte.
    pub fn decode(kind: u8, body: &[u8]) -> Result<Datum, DatumError> {
        let kind = DatumKind::from_u8(kind).ok_or(DatumError::UnknownType(kind))?;
        let bare_roster = kind == DatumKind::Roster && starts_an_array(body);
        if !starts_a_map(body) && !bare_roster {
            return Err(DatumError::NotAMap { kind: kind.name() });
        }
        Ok(match kind {
            DatumKind::Auth => Datum::Auth(decode_body(kind, body)?),
            DatumKind::AuthResponse => Datum::AuthResponse(decode_body(kind, body)?),
            DatumKind::Command => Datum::Command(decode_body(kind, body)?),
            DatumKind::Message => Datum::Message(decode_body(kind, body)?),
            DatumKind::Roster => Datum::Roster(decode_body(kind, body)?),
            DatumKind::User => Datum::User(decode_body(kind, body)?),
            DatumKind::Status => Datum::Status(decode_body(kind, body)?),
            DatumKind::RoomMemberList => Datum::RoomMemberList(decode_body(kind, body)?),
            DatumKind::RoomMemberJoin => Datum::RoomMemberJoin(decode_body(kind, body)?),
            DatumKind::RoomMemberPart => Datum::RoomMemberPart(decode_body(kind, body)?),
            DatumKind::Request => Datum::Request(decode_body(kind, body)?),
            DatumKind::Acknowledge => Datum::Acknowledge(decode_body(kind, body)?),
            DatumKind::Connection => Datum::Connection(decode_body(kind, body)?),
        })
    }

    /// The msgpack body (a map with the RFC's field names).
    pub fn encode_body(&self) -> Vec<u8> {
        fn named<T: Serialize>(v: &T) -> Vec<u8> {
            // Serializing plain structs of strings, integers and byte arrays into a Vec
            // cannot fail; a failure here would be a bug in this crate's types.
            rmp_serde::to_vec_named(v).expect("datum serializes")
        }
        match self {
            Datum::Auth(d) => named(d),
            Datum::AuthResponse(d) => named(d),
            Datum::Command(d) => named(d),
            Datum::Message(d) => named(d),
            Datum::Roster(d) => named(d),
            Datum::User(d) => named(d),
            Datum::Status(d) => named(d),
            Datum::RoomMemberList(d) => named(d),
            Datum::RoomMemberJoin(d) => named(d),
            Datum::RoomMemberPart(d) => named(d),
            Datum::Request(d) => named(d),
            Datum::Acknowledge(d) => named(d),
            Datum::Connection(d) => named(d),
        }
    }

    /// The whole frame: type byte, big-endian length, body.
    pub fn to_frame(&self) -> Result<Vec<u8>, FrameError> {
        let body = self.encode_body();
        let mut out = Vec::with_capacity(frame::PREFIX_LEN + body.len());
        frame::encode_into(self.kind() as u8, &body, &mut out)?;
        Ok(out)
    }
}

macro_rules! from_struct {
    ($($t:ident),*) => {$(
        impl From<$t> for Datum {
            fn from(d: $t) -> Datum { Datum::$t(d) }
        }
    )*};
}
from_struct!(
    Auth,
    AuthResponse,
    Command,
    Message,
    Roster,
    User,
    Status,
    RoomMemberList,
    RoomMemberJoin,
    RoomMemberPart,
    Request,
    Acknowledge,
    Connection
);

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(d: Datum) {
        let frame = d.to_frame().unwrap();
        let (kind, body) = crate::frame::split_exact(&frame, 65535).unwrap();
        assert_eq!(Datum::decode(kind, body).unwrap(), d);
    }

    #[test]
    fn a_receipt_names_one_message_in_id_and_several_in_ids() {
        let one = Status::new(7, "d").with_ids(vec!["a".into()]);
        assert_eq!((one.id.as_deref(), one.ids.len()), (Some("a"), 0));
        assert_eq!(one.about().collect::<Vec<_>>(), ["a"]);
        let many = Status::new(7, "d").with_ids(vec!["a".into(), "b".into()]);
        assert_eq!(many.id, None);
        assert_eq!(many.about().collect::<Vec<_>>(), ["a", "b"]);
        // An empty list is not encoded: a Status without ids is byte for byte what it was.
        let plain = Datum::Status(Status::new(3, "relayed")).to_frame().unwrap();
        assert!(!plain.windows(3).any(|w| w == b"ids"));
        let body = &Datum::Status(many.clone()).to_frame().unwrap()[3..];
        assert_eq!(Datum::decode(6, body).unwrap(), Datum::Status(many));
    }

    #[test]
    fn every_datum_round_trips() {
        let user = User {
            aliases: vec!["alice".into()],
            key: PublicKey([1; 32]),
            last_seen: 5,
            online: Some(true),
        };
        round_trip(
            Auth {
                date: 1,
                challenge: "c".into(),
                last_seen: 2,
            }
            .into(),
        );
        round_trip(
            AuthResponse {
                challenge: "x".into(),
            }
            .into(),
        );
        round_trip(Command::new("AUTH", &["k"]).into());
        round_trip(
            Message {
                to: "bob".into(),
                from: "alice".into(),
                flags: vec!["NOTIFY".into()],
                date: 3,
                msg: "m".into(),
                id: Some("m-1".into()),
                ..Default::default()
            }
            .into(),
        );
        round_trip(
            Status::new(7, "delivered")
                .with_id(Some("m-1".into()))
                .into(),
        );
        round_trip(
            Status::new(7, "delivered")
                .with_ids(vec!["m-1".into(), "m-2".into()])
                .into(),
        );
        round_trip(
            Roster {
                users: vec![user.clone()],
            }
            .into(),
        );
        round_trip(user.into());
        round_trip(Status::new(-7, "spoof").into());
        round_trip(
            RoomMemberList {
                room: "r".into(),
                members: vec!["a".into()],
                ..Default::default()
            }
            .into(),
        );
        round_trip(
            RoomMemberJoin {
                room: "r".into(),
                member: "a".into(),
                ..Default::default()
            }
            .into(),
        );
        round_trip(
            RoomMemberPart {
                room: "r".into(),
                member: "a".into(),
                ..Default::default()
            }
            .into(),
        );
        round_trip(
            Request {
                to: vec!["a@h:1/r".into()],
                from: "b@h:1/r".into(),
                options: vec![],
                id: Some("c".into()),
                ..Default::default()
            }
            .into(),
        );
        round_trip(Acknowledge { id: "i".into() }.into());
        round_trip(
            Connection {
                id: "i".into(),
                users: vec![],
                last_active: 9,
                pending: vec!["k".into()],
            }
            .into(),
        );
    }

    #[test]
    fn bodies_are_maps_with_field_names() {
        let body = Datum::Status(Status::new(1, "ok")).encode_body();
        // fixmap of 2, then "status"
        assert_eq!(body[0], 0x82);
        assert_eq!(&body[1..8], b"\xa6status");
    }

    #[test]
    fn user_key_is_bin_32() {
        let body = Datum::User(User {
            aliases: vec![],
            key: PublicKey([9; 32]),
            last_seen: 0,
            online: None,
        })
        .encode_body();
        let needle = [0xc4, 32];
        assert!(body.windows(2).any(|w| w == needle));
    }

    #[test]
    fn a_short_key_is_malformed() {
        #[derive(Serialize)]
        struct BadUser {
            aliases: Vec<String>,
            #[serde(with = "serde_bytes")]
            key: Vec<u8>,
            last_seen: i64,
        }
        let body = rmp_serde::to_vec_named(&BadUser {
            aliases: vec![],
            key: vec![1; 31],
            last_seen: 0,
        })
        .unwrap();
        assert!(matches!(
            Datum::decode(5, &body),
            Err(DatumError::Malformed { kind: "User", .. })
        ));
    }

    #[test]
    fn a_message_ref_reads_what_a_message_reads_without_copying() {
        let m = Message {
            to: "bob".into(),
            from: "alice".into(),
            flags: vec!["NOTIFY".into()],
            date: -3,
            msg: "sealed body".into(),
            id: Some("m-1".into()),
            ..Default::default()
        };
        let body = Datum::Message(m.clone()).encode_body();
        let r = MessageRef::decode(&body).unwrap();
        assert_eq!(
            (r.to, r.from, r.flags.clone(), r.date, r.msg, r.id),
            (
                "bob",
                "alice",
                vec!["NOTIFY"],
                -3,
                "sealed body",
                Some("m-1")
            )
        );
        // Every body Datum::decode refuses, MessageRef refuses too, and the reverse.
        let mut trailing = body.clone();
        trailing.push(0xc0);
        let positional = rmp_serde::to_vec(&m).unwrap();
        let cut = &body[..body.len() - 2];
        let wrong_type = rmp_serde::to_vec_named(&serde_json::json!({
            "to": "bob", "from": "alice", "date": "yesterday", "msg": "x"
        }))
        .unwrap_or_default();
        for bad in [&trailing[..], &positional, cut, &[0xc1], &[], &wrong_type] {
            assert!(Datum::decode(3, bad).is_err(), "{bad:?}");
            assert!(MessageRef::decode(bad).is_err(), "{bad:?}");
        }
        let minimal = rmp_serde::to_vec_named(&serde_json::json!({
            "to": "b", "from": "a", "date": 1, "msg": "x", "extra": [1, {"k": 2.5}]
        }))
        .unwrap_or_default();
        assert!(Datum::decode(3, &minimal).is_ok());
        assert_eq!(
            MessageRef::decode(&minimal).unwrap().flags,
            Vec::<&str>::new()
        );
    }

    #[test]
    fn value_len_measures_every_kind_of_value() {
        let v = serde_json::json!({"a": [1, -1, 300, -300, 70000, 1.5, null, true, "s"], "b": {}});
        let mut bytes = rmp_serde::to_vec_named(&v).unwrap();
        assert_eq!(value_len(&bytes), Some(bytes.len()));
        bytes.push(0);
        assert_eq!(value_len(&bytes), Some(bytes.len() - 1));
        assert_eq!(
            value_len(&[0xdf, 0xff, 0xff, 0xff, 0xff]),
            None,
            "a forged count"
        );
        assert_eq!(value_len(&[0xc4, 3, 1, 2, 3]), Some(5));
        assert_eq!(value_len(&[0xd8, 0]), None);
    }

    #[test]
    fn unknown_keys_are_ignored() {
        #[derive(Serialize)]
        struct Extended {
            status: i8,
            payload: String,
            room: String,
        }
        let body = rmp_serde::to_vec_named(&Extended {
            status: 2,
            payload: "p".into(),
            room: "x".into(),
        })
        .unwrap();
        assert_eq!(
            Datum::decode(6, &body),
            Ok(Datum::Status(Status::new(2, "p")))
        );
    }

    #[test]
    fn bad_bodies_get_named_errors() {
        assert_eq!(Datum::decode(42, b"\x80"), Err(DatumError::UnknownType(42)));
        // A positional array is not accepted for a Message.
        let arr = rmp_serde::to_vec(&("a", "b", Vec::<String>::new(), 1, "m")).unwrap();
        assert_eq!(
            Datum::decode(3, &arr),
            Err(DatumError::NotAMap { kind: "Message" })
        );
        assert_eq!(
            Datum::decode(3, b""),
            Err(DatumError::NotAMap { kind: "Message" })
        );
        // `to` as an integer.
        #[derive(Serialize)]
        struct WrongTypes {
            to: i32,
            from: String,
            date: i64,
            msg: String,
        }
        let body = rmp_serde::to_vec_named(&WrongTypes {
            to: 5,
            from: "a".into(),
            date: 1,
            msg: "m".into(),
        })
        .unwrap();
        assert!(matches!(
            Datum::decode(3, &body),
            Err(DatumError::Malformed {
                kind: "Message",
                ..
            })
        ));
        // A map cut short.
        let mut body = Datum::Status(Status::new(1, "hello")).encode_body();
        body.truncate(body.len() - 2);
        assert!(matches!(
            Datum::decode(6, &body),
            Err(DatumError::Malformed { kind: "Status", .. })
        ));
    }

    #[test]
    fn roster_accepts_a_bare_array() {
        let user = User {
            aliases: vec![],
            key: PublicKey([2; 32]),
            last_seen: 0,
            online: None,
        };
        let body = rmp_serde::to_vec_named(&vec![user.clone()]).unwrap();
        assert_eq!(
            Datum::decode(4, &body),
            Ok(Datum::Roster(Roster { users: vec![user] }))
        );
    }
}
