//! What the engine reports to its driver.

use flexim_protocol::{PublicKey, Status, User};

use crate::contacts::KeyChange;
use crate::delivery::Delivery;
use crate::login::{LoginError, PinCheck};
use crate::requests::{Lookup, RequestId};

/// A message that arrived and opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The sender's key (`from` resolved).
    pub from: PublicKey,
    /// The `from` field as the sender wrote it (its key in hex, or one of its aliases). An
    /// alias here is the sender's claim; show [`Incoming::name`] instead.
    pub from_text: String,
    /// The alias pinned to the sender's key ([`crate::contacts`]): `from_text` when it is an
    /// alias pinned to `from`, else any alias pinned to `from`. Never an alias pinned to
    /// another key, so a message is never shown as coming from a contact whose key it is not.
    pub name: Option<String>,
    /// The `to` field as the sender wrote it (this user's key in hex, or one of its aliases).
    pub to: String,
    /// When the sender says it sent the message (Unix seconds); bound into the seal, so the
    /// server cannot change it.
    pub date: i64,
    /// The flags, such as `NOTIFY`; bound into the seal too.
    pub flags: Vec<String>,
    /// The plaintext.
    pub text: String,
    /// The sender's id for the message, when it set one: the id to acknowledge once the
    /// message is processed ([`crate::Engine::acknowledge`]). Until then the server keeps it
    /// and delivers it again at the next login.
    pub id: Option<String>,
    /// Whether the sender is a stranger who asked to talk and has not been answered: the
    /// message is from the requests box, to show apart from conversations.
    pub request: bool,
    /// The message's de-duplication key ([`crate::dedupe::message_key`]): stable across every
    /// copy, so an application may keep it with the message (its history) and hand it back to
    /// [`crate::Engine::remember_seen`] after a restart.
    pub key: String,
    /// Whether it came through the pair room of the two (MLS, §16.9), so that a key stolen
    /// later opens nothing of it; false for the static-key box of section 9, which a client
    /// shows as not forward secret.
    pub forward_secret: bool,
}

/// Why a request did not get the answer it wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The error Status code, or 0 when the answer was not a Status at all (a datum of the
    /// wrong kind, or a frame that did not decode).
    pub status: i8,
    /// The server's explanation, or what was wrong with the answer.
    pub reason: String,
}

impl Refusal {
    /// The refusal an error Status says.
    pub fn of(s: &Status) -> Refusal {
        Refusal {
            status: s.status,
            reason: s.payload.clone(),
        }
    }

