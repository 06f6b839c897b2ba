//! Status codes and command names.
//!
//! Negative codes are errors, positive codes success or notices, following the original Go
//! server (fleximd). The one exception is presence: `-10` means "went offline" and is a notice,
//! not an error, kept for compatibility with fleximd's 10 / -10 pair.

/// The command went through (REGISTER, OFFLINES, ...); the payload says what happened.
pub const OK: i8 = 1;
/// The recipient is offline; the message is durably stored and will be delivered at its login.
pub const STORED: i8 = 2;
/// The recipient is online; the message was handed to its connection.
pub const RELAYED: i8 = 3;
/// GHOST succeeded: this connection is now the key's active session.
pub const GHOSTED: i8 = 4;
/// Sent after the User datum when the key already has an active session elsewhere: this
/// connection may send, but messages for the key keep going to the older session until this
/// one sends GHOST.
pub const SESSION_EXISTS: i8 = 5;
/// Sent unasked after login (or GHOST) when stored messages were delivered: "delivered N
/// stored messages". OFFLINES, which asks, is answered with OK instead, so a client can always
/// tell its command's answer from this notice.
pub const DELIVERED_STORED: i8 = 6;
/// Receipt, sent unasked to the sender of Messages that carried an `id` (the Status names them:
/// one in `id`, several in `ids`): the recipient acknowledged them (ACK). The server no longer
/// holds them.
pub const DELIVERED: i8 = 7;
/// Receipt, sent unasked to the sender of Messages that carried an `id` and were answered `3`
/// RELAYED (the Status names them in `id` or `ids`): their recipient's connection ended before
/// acknowledging them, and they are now durably stored for redelivery. From here on the
/// sender may forget them, as after `2`.
pub const STORED_LATER: i8 = 8;
/// Sent unasked when stored messages outlived the server's retention and were deleted unread:
/// to each sender of such messages that carried an `id` (the Status names them in `id` or
/// `ids`), and to the recipient as a count ("N stored messages expired unread").
pub const EXPIRED: i8 = 9;
/// Presence: the user whose key is the payload came online.
pub const PRESENCE_ONLINE: i8 = 10;
/// Presence: the user whose key is the payload went offline (a notice, not an error).
pub const PRESENCE_OFFLINE: i8 = -10;

