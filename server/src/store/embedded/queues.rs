//! The embedded engine's queues: entries, and the counts their bounds are checked against,
//! written in the same transaction as the entries so that they can never disagree.
//!
//! Three counts are kept: per recipient (`QUEUES`), per recipient and sender (`SHARES`) and
//! over every queue (`META["bytes"]`). Each enqueue adds to all three, each removal and expiry
//! takes from all three, whatever bounds the write was held to.

use std::collections::{BTreeMap, HashMap};

use flexim_protocol::PublicKey;
use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};

use super::{META, OFFLINE, eng};
use crate::store::bounds::{self, Held, Mode};
use crate::store::entry::{decode_entry, encode_entry, key_of};
use crate::store::writes::Outcome;
use crate::store::{Counts, Entry, Expired, StoreError};

/// recipient key -> (messages, bytes) queued, so limits are checked without a scan
pub(super) const QUEUES: TableDefinition<&[u8], (u64, u64)> = TableDefinition::new("queues");
/// A share's key: the recipient's key and the sender's.
type ShareKey<'a> = (&'a [u8], &'a [u8]);
/// (recipient key, sender key) -> (messages, bytes) of that sender in that queue: its share
pub(super) const SHARES: TableDefinition<ShareKey<'static>, (u64, u64)> =
    TableDefinition::new("shares");

/// `META` key of the bytes in every queue together.
pub(super) const STORE_BYTES: &str = "bytes";
/// `META` key set once `SHARES` and [`STORE_BYTES`] hold the counts of every entry: a file
/// written before they existed is counted once when it is opened.
pub(super) const COUNTED: &str = "counted";

/// Where the sender's key is in an encoded entry (after the 8 bytes of its time).
const SENDER_AT: std::ops::Range<usize> = 8..40;

/// The sender of an encoded entry.
fn sender_of(encoded: &[u8]) -> Result<PublicKey, StoreError> {
    key_of(
        encoded
            .get(SENDER_AT)
            .ok_or_else(|| StoreError::Engine("stored entry is damaged".into()))?,
    )
}

/// A counter of `META`, 0 if absent.
fn meta(txn: &WriteTransaction, name: &str) -> Result<u64, StoreError> {
    let table = txn.open_table(META).map_err(eng)?;
    Ok(table
        .get(name)
        .map_err(eng)?
        .map(|v| v.value())
        .unwrap_or(0))
}

/// Counts every entry into `SHARES` and the store's bytes, once, for a file written before
/// they were kept (the per-recipient counts were kept already). Returns how many entries it
/// counted.
pub(super) fn count_once(txn: &WriteTransaction) -> Result<u64, StoreError> {
    if txn
        .open_table(META)
        .map_err(eng)?
        .get(COUNTED)
        .map_err(eng)?
        .is_some()
    {
        return Ok(0);
    }
    let mut shares: BTreeMap<(Vec<u8>, PublicKey), (u64, u64)> = BTreeMap::new();
    let (mut entries, mut total) = (0u64, 0u64);
    {
        let offline = txn.open_table(OFFLINE).map_err(eng)?;
        for row in offline.iter().map_err(eng)? {
            let (k, v) = row.map_err(eng)?;
            let size = v.value().len() as u64;
            let share = shares
                .entry((k.value().0.to_vec(), sender_of(v.value())?))
                .or_default();
            *share = (share.0 + 1, share.1 + size);
            entries += 1;
            total += size;
        }
    }
    let mut table = txn.open_table(SHARES).map_err(eng)?;
    for ((to, sender), counts) in &shares {
        table
            .insert((to.as_slice(), sender.as_bytes().as_slice()), *counts)
            .map_err(eng)?;
    }
    let mut meta = txn.open_table(META).map_err(eng)?;
    meta.insert(STORE_BYTES, total).map_err(eng)?;
    meta.insert(COUNTED, 1).map_err(eng)?;
    Ok(entries)
}

/// What `to`'s queue and the store hold, with the shares of `senders`.
fn held(
    txn: &WriteTransaction,
    to: &[u8],
    senders: impl Iterator<Item = PublicKey>,
) -> Result<Held, StoreError> {
    let queues = txn.open_table(QUEUES).map_err(eng)?;
    let (messages, bytes) = queues
        .get(to)
        .map_err(eng)?
        .map(|v| v.value())
        .unwrap_or((0, 0));
    let table = txn.open_table(SHARES).map_err(eng)?;
    let mut shares = HashMap::new();
    for sender in senders {
        if let std::collections::hash_map::Entry::Vacant(e) = shares.entry(sender) {
            let got = table.get((to, sender.as_bytes().as_slice())).map_err(eng)?;
            e.insert(got.map(|v| v.value()).unwrap_or((0, 0)));
        }
    }
    Ok(Held {
        messages,
        bytes,
        store_bytes: meta(txn, STORE_BYTES)?,
        shares,
    })
}

/// Writes the counts of `held` back: `to`'s queue, the shares, the store's bytes.
fn keep_counts(txn: &WriteTransaction, to: &[u8], held: &Held) -> Result<(), StoreError> {
    let mut queues = txn.open_table(QUEUES).map_err(eng)?;
    if held.messages == 0 {
        queues.remove(to).map_err(eng)?;
    } else {
        queues
            .insert(to, (held.messages, held.bytes))
            .map_err(eng)?;
    }
    let mut shares = txn.open_table(SHARES).map_err(eng)?;
    for (sender, counts) in &held.shares {
        let k = (to, sender.as_bytes().as_slice());
        if counts.0 == 0 {
            shares.remove(k).map_err(eng)?;
        } else {
            shares.insert(k, *counts).map_err(eng)?;
        }
    }
    let mut meta = txn.open_table(META).map_err(eng)?;
    meta.insert(STORE_BYTES, held.store_bytes).map_err(eng)?;
    Ok(())
}