    /// A refusal without a Status: the answer was garbled or of the wrong kind.
    pub fn garbled(reason: impl Into<String>) -> Refusal {
        Refusal {
            status: 0,
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.status == 0 {
            f.write_str(&self.reason)
        } else {
            let name = flexim_protocol::status::name(self.status);
            write!(f, "{name} ({}): {}", self.status, self.reason)
        }
    }
}

/// The answer to one request, interpreted for what the request was for.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// REGISTER: the alias is this key's now (also when it already was), or why not (`-9`
    /// taken, `-12` invalid).
    Register {
        /// The alias asked for.
        alias: String,
        /// The server's Status, or the refusal.
        result: Result<Status, Refusal>,
    },
    /// ROSTER: the users the server lists for this user.
    Roster(Result<Vec<User>, Refusal>),
    /// SEARCH.
    Search {
        /// The text searched for.
        text: String,
        /// The users found.
        result: Result<Vec<User>, Refusal>,
    },
    /// GETUSER (not reported for [`Lookup::Sender`], which is the engine's own).
    User {
        /// The key or alias asked about.
        query: String,
        /// Why it was asked.
        purpose: Lookup,
        /// The user, or why not (`-8` no such user).
        result: Result<User, Refusal>,
    },
    /// GHOST: this connection is the key's active session now (Status `4`), or why not.
    Ghost(Result<Status, Refusal>),
    /// OFFLINES: the stored messages were delivered (as [`Event::Message`]s before this).
    Offlines(Result<Status, Refusal>),
    /// ACK.
    Ack {
        /// How many ids it carried.
        count: usize,
        /// The server's Status (`acknowledged N of M`), or why not.
        result: Result<Status, Refusal>,
    },
    /// A Request, Acknowledge, DECLINE, BLOCK, UNBLOCK or DISCOVERABLE: done (the Status
    /// says what), or why not (`-25` not accepted, `-26` blocked, `-8` no such user or
    /// request). A Request or Acknowledge that succeeded is followed by
    /// [`Event::Conversation`].
    Consent {
        /// What was asked.
        action: crate::requests::Consent,
        /// Whom it concerned, as given.
        who: String,
        /// The server's Status, or the refusal.
        result: Result<Status, Refusal>,
    },
    /// REQUESTS: the strangers waiting in this user's requests box.
    Requests(Result<Vec<User>, Refusal>),
    /// A room request settled: CREATEROOM, an invitation (its KeyPackage claimed and its
    /// commit ordered), a removal, the Acknowledge of an invitation, or LEAVE (§16). `-29`
    /// means the invited user has no KeyPackage left, `-30` that only admins may do that.
    Room {
        /// The room.
        room: flexim_protocol::conversation::RoomId,
        /// What was asked.
        action: crate::requests::RoomAction,
        /// The server's Status, or the refusal.
        result: Result<Status, Refusal>,
    },
    /// KEYPACKAGES: how many of this user's KeyPackages the server holds now.
    KeyPackages(Result<usize, Refusal>),
    /// MEMBERS: the server's member list of a room (compare it with
    /// [`crate::Engine::group_members`]).
    RoomMembers {
        /// The room.
        room: flexim_protocol::conversation::RoomId,
        /// The list, or why not.
        result: Result<flexim_protocol::datum::RoomMemberList, Refusal>,
    },
    /// The answer to a sent message: `3` RELAYED leaves it waiting for a receipt, `2` STORED
    /// confirms it and an error refuses it for good.
    Sent {
        /// The message's id.
        id: String,
        /// What it means for the message; `None` when the answer was garbled or not a Status,
        /// so the message's fate is unknown and it stays in the outbox.
        delivery: Option<Delivery>,
        /// The server's Status (a success), or the refusal.
        result: Result<Status, Refusal>,
        /// Whether the message had been confirmed already, by a receipt that overtook this
        /// answer (a copy sent again after a reconnect): the answer then has nothing to add.
        late: bool,
    },
}

