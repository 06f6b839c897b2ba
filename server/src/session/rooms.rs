//! Rooms from the client's side (docs/PROTOCOL.md §16): the KeyPackage and room commands, and
//! the checks of a room message that need no room record (its MLS header, its `add`, `remove`
//! and `welcome`), before the relay orders and fans it out.

use std::io;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use flexim_mls::ds::{self, Kind};
use flexim_protocol::conversation::RoomId;
use flexim_protocol::datum::{MessageRef, RoomMemberList, Status};
use flexim_protocol::status::{self, cmd};
use flexim_protocol::{Datum, PublicKey};
use futures_util::Sink;

use super::Session;
use crate::frames::Id;
use crate::relay::{Answer, Changes, RoomMessage};

/// `-12` with `text`.
fn bad(text: impl Into<String>) -> Status {
    Status::new(status::BAD_ARGUMENT, text.into())
}

/// The room a command names.
fn room_arg(name: &str, arg: Option<&str>) -> Result<RoomId, Status> {
    arg.and_then(RoomId::parse)
        .ok_or_else(|| bad(format!("{name} takes a room id: 32 hex digits")))
}

impl<Si: Sink<Bytes, Error = io::Error> + Unpin> Session<Si> {
    /// KEYPACKAGES, KEYPACKAGE, CREATEROOM, MEMBERS and LEAVE for `key`; `None` if `name` is
    /// none of them.
    pub(super) async fn room_command(
        &self,
        key: PublicKey,
        name: &str,
        payload: &[String],
    ) -> Option<Result<Datum, Status>> {
        let arg = payload.first().map(String::as_str);
        let answer = match name {
            cmd::KEYPACKAGES => self.publish(key, payload).await.map(Datum::Status),
            cmd::KEYPACKAGE => self.claim(key, arg).await.map(Datum::Status),
            cmd::CREATEROOM => self.create_room(key, payload).await.map(Datum::Status),
            cmd::MEMBERS => self.members(key, arg).await,
            cmd::LEAVE => match room_arg(name, arg) {
                Ok(room) => Ok(Datum::Status(self.relay.leave_room(key, room).await)),
                Err(s) => Err(s),
            },
            _ => return None,
        };
        Some(answer)
    }

    /// CREATEROOM ID, or CREATEROOM ID PEER for a pair room (§16.9; the peer must have logged
    /// in, as for a Message to it).
    async fn create_room(&self, key: PublicKey, payload: &[String]) -> Result<Status, Status> {
        let room = room_arg(cmd::CREATEROOM, payload.first().map(String::as_str))?;
        let peer = match payload.get(1) {
            Some(who) if PublicKey::from_hex(who).is_none() => {
                return Err(bad(format!(
                    "CREATEROOM's PEER {who:?} is not a key (64 hex digits)"
                )));
            }
            Some(who) => Some(self.recipient(who).await?),
            None => None,
        };
        Ok(self.relay.create_room(key, room, peer).await)
    }

