//! Rooms from the client's side (docs/PROTOCOL.md §16): every room is an MLS group of this
//! user's [`Member`], and the server is only its delivery service. The engine creates rooms,
//! claims KeyPackages and commits additions and removals, merging a commit only once the server
//! has put it in the room's order; a commit the server refused as stale (`-27`) is dropped and
//! made again once the commit that came first has arrived. Receiving is in `receive.rs`, the
//! answers in `answers.rs`, what is saved in `saved.rs`.

mod answers;
mod pairs;
mod receive;
mod saved;
pub(crate) mod state;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flexim_mls::{Commit, Member, MlsError};
use flexim_protocol::conversation::RoomId;
use flexim_protocol::datum::Acknowledge;
use flexim_protocol::e2e::{E2eError, MAX_PLAINTEXT};
use flexim_protocol::status::cmd;
use flexim_protocol::{Command, Datum, Message, PublicKey};

use crate::engine::{Engine, EngineError};
use crate::outbox::new_id;
use crate::requests::{Request, RequestId};

pub(crate) use crate::requests::Op;
pub use crate::requests::RoomAction;
pub use pairs::{UPDATE_AFTER_MESSAGES, UPDATE_AFTER_SECS};
pub use saved::SavedRooms;
pub use state::MAX_OPENED;
pub(crate) use state::{Freshness, Held, Waiting};

/// How many KeyPackages of its own the server should hold at least: below this, a login
/// publishes [`KEY_PACKAGE_BATCH`] more (§16.2).
pub const KEY_PACKAGE_LOW: usize = 8;
/// How many KeyPackages a login publishes when the server holds too few.
pub const KEY_PACKAGE_BATCH: usize = 16;

/// An MLS failure as the engine reports it.
impl From<MlsError> for EngineError {
    fn from(e: MlsError) -> Self {
        EngineError::Mls(e.to_string())
    }
}

impl Engine {
    /// The MLS member, made at first use.
    pub(crate) fn member(&mut self) -> Result<&mut Member, EngineError> {
        if self.rooms.member.is_none() {
            self.rooms.member = Some(Member::new(self.me.0)?);
            self.rooms.changed = true;
        }
        Ok(self.rooms.member.as_mut().expect("made above"))
    }

    /// Creates a room with a fresh random id: the MLS group here, then CREATEROOM
    /// ([`crate::Answer::Room`] with [`RoomAction::Create`]).
    pub fn create_room(&mut self) -> Result<(RoomId, RequestId), EngineError> {
        if !self.is_ready() {
            return Err(EngineError::NotConnected);
        }
        let mut id = [0u8; 16];
        (self.random)(&mut id);
        // The pair bit clear: ids with it are pair rooms' (§16.9).
        let room = RoomId::ordinary(id);
        self.member()?.create(room.0)?;
        self.rooms.changed = true;
        let request = Request::Room {
            room,
            action: RoomAction::Create,
        };
        let sent = self.request(Command::new(cmd::CREATEROOM, &[&room.to_hex()]), request)?;
        Ok((room, sent))
    }

    /// Adds `who` to `room`: claims one of its KeyPackages, commits the addition and sends it
    /// with the Welcome; the answer ([`RoomAction::Invite`]) comes once the server has ordered
    /// the commit (or refused it for good).
    pub fn invite(
        &mut self,
        room: RoomId,
        who: &PublicKey,
        now: i64,
    ) -> Result<RequestId, EngineError> {
        self.rooms.now = now;
        if !self.member()?.is_in(room.0) {
            return Err(EngineError::NoRoom(room.to_hex()));
        }
        let request = Request::Claim { room, who: *who };
        self.request(Command::new(cmd::KEYPACKAGE, &[&who.to_hex()]), request)
    }

