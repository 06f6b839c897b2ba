//! What the session reports to the page.

use flexim_protocol::{PublicKey, User};

use crate::policy::PinCheck;
use crate::requests::Lookup;
use crate::state::Delivery;

/// A message that opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The sender's key (`from` resolved).
    pub from: PublicKey,
    /// When the sender says it sent the message (Unix seconds; bound into the seal).
    pub date: i64,
    /// The flags, such as `NOTIFY` (bound into the seal).
    pub flags: Vec<String>,
    /// The plaintext.
    pub text: String,
    /// The de-duplication id (see [`crate::policy::message_id`]).
    pub id: String,
}

/// Something the page should show or act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The server introduced itself. With [`PinCheck::Mismatch`] the session waits for
    /// [`crate::session::Session::accept_server_key`] before it logs in.
    ServerKey {
        /// The key the server presents.
        key: PublicKey,
        /// How it compares with the pinned key.
        check: PinCheck,
    },
    /// The handshake succeeded: the server's key is proven and this connection is logged in.
    LoggedIn {
        /// This user as the server knows it (aliases, previous `last_seen`).
        me: User,
        /// The server's User datum.
        server: User,
    },
    /// A message arrived and opened (copies of messages already seen are not reported).
    Message(Incoming),
    /// A message arrived but did not open.
    Undecryptable {
        /// The `from` field as sent.
        from: String,
        /// The sender's key, when `from` could be resolved.
        sender: Option<PublicKey>,
        /// The message's claimed date (0 if the datum itself was garbled).
        date: i64,
        /// Why it did not open.
        reason: String,
    },
    /// A user came online or went offline.
    Presence {
        /// The user.
        key: PublicKey,
        /// True when the user came online.
        online: bool,
    },
    /// REGISTER succeeded (also when the key already had the alias).
    AliasRegistered {
        /// The alias.
        alias: String,
    },
    /// REGISTER failed.
    AliasRefused {
        /// The alias asked for.
        alias: String,
        /// The Status code (-9 taken, -12 invalid), 0 if the answer was not a Status.
        status: i8,
        /// The server's explanation.
        reason: String,
    },
    /// The answer to ROSTER.
    Roster(Vec<User>),
    /// The answer to SEARCH.
    SearchResults {
        /// The text searched for.
        text: String,
        /// The users found.
        users: Vec<User>,
    },
    /// SEARCH failed.
    SearchFailed {
        /// The text searched for.
        text: String,
        /// Why.
        reason: String,
    },
    /// GETUSER found the user (not reported for [`Lookup::Sender`], which is internal).
    UserFound {
        /// The key or alias asked about.
        query: String,
        /// Why it was asked.
        purpose: Lookup,
        /// The user.
        user: User,
    },
    /// GETUSER failed (not reported for [`Lookup::Sender`]).
    UserNotFound {
        /// The key or alias asked about.
        query: String,
        /// Why it was asked.
        purpose: Lookup,
        /// The Status code (-8 no such user), 0 if the answer was not a Status.
        status: i8,
        /// The server's explanation.
        reason: String,
    },
    /// The server answered an outgoing message, or sent a receipt for it. Answers and
    /// receipts may come late or twice: the page applies only those that move the message
    /// forward (see [`Delivery::can_become`]).
    Delivery {
        /// The message's id, as returned by [`crate::session::Session::send_text`].
        id: String,
        /// What became of it: relayed, stored, delivered, expired or failed.
        delivery: Delivery,
    },
    /// Something worth telling the user, with no action needed.
    Notice(String),
    /// The server announced that it closes this connection (taken over, shutting down, too
    /// slow). `status` tells which: after [`flexim_protocol::status::TAKEN_OVER`] another tab or device is the
    /// active session, and reconnecting automatically would only take it back.
    Closing {
        /// The Status code.
        status: i8,
        /// The server's explanation.
        reason: String,
    },
    /// The connection cannot go on (the handshake failed): the caller should close it.
    Failed(String),
}
