//! Users and their aliases in the embedded engine: logins, claims, and the operator's
//! overrides (an alias given or taken away, a key blocked).

use flexim_protocol::PublicKey;
use flexim_protocol::keys::alias_key;
use redb::{ReadableTable, Table, WriteTransaction};

use super::{ALIASES, USERS, decode_user, encode_user, eng};
use crate::store::entry::key_of;
use crate::store::{Claim, StoreError, UserRecord};

/// The users table as a write transaction opens it.
type Users<'t> = Table<'t, &'static [u8], &'static [u8]>;

/// The aliases table as a write transaction opens it.
type Aliases<'t> = Table<'t, &'static str, &'static [u8]>;

/// The record of `key`, or a new one (`last_seen` 0) for a key never seen.
fn record(users: &Users<'_>, key: PublicKey) -> Result<UserRecord, StoreError> {
    match users.get(key.as_bytes().as_slice()).map_err(eng)? {
        Some(v) => decode_user(v.value()),
        None => Ok(UserRecord::default()),
    }
}

/// Writes the record of `key`.
fn put(users: &mut Users<'_>, key: PublicKey, r: &UserRecord) -> Result<(), StoreError> {
    users
        .insert(key.as_bytes().as_slice(), encode_user(r).as_slice())
        .map_err(eng)?;
    Ok(())
}

/// Who holds the alias folded to `folded`.
fn holder(aliases: &Aliases<'_>, folded: &str) -> Result<Option<PublicKey>, StoreError> {
    aliases
        .get(folded)
        .map_err(eng)?
        .map(|v| key_of(v.value()))
        .transpose()
}

/// Records a login or logout at `now`; returns the record before.
pub(super) fn touch(
    txn: &WriteTransaction,
    key: PublicKey,
    now: i64,
) -> Result<UserRecord, StoreError> {
    let mut users = txn.open_table(USERS).map_err(eng)?;
    let before = record(&users, key)?;
    let after = UserRecord {
        last_seen: now,
        ..before.clone()
    };
    put(&mut users, key, &after)?;
    Ok(before)
}

/// A user's claim of an alias (REGISTER).
pub(super) fn claim(
    txn: &WriteTransaction,
    key: PublicKey,
    alias: String,
    max_aliases: usize,
) -> Result<Claim, StoreError> {
    let folded = alias_key(&alias);
    let mut aliases = txn.open_table(ALIASES).map_err(eng)?;
    Ok(match holder(&aliases, &folded)? {
        Some(owner) if owner == key => Claim::AlreadyYours,
        Some(_) => Claim::Taken,
        None => {
            let mut users = txn.open_table(USERS).map_err(eng)?;
            let mut r = record(&users, key)?;
            if r.aliases.len() >= max_aliases {
                Claim::TooMany
            } else {
                r.aliases.push(alias);
                put(&mut users, key, &r)?;
                aliases
                    .insert(folded.as_str(), key.as_bytes().as_slice())
                    .map_err(eng)?;
                Claim::Registered
            }
        }
    })
}

/// Gives `alias` to `to` (or to nobody), taking it from whoever held it; returns that holder.
pub(super) fn assign(
    txn: &WriteTransaction,
    alias: String,
    to: Option<PublicKey>,
) -> Result<Option<PublicKey>, StoreError> {
    let folded = alias_key(&alias);
    let mut aliases = txn.open_table(ALIASES).map_err(eng)?;
    let mut users = txn.open_table(USERS).map_err(eng)?;
    let before = holder(&aliases, &folded)?;
    if before == to {
        return Ok(before);
    }
    if let Some(old) = before {
        let mut r = record(&users, old)?;
        r.aliases.retain(|a| alias_key(a) != folded);
        put(&mut users, old, &r)?;
        aliases.remove(folded.as_str()).map_err(eng)?;
    }
    if let Some(new) = to {
        let mut r = record(&users, new)?;
        r.aliases.push(alias);
        put(&mut users, new, &r)?;
        aliases
            .insert(folded.as_str(), new.as_bytes().as_slice())
            .map_err(eng)?;
    }
    Ok(before)
}

/// Sets whether `key` is blocked by the operator.
pub(super) fn ban(txn: &WriteTransaction, key: PublicKey, on: bool) -> Result<(), StoreError> {
    let mut users = txn.open_table(USERS).map_err(eng)?;
    let mut r = record(&users, key)?;
    r.banned = on;
    put(&mut users, key, &r)
}
