//! The embedded engine's rooms and KeyPackages (`store/rooms.rs` has the rule): the reads of
//! a change, its compare-and-set inside the writer's transaction, and the KeyPackage queues.

use flexim_protocol::PublicKey;
use flexim_protocol::conversation::RoomId;
use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};

use super::{META, eng};
use crate::store::StoreError;
use crate::store::rooms::{Room, RoomSet, Snapshot};

/// room id (16 bytes) -> the room's record ([`Room::encode`])
pub(super) const ROOMS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("rooms");
/// (user key, room id) -> 0 for every room the user is a member of: its count of rooms
pub(super) const ROOMS_OF: TableDefinition<(&[u8], &[u8]), u8> = TableDefinition::new("rooms_of");
/// (owner key, sequence) -> a KeyPackage the owner published, oldest first
pub(super) const KEY_PACKAGES: TableDefinition<(&[u8], u64), &[u8]> =
    TableDefinition::new("key_packages");

/// `META` key of the next KeyPackage sequence number.
const PACKAGE_SEQ: &str = "package_seq";

/// The ids of `key`'s rooms lie between these.
const LOWEST: [u8; 16] = [0; 16];
const HIGHEST: [u8; 16] = [0xff; 16];

/// How many rooms `key` is a member of, in any table that implements the reads.
fn count_of(
    table: &impl ReadableTable<(&'static [u8], &'static [u8]), u8>,
    key: &PublicKey,
) -> Result<u32, StoreError> {
    let k = key.as_bytes().as_slice();
    let range = table
        .range((k, LOWEST.as_slice())..=(k, HIGHEST.as_slice()))
        .map_err(eng)?;
    Ok(range.count() as u32)
}

/// The record of `id` and the room counts of `users`, as committed.
pub(super) fn snapshot(
    db: &Database,
    id: RoomId,
    users: &[PublicKey],
) -> Result<Snapshot, StoreError> {
    let txn = db.begin_read().map_err(eng)?;
    let rooms = txn.open_table(ROOMS).map_err(eng)?;
    let record = rooms
        .get(id.0.as_slice())
        .map_err(eng)?
        .map(|v| v.value().to_vec());
    let of = txn.open_table(ROOMS_OF).map_err(eng)?;
    let counts = users
        .iter()
        .map(|u| count_of(&of, u))
        .collect::<Result<_, _>>()?;
    Ok(Snapshot {
        record,
        rooms: counts,
    })
}

/// The record of `id`.
pub(super) fn room(db: &Database, id: RoomId) -> Result<Option<Room>, StoreError> {
    let txn = db.begin_read().map_err(eng)?;
    let rooms = txn.open_table(ROOMS).map_err(eng)?;
    let row = rooms.get(id.0.as_slice()).map_err(eng)?;
    row.map(|v| Room::decode(v.value())).transpose()
}

/// How many rooms `key` is a member of.
pub(super) fn rooms_of(db: &Database, key: PublicKey) -> Result<u32, StoreError> {
    let txn = db.begin_read().map_err(eng)?;
    let of = txn.open_table(ROOMS_OF).map_err(eng)?;
    count_of(&of, &key)
}

/// Applies `set` in the writer's transaction if the record and the counts are still what was
/// read; says whether it did.
pub(super) fn set(txn: &WriteTransaction, set: RoomSet) -> Result<bool, StoreError> {
    let mut rooms = txn.open_table(ROOMS).map_err(eng)?;
    let mut of = txn.open_table(ROOMS_OF).map_err(eng)?;
    let id = set.id.0;
    let current = rooms
        .get(id.as_slice())
        .map_err(eng)?
        .map(|v| v.value().to_vec());
    if current != set.expected {
        return Ok(false);
    }
    for (user, count) in &set.counts {
        if count_of(&of, user)? != *count {
            return Ok(false);
        }
    }
    match &set.after {
        Some(record) => {
            rooms
                .insert(id.as_slice(), record.as_slice())
                .map_err(eng)?;
        }
        None => {
            rooms.remove(id.as_slice()).map_err(eng)?;
        }
    }
    for user in &set.joined {
        of.insert((user.as_bytes().as_slice(), id.as_slice()), 0)
            .map_err(eng)?;
    }
    for user in &set.parted {
        of.remove((user.as_bytes().as_slice(), id.as_slice()))
            .map_err(eng)?;
    }
    Ok(true)
}

/// Keeps as many of `packages` as fit `max` for `owner`, after those it has; returns how many
/// it holds now.
pub(super) fn publish(
    txn: &WriteTransaction,
    owner: PublicKey,
    packages: Vec<Vec<u8>>,
    max: u32,
) -> Result<u32, StoreError> {
    let mut table = txn.open_table(KEY_PACKAGES).map_err(eng)?;
    let o = owner.as_bytes().as_slice();
    let mut held = table.range((o, 0)..=(o, u64::MAX)).map_err(eng)?.count() as u32;
    let mut meta = txn.open_table(META).map_err(eng)?;
    let mut seq = meta.get(PACKAGE_SEQ).map_err(eng)?.map_or(0, |v| v.value());
    for package in packages {
        if held >= max {
            break;
        }
        table.insert((o, seq), package.as_slice()).map_err(eng)?;
        seq += 1;
        held += 1;
    }
    meta.insert(PACKAGE_SEQ, seq).map_err(eng)?;
    Ok(held)
}

/// Removes and returns `owner`'s oldest KeyPackage.
pub(super) fn claim(
    txn: &WriteTransaction,
    owner: PublicKey,
) -> Result<Option<Vec<u8>>, StoreError> {
    let mut table = txn.open_table(KEY_PACKAGES).map_err(eng)?;
    let o = owner.as_bytes().as_slice();
    let oldest = table
        .range((o, 0)..=(o, u64::MAX))
        .map_err(eng)?
        .next()
        .transpose()
        .map_err(eng)?
        .map(|(k, v)| (k.value().1, v.value().to_vec()));
    let Some((seq, package)) = oldest else {
        return Ok(None);
    };
    table.remove((o, seq)).map_err(eng)?;
    Ok(Some(package))
}

/// How many KeyPackages `owner` has.
pub(super) fn packages(db: &Database, owner: PublicKey) -> Result<u32, StoreError> {
    let txn = db.begin_read().map_err(eng)?;
    let table = txn.open_table(KEY_PACKAGES).map_err(eng)?;
    let o = owner.as_bytes().as_slice();
    Ok(table.range((o, 0)..=(o, u64::MAX)).map_err(eng)?.count() as u32)
}
