//! The Redis engine's replies read as the store's types: strings, integers and arrays, keys
//! as stored in hex, user records, queue members and ties. Reads and the writer's answers both
//! go through these, so they sit apart from the key names and the `Store` methods in `mod.rs`.

use ::redis::Value;
use flexim_protocol::PublicKey;

use super::eng;
use crate::store::entry::decode_entry;
use crate::store::{StoreError, Stored, Tie, UserRecord};

/// A key as stored (hex); anything else means the data is damaged.
pub(super) fn parse_key(hex: &[u8]) -> Result<PublicKey, StoreError> {
    std::str::from_utf8(hex)
        .ok()
        .and_then(PublicKey::from_hex)
        .ok_or_else(|| StoreError::Engine("a stored key is not 64 hex digits".into()))
}

/// The bytes of a string reply.
pub(super) fn bytes_of(v: &Value) -> Result<&[u8], StoreError> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.as_bytes()),
        other => Err(StoreError::Engine(format!(
            "Redis answered {other:?} where a string was expected"
        ))),
    }
}

/// An integer reply.
pub(super) fn int_of(v: &Value) -> Result<i64, StoreError> {
    match v {
        Value::Int(i) => Ok(*i),
        other => Err(StoreError::Engine(format!(
            "Redis answered {other:?} where an integer was expected"
        ))),
    }
}

/// The items of an array reply.
pub(super) fn array_of(v: Value) -> Result<Vec<Value>, StoreError> {
    match v {
        Value::Array(items) => Ok(items),
        other => Err(StoreError::Engine(format!(
            "Redis answered {other:?} where an array was expected"
        ))),
    }
}

/// A user record from its hash fields (`last_seen`, `aliases`, `banned`); empty or absent
/// fields are the defaults.
pub(super) fn record_of(
    last_seen: Option<&[u8]>,
    aliases: Option<&[u8]>,
    banned: Option<&[u8]>,
) -> Result<UserRecord, StoreError> {
    let last_seen = match last_seen {
        None | Some(b"") => 0,
        Some(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| StoreError::Engine("a stored last_seen is not a number".into()))?,
    };
    let aliases = match aliases {
        None | Some(b"") => Vec::new(),
        Some(b) => rmp_serde::from_slice(b).map_err(eng)?,
    };
    let banned = matches!(banned, Some(b"1"));
    Ok(UserRecord {
        aliases,
        last_seen,
        banned,
    })
}

/// The reply to `HMGET user last_seen aliases banned` as a record, `None` for an unknown
/// user (no `last_seen`).
pub(super) fn record_from_hmget(
    fields: Vec<Option<Vec<u8>>>,
) -> Result<Option<UserRecord>, StoreError> {
    match fields.as_slice() {
        [None, _, _] => Ok(None),
        [last_seen, aliases, banned] => {
            record_of(last_seen.as_deref(), aliases.as_deref(), banned.as_deref()).map(Some)
        }
        _ => Err(StoreError::Engine("HMGET answered the wrong count".into())),
    }
}

/// A queue member (sequence number, 8 bytes big-endian, then the entry) as a [`Stored`].
pub(super) fn stored_of(member: &[u8]) -> Result<Stored, StoreError> {
    let (seq, entry) = member
        .split_at_checked(8)
        .ok_or_else(|| StoreError::Engine("stored entry is damaged".into()))?;
    Ok(Stored {
        seq: u64::from_be_bytes(seq.try_into().expect("8 bytes")),
        entry: decode_entry(entry)?,
    })
}

/// A tie as a script answered it: empty for none.
pub(super) fn tie_of(bytes: &[u8]) -> Result<Option<Tie>, StoreError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    std::str::from_utf8(bytes)
        .ok()
        .and_then(Tie::decode)
        .map(Some)
        .ok_or_else(|| StoreError::Engine("a damaged tie".into()))
}