/// Something the driver should show or act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The server introduced itself. With [`PinCheck::Mismatch`] the engine holds the login
    /// until [`crate::Engine::accept_server_key`]: a browser asks the user, a command-line
    /// client refuses.
    ServerKey {
        /// The key the server presents.
        key: PublicKey,
        /// How it compares with the pinned key.
        check: PinCheck,
    },
    /// The handshake succeeded: the server's key is proven and this connection is logged in.
    /// The unconfirmed messages have been sent again already.
    LoggedIn {
        /// This user as the server knows it (aliases, previous `last_seen`).
        me: User,
        /// The server's User datum.
        server: User,
    },
    /// The login failed; the connection cannot go on.
    LoginFailed(LoginError),
    /// The server names another key for an alias than the one pinned for it (once per new
    /// key): the contact made a new key, or someone substitutes theirs. Until the user accepts
    /// it ([`crate::Engine::accept_contact_key`]) nothing is sealed to the alias and the alias
    /// is not shown for the new key.
    ContactKeyChanged(KeyChange),
    /// A message arrived and opened (copies of messages already reported are not).
    Message(Incoming),
    /// A message arrived but did not open. One with an id that will never open has been
    /// acknowledged (it would come back at every login); it is reported once.
    Undecryptable {
        /// The `from` field as sent (empty if the datum itself was garbled).
        from: String,
        /// The sender's key, when `from` could be resolved.
        sender: Option<PublicKey>,
        /// The message's claimed date (0 if the datum itself was garbled).
        date: i64,
        /// Why it did not open.
        reason: String,
    },
    /// Someone who is not a contact asks to talk (a Request from the server). Until this
    /// user accepts ([`crate::Engine::accept_request`]), that user's messages are reported
    /// with [`Incoming::request`] set, and the server holds at most a few of them.
    Requested {
        /// Who asks.
        from: PublicKey,
        /// The conversation's id, to accept it with.
        conversation: String,
    },
    /// A conversation began or changed: this user asked, accepted, or was accepted.
    Conversation(Conversation),
    /// A message of a room arrived and opened (copies are not reported again).
    RoomMessage(RoomIncoming),
    /// A room's membership changed by a commit (this user's, once the server ordered it, or
    /// another member's): the group is at `epoch` now.
    RoomChanged {
        /// The room.
        room: flexim_protocol::conversation::RoomId,
        /// Who committed.
        by: PublicKey,
        /// Who was added.
        added: Vec<PublicKey>,
        /// Who was removed.
        removed: Vec<PublicKey>,
        /// The group's epoch now.
        epoch: u64,
    },
    /// This user was invited to a room (and joined its group, to read it): shown as an
    /// invitation until accepted ([`crate::Engine::accept_invitation`]) or declined
    /// ([`crate::Engine::leave_room`]).
    Invited {
        /// The room.
        room: flexim_protocol::conversation::RoomId,
        /// Who invited.
        from: PublicKey,
    },
    /// This user was removed from a room: nothing sent there from now on opens for it.
    RemovedFromRoom {
        /// The room.
        room: flexim_protocol::conversation::RoomId,
        /// Who removed it.
        by: PublicKey,
    },
    /// The server says someone joined or left a room (RoomMemberJoin, RoomMemberPart).
    RoomMember {
        /// The room.
        room: flexim_protocol::conversation::RoomId,
        /// Who.
        member: PublicKey,
        /// True for a join, false for a part.
        joined: bool,
        /// Who added or removed it (itself when it left).
        by: Option<PublicKey>,
    },
    /// A user came online or went offline.
    Presence {
        /// The user.
        key: PublicKey,
        /// True when the user came online.
        online: bool,
    },
    /// The answer to a request.
    Answer {
        /// The request, as returned when it was made.
        request: RequestId,
        /// The answer.
        answer: Answer,
    },
    /// A receipt about a message this user sent, on this connection or an earlier one: `7`
    /// delivered, `8` stored after all, `9` expired unread. One event per message.
    Receipt {
        /// The message's id.
        id: String,
        /// What it means for the message.
        delivery: Delivery,
        /// The receipt as the server sent it.
        status: Status,
    },
    /// Another session of this key is the active one (Status `5`): it receives this key's
    /// messages until this one sends GHOST ([`crate::Engine::ghost`]).
    SessionExists(Status),
    /// Something worth telling the user, with no action needed.
    Notice(String),
    /// The server announced that it closes this connection (taken over, shutting down, too
    /// slow). After [`flexim_protocol::status::TAKEN_OVER`] another session is the active one,
    /// and reconnecting automatically would only take it back.
    Closing {
        /// The Status code.
        status: i8,
        /// The server's explanation, with the code's name.
        reason: String,
    },
    /// A record from the server did not authenticate: someone on the path altered, replayed or
    /// injected data (or the connection is corrupt). The engine handles nothing more from this
    /// connection; the driver closes it, and may connect again.
    LinkBroken(flexim_protocol::LinkError),
    /// The connection ended ([`crate::Engine::disconnected`]).
    Closed,
}

/// A room message that arrived and opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomIncoming {
    /// The room.
    pub room: flexim_protocol::conversation::RoomId,
    /// The member who sealed it, as MLS authenticated it (and as `from` named it).
    pub from: PublicKey,
    /// When the sender says it sent it (Unix seconds).
    pub date: i64,
    /// The plaintext.
    pub text: String,
    /// The sender's id, to acknowledge once processed ([`crate::Engine::acknowledge`]).
    pub id: Option<String>,
    /// Whether the room is an invitation this user has not accepted yet.
    pub invited: bool,
    /// The MLS message as it came (base64), for an application that keeps or exports the
    /// ciphertext (and for tests that hand it to someone who should not be able to open it).
    pub sealed: String,
    /// The de-duplication key, as [`Incoming::key`].
    pub key: String,
    /// The flags it came with: a pair room's, bound to the message as its MLS authenticated
    /// data (§16.9); always empty for a room's.
    pub flags: Vec<String>,
}

/// A conversation as the server describes it (a Connection datum).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// Its id: for two users, [`flexim_protocol::conversation::pair_id`] of their keys.
    pub id: String,
    /// Its members.
    pub members: Vec<PublicKey>,
    /// The members who have not accepted yet (empty once everyone has).
    pub pending: Vec<PublicKey>,
}
