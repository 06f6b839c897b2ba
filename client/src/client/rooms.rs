//! Rooms as `async` calls (docs/PROTOCOL.md §16): each waits for its answer, the engine doing
//! the MLS work and the ordering of commits.

use flexim_protocol::conversation::RoomId;
use flexim_protocol::datum::RoomMemberList;
use flexim_protocol::{PublicKey, Status};
use flexim_session::{Answer, SavedRooms};

use super::{Client, refusal_error};
use crate::error::ClientError;
use crate::os;

impl Client {
    /// Creates a room (its MLS group here, then CREATEROOM) and returns its id.
    pub async fn create_room(&mut self) -> Result<RoomId, ClientError> {
        let (room, request) = self.engine.create_room()?;
        self.room_status(request).await?;
        Ok(room)
    }

    /// Adds `who` (a key or an alias) to `room`: its KeyPackage claimed, the commit ordered by
    /// the server. `-29` ([`flexim_protocol::status::NO_KEY_PACKAGE`]) means `who` has none left.
    pub async fn invite(&mut self, room: RoomId, who: &str) -> Result<Status, ClientError> {
        let key = self.resolve(who).await?;
        let request = self.engine.invite(room, &key, os::now())?;
        self.room_status(request).await
    }

    /// Removes `who` (a key or an alias) from `room`.
    pub async fn remove_member(&mut self, room: RoomId, who: &str) -> Result<Status, ClientError> {
        let key = self.resolve(who).await?;
        let request = self.engine.remove_member(room, &key, os::now())?;
        self.room_status(request).await
    }

    /// Leaves `room` (or declines its invitation).
    pub async fn leave_room(&mut self, room: RoomId) -> Result<Status, ClientError> {
        let request = self.engine.leave_room(room)?;
        self.room_status(request).await
    }

    /// Accepts the invitation to `room`.
    pub async fn accept_invitation(&mut self, room: RoomId) -> Result<Status, ClientError> {
        let request = self.engine.accept_invitation(room)?;
        self.room_status(request).await
    }

    /// The server's member list of `room`.
    pub async fn room_members(&mut self, room: RoomId) -> Result<RoomMemberList, ClientError> {
        let request = self.engine.room_members(room)?;
        match self.answer(request).await? {
            Answer::RoomMembers { result, .. } => result.map_err(refusal_error),
            other => Err(ClientError::BadAnswer(format!("{other:?}"))),
        }
    }

    /// Seals `text` for the members of `room` and sends it; the server's answer (`3` relayed
    /// to every member, `2` stored for some).
    pub async fn send_room(&mut self, room: RoomId, text: &str) -> Result<Status, ClientError> {
        let sending = self.engine.send_room(room, text, os::now())?;
        // Offline, it waits in the outbox for the next login.
        let request = sending.request.ok_or(ClientError::Closed)?;
        self.sent_status(request).await
    }

    /// Publishes a batch of new KeyPackages (as every login does when the server holds few);
    /// returns how many the server holds now.
    pub async fn publish_key_packages(&mut self) -> Result<usize, ClientError> {
        let request = self.engine.publish_key_packages()?;
        match self.answer(request).await? {
            Answer::KeyPackages(result) => result.map_err(refusal_error),
            other => Err(ClientError::BadAnswer(format!("{other:?}"))),
        }
    }

    /// The rooms' state as it is now, to save or inspect.
    pub fn saved_rooms(&self) -> Result<SavedRooms, ClientError> {
        Ok(self.engine.saved_rooms()?)
    }

    /// The members of `room` as this user's MLS group has them, with their signing keys.
    pub fn group_members(&self, room: RoomId) -> Result<Vec<(PublicKey, Vec<u8>)>, ClientError> {
        Ok(self.engine.group_members(room)?)
    }

    /// The safety number of `room`, to compare out of band.
    pub fn safety_number(&self, room: RoomId) -> Result<String, ClientError> {
        Ok(self.engine.safety_number(room)?)
    }

    /// This user's rooms, each with whether it is an invitation not accepted yet.
    pub fn rooms(&self) -> Vec<(RoomId, bool)> {
        self.engine.rooms()
    }

    /// The rooms' state to save, when it changed since the last call (it holds the groups'
    /// secrets: keep it like the key file).
    pub fn take_saved_rooms(&mut self) -> Option<Result<SavedRooms, ClientError>> {
        self.engine
            .take_rooms_changed()
            .then(|| self.engine.saved_rooms().map_err(ClientError::from))
    }

    /// A room request whose answer is a Status.
    async fn room_status(
        &mut self,
        request: flexim_session::RequestId,
    ) -> Result<Status, ClientError> {
        match self.answer(request).await? {
            Answer::Room { result, .. } => result.map_err(refusal_error),
            other => Err(ClientError::BadAnswer(format!("{other:?}"))),
        }
    }
}
