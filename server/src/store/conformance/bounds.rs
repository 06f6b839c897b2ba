//! The contract of the store's bounds ([`QueueLimits`]): each sender's share of a queue, the
//! store's budget over every queue, [`Store::enqueue_fitting`], and the counts behind them
//! ([`Store::counts`]), kept right through enqueue, removal and expiry and exact under
//! concurrent writes. Part of the [`conformance`](super) checks every engine runs.

use bytes::Bytes;
use flexim_protocol::PublicKey;

use super::{SENDER, entry, entry_size};
use crate::store::{Counts, Entry, Full, QueueLimits, Store, StoreError};

/// An entry from `sender` accepted at time 100.
fn entry_from(sender: PublicKey, frame: &[u8], id: &str) -> Entry {
    Entry {
        sender,
        ..entry(frame, Some(id))
    }
}

/// Bounds with a share of two messages, and room otherwise.
const SHARE_OF_TWO: QueueLimits = QueueLimits {
    messages: 100,
    bytes: 1_000_000,
    share_messages: 2,
    share_bytes: 1_000_000,
    store_bytes: 1_000_000,
};

/// One sender may have only its share of a queue: beyond it, its entry is refused with its
/// own counts, while another sender still has room; the share is counted per recipient, by
/// messages and by bytes, and removal and expiry give it back. [`Store::counts`] reports
/// every count.
pub async fn each_sender_has_a_share_of_a_queue(store: &dyn Store) {
    let (bob, carol, mallory) = (PublicKey([2; 32]), PublicKey([3; 32]), PublicKey([9; 32]));
    let one = entry_from(mallory, b"junk 1", "j-1");
    let size = entry_size(&one);
    let seqs = store
        .enqueue(
            bob,
            vec![one.clone(), entry_from(mallory, b"junk 2", "j-2")],
            Some(SHARE_OF_TWO),
        )
        .await
        .expect("two fit a share of two");
    match store
        .enqueue(
            bob,
            vec![entry_from(mallory, b"junk 3", "j-3")],
            Some(SHARE_OF_TWO),
        )
        .await
    {
        Err(StoreError::Full(Full::Share { messages, bytes })) => {
            assert_eq!((messages, bytes), (2, 2 * size), "the sender's own counts")
        }
        other => panic!("a third entry of one sender must be Full::Share, got {other:?}"),
    }
    store
        .enqueue(bob, vec![entry(b"friend", Some("f-1"))], Some(SHARE_OF_TWO))
        .await
        .expect("another sender still has room in the same queue");
    store
        .enqueue(
            carol,
            vec![entry_from(mallory, b"other", "o-1")],
            Some(SHARE_OF_TWO),
        )
        .await
        .expect("a share is of one recipient's queue");
    let counts = store.counts(bob, mallory).await.expect("counts");
    let friend = entry_size(&entry(b"friend", Some("f-1")));
    let other = entry_size(&entry_from(mallory, b"other", "o-1"));
    assert_eq!(
        counts,
        Counts {
            messages: 3,
            bytes: 2 * size + friend,
            share_messages: 2,
            share_bytes: 2 * size,
            store_bytes: 2 * size + friend + other,
        }
    );
    // The byte share holds as the message share does.
    let small = QueueLimits {
        share_bytes: 2 * size + 10,
        share_messages: 100,
        ..SHARE_OF_TWO
    };
    assert!(matches!(
        store
            .enqueue(
                bob,
                vec![entry_from(mallory, b"junk 3", "j-3")],
                Some(small)
            )
            .await,
        Err(StoreError::Full(Full::Share { messages: 2, .. }))
    ));
    // Removing one of the sender's entries gives it room again.
    store.remove(bob, vec![seqs[0]]).await.expect("remove");
    let counts = store.counts(bob, mallory).await.expect("counts");
    assert_eq!((counts.share_messages, counts.share_bytes), (1, size));
    store
        .enqueue(
            bob,
            vec![entry_from(mallory, b"junk 1", "j-4")],
            Some(SHARE_OF_TWO),
        )
        .await
        .expect("removal freed the share");
    // Expiry gives the share back too.
    let mut old = entry_from(carol, b"old", "c-1");
    old.at = 10;
    store
        .enqueue(bob, vec![old.clone()], None)
        .await
        .expect("enqueue");
    assert_eq!(store.counts(bob, carol).await.unwrap().share_messages, 1);
    assert_eq!(store.expire(50).await.expect("expire").len(), 1);
    let counts = store.counts(bob, carol).await.expect("counts");
    assert_eq!((counts.share_messages, counts.share_bytes), (0, 0));
    assert_eq!(
        store.counts(bob, mallory).await.unwrap().store_bytes,
        2 * size + friend + other,
        "expiry took the old entry's bytes from the store's count"
    );
}