/// The frame's body does not decode as the datum its type byte names (not a map, a field
/// missing or of the wrong type).
pub const MALFORMED: i8 = -1;
/// The type byte names no datum.
pub const UNKNOWN_DATUM: i8 = -2;
/// The frame's length is over the server's limit; the frame was skipped.
pub const TOO_LARGE: i8 = -3;
/// The connection ended in the middle of a frame, or a WebSocket message did not hold exactly
/// one frame (too short for its length prefix, or bytes after it).
pub const TRUNCATED: i8 = -4;
/// Only AUTH is accepted before authentication succeeds.
pub const UNAUTHENTICATED: i8 = -5;
/// The challenge-response failed (bad key, wrong answer, expired or reused challenge); the
/// server closes the connection after this status.
pub const AUTH_FAILED: i8 = -6;
/// A Message's `from` does not name the authenticated sender; nothing was forwarded.
pub const SPOOF: i8 = -7;
/// No user has that alias (or key, for GETUSER).
pub const NO_SUCH_USER: i8 = -8;
/// REGISTER: the alias belongs to another key.
pub const ALIAS_TAKEN: i8 = -9;
/// The command name is not one the server knows.
pub const UNKNOWN_COMMAND: i8 = -11;
/// A command's or a message's argument is invalid (bad alias, bad key, missing argument).
pub const BAD_ARGUMENT: i8 = -12;
/// The recipient's offline queue is full; the message was not stored.
pub const QUEUE_FULL: i8 = -13;
/// The server could not complete the request (a storage failure); nothing was lost that had
/// been confirmed, and the client may retry.
pub const INTERNAL: i8 = -14;
/// This session was taken over by a newer session of the same key (GHOST); the server closes
/// the connection after this status.
pub const TAKEN_OVER: i8 = -15;
/// The datum is valid but not one a client may send to this server (Roster, Status, rooms, ...).
pub const UNSUPPORTED: i8 = -16;
/// The server is shutting down; reconnect later.
pub const SHUTTING_DOWN: i8 = -17;
/// This session did not read its messages fast enough; the server stored what it could not
/// deliver and closes the connection. Reconnect to receive the rest.
pub const TOO_SLOW: i8 = -18;
/// The server has as many connections as it allows (`--max-connections`): this one is refused
/// right after its header and closed. Connections already open are not affected; try later.
pub const SERVER_FULL: i8 = -19;
/// A rate limit was reached (per address: new connections, new identities; per key: commands
/// such as ROSTER, SEARCH and GETUSER). The text names the limit and when to try again.
pub const RATE_LIMITED: i8 = -20;
/// The sender already has its share of the recipient's offline queue waiting: one sender may
/// hold only part of a queue, so that nobody can fill another user's queue alone. Not stored.
pub const SHARE_FULL: i8 = -21;
/// The server's store holds as many bytes of offline messages as it allows, across every
/// queue: nothing more is stored until some are delivered or expire. Messages to users who
/// are online still go through.
pub const STORE_FULL: i8 = -22;
/// This address already has as many connections open as one address may, or opens them faster
/// than one address may: the new one is refused right after its header and closed, as with
/// SERVER_FULL. Connections already open are not affected; try later.
pub const ADDRESS_FULL: i8 = -23;
/// Receipt, sent unasked to the sender of Messages that carried an `id` and were answered `3`
/// RELAYED (the Status names them in `id` or `ids`, like `8`): their recipient's connection
/// ended before acknowledging them, and the store had no room left for them (the recipient's
/// queue, the sender's share of it, or the server's store budget), so the server did not keep
/// them. Final: the recipient may never get them; the sender may write them again later.
pub const NOT_KEPT: i8 = -24;
/// The recipient has not accepted the sender (docs/PROTOCOL.md §14): the sender's messages in
/// the recipient's requests box reached `--request-messages`, the box holds
/// `--max-requests` other strangers already, or the recipient declined the request. Nothing
/// was forwarded or stored; the sender may write again once the recipient accepts.
pub const NOT_ACCEPTED: i8 = -25;
/// The recipient blocked the sender (docs/PROTOCOL.md §14): nothing was forwarded or stored,
/// and nothing from this sender will be until the recipient unblocks it.
pub const BLOCKED: i8 = -26;
/// The answer to KEYPACKAGE (docs/PROTOCOL.md §16.2): the payload is one of the user's
/// KeyPackages in base64, which the server has now forgotten (each is handed out once).
pub const KEY_PACKAGE: i8 = 11;
/// The answer to KEYPACKAGES (§16.2): the payload is how many of this user's KeyPackages the
/// server holds now, in decimal.
pub const KEY_PACKAGES: i8 = 12;
/// A commit for an epoch the room has left (§16.4): another commit came first. Nothing was
/// forwarded; the sender processes the commit it lacks, then commits again if still wanted.
pub const STALE_EPOCH: i8 = -27;
/// A room limit (§16, `--max-room-members` or `--max-rooms`) would be exceeded: nothing
/// changed.
pub const ROOM_LIMIT: i8 = -28;
/// The user has no KeyPackage left on the server (§16.2): it cannot be added to a room until
/// it comes online and publishes more.
pub const NO_KEY_PACKAGE: i8 = -29;
/// Only a room's admins may add or remove others (§16.3): nothing changed.
pub const NOT_ADMIN: i8 = -30;
/// The server's operator blocked this key (`flexim-server admin block`): sent instead of the
/// User datum at login, or to a session of the key when it is blocked, and the connection is
/// closed. Final until the operator unblocks the key.
pub const BANNED: i8 = -31;