/// [`Store::enqueue`](crate::store::Store::enqueue) and
/// [`Store::enqueue_fitting`](crate::store::Store::enqueue_fitting), as `mode` says.
pub(super) fn enqueue(
    txn: &WriteTransaction,
    to: PublicKey,
    entries: Vec<Entry>,
    mode: Mode,
) -> Result<Outcome, StoreError> {
    let k = to.as_bytes().as_slice();
    let encoded: Vec<Vec<u8>> = entries.iter().map(encode_entry).collect();
    let sized: Vec<(PublicKey, u64)> = entries
        .iter()
        .zip(&encoded)
        .map(|(e, bytes)| (e.sender, bytes.len() as u64))
        .collect();
    let mut held = held(txn, k, entries.iter().map(|e| e.sender))?;
    let verdicts = bounds::place(&mut held, &sized, mode)?;
    keep_counts(txn, k, &held)?;
    let mut meta = txn.open_table(META).map_err(eng)?;
    let mut seq = meta
        .get("seq")
        .map_err(eng)?
        .map(|v| v.value())
        .unwrap_or(0);
    let mut offline = txn.open_table(OFFLINE).map_err(eng)?;
    let mut placed = Vec::with_capacity(encoded.len());
    for (e, verdict) in encoded.iter().zip(verdicts) {
        placed.push(match verdict {
            Ok(()) => {
                offline.insert((k, seq), e.as_slice()).map_err(eng)?;
                seq += 1;
                Ok(seq - 1)
            }
            Err(full) => Err(full),
        });
    }
    meta.insert("seq", seq).map_err(eng)?;
    Ok(match mode {
        Mode::Fitting(_) => Outcome::Placed(placed),
        // Nothing is left out of a whole write that was not refused.
        Mode::Whole(_) | Mode::Unbounded => Outcome::Seqs(placed.into_iter().flatten().collect()),
    })
}

/// [`Store::remove`](crate::store::Store::remove).
pub(super) fn remove(
    txn: &WriteTransaction,
    to: PublicKey,
    seqs: Vec<u64>,
) -> Result<(), StoreError> {
    let k = to.as_bytes().as_slice();
    let mut gone: Vec<(PublicKey, u64)> = Vec::new();
    {
        let mut offline = txn.open_table(OFFLINE).map_err(eng)?;
        for seq in seqs {
            if let Some(v) = offline.remove((k, seq)).map_err(eng)? {
                gone.push((sender_of(v.value())?, v.value().len() as u64));
            }
        }
    }
    if gone.is_empty() {
        return Ok(());
    }
    let mut held = held(txn, k, gone.iter().map(|(s, _)| *s))?;
    for (sender, size) in gone {
        held.messages = held.messages.saturating_sub(1);
        held.bytes = held.bytes.saturating_sub(size);
        held.store_bytes = held.store_bytes.saturating_sub(size);
        let share = held.shares.entry(sender).or_default();
        *share = (share.0.saturating_sub(1), share.1.saturating_sub(size));
    }
    // An emptied queue starts afresh: nothing can be left of its counts.
    if held.messages == 0 {
        held.bytes = 0;
    }
    keep_counts(txn, k, &held)
}

/// [`Store::expire`](crate::store::Store::expire).
pub(super) fn expire(txn: &WriteTransaction, before: i64) -> Result<Vec<Expired>, StoreError> {
    let mut found = Vec::new();
    {
        let offline = txn.open_table(OFFLINE).map_err(eng)?;
        for row in offline.iter().map_err(eng)? {
            let (k, v) = row.map_err(eng)?;
            let entry = decode_entry(v.value())?;
            if entry.at < before {
                let (to, seq) = k.value();
                found.push((key_of(to)?, seq, entry));
            }
        }
    }
    let mut by_queue: BTreeMap<PublicKey, Vec<u64>> = Default::default();
    for (to, seq, _) in &found {
        by_queue.entry(*to).or_default().push(*seq);
    }
    for (to, seqs) in by_queue {
        remove(txn, to, seqs)?;
    }
    Ok(found
        .into_iter()
        .map(|(to, _, e)| Expired {
            to,
            sender: e.sender,
            id: e.id,
        })
        .collect())
}

/// [`Store::counts`](crate::store::Store::counts), read from a committed state.
pub(super) fn counts(
    db: &Database,
    to: PublicKey,
    sender: PublicKey,
) -> Result<Counts, StoreError> {
    let txn = db.begin_read().map_err(eng)?;
    let k = to.as_bytes().as_slice();
    let queues = txn.open_table(QUEUES).map_err(eng)?;
    let (messages, bytes) = queues
        .get(k)
        .map_err(eng)?
        .map(|v| v.value())
        .unwrap_or((0, 0));
    let shares = txn.open_table(SHARES).map_err(eng)?;
    let (share_messages, share_bytes) = shares
        .get((k, sender.as_bytes().as_slice()))
        .map_err(eng)?
        .map(|v| v.value())
        .unwrap_or((0, 0));
    let meta = txn.open_table(META).map_err(eng)?;
    let store_bytes = meta
        .get(STORE_BYTES)
        .map_err(eng)?
        .map(|v| v.value())
        .unwrap_or(0);
    Ok(Counts {
        messages,
        bytes,
        share_messages,
        share_bytes,
        store_bytes,
    })
}
