//! The Redis engine's rooms and KeyPackages: the reads (`store/rooms.rs` decides every change
//! and the `ROOM_SET` script applies it as a compare-and-set), and the KeyPackage counts.

use ::redis::Value;
use ::redis::aio::ConnectionManager;
use flexim_protocol::PublicKey;
use flexim_protocol::conversation::RoomId;

use super::replies::{bytes_of, int_of};
use super::{PREFIX, RedisStore, eng};
use crate::store::rooms::{Room, RoomEngine, RoomSet, Snapshot};
use crate::store::{BoxFuture, StoreError};

/// A room's record.
pub(super) fn room_key(id: &RoomId) -> String {
    format!("{PREFIX}room:{}", id.to_hex())
}

/// A user's set of rooms is this and its key.
pub(super) fn rooms_of_prefix() -> String {
    format!("{PREFIX}roomsof:")
}

/// A user's KeyPackages.
pub(super) fn packages_key(owner: &PublicKey) -> String {
    format!("{PREFIX}kp:{}", owner.to_hex())
}

/// The record of room `id`.
pub(super) async fn room(
    mut conn: ConnectionManager,
    id: RoomId,
) -> Result<Option<Room>, StoreError> {
    let record: Option<Vec<u8>> = ::redis::cmd("GET")
        .arg(room_key(&id))
        .query_async(&mut conn)
        .await
        .map_err(eng)?;
    record.as_deref().map(Room::decode).transpose()
}

/// How many rooms `key` is a member of.
pub(super) async fn rooms_of(
    mut conn: ConnectionManager,
    key: PublicKey,
) -> Result<u32, StoreError> {
    ::redis::cmd("SCARD")
        .arg(format!("{}{}", rooms_of_prefix(), key.to_hex()))
        .query_async(&mut conn)
        .await
        .map_err(eng)
}

/// How many KeyPackages `owner` has.
pub(super) async fn key_packages(
    mut conn: ConnectionManager,
    owner: PublicKey,
) -> Result<u32, StoreError> {
    ::redis::cmd("LLEN")
        .arg(packages_key(&owner))
        .query_async(&mut conn)
        .await
        .map_err(eng)
}

impl RoomEngine for RedisStore {
    fn snapshot(
        &self,
        id: RoomId,
        users: Vec<PublicKey>,
    ) -> BoxFuture<'static, Result<Snapshot, StoreError>> {
        let mut conn = self.conn.clone();
        Box::pin(async move {
            let mut pipe = ::redis::pipe();
            pipe.cmd("GET").arg(room_key(&id));
            for u in &users {
                pipe.cmd("SCARD")
                    .arg(format!("{}{}", rooms_of_prefix(), u.to_hex()));
            }
            let mut replies: Vec<Value> = pipe.query_async(&mut conn).await.map_err(eng)?;
            if replies.len() != users.len() + 1 {
                return Err(StoreError::Engine(
                    "a room read answered the wrong count".into(),
                ));
            }
            let counts = replies.split_off(1);
            let record = match replies.pop() {
                Some(Value::Nil) | None => None,
                Some(v) => Some(bytes_of(&v)?.to_vec()),
            };
            let rooms = counts
                .iter()
                .map(|v| int_of(v).map(|n| n.max(0) as u32))
                .collect::<Result<_, _>>()?;
            Ok(Snapshot { record, rooms })
        })
    }

    fn set(&self, set: RoomSet) -> BoxFuture<'static, Result<bool, StoreError>> {
        self.queue.room_set(set)
    }
}