    /// Removes `who` from `room` with a commit ([`RoomAction::Remove`]).
    pub fn remove_member(
        &mut self,
        room: RoomId,
        who: &PublicKey,
        now: i64,
    ) -> Result<RequestId, EngineError> {
        self.rooms.now = now;
        let origin = RequestId(self.next_request);
        self.commit(room, Op::Remove { who: *who }, Some(origin))
    }

    /// Leaves `room`, or declines its invitation: LEAVE, then the group is forgotten.
    pub fn leave_room(&mut self, room: RoomId) -> Result<RequestId, EngineError> {
        let request = Request::Room {
            room,
            action: RoomAction::Leave,
        };
        self.request(Command::new(cmd::LEAVE, &[&room.to_hex()]), request)
    }

    /// Accepts the invitation to `room`: an Acknowledge with its id ([`RoomAction::Join`]).
    pub fn accept_invitation(&mut self, room: RoomId) -> Result<RequestId, EngineError> {
        let datum = Datum::Acknowledge(Acknowledge { id: room.to_hex() });
        let request = Request::Room {
            room,
            action: RoomAction::Join,
        };
        self.request_datum(&datum, request)
    }

    /// MEMBERS: the server's member list of `room` ([`crate::Answer::RoomMembers`]).
    pub fn room_members(&mut self, room: RoomId) -> Result<RequestId, EngineError> {
        self.request(
            Command::new(cmd::MEMBERS, &[&room.to_hex()]),
            Request::Members { room },
        )
    }

    /// Seals `text` for the members of `room`, keeps its frame in the outbox until it is
    /// confirmed, and sends it now if logged in (else at the next login, like
    /// [`Engine::send_text`]); the answer is [`crate::Answer::Sent`] with the returned id, the
    /// receipts one per member. The entry leaves the outbox at the first final answer or
    /// receipt (a `2` means every member's copy is durable; after a `3`, the first member's
    /// receipt settles it).
    pub fn send_room(
        &mut self,
        room: RoomId,
        text: &str,
        date: i64,
    ) -> Result<crate::Sending, EngineError> {
        self.rooms.now = date;
        if text.is_empty() || text.len() > MAX_PLAINTEXT {
            return Err(EngineError::Seal(E2eError::Length(text.len())));
        }
        let sealed = self.member()?.seal(room.0, text.as_bytes())?;
        let id = new_id(&mut *self.random);
        self.send_sealed(room, id, date, sealed, Vec::new())
    }

    /// Sends `sealed`, an MLS message of `room`, as the Message `id`, kept (as every message)
    /// until its answer or a receipt.
    pub(crate) fn send_sealed(
        &mut self,
        room: RoomId,
        id: String,
        date: i64,
        sealed: Vec<u8>,
        flags: Vec<String>,
    ) -> Result<crate::Sending, EngineError> {
        self.rooms.changed = true;
        let message = Message {
            to: room.to_hex(),
            from: self.me.to_hex(),
            date,
            msg: STANDARD.encode(sealed),
            id: Some(id.clone()),
            flags,
            ..Default::default()
        };
        let frame = Datum::Message(message).to_frame()?;
        self.send_kept(id, crate::outbox::Addressee::Room(room), frame)
    }

    /// The members of `room` as this user's MLS group has them: keys with their signing keys.
    pub fn group_members(&self, room: RoomId) -> Result<Vec<(PublicKey, Vec<u8>)>, EngineError> {
        Ok(self
            .member_of(room)?
            .members(room.0)?
            .into_iter()
            .map(|(k, s)| (PublicKey(k), s))
            .collect())
    }

    /// The safety number of `room` (§16.6), to compare out of band.
    pub fn safety_number(&self, room: RoomId) -> Result<String, EngineError> {
        Ok(self.member_of(room)?.safety_number(room.0)?)
    }

    /// The MLS member, to read `room` of; none yet means no room at all.
    fn member_of(&self, room: RoomId) -> Result<&Member, EngineError> {
        self.rooms
            .member
            .as_ref()
            .ok_or_else(|| EngineError::NoRoom(room.to_hex()))
    }