/// A short name for a code, for logs and command-line output.
pub fn name(code: i8) -> &'static str {
    match code {
        OK => "ok",
        STORED => "stored",
        RELAYED => "relayed",
        GHOSTED => "ghosted",
        SESSION_EXISTS => "session-exists",
        DELIVERED_STORED => "delivered-stored",
        DELIVERED => "delivered",
        STORED_LATER => "stored-later",
        EXPIRED => "expired",
        PRESENCE_ONLINE => "online",
        PRESENCE_OFFLINE => "offline",
        MALFORMED => "malformed",
        UNKNOWN_DATUM => "unknown-datum",
        TOO_LARGE => "too-large",
        TRUNCATED => "truncated",
        UNAUTHENTICATED => "unauthenticated",
        AUTH_FAILED => "auth-failed",
        SPOOF => "spoof",
        NO_SUCH_USER => "no-such-user",
        ALIAS_TAKEN => "alias-taken",
        UNKNOWN_COMMAND => "unknown-command",
        BAD_ARGUMENT => "bad-argument",
        QUEUE_FULL => "queue-full",
        INTERNAL => "internal",
        TAKEN_OVER => "taken-over",
        UNSUPPORTED => "unsupported",
        SHUTTING_DOWN => "shutting-down",
        TOO_SLOW => "too-slow",
        SERVER_FULL => "server-full",
        RATE_LIMITED => "rate-limited",
        SHARE_FULL => "share-full",
        STORE_FULL => "store-full",
        ADDRESS_FULL => "address-full",
        NOT_KEPT => "not-kept",
        NOT_ACCEPTED => "not-accepted",
        BLOCKED => "blocked",
        KEY_PACKAGE => "key-package",
        KEY_PACKAGES => "key-packages",
        STALE_EPOCH => "stale-epoch",
        ROOM_LIMIT => "room-limit",
        NO_KEY_PACKAGE => "no-key-package",
        NOT_ADMIN => "not-admin",
        BANNED => "banned",
        _ => "unknown",
    }
}

/// True for codes that report a failure (every negative code except presence).
pub fn is_error(code: i8) -> bool {
    code < 0 && code != PRESENCE_OFFLINE
}

/// True for the codes the server sends unasked (presence and session notices). None of them
/// is ever the answer to a datum the client sent, which is how a client tells them apart.
pub fn is_notice(code: i8) -> bool {
    matches!(
        code,
        PRESENCE_ONLINE
            | PRESENCE_OFFLINE
            | SESSION_EXISTS
            | DELIVERED_STORED
            | DELIVERED
            | STORED_LATER
            | EXPIRED
            | TAKEN_OVER
            | SHUTTING_DOWN
            | TOO_SLOW
            | SERVER_FULL
            | ADDRESS_FULL
            | BANNED
            | NOT_KEPT
    )
}

/// Command names (the `cmd` field of a Command datum).
pub mod cmd {
    /// `[hex key, optional alias]`: start the challenge-response.
    pub const AUTH: &str = "AUTH";
    /// `[]`: known users with presence, as a Roster.
    pub const ROSTER: &str = "ROSTER";
    /// `[key or alias]`: one user, as a User datum.
    pub const GETUSER: &str = "GETUSER";
    /// `[text]`: users whose alias contains the text, as a Roster.
    pub const SEARCH: &str = "SEARCH";
    /// `[alias]`: claim an alias for this key.
    pub const REGISTER: &str = "REGISTER";
    /// `[]`: deliver the messages stored while this key was offline.
    pub const OFFLINES: &str = "OFFLINES";
    /// `[]`: make this connection the key's active session, closing the older one.
    pub const GHOST: &str = "GHOST";
    /// `[id, ...]`: the messages with these ids were received and processed; the server
    /// forgets them and sends each sender `7` DELIVERED.
    pub const ACK: &str = "ACK";
    /// `[]`: the pending requests in this user's requests box, as a Roster (§14).
    pub const REQUESTS: &str = "REQUESTS";
    /// `[key or alias]`: decline that user's request; its messages are refused with `-25`.
    pub const DECLINE: &str = "DECLINE";
    /// `[key or alias]`: refuse everything from that user with `-26`, and hide this user's
    /// presence from it.
    pub const BLOCK: &str = "BLOCK";
    /// `[key or alias]`: undo BLOCK (or DECLINE): that user is a stranger again.
    pub const UNBLOCK: &str = "UNBLOCK";
    /// `["on"]` or `["off"]`: whether SEARCH finds this user (off until turned on).
    pub const DISCOVERABLE: &str = "DISCOVERABLE";
    /// `[base64 KeyPackage, ...]`: keep these KeyPackages of this user for others to add it to
    /// rooms (none: only count them). Answer: `12` with the count (§16.2).
    pub const KEYPACKAGES: &str = "KEYPACKAGES";
    /// `[key or alias]`: hand out (and forget) one KeyPackage of that user: `11`, or `-29`.
    pub const KEYPACKAGE: &str = "KEYPACKAGE";
    /// `[room id]`: create a room (32 hex digits) with this user as its one member and admin.
    pub const CREATEROOM: &str = "CREATEROOM";
    /// `[room id]`: the room's members, as a RoomMemberList.
    pub const MEMBERS: &str = "MEMBERS";
    /// `[room id]`: leave the room (or decline its invitation); its members get a
    /// RoomMemberPart.
    pub const LEAVE: &str = "LEAVE";
}

