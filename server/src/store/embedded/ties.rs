//! The embedded engine's ties and discoverable users (`store/ties.rs` has the rule).

use std::collections::HashSet;

use flexim_protocol::PublicKey;
use redb::{Database, ReadableTable, WriteTransaction};

use super::{DISCOVERABLE, TIES, eng};
use crate::store::StoreError;
use crate::store::entry::key_of;
use crate::store::ties::{Tie, TieChange, decide};

/// The other key of every tie of `owner` lies between these.
const LOWEST: [u8; 32] = [0; 32];
const HIGHEST: [u8; 32] = [0xff; 32];

fn decoded(text: &str) -> Result<Tie, StoreError> {
    Tie::decode(text).ok_or_else(|| StoreError::Engine(format!("a damaged tie: {text:?}")))
}

/// Applies `change` in the writer's transaction; returns the tie before and after.
pub(super) fn change(
    txn: &WriteTransaction,
    owner: PublicKey,
    other: PublicKey,
    change: TieChange,
) -> Result<(Option<Tie>, Option<Tie>), StoreError> {
    let mut table = txn.open_table(TIES).map_err(eng)?;
    let (o, x) = (owner.as_bytes().as_slice(), other.as_bytes().as_slice());
    let before = table
        .get((o, x))
        .map_err(eng)?
        .map(|v| decoded(v.value()))
        .transpose()?;
    // Only a new stranger's admission needs the box's count: everything else is one read.
    let pending = if before.is_none() && matches!(change, TieChange::Admit { .. }) {
        let mut n = 0u32;
        for row in table
            .range((o, LOWEST.as_slice())..=(o, HIGHEST.as_slice()))
            .map_err(eng)?
        {
            let (_, v) = row.map_err(eng)?;
            if matches!(decoded(v.value())?, Tie::Pending { .. }) {
                n += 1;
            }
        }
        n
    } else {
        0
    };
    let after = decide(before, change, pending);
    if after != before {
        match after {
            Some(t) => {
                table.insert((o, x), t.encode().as_str()).map_err(eng)?;
            }
            None => {
                table.remove((o, x)).map_err(eng)?;
            }
        }
    }
    Ok((before, after))
}

/// What `owner` decided about `other`.
pub(super) fn tie_of(
    db: &Database,
    owner: PublicKey,
    other: PublicKey,
) -> Result<Option<Tie>, StoreError> {
    let txn = db.begin_read().map_err(eng)?;
    let table = txn.open_table(TIES).map_err(eng)?;
    let row = table
        .get((owner.as_bytes().as_slice(), other.as_bytes().as_slice()))
        .map_err(eng)?;
    row.map(|v| decoded(v.value())).transpose()
}

/// Every tie of `owner`.
pub(super) fn ties(db: &Database, owner: PublicKey) -> Result<Vec<(PublicKey, Tie)>, StoreError> {
    let txn = db.begin_read().map_err(eng)?;
    let table = txn.open_table(TIES).map_err(eng)?;
    let o = owner.as_bytes().as_slice();
    let mut out = Vec::new();
    for row in table
        .range((o, LOWEST.as_slice())..=(o, HIGHEST.as_slice()))
        .map_err(eng)?
    {
        let (k, v) = row.map_err(eng)?;
        out.push((key_of(k.value().1)?, decoded(v.value())?));
    }
    Ok(out)
}

/// Marks `key` as findable by SEARCH, or not.
pub(super) fn discoverable(
    txn: &WriteTransaction,
    key: PublicKey,
    on: bool,
) -> Result<(), StoreError> {
    let mut table = txn.open_table(DISCOVERABLE).map_err(eng)?;
    if on {
        table.insert(key.as_bytes().as_slice(), 1).map_err(eng)?;
    } else {
        table.remove(key.as_bytes().as_slice()).map_err(eng)?;
    }
    Ok(())
}

/// Every user SEARCH may find.
pub(super) fn discoverable_keys(db: &Database) -> Result<HashSet<PublicKey>, StoreError> {
    let txn = db.begin_read().map_err(eng)?;
    let table = txn.open_table(DISCOVERABLE).map_err(eng)?;
    let mut out = HashSet::new();
    for row in table.iter().map_err(eng)? {
        let (k, _) = row.map_err(eng)?;
        out.insert(key_of(k.value())?);
    }
    Ok(out)
}
