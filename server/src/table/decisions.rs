//! The decisions the table's methods return, for the relay to carry out.

use bytes::Bytes;
use flexim_protocol::PublicKey;

use crate::frames::Id;
use crate::store::Entry;

/// A store write the table decided on. The caller starts it (hands it to the store) before it
/// lets go of the shard, so that writes reach the store in the order the table decided them,
/// and calls [`Table::store_finished`] for `to` when it has ended, whatever the outcome.
#[derive(Debug)]
pub(crate) struct Write {
    /// Whose queue the entries go to.
    pub(crate) to: PublicKey,
    /// The entries, in order. Their time (`at`, for the retention) is set when the write is
    /// handed to the store: the table reads no clock.
    pub(crate) entries: Vec<Entry>,
    /// Which of the store's bounds the entries are held to, and how.
    pub(crate) admit: Admit,
    /// What to do once the write is durable (or failed).
    pub(crate) then: Then,
}

/// How a store write is held to the store's bounds (`config::Limits`): the recipient's queue,
/// the sender's share of it, the store's budget across every queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// A new Message: every bound; refused whole (its sender is answered why).
    Message,
    /// Messages the recipient's connection held without an acknowledgement: every bound, entry
    /// by entry in order; those that find no room are left out, and their senders, who were
    /// told `3` already, are told `-24` instead of `8`.
    Held,
    /// A receipt kept for its offline recipient: the recipient's queue only. Receipts are small
    /// and bounded by the messages that recipient sent, so neither the share (the server is
    /// their sender) nor the store's budget holds them back.
    Receipt,
    /// A copy of a room's commit, or a room's notice (an invitation, a join or a part): no
    /// bound at all, because a member that misses a commit can never read the room again
    /// (docs/PROTOCOL.md §16.4). Rooms are bounded instead (`--max-room-members`, and one
    /// commit per epoch).
    Room,
}

/// What follows a store write.
#[derive(Debug)]
pub(crate) enum Then {
    /// Answer the routed Message's sender: `2` once stored, or why not.
    Answer(Option<Id>),
    /// Once durable, tell each sender that its messages are stored (`8`), one receipt per
    /// sender naming all of its ids, and of those the store found no room for, that they
    /// were not kept (`-24`). Nothing if the write failed: the senders still hold them.
    StoredLater(Receipts),
    /// Nothing: a receipt kept for its offline recipient.
    Nothing,
}

/// Receipts about messages for one recipient, one per sender.
#[derive(Debug)]
pub(crate) struct Receipts {
    /// The recipient the messages were for (the receipts' text names it).
    pub(crate) about: PublicKey,
    /// Why the messages are stored, for `8`; `None` for `7` (delivered).
    pub(crate) why: Option<Why>,
    /// The text of a `7`, made once per key at its login (ACKs are frequent).
    pub(crate) delivered: Option<std::sync::Arc<str>>,
    /// Each sender and the ids of its messages, oldest first.
    pub(crate) senders: Vec<(PublicKey, Vec<Id>)>,
}

/// Why messages held in memory went to the store (the `8` receipt's text says it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// The key's last session ended: they come at its next login.
    Offline,
    /// The primary ended and another session of the key takes over: it gets them now.
    NextSession,
    /// A newer session took over with GHOST: it gets them now.
    Ghost,
    /// The session did not read (or acknowledge) fast enough and is closed: they come when it
    /// reconnects.
    SlowReader,
    /// A session on another node took the key over: it gets them from the shared store.
    TakenElsewhere,
}

/// Close `outlet`'s session after telling it `code` and `text`.
#[derive(Debug)]
pub(crate) struct Close<O> {
    /// The session.
    pub(crate) outlet: O,
    /// The Status to send it.
    pub(crate) code: i8,
    /// The Status's text.
    pub(crate) text: &'static str,
}

/// What to do with a routed Message.
#[derive(Debug)]
pub(crate) enum Routed<O> {
    /// It is in the recipient's queue: answer the sender with this frame (`3`).
    Relayed(Bytes),
    /// It goes to the store (boxed: the common answer above stays small).
    Store(Box<ToStore<O>>),
}

/// A routed Message that goes to the store: start `demoted` (if any) and then `write`, in this
/// order, and carry out `close`.
#[derive(Debug)]
pub(crate) struct ToStore<O> {
    /// What the recipient's primary held only in memory, going to the store first.
    pub(crate) demoted: Option<Write>,
    /// The message itself (its `then` answers the sender).
    pub(crate) write: Write,
    /// The recipient's primary, too slow to keep.
    pub(crate) close: Option<Close<O>>,
}

/// What follows a session's end.
#[derive(Debug)]
pub(crate) struct Left<O> {
    /// What it held in memory without an acknowledgement, going to the store.
    pub(crate) write: Option<Write>,
    /// The session that takes over, to catch up with the store.
    pub(crate) wake: Option<O>,
    /// Whether that was the key's last session here: it is offline now.
    pub(crate) offline: bool,
    /// Whether the key was held by this node (with several nodes: it must be released).
    pub(crate) held_here: bool,
}

/// Where a GHOST stands before the table acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GhostCheck {
    /// The session is not registered (it is closing).
    Unknown,
    /// The key's sessions are all here.
    Here,
    /// Another node holds the key: the caller takes it over there first.
    Elsewhere,
}

/// What follows a GHOST.
#[derive(Debug)]
pub(crate) struct Ghosted<O> {
    /// What the old primary held in memory without an acknowledgement, going to the store.
    pub(crate) write: Option<Write>,
    /// The old primary, taken over.
    pub(crate) close: Option<Close<O>>,
    /// The session itself, if it was the primary already (it catches up again).
    pub(crate) wake: Option<O>,
}

/// What follows the end of a store write.
#[derive(Debug)]
pub(crate) enum Finished<O> {
    /// The key's primary catches up with the store.
    Wake(O),
    /// The key is not held here: with several nodes, wake the node that holds it.
    WakeElsewhere,
    /// Nothing (its primary is closing).
    Nothing,
}

/// What an ACK did.
#[derive(Debug)]
pub(crate) struct Acked {
    /// How many of the ACK's distinct ids named a message the session held.
    pub(crate) matched: usize,
    /// Stored entries to remove from the store.
    pub(crate) remove: Vec<u64>,
    /// The `7` receipts to send, one per sender.
    pub(crate) receipts: Option<Receipts>,
}

/// Where a receipt goes.
#[derive(Debug)]
pub(crate) enum ReceiptRoute {
    /// In its recipient's queue.
    Sent,
    /// Its recipient has no session here: with several nodes, ask where it is.
    AskCluster(Bytes),
    /// Keep it in the store for its recipient (start this write).
    Store(Write),
}

/// The outcome of a session's look at the store that found nothing it had not been given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GoLive {
    /// It is live: new messages come straight to it from now on.
    Live,
    /// Writes for the key were decided (and ended) since its look began: look again, with
    /// this mark.
    Again(u64),
    /// A write for the key is running: its end wakes the session to look again.
    Wait,
    /// It may not catch up (not the active session, or closing).
    Stop,
}