/// The store's budget counts the bytes of every queue together, whatever bound each write
/// was held to: an entry that would pass it is refused with the store's count, in any queue;
/// removal and expiry give room back; a write without bounds is counted but not refused.
pub async fn the_store_budget_counts_every_queue(store: &dyn Store) {
    let (bob, carol, dave) = (PublicKey([2; 32]), PublicKey([3; 32]), PublicKey([4; 32]));
    let e = entry(b"0123456789", Some("b-1"));
    let size = entry_size(&e);
    let budget = QueueLimits {
        store_bytes: 2 * size,
        ..QueueLimits::queue(100, 1_000_000)
    };
    let bob_seqs = store
        .enqueue(bob, vec![e.clone()], Some(budget))
        .await
        .expect("fits the budget");
    store
        .enqueue(carol, vec![e.clone()], Some(budget))
        .await
        .expect("exactly at the budget fits");
    match store.enqueue(dave, vec![e.clone()], Some(budget)).await {
        Err(StoreError::Full(Full::Store { bytes })) => assert_eq!(bytes, 2 * size),
        other => panic!("over the budget must be Full::Store, got {other:?}"),
    }
    assert!(store.peek(dave, 0, 10).await.unwrap().is_empty());
    // Without bounds (nothing the server writes so) the entry is taken and counted.
    store
        .enqueue(dave, vec![e.clone()], None)
        .await
        .expect("without bounds");
    assert_eq!(
        store.counts(dave, SENDER).await.unwrap().store_bytes,
        3 * size
    );
    store.remove(bob, bob_seqs).await.expect("remove");
    assert_eq!(
        store.counts(bob, SENDER).await.unwrap().store_bytes,
        2 * size
    );
    assert!(matches!(
        store.enqueue(bob, vec![e.clone()], Some(budget)).await,
        Err(StoreError::Full(Full::Store { .. }))
    ));
    let mut old = e.clone();
    old.at = 10;
    let roomy = QueueLimits {
        store_bytes: 4 * size,
        ..budget
    };
    store
        .enqueue(bob, vec![old], Some(roomy))
        .await
        .expect("fits");
    store.expire(50).await.expect("expire");
    let counts = store.counts(bob, SENDER).await.unwrap();
    assert_eq!(counts.store_bytes, 2 * size, "expiry gave the bytes back");
    assert_eq!(
        (counts.messages, counts.bytes),
        (0, 0),
        "bob's queue is empty"
    );
    let seqs = store
        .enqueue(bob, vec![e.clone()], Some(roomy))
        .await
        .expect("room again");
    assert_eq!(seqs.len(), 1);
}