    /// KEYPACKAGES: every KeyPackage checked (its owner must be `key`), then kept up to the cap.
    async fn publish(&self, key: PublicKey, payload: &[String]) -> Result<Status, Status> {
        let mut packages = Vec::with_capacity(payload.len());
        for (i, text) in payload.iter().enumerate() {
            let bytes = BASE64
                .decode(text)
                .map_err(|e| bad(format!("KeyPackage {i} is not base64 ({e}); none was kept")))?;
            ds::check_key_package(&bytes, &key.0)
                .map_err(|e| bad(format!("KeyPackage {i}: {e}; none was kept")))?;
            packages.push(bytes);
        }
        let max = self.relay.live().key_packages;
        let held = self
            .relay
            .store
            .publish_key_packages(key, packages, max)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "could not keep KeyPackages");
                Status::new(status::INTERNAL, "storage failure: no KeyPackage was kept")
            })?;
        Ok(Status::new(status::KEY_PACKAGES, held.to_string()))
    }

    /// KEYPACKAGE: the claim is admitted as a Message from `key` to that user would be (so a
    /// stranger cannot drain anyone's KeyPackages), then the user's oldest KeyPackage is
    /// handed out, once. A user with none left is answered `-29` before the admission, so a
    /// stranger's claim that gets nothing does not use up one of its requests-box messages
    /// (it then writes with the box, which counts).
    async fn claim(&self, key: PublicKey, arg: Option<&str>) -> Result<Status, Status> {
        let who = arg
            .filter(|w| !w.is_empty())
            .ok_or_else(|| bad("KEYPACKAGE needs a key or an alias"))?;
        let to = self.recipient(who).await?;
        let none_left = || {
            Status::new(
                status::NO_KEY_PACKAGE,
                format!("{who} has no KeyPackage left; add them later"),
            )
        };
        if matches!(self.relay.store.key_packages(to).await, Ok(0)) {
            return Err(none_left());
        }
        self.consent(key, to).await?;
        match self.relay.store.claim_key_package(to).await {
            Ok(Some(package)) => Ok(Status::new(status::KEY_PACKAGE, BASE64.encode(package))),
            Ok(None) => Err(none_left()),
            Err(e) => {
                tracing::error!(error = %e, "could not claim a KeyPackage");
                Err(Status::new(
                    status::INTERNAL,
                    "storage failure: no KeyPackage was handed out",
                ))
            }
        }
    }

    /// MEMBERS: the room's list, for a member only.
    async fn members(&self, key: PublicKey, arg: Option<&str>) -> Result<Datum, Status> {
        let room = room_arg(cmd::MEMBERS, arg)?;
        let record = self.relay.room_of_member(key, room).await?;
        Ok(Datum::RoomMemberList(RoomMemberList {
            room: room.to_hex(),
            members: record.members.iter().map(|m| m.key.to_hex()).collect(),
            admins: record.admins.iter().map(PublicKey::to_hex).collect(),
            epoch: record.epoch,
        }))
    }

    /// A Message to a room (§16.4), after the `from` check: the sender must be a member, and
    /// `msg` an MLS message of the room; then the relay orders and fans it out.
    pub(super) async fn room_message(
        &self,
        key: PublicKey,
        room: RoomId,
        m: &MessageRef<'_>,
        id: Option<Id>,
        frame: &Bytes,
    ) -> Result<Answer, Status> {
        let record = self.relay.room_of_member(key, room).await?;
        let bytes = BASE64
            .decode(m.msg)
            .map_err(|e| bad(format!("msg is not base64 ({e}); nothing was forwarded")))?;
        let header = ds::header(&bytes).map_err(|e| bad(format!("{e}; nothing was forwarded")))?;
        if header.group != room.0 {
            return Err(bad(
                "msg is of another group than the room; nothing was forwarded",
            ));
        }
        let commit = match header.kind {
            Kind::Proposal => {
                return Err(Status::new(
                    status::UNSUPPORTED,
                    "proposals are not taken alone: commit them; nothing was forwarded",
                ));
            }
            Kind::Application => {
                if !m.add.is_empty() || !m.remove.is_empty() || m.welcome.is_some() {
                    return Err(bad(
                        "only a commit carries add, remove or welcome; nothing was forwarded",
                    ));
                }
                None
            }
            Kind::Commit => Some(self.changes(m).await?),
        };
        // A pair room's messages are admitted as Messages to the other user (§16.9), but for
        // the commit that adds it, whose invitation is the pair's Request.
        if record.is_pair() && commit.as_ref().is_none_or(|c| c.add.is_empty()) {
            let peer = record.peer_of(&key).expect("a pair room has two users");
            if !record.has(&peer) {
                let text =
                    format!("{peer} is not in this conversation (yet); nothing was forwarded");
                return Err(Status::new(status::NO_SUCH_USER, text));
            }
            self.consent(key, peer).await?;
        }
        let m = RoomMessage {
            room,
            epoch: header.epoch,
            commit,
        };
        self.relay.room_message(key, m, id, frame.clone()).await
    }

    /// The membership a commit changes: its added users (each must have logged in) and removed
    /// keys, and a Welcome whenever it adds.
    async fn changes(&self, m: &MessageRef<'_>) -> Result<Changes, Status> {
        let mut add = Vec::with_capacity(m.add.len());
        for who in &m.add {
            if PublicKey::from_hex(who).is_none() {
                return Err(bad(format!("add: {who:?} is not a key (64 hex digits)")));
            }
            add.push(self.recipient(who).await?);
        }
        let remove = m
            .remove
            .iter()
            .map(|k| {
                PublicKey::from_hex(k)
                    .ok_or_else(|| bad(format!("remove: {k:?} is not a key (64 hex digits)")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !add.is_empty() && m.welcome.is_none() {
            return Err(bad(
                "a commit that adds carries the Welcome; nothing was forwarded",
            ));
        }
        Ok(Changes {
            add,
            remove,
            welcome: m.welcome.map(str::to_string),
        })
    }
}