    /// The rooms this user is in (its MLS groups), and whether each is an invitation it has not
    /// accepted. Pair rooms are not listed: they are conversations of two (§16.9).
    pub fn rooms(&self) -> Vec<(RoomId, bool)> {
        let Some(member) = &self.rooms.member else {
            return Vec::new();
        };
        member
            .rooms()
            .filter(|r| member.is_in(*r) && !RoomId(*r).is_pair())
            .map(|r| (RoomId(r), self.rooms.invited.contains_key(&RoomId(r))))
            .collect()
    }

    /// Makes the commit of `op` and sends it; its answer settles it ([`answers.rs`]).
    pub(crate) fn commit(
        &mut self,
        room: RoomId,
        op: Op,
        origin: Option<RequestId>,
    ) -> Result<RequestId, EngineError> {
        if !self.is_ready() {
            return Err(EngineError::NotConnected);
        }
        let commit = match &op {
            Op::Add { who, package } => self.member()?.add(room.0, &[(who.0, package.clone())])?,
            Op::Remove { who } => self.member()?.remove(room.0, &[who.0])?,
            Op::Update => self.member()?.update(room.0)?,
        };
        self.rooms.changed = true;
        let message = self.commit_message(room, &commit);
        let request = Request::Commit {
            room,
            op,
            epoch: commit.epoch,
            origin,
        };
        match self.request_datum(&Datum::Message(message), request) {
            Ok(id) => Ok(id),
            Err(e) => {
                // Not sent: the group must not keep a commit nobody will answer.
                let _ = self.member()?.abandon(room.0);
                Err(e)
            }
        }
    }

    /// The Message carrying a commit, with the membership it changes for the server.
    fn commit_message(&mut self, room: RoomId, commit: &Commit) -> Message {
        let hexes = |keys: &[[u8; 32]]| keys.iter().map(|k| PublicKey(*k).to_hex()).collect();
        Message {
            to: room.to_hex(),
            from: self.me.to_hex(),
            date: self.rooms.now,
            msg: STANDARD.encode(&commit.message),
            id: Some(new_id(&mut *self.random)),
            add: hexes(&commit.added),
            remove: hexes(&commit.removed),
            welcome: commit.welcome.as_ref().map(|w| STANDARD.encode(w)),
            ..Default::default()
        }
    }

    /// Publishes [`KEY_PACKAGE_BATCH`] new KeyPackages now, whatever the server holds (the
    /// answer, Status `12`, says how many it holds then).
    pub fn publish_key_packages(&mut self) -> Result<RequestId, EngineError> {
        let packages = self.member()?.key_packages(KEY_PACKAGE_BATCH)?;
        self.rooms.changed = true;
        let command = Command {
            cmd: cmd::KEYPACKAGES.to_string(),
            payload: packages.iter().map(|p| STANDARD.encode(p)).collect(),
        };
        let request = Request::KeyPackages {
            published: KEY_PACKAGE_BATCH,
        };
        self.request(command, request)
    }

    /// Asks how many KeyPackages the server holds for this user (at every login); the answer
    /// publishes more when they run low.
    pub(crate) fn check_key_packages(&mut self) {
        let _ = self.request(
            Command::new(cmd::KEYPACKAGES, &[]),
            Request::KeyPackages { published: 0 },
        );
    }

    /// Whether a count or a publication of KeyPackages waits for its answer (a program about
    /// to leave waits for it, so that others can still add this user to rooms).
    pub fn key_packages_pending(&self) -> bool {
        self.pending
            .any(|r| matches!(r, Request::KeyPackages { .. }))
    }

    /// Whether the rooms' state changed since the last call (the driver then saves
    /// [`Engine::saved_rooms`]).
    pub fn take_rooms_changed(&mut self) -> bool {
        std::mem::take(&mut self.rooms.changed)
    }
}