/// [`Store::enqueue_fitting`] stores the entries that fit, in order and with consecutive
/// sequence numbers, and says for each one left out which bound did: a sender whose entry is
/// left out has its later entries left out too, while other senders' entries still go in.
pub async fn enqueue_fitting_keeps_what_fits_in_order(store: &dyn Store) {
    let (bob, mallory, carol) = (PublicKey([2; 32]), PublicKey([9; 32]), PublicKey([3; 32]));
    let limits = QueueLimits {
        messages: 5,
        ..SHARE_OF_TWO
    };
    let entries = vec![
        entry_from(mallory, b"m1", "m-1"),
        entry(b"a1", Some("a-1")),
        entry_from(mallory, b"m2", "m-2"),
        entry_from(mallory, b"m3", "m-3"),
        entry(b"a2", Some("a-2")),
        entry_from(carol, b"c1", "c-1"),
        entry_from(carol, b"c2", "c-2"),
    ];
    let sizes: Vec<u64> = entries.iter().map(entry_size).collect();
    let placed = store
        .enqueue_fitting(bob, entries.clone(), limits)
        .await
        .expect("enqueue_fitting");
    let share = Full::Share {
        messages: 2,
        bytes: sizes[0] + sizes[2],
    };
    let queue = Full::Queue {
        messages: 5,
        bytes: sizes[0] + sizes[1] + sizes[2] + sizes[4] + sizes[5],
    };
    let verdicts: Vec<Result<(), Full>> = placed.iter().map(|p| p.map(|_| ())).collect();
    assert_eq!(
        verdicts,
        [
            Ok(()),
            Ok(()),
            Ok(()),
            Err(share),
            Ok(()),
            Ok(()),
            Err(queue)
        ],
        "mallory's third passes its share; carol's second the queue"
    );
    let seqs: Vec<u64> = placed.iter().filter_map(|p| p.ok()).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive: {seqs:?}"
    );
    let stored = store.peek(bob, 0, 10).await.expect("peek");
    assert_eq!(stored.iter().map(|s| s.seq).collect::<Vec<_>>(), seqs);
    assert_eq!(
        stored
            .iter()
            .map(|s| s.entry.frame.clone())
            .collect::<Vec<_>>(),
        [&b"m1"[..], b"a1", b"m2", b"a2", b"c1"].map(Bytes::from_static),
        "the kept entries, in order"
    );
    let counts = store.counts(bob, mallory).await.expect("counts");
    assert_eq!((counts.messages, counts.share_messages), (5, 2));
    // A sender left out stays out for the rest of the write, even where an entry would fit.
    let small = QueueLimits {
        share_bytes: sizes[0] + 1,
        share_messages: 100,
        ..QueueLimits::queue(100, 1_000_000)
    };
    let dave = PublicKey([4; 32]);
    let placed = store
        .enqueue_fitting(
            dave,
            vec![
                entry_from(mallory, b"xxxxxxxx", "x-1"),
                entry_from(mallory, b"m", "x-2"),
                entry(b"a", Some("x-3")),
            ],
            small,
        )
        .await
        .expect("enqueue_fitting");
    assert!(placed[0].is_err() && placed[1].is_err(), "{placed:?}");
    assert!(placed[2].is_ok(), "{placed:?}");
    assert_eq!(
        placed[0], placed[1],
        "the same bound for the rest of the write"
    );
    assert!(
        store
            .enqueue_fitting(dave, Vec::new(), small)
            .await
            .expect("nothing")
            .is_empty()
    );
}

/// The bounds are exact however many writes are in flight: 50 entries of one sender,
/// submitted before any is awaited, against a share of 20, store exactly 20.
pub async fn bounds_are_exact_under_concurrent_writes(store: &dyn Store) {
    let (bob, mallory) = (PublicKey([2; 32]), PublicKey([9; 32]));
    let limits = QueueLimits {
        share_messages: 20,
        ..SHARE_OF_TWO
    };
    let pending: Vec<_> = (0..50)
        .map(|i| {
            let e = entry_from(mallory, format!("{i}").as_bytes(), &format!("m-{i}"));
            store.enqueue(bob, vec![e], Some(limits))
        })
        .collect();
    let mut stored = 0;
    for p in pending {
        match p.await {
            Ok(_) => stored += 1,
            Err(StoreError::Full(Full::Share { messages: 20, .. })) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(stored, 20);
    assert_eq!(store.counts(bob, mallory).await.unwrap().share_messages, 20);
}
