//! The embedded engine's tests: the conformance checks, and what only a file has to get
//! right (reopening it, converting and counting what an older version wrote).

use super::*;
use crate::store::conformance;

/// A fresh store in a new directory; the directory is removed by [`Cleanup`] on drop.
fn temp_store() -> (EmbeddedStore, Cleanup) {
    let dir = std::env::temp_dir().join(format!(
        "flexim-store-test-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    (
        EmbeddedStore::open(&dir.join("db.redb")).unwrap(),
        Cleanup(dir),
    )
}

/// Removes a test's directory when dropped, also when the test fails.
struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn conformance_queue_order_limits_peek_and_remove() {
    let (store, _dir) = temp_store();
    conformance::queue_order_limits_peek_and_remove(&store).await;
}

#[tokio::test]
async fn conformance_ties_follow_the_rule() {
    let (store, _dir) = temp_store();
    conformance::ties_follow_the_rule(&store).await;
}

#[tokio::test]
async fn conformance_rooms_follow_the_rule() {
    let (store, _dir) = temp_store();
    conformance::rooms_follow_the_rule(&store).await;
}

#[tokio::test]
async fn conformance_pair_rooms_hold_their_two_users_only() {
    let (store, _dir) = temp_store();
    conformance::pair_rooms_hold_their_two_users_only(&store).await;
}

#[tokio::test]
async fn conformance_rooms_concurrent_commits_at_one_epoch_have_one_winner() {
    let (store, _dir) = temp_store();
    conformance::concurrent_commits_at_one_epoch_have_one_winner(&store).await;
}

#[tokio::test]
async fn conformance_rooms_key_packages_are_kept_up_to_a_cap_and_claimed_once() {
    let (store, _dir) = temp_store();
    conformance::key_packages_are_kept_up_to_a_cap_and_claimed_once(&store).await;
}

#[tokio::test]
async fn conformance_queue_limits_are_all_or_nothing() {
    let (store, _dir) = temp_store();
    conformance::queue_limits_are_all_or_nothing(&store).await;
}

#[tokio::test]
async fn conformance_sequence_numbers_are_one_global_order() {
    let (store, _dir) = temp_store();
    conformance::sequence_numbers_are_one_global_order(&store).await;
}

#[tokio::test]
async fn conformance_writes_take_effect_in_call_order() {
    let (store, _dir) = temp_store();
    conformance::writes_take_effect_in_call_order(&store).await;
}

#[tokio::test]
async fn conformance_aliases_are_unique_ignoring_case() {
    let (store, _dir) = temp_store();
    conformance::aliases_are_unique_ignoring_case(&store).await;
}

#[tokio::test]
async fn conformance_the_operator_assigns_and_revokes_aliases() {
    let (store, _dir) = temp_store();
    conformance::the_operator_assigns_and_revokes_aliases(&store).await;
}

#[tokio::test]
async fn conformance_the_operator_blocks_and_unblocks_keys() {
    let (store, _dir) = temp_store();
    conformance::the_operator_blocks_and_unblocks_keys(&store).await;
}

#[tokio::test]
async fn conformance_users_touch_and_search() {
    let (store, _dir) = temp_store();
    conformance::users_touch_and_search(&store).await;
}

#[tokio::test]
async fn conformance_old_entries_expire_and_say_whose_they_were() {
    let (store, _dir) = temp_store();
    conformance::old_entries_expire_and_say_whose_they_were(&store).await;
}

#[tokio::test]
async fn conformance_stats_count_writes() {
    let (store, _dir) = temp_store();
    conformance::stats_count_writes(&store).await;
}

#[tokio::test]
async fn conformance_each_sender_has_a_share_of_a_queue() {
    let (store, _dir) = temp_store();
    conformance::each_sender_has_a_share_of_a_queue(&store).await;
}

#[tokio::test]
async fn conformance_the_store_budget_counts_every_queue() {
    let (store, _dir) = temp_store();
    conformance::the_store_budget_counts_every_queue(&store).await;
}

#[tokio::test]
async fn conformance_enqueue_fitting_keeps_what_fits_in_order() {
    let (store, _dir) = temp_store();
    conformance::enqueue_fitting_keeps_what_fits_in_order(&store).await;
}

#[tokio::test]
async fn conformance_bounds_are_exact_under_concurrent_writes() {
    let (store, _dir) = temp_store();
    conformance::bounds_are_exact_under_concurrent_writes(&store).await;
}

/// Two senders' entries in Bob's queue and one in Carol's, with every count they make.
async fn three_entries(store: &EmbeddedStore) -> Counts {
    let (bob, carol, mallory) = (PublicKey([2; 32]), PublicKey([3; 32]), PublicKey([9; 32]));
    let from_mallory = Entry {
        sender: mallory,
        ..conformance::entry(b"junk", Some("j-1"))
    };
    store
        .enqueue(
            bob,
            vec![
                conformance::entry(b"one", Some("id-1")),
                from_mallory.clone(),
            ],
            None,
        )
        .await
        .unwrap();
    store
        .enqueue(carol, vec![from_mallory.clone()], None)
        .await
        .unwrap();
    let junk = conformance::entry_size(&from_mallory);
    let one = conformance::entry_size(&conformance::entry(b"one", Some("id-1")));
    let counts = store.counts(bob, mallory).await.unwrap();
    assert_eq!(
        counts,
        Counts {
            messages: 2,
            bytes: one + junk,
            share_messages: 1,
            share_bytes: junk,
            store_bytes: one + 2 * junk,
        }
    );
    counts
}

#[tokio::test]
async fn the_counts_of_the_bounds_survive_reopening_the_file() {
    let (store, dir) = temp_store();
    let counts = three_entries(&store).await;
    drop(store);
    let store = EmbeddedStore::open(&dir.0.join("db.redb")).unwrap();
    let (bob, mallory) = (PublicKey([2; 32]), PublicKey([9; 32]));
    assert_eq!(store.counts(bob, mallory).await.unwrap(), counts);
    // They still bound writes: a share of one is used up.
    let limits = QueueLimits {
        share_messages: 1,
        ..QueueLimits::queue(100, 1_000_000)
    };
    let again = Entry {
        sender: mallory,
        ..conformance::entry(b"junk", Some("j-2"))
    };
    assert!(matches!(
        store.enqueue(bob, vec![again], Some(limits)).await,
        Err(StoreError::Full(crate::store::Full::Share {
            messages: 1,
            ..
        }))
    ));
}

#[tokio::test]
async fn a_file_written_before_the_shares_were_kept_is_counted_once_at_open() {
    let (store, dir) = temp_store();
    let counts = three_entries(&store).await;
    drop(store);
    let path = dir.0.join("db.redb");
    {
        // Take away what an older version did not keep.
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut shares = txn.open_table(queues::SHARES).unwrap();
            shares.retain(|_, _| false).unwrap();
            let mut meta = txn.open_table(META).unwrap();
            meta.remove(queues::STORE_BYTES).unwrap();
            meta.remove(queues::COUNTED).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = EmbeddedStore::open(&path).unwrap();
    let (bob, mallory) = (PublicKey([2; 32]), PublicKey([9; 32]));
    assert_eq!(store.counts(bob, mallory).await.unwrap(), counts);
    // Counted once: a removal after the count leaves the right figures, not twice as many.
    let seqs: Vec<u64> = store
        .peek(bob, 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|s| s.seq)
        .collect();
    store.remove(bob, seqs).await.unwrap();
    drop(store);
    let store = EmbeddedStore::open(&path).unwrap();
    let after = store.counts(bob, mallory).await.unwrap();
    assert_eq!(
        after,
        Counts {
            store_bytes: counts.share_bytes,
            ..Counts::default()
        },
        "only Carol's entry is left"
    );
}

#[tokio::test]
async fn everything_survives_reopening_the_file() {
    let (store, dir) = temp_store();
    let (alice, bob) = (PublicKey([1; 32]), PublicKey([2; 32]));
    let one = conformance::entry(b"one", Some("id-1"));
    let seqs = store.enqueue(bob, vec![one.clone()], None).await.unwrap();
    store.touch(alice, 42).await.unwrap();
    store.claim_alias(alice, "Alice".into(), 1).await.unwrap();
    drop(store);
    let store = EmbeddedStore::open(&dir.0.join("db.redb")).unwrap();
    let got = store.peek(bob, 0, 10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].seq, &got[0].entry), (seqs[0], &one));
    assert_eq!(
        store.user(alice).await.unwrap(),
        Some(UserRecord {
            aliases: vec!["Alice".into()],
            last_seen: 42,
            banned: false,
        })
    );
    assert_eq!(
        store.resolve_alias("alice".into()).await.unwrap(),
        Some(alice)
    );
    // The sequence counter survives too: numbers never repeat.
    let next = store
        .enqueue(bob, vec![conformance::entry(b"two", None)], None)
        .await
        .unwrap();
    assert!(next[0] > seqs[0]);
}

#[tokio::test]
async fn entries_of_the_first_format_are_converted_once() {
    let (store, dir) = temp_store();
    drop(store);
    let path = dir.0.join("db.redb");
    let bob = PublicKey([2; 32]);
    {
        // Write what the first format held: bare frames, and no format number.
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut offline = txn.open_table(OFFLINE).unwrap();
            offline
                .insert((bob.as_bytes().as_slice(), 0), b"frame one".as_slice())
                .unwrap();
            let mut meta = txn.open_table(META).unwrap();
            meta.remove("format").unwrap();
        }
        txn.commit().unwrap();
    }
    let store = EmbeddedStore::open_at(&path, 1234).unwrap();
    let got = store.peek(bob, 0, 10).await.unwrap();
    assert_eq!(
        got[0].entry,
        Entry {
            sender: PublicKey([0; 32]),
            id: None,
            frame: Bytes::from_static(b"frame one"),
            at: 1234,
        }
    );
    drop(store);
    // A second open leaves converted entries alone.
    let store = EmbeddedStore::open_at(&path, 9999).unwrap();
    assert_eq!(store.peek(bob, 0, 10).await.unwrap()[0].entry.at, 1234);
}