/// The longest message `id` the server accepts, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Which bytes an id may hold, by value: one lookup per byte, because a server checks the id of
/// every message and every id of every ACK.
const ID_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
        b += 1;
    }
    table
};

/// Checks a message `id`: 1 to [`MAX_ID_LEN`] characters, each an ASCII letter, digit, `-` or
/// `_`, so that ids are safe to log, to store as keys and to show.
pub fn validate_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        return Err("an id must not be empty");
    }
    if id.len() > MAX_ID_LEN {
        return Err("an id may have at most 64 characters");
    }
    if !id.bytes().all(|b| ID_BYTE[usize::from(b)]) {
        return Err("an id may hold only ASCII letters, digits, '-' and '_'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_distinct_name() {
        let codes = [
            OK,
            STORED,
            RELAYED,
            GHOSTED,
            SESSION_EXISTS,
            DELIVERED_STORED,
            DELIVERED,
            STORED_LATER,
            EXPIRED,
            PRESENCE_ONLINE,
            PRESENCE_OFFLINE,
            MALFORMED,
            UNKNOWN_DATUM,
            TOO_LARGE,
            TRUNCATED,
            UNAUTHENTICATED,
            AUTH_FAILED,
            SPOOF,
            NO_SUCH_USER,
            ALIAS_TAKEN,
            UNKNOWN_COMMAND,
            BAD_ARGUMENT,
            QUEUE_FULL,
            INTERNAL,
            TAKEN_OVER,
            UNSUPPORTED,
            SHUTTING_DOWN,
            TOO_SLOW,
            SERVER_FULL,
            RATE_LIMITED,
            SHARE_FULL,
            STORE_FULL,
            ADDRESS_FULL,
            NOT_KEPT,
        ];
        let mut names: Vec<_> = codes.iter().map(|c| name(*c)).collect();
        assert!(!names.contains(&"unknown"));
        names.sort();
        names.dedup();
        assert_eq!(names.len(), codes.len());
        assert!(!is_error(PRESENCE_OFFLINE));
        assert!(is_error(SPOOF));
        assert!(!is_error(STORED));
        assert!(is_notice(PRESENCE_OFFLINE) && is_notice(TOO_SLOW));
        // A receipt that reports a failure: unsolicited, and an error all the same.
        assert!(is_notice(NOT_KEPT) && is_error(NOT_KEPT));
        assert!(!is_notice(OK) && !is_notice(STORED) && !is_notice(SPOOF));
    }

    #[test]
    fn ids_take_ascii_letters_digits_dash_and_underscore_only() {
        for b in 0..=255u8 {
            let ok = b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
            let s = char::from(b).to_string();
            assert_eq!(validate_id(&s).is_ok(), ok, "{b:#04x}");
        }
        assert!(validate_id("").is_err());
        assert!(validate_id(&"a".repeat(64)).is_ok());
        assert!(validate_id(&"a".repeat(65)).is_err());
        assert!(validate_id("ü").is_err());
    }
}
