//! Backups of the embedded store: a consistent copy made while the server runs, and putting
//! one back while it is stopped.
//!
//! A backup is a read transaction's snapshot (redb's MVCC: what was committed when it began,
//! none of what commits meanwhile) copied table by table into a new database file, which is
//! committed (synced) under a temporary name and then renamed. So writes go on while it is
//! made, and a backup file is either whole or absent. Restoring copies a backup that opens
//! over the store's file, which the server must not hold open.

use std::path::{Path, PathBuf};

use redb::{
    Database, ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};

use super::queues::{QUEUES, SHARES};
use super::rooms::{KEY_PACKAGES, ROOMS, ROOMS_OF};
use super::{ALIASES, DISCOVERABLE, EmbeddedStore, META, OFFLINE, TIES, USERS, eng};
use crate::store::StoreError;

/// What a backup (or a restore) holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backup {
    /// Users.
    pub users: u64,
    /// Stored messages and receipts, in every queue.
    pub stored: u64,
    /// Rows in all, every table together.
    pub rows: u64,
    /// The backup file's size in bytes.
    pub bytes: u64,
}

/// Copies every row of `def` from the snapshot into the new file; returns how many.
fn copy<K: redb::Key + 'static, V: redb::Value + 'static>(
    from: &ReadTransaction,
    to: &WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<u64, StoreError> {
    let source = from.open_table(def).map_err(eng)?;
    let mut target = to.open_table(def).map_err(eng)?;
    let mut n = 0;
    for row in source.iter().map_err(eng)? {
        let (k, v) = row.map_err(eng)?;
        target.insert(k.value(), v.value()).map_err(eng)?;
        n += 1;
    }
    Ok(n)
}

/// Every table of the store copied from `from` into `to`.
fn copy_all(from: &ReadTransaction, to: &WriteTransaction) -> Result<Backup, StoreError> {
    let users = copy(from, to, USERS)?;
    let stored = copy(from, to, OFFLINE)?;
    let rows = users
        + stored
        + copy(from, to, ALIASES)?
        + copy(from, to, QUEUES)?
        + copy(from, to, SHARES)?
        + copy(from, to, META)?
        + copy(from, to, TIES)?
        + copy(from, to, DISCOVERABLE)?
        + copy(from, to, ROOMS)?
        + copy(from, to, ROOMS_OF)?
        + copy(from, to, KEY_PACKAGES)?;
    Ok(Backup {
        users,
        stored,
        rows,
        bytes: 0,
    })
}

/// The name a file is written under before it is renamed to `path`.
fn partial(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Copies `db` as it is now into a new database file at `to` (which must not exist).
fn write_backup(db: &Database, to: &Path) -> Result<Backup, StoreError> {
    if to.exists() {
        return Err(StoreError::Engine(format!(
            "{} exists already; a backup never overwrites a file",
            to.display()
        )));
    }
    let snapshot = db.begin_read().map_err(eng)?;
    let tmp = partial(to);
    let _ = std::fs::remove_file(&tmp);
    let copy = Database::create(&tmp).map_err(eng)?;
    let txn = copy.begin_write().map_err(eng)?;
    let mut made = copy_all(&snapshot, &txn)?;
    txn.commit().map_err(eng)?;
    drop(copy);
    std::fs::rename(&tmp, to).map_err(eng)?;
    made.bytes = std::fs::metadata(to).map_err(eng)?.len();
    Ok(made)
}

impl EmbeddedStore {
    /// A consistent copy of the store at `to` (a new file), made while writes go on.
    pub async fn backup_to(&self, to: PathBuf) -> Result<Backup, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || write_backup(&db, &to))
            .await
            .map_err(eng)?
    }
}

/// What the backup at `path` holds, opened and read (so a damaged file is refused).
pub fn inspect(path: &Path) -> Result<Backup, StoreError> {
    let db =
        Database::open(path).map_err(|e| StoreError::Engine(format!("{}: {e}", path.display())))?;
    let txn = db.begin_read().map_err(eng)?;
    let users = txn.open_table(USERS).map_err(eng)?.len().map_err(eng)?;
    let stored = txn.open_table(OFFLINE).map_err(eng)?.len().map_err(eng)?;
    Ok(Backup {
        users,
        stored,
        rows: 0,
        bytes: std::fs::metadata(path).map_err(eng)?.len(),
    })
}

/// Puts the backup at `from` back as the store file `store` (the server stopped): the backup
/// is checked first, then copied beside the store and renamed over it, so a failure leaves
/// the store as it was. Refused while a server holds the store open.
pub fn restore(from: &Path, store: &Path) -> Result<Backup, StoreError> {
    let held = inspect(from)?;
    // Opening takes redb's lock on the file: it fails so while a server runs on it. A store
    // that does not open for another reason (damaged) is what a restore is for.
    if store.exists()
        && let Err(redb::DatabaseError::DatabaseAlreadyOpen) = Database::open(store)
    {
        return Err(StoreError::Engine(format!(
            "{} is open in a running server: stop the server first",
            store.display()
        )));
    }
    let tmp = partial(store);
    std::fs::copy(from, &tmp).map_err(eng)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(eng)?;
    std::fs::rename(&tmp, store).map_err(eng)?;
    Ok(held)
}
