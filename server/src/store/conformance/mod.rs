//! The contract of [`Store`], as checks that every engine must pass.
//!
//! Each check takes a fresh, empty store (its counters at zero, no users, no queues) and
//! panics with what went wrong. The embedded engine's unit tests and the Redis engine's
//! end-to-end tests (`tests/e2e/redis_store.rs`, against a real `redis-server`) run the same
//! checks, so the engines cannot drift apart. Engine-specific behaviour (reopening a file,
//! converting an old format, surviving a Redis restart) is tested next to each engine.
//!
//! The checks are plain `async fn`s so that any test harness and runtime can drive them; a
//! harness runs each on its own fresh store, one test per check.

use bytes::Bytes;
use flexim_protocol::PublicKey;

use super::{Claim, Entry, Expired, Full, QueueLimits, Store, StoreError};

mod bounds;
mod operator;
mod rooms;

pub use bounds::{
    bounds_are_exact_under_concurrent_writes, each_sender_has_a_share_of_a_queue,
    enqueue_fitting_keeps_what_fits_in_order, the_store_budget_counts_every_queue,
};
pub use operator::{
    the_operator_assigns_and_revokes_aliases, the_operator_blocks_and_unblocks_keys,
};
pub use rooms::{
    concurrent_commits_at_one_epoch_have_one_winner,
    key_packages_are_kept_up_to_a_cap_and_claimed_once, pair_rooms_hold_their_two_users_only,
    rooms_follow_the_rule,
};

/// The sender of every entry these checks write.
pub const SENDER: PublicKey = PublicKey([7; 32]);

/// Bytes a stored entry counts against [`QueueLimits::bytes`]: acceptance time, sender and id
/// length (41 bytes), then the id and the frame. Both engines count the same.
pub fn entry_size(e: &Entry) -> u64 {
    41 + e.id.as_deref().map_or(0, str::len) as u64 + e.frame.len() as u64
}

/// An entry from [`SENDER`] accepted at time 100.
pub fn entry(frame: &[u8], id: Option<&str>) -> Entry {
    Entry {
        sender: SENDER,
        id: id.map(str::to_string),
        frame: Bytes::copy_from_slice(frame),
        at: 100,
    }
}

/// The frames of `to`'s queue, oldest first.
async fn frames(store: &dyn Store, to: PublicKey) -> Vec<Bytes> {
    store
        .peek(to, 0, 10_000)
        .await
        .expect("peek")
        .into_iter()
        .map(|s| s.entry.frame)
        .collect()
}

/// A queue keeps entries (sender, id, frame, time) in order; peeking from a sequence number
/// skips older ones; removing frees room (unknown numbers are ignored); the message limit
/// refuses with the queue's counts; without limits a full queue still takes entries.
pub async fn queue_order_limits_peek_and_remove(store: &dyn Store) {
    const LIMITS: QueueLimits = QueueLimits::queue(2, 1000);
    let bob = PublicKey([2; 32]);
    let one = entry(b"one", Some("id-1"));
    let two = entry(b"two", None);
    store
        .enqueue(bob, vec![one.clone()], Some(LIMITS))
        .await
        .expect("the first entry fits");
    store
        .enqueue(bob, vec![two.clone()], Some(LIMITS))
        .await
        .expect("the second entry fits");
    match store
        .enqueue(bob, vec![entry(b"three", None)], Some(LIMITS))
        .await
    {
        Err(StoreError::Full(Full::Queue { messages, bytes })) => {
            assert_eq!(messages, 2, "Full::Queue says how many messages are queued");
            assert_eq!(
                bytes,
                entry_size(&one) + entry_size(&two),
                "Full::Queue says how many bytes are queued"
            );
        }
        other => panic!("a third entry over a limit of 2 must be Full::Queue, got {other:?}"),
    }
    let got = store.peek(bob, 0, 10).await.expect("peek");
    let entries: Vec<_> = got.iter().map(|s| s.entry.clone()).collect();
    assert_eq!(
        entries,
        [one.clone(), two.clone()],
        "sender, id, frame and time come back as stored, in order"
    );
    assert!(got[0].seq < got[1].seq, "sequence numbers grow: {got:?}");
    assert_eq!(
        store.peek(bob, 0, 1).await.expect("peek").len(),
        1,
        "peek returns at most `max` entries"
    );
    assert!(
        store.peek(bob, 0, 0).await.expect("peek").is_empty(),
        "peek with max 0 returns nothing"
    );
    let later = store.peek(bob, got[1].seq, 10).await.expect("peek");
    assert_eq!(
        later.len(),
        1,
        "peeking from a sequence number includes it and skips what came before"
    );
    assert_eq!(later[0].seq, got[1].seq);
    assert_eq!(later[0].entry, two);
    assert!(
        store
            .peek(bob, got[1].seq + 1, 10)
            .await
            .expect("peek")
            .is_empty(),
        "nothing after the last sequence number"
    );
    removing_frees_room(store, bob, [got[0].seq, got[1].seq], LIMITS).await;
}

/// The second half of [`queue_order_limits_peek_and_remove`]: `bob`'s queue holds the entries
/// `seqs` ("one" and "two") and is at the limit.
async fn removing_frees_room(
    store: &dyn Store,
    bob: PublicKey,
    seqs: [u64; 2],
    limits: QueueLimits,
) {
    store
        .remove(bob, vec![seqs[0], seqs[1] + 1000])
        .await
        .expect("removing a known and an unknown sequence number");
    store
        .remove(bob, vec![seqs[0]])
        .await
        .expect("removing an entry twice is not an error");
    store
        .enqueue(bob, vec![entry(b"three", None)], Some(limits))
        .await
        .expect("removing freed room for one more");
    assert_eq!(
        frames(store, bob).await,
        [Bytes::from_static(b"two"), Bytes::from_static(b"three")]
    );
    store
        .enqueue(bob, vec![entry(b"four", None)], None)
        .await
        .expect("without limits a full queue still takes entries");
    assert_eq!(frames(store, bob).await.len(), 3);
    assert!(
        store
            .peek(PublicKey([3; 32]), 0, 10)
            .await
            .expect("peek")
            .is_empty(),
        "an unknown recipient has an empty queue"
    );
    // Emptying a queue resets its counts: the limits apply afresh.
    let all: Vec<u64> = store
        .peek(bob, 0, 10)
        .await
        .expect("peek")
        .iter()
        .map(|s| s.seq)
        .collect();
    store.remove(bob, all).await.expect("remove all");
    assert!(frames(store, bob).await.is_empty());
    store
        .enqueue(
            bob,
            vec![entry(b"five", None), entry(b"six", None)],
            Some(limits),
        )
        .await
        .expect("an emptied queue takes as many as its limit again");
}

/// The limits hold for messages and bytes (counted as [`entry_size`]); an enqueue of several
/// entries that do not all fit takes none of them; identical entries are kept apart.
pub async fn queue_limits_are_all_or_nothing(store: &dyn Store) {
    let bob = PublicKey([2; 32]);
    let e = entry(b"abc", None);
    let size = entry_size(&e);
    let limits = QueueLimits::queue(100, 2 * size);
    let seqs = store
        .enqueue(bob, vec![e.clone()], Some(limits))
        .await
        .expect("one entry fits");
    assert_eq!(seqs.len(), 1);
    match store
        .enqueue(bob, vec![e.clone(), e.clone()], Some(limits))
        .await
    {
        Err(StoreError::Full(Full::Queue { messages, bytes })) => {
            assert_eq!(
                (messages, bytes),
                (1, size),
                "the counts before the refusal"
            )
        }
        other => panic!("two more entries over the byte limit must be Full::Queue, got {other:?}"),
    }
    assert_eq!(
        store.peek(bob, 0, 10).await.expect("peek").len(),
        1,
        "a refused enqueue takes none of its entries"
    );
    let seqs = store
        .enqueue(bob, vec![e.clone()], Some(limits))
        .await
        .expect("exactly at the byte limit fits");
    assert_eq!(seqs.len(), 1);
    let got = store.peek(bob, 0, 10).await.expect("peek");
    assert_eq!(got.len(), 2, "identical entries are two entries: {got:?}");
    assert!(got.iter().all(|s| s.entry == e));
    let none = store
        .enqueue(bob, Vec::new(), Some(limits))
        .await
        .expect("enqueueing nothing into a full queue is fine");
    assert!(none.is_empty(), "no entries, no sequence numbers");
    // Messages count too.
    let carol = PublicKey([3; 32]);
    let two = QueueLimits::queue(2, u64::MAX);
    assert!(matches!(
        store
            .enqueue(carol, vec![e.clone(), e.clone(), e.clone()], Some(two))
            .await,
        Err(StoreError::Full(Full::Queue {
            messages: 0,
            bytes: 0
        }))
    ));
    assert!(store.peek(carol, 0, 10).await.expect("peek").is_empty());
    let seqs = store
        .enqueue(carol, vec![e.clone(), e.clone()], Some(two))
        .await
        .expect("two entries fit a limit of two");
    assert_eq!(seqs.len(), 2);
    assert!(seqs[0] < seqs[1], "{seqs:?}");
}

/// Sequence numbers come from one counter for all queues: their order is the order of
/// acceptance, and an enqueue of several entries gets consecutive numbers in order.
pub async fn sequence_numbers_are_one_global_order(store: &dyn Store) {
    let (bob, carol) = (PublicKey([2; 32]), PublicKey([3; 32]));
    let a = store
        .enqueue(bob, vec![entry(b"a", None)], None)
        .await
        .expect("enqueue");
    let b = store
        .enqueue(
            carol,
            vec![entry(b"b1", None), entry(b"b2", None), entry(b"b3", None)],
            None,
        )
        .await
        .expect("enqueue");
    let c = store
        .enqueue(bob, vec![entry(b"c", None)], None)
        .await
        .expect("enqueue");
    assert_eq!(b.len(), 3);
    assert!(
        a[0] < b[0] && b[0] < b[1] && b[1] < b[2] && b[2] < c[0],
        "sequence numbers follow acceptance across queues: {a:?} {b:?} {c:?}"
    );
    let carol_seqs: Vec<u64> = store
        .peek(carol, 0, 10)
        .await
        .expect("peek")
        .iter()
        .map(|s| s.seq)
        .collect();
    assert_eq!(carol_seqs, b, "peek reports the numbers enqueue returned");
    assert_eq!(
        frames(store, carol).await,
        [
            Bytes::from_static(b"b1"),
            Bytes::from_static(b"b2"),
            Bytes::from_static(b"b3")
        ]
    );
}

/// Writes take effect in the order the methods were called, not the order their futures are
/// polled (or whether they are): 500 enqueues submitted before any is awaited come back in
/// call order and share commits; a touch awaited after a later one still came first; a
/// write whose future is dropped unpolled still happens, before the ones called after it.
pub async fn writes_take_effect_in_call_order(store: &dyn Store) {
    let bob = PublicKey([2; 32]);
    let expected: Vec<Bytes> = (0..500u32)
        .map(|i| Bytes::from(i.to_be_bytes().to_vec()))
        .collect();
    let pending: Vec<_> = expected
        .iter()
        .map(|f| store.enqueue(bob, vec![entry(f, None)], None))
        .collect();
    // Awaited in reverse: the order must still be the call order.
    let mut seqs = Vec::new();
    for p in pending.into_iter().rev() {
        seqs.push(p.await.expect("enqueue")[0]);
    }
    seqs.reverse();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "sequence numbers follow the call order"
    );
    assert_eq!(frames(store, bob).await, expected, "frames in call order");
    let stats = store.stats();
    assert_eq!(stats.writes, 500, "{stats:?}");
    assert!(
        stats.commits <= 50,
        "writes waiting together share commits: {stats:?}"
    );

    let alice = PublicKey([1; 32]);
    let first = store.touch(alice, 10);
    let second = store.touch(alice, 20);
    let before_second = second.await.expect("touch");
    let before_first = first.await.expect("touch");
    assert_eq!(
        before_first.last_seen, 0,
        "the first touch found a new user"
    );
    assert_eq!(
        before_second.last_seen, 10,
        "the second touch found the first one's time"
    );
    assert_eq!(
        store.user(alice).await.expect("user").map(|u| u.last_seen),
        Some(20)
    );

    let carol = PublicKey([3; 32]);
    drop(store.enqueue(carol, vec![entry(b"never polled", None)], None));
    store
        .enqueue(carol, vec![entry(b"awaited", None)], None)
        .await
        .expect("enqueue");
    assert_eq!(
        frames(store, carol).await,
        [
            Bytes::from_static(b"never polled"),
            Bytes::from_static(b"awaited")
        ],
        "a write happens when called, even if its future is never polled"
    );
}

/// Aliases are unique ignoring ASCII case: Registered, AlreadyYours (any case), Taken (any
/// case), TooMany at the limit; resolve finds the key in any case; the user record keeps the
/// aliases as spelled, in order; claiming creates an unknown user.
pub async fn aliases_are_unique_ignoring_case(store: &dyn Store) {
    let (a, b) = (PublicKey([1; 32]), PublicKey([2; 32]));
    let claim = |key, alias: &str, max| store.claim_alias(key, alias.to_string(), max);
    assert_eq!(claim(a, "Alice", 2).await.unwrap(), Claim::Registered);
    assert_eq!(claim(a, "alice", 2).await.unwrap(), Claim::AlreadyYours);
    assert_eq!(claim(b, "ALICE", 2).await.unwrap(), Claim::Taken);
    assert_eq!(
        claim(b, "ALICE", 0).await.unwrap(),
        Claim::Taken,
        "Taken is checked before the limit"
    );
    assert_eq!(store.resolve_alias("aLiCe".into()).await.unwrap(), Some(a));
    assert_eq!(store.resolve_alias("bob".into()).await.unwrap(), None);
    assert_eq!(claim(a, "al2", 2).await.unwrap(), Claim::Registered);
    assert_eq!(claim(a, "al3", 2).await.unwrap(), Claim::TooMany);
    assert_eq!(
        store.resolve_alias("al3".into()).await.unwrap(),
        None,
        "a refused alias is not registered"
    );
    assert_eq!(
        claim(a, "AL2", 2).await.unwrap(),
        Claim::AlreadyYours,
        "AlreadyYours is checked before the limit"
    );
    let record = store
        .user(a)
        .await
        .unwrap()
        .expect("a claim creates the user");
    assert_eq!(record.aliases, ["Alice", "al2"], "as spelled, in order");
    assert_eq!(record.last_seen, 0, "a user who never logged in");
    assert_eq!(claim(b, "Bob", 1).await.unwrap(), Claim::Registered);
    assert_eq!(store.resolve_alias("BOB".into()).await.unwrap(), Some(b));
    let c = PublicKey([3; 32]);
    assert_eq!(claim(c, "carol", 0).await.unwrap(), Claim::TooMany);
    assert_eq!(
        store.user(c).await.unwrap(),
        None,
        "a refused claim creates nothing"
    );
}

/// touch creates users and returns the record before; user finds them; users lists the most
/// recently seen first, at most `limit`; search matches part of any alias ignoring case,
/// most recently seen first, at most `limit`, with glob-like characters taken literally.
pub async fn users_touch_and_search(store: &dyn Store) {
    let (a, b, c) = (PublicKey([1; 32]), PublicKey([2; 32]), PublicKey([3; 32]));
    assert_eq!(
        store.user(a).await.unwrap(),
        None,
        "unknown before any touch"
    );
    assert!(store.users(10).await.unwrap().is_empty());
    let before = store.touch(a, 50).await.unwrap();
    assert_eq!(
        before,
        Default::default(),
        "a new user's record before is empty"
    );
    assert_eq!(store.user(a).await.unwrap().unwrap().last_seen, 50);
    store.claim_alias(a, "Alice".into(), 3).await.unwrap();
    store.claim_alias(a, "al_x".into(), 3).await.unwrap();
    let before = store.touch(a, 70).await.unwrap();
    assert_eq!(before.last_seen, 50);
    assert_eq!(before.aliases, ["Alice", "al_x"], "touch keeps the aliases");
    assert_eq!(store.user(a).await.unwrap().unwrap().aliases.len(), 2);
    store.touch(b, 90).await.unwrap();
    store.claim_alias(b, "Malina".into(), 3).await.unwrap();
    store.touch(c, 60).await.unwrap();
    store.claim_alias(c, "carol".into(), 3).await.unwrap();

    let keys = |found: Vec<(PublicKey, crate::store::UserRecord)>| -> Vec<PublicKey> {
        found.into_iter().map(|(k, _)| k).collect()
    };
    assert_eq!(
        keys(store.users(10).await.unwrap()),
        [b, a, c],
        "most recently seen first"
    );
    assert_eq!(keys(store.users(2).await.unwrap()), [b, a], "at most limit");
    assert!(store.users(0).await.unwrap().is_empty());
    let found = store.users(1).await.unwrap();
    assert_eq!(
        found[0].1.aliases,
        ["Malina"],
        "users come with their records"
    );
    assert_eq!(found[0].1.last_seen, 90);

    assert!(
        store.search("li".into(), 10).await.unwrap().is_empty(),
        "nobody is found before choosing to be"
    );
    for k in [a, b, c] {
        store.set_discoverable(k, true).await.unwrap();
    }
    assert_eq!(
        keys(store.search("LI".into(), 10).await.unwrap()),
        [b, a],
        "part of an alias, any case, most recently seen first"
    );
    assert_eq!(keys(store.search("li".into(), 1).await.unwrap()), [b]);
    assert_eq!(keys(store.search("AL_".into(), 10).await.unwrap()), [a]);
    assert_eq!(
        keys(store.search("carol".into(), 10).await.unwrap()),
        [c],
        "a whole alias matches"
    );
    assert!(store.search("zzz".into(), 10).await.unwrap().is_empty());
    assert!(
        store.search("*".into(), 10).await.unwrap().is_empty(),
        "no alias contains a star: it is not a wildcard"
    );
    assert!(store.search("a?i".into(), 10).await.unwrap().is_empty());
    let found = store.search("alice".into(), 10).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].1.aliases,
        ["Alice", "al_x"],
        "search results carry the whole record"
    );
    store.set_discoverable(a, false).await.unwrap();
    assert_eq!(
        keys(store.search("LI".into(), 10).await.unwrap()),
        [b],
        "a user who turned discoverability off is not found"
    );
}

/// Ties follow `ties::decide` in both engines: a stranger's messages fill its box up to the
/// limit, the box takes a limited number of strangers, decisions stand until changed, and
/// every change says the tie before and after.
pub async fn ties_follow_the_rule(store: &dyn Store) {
    use crate::store::{Admission, RequestLimits, Tie, TieChange};
    let (owner, s1, s2, s3) = (
        PublicKey([1; 32]),
        PublicKey([2; 32]),
        PublicKey([3; 32]),
        PublicKey([4; 32]),
    );
    let limits = RequestLimits {
        messages: 2,
        pending: 2,
    };
    let message = TieChange::Admit {
        limits,
        message: true,
    };
    let request = TieChange::Admit {
        limits,
        message: false,
    };
    let admit = |other, change| async move {
        let (b, a) = store.tie(owner, other, change).await.unwrap();
        Admission::of(b, a)
    };
    assert_eq!(store.tie_of(owner, s1).await.unwrap(), None);
    assert_eq!(
        admit(s1, request).await,
        Admission::Request {
            first: true,
            messages: 0
        }
    );
    assert_eq!(
        admit(s1, message).await,
        Admission::Request {
            first: false,
            messages: 1
        }
    );
    assert_eq!(
        admit(s1, message).await,
        Admission::Request {
            first: false,
            messages: 2
        }
    );
    assert_eq!(admit(s1, message).await, Admission::BoxFull { messages: 2 });
    assert_eq!(
        store.tie_of(owner, s1).await.unwrap(),
        Some(Tie::Pending { messages: 2 }),
        "a refused message is not counted"
    );
    assert_eq!(
        admit(s2, message).await,
        Admission::Request {
            first: true,
            messages: 1
        }
    );
    assert_eq!(admit(s3, message).await, Admission::TooManyRequests);
    assert_eq!(store.tie_of(owner, s3).await.unwrap(), None);

    // Accepting one makes room in the box for another stranger.
    let (before, after) = store.tie(owner, s1, TieChange::Accept).await.unwrap();
    assert_eq!(
        (before, after),
        (Some(Tie::Pending { messages: 2 }), Some(Tie::Accepted))
    );
    assert_eq!(admit(s1, message).await, Admission::Contact);
    assert_eq!(
        admit(s3, message).await,
        Admission::Request {
            first: true,
            messages: 1
        }
    );

    store.tie(owner, s2, TieChange::Decline).await.unwrap();
    assert_eq!(admit(s2, message).await, Admission::Declined);
    store.tie(owner, s3, TieChange::Block).await.unwrap();
    assert_eq!(admit(s3, message).await, Admission::Blocked);
    let (_, after) = store.tie(owner, s1, TieChange::Decline).await.unwrap();
    assert_eq!(after, Some(Tie::Accepted), "only a request can be declined");

    let mut ties = store.ties(owner).await.unwrap();
    ties.sort_by_key(|(k, _)| *k);
    assert_eq!(
        ties,
        [(s1, Tie::Accepted), (s2, Tie::Declined), (s3, Tie::Blocked)]
    );
    let (before, after) = store.tie(owner, s3, TieChange::Clear).await.unwrap();
    assert_eq!((before, after), (Some(Tie::Blocked), None));
    assert_eq!(store.tie_of(owner, s3).await.unwrap(), None);
    assert!(
        store.ties(s1).await.unwrap().is_empty(),
        "ties are one-sided"
    );
}

/// Expiry deletes every entry accepted before the time (not at it), from every queue, says
/// whose each was (recipient, sender, id), and frees the queue's room.
pub async fn old_entries_expire_and_say_whose_they_were(store: &dyn Store) {
    let (bob, carol) = (PublicKey([2; 32]), PublicKey([3; 32]));
    let mut old = entry(b"old", Some("o-1"));
    old.at = 10;
    store.enqueue(bob, vec![old], None).await.unwrap();
    store
        .enqueue(bob, vec![entry(b"new", None)], None)
        .await
        .unwrap();
    let mut old_plain = entry(b"old2", None);
    old_plain.at = 20;
    let mut at_the_limit = entry(b"at50", None);
    at_the_limit.at = 50;
    store
        .enqueue(carol, vec![old_plain, at_the_limit], None)
        .await
        .unwrap();
    let mut gone = store.expire(50).await.unwrap();
    gone.sort_by_key(|e| e.to);
    assert_eq!(
        gone,
        [
            Expired {
                to: bob,
                sender: SENDER,
                id: Some("o-1".into())
            },
            Expired {
                to: carol,
                sender: SENDER,
                id: None
            },
        ]
    );
    assert_eq!(frames(store, bob).await, [Bytes::from_static(b"new")]);
    assert_eq!(
        frames(store, carol).await,
        [Bytes::from_static(b"at50")],
        "an entry accepted exactly at the time stays"
    );
    assert!(
        store.expire(50).await.unwrap().is_empty(),
        "nothing expires twice"
    );
    // The expired entries no longer count against the limits.
    let one = QueueLimits::queue(2, 1000);
    store
        .enqueue(bob, vec![entry(b"room", None)], Some(one))
        .await
        .expect("expiry freed room");
    // Removed entries do not expire again.
    let seqs: Vec<u64> = store
        .peek(carol, 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|s| s.seq)
        .collect();
    store.remove(carol, seqs).await.unwrap();
    let gone = store.expire(1000).await.unwrap();
    assert_eq!(gone.len(), 2, "bob's two entries only: {gone:?}");
    assert!(gone.iter().all(|e| e.to == bob));
    assert!(frames(store, bob).await.is_empty());
}

/// Every write (touch, claim, enqueue, remove, expire) counts once in `writes`; `commits`
/// counts at least one per batch and never more than the writes.
pub async fn stats_count_writes(store: &dyn Store) {
    let start = store.stats();
    assert_eq!(
        (start.writes, start.commits),
        (0, 0),
        "a fresh store has done nothing"
    );
    let bob = PublicKey([2; 32]);
    store.touch(bob, 1).await.unwrap();
    store.claim_alias(bob, "bob".into(), 1).await.unwrap();
    let seqs = store
        .enqueue(bob, vec![entry(b"x", None)], None)
        .await
        .unwrap();
    store.remove(bob, seqs).await.unwrap();
    store.expire(0).await.unwrap();
    // Reads are not writes.
    store.user(bob).await.unwrap();
    store.peek(bob, 0, 10).await.unwrap();
    store.users(10).await.unwrap();
    let stats = store.stats();
    assert_eq!(stats.writes, 5, "five writes: {stats:?}");
    assert!(
        (1..=5).contains(&stats.commits),
        "one to five commits for five awaited writes: {stats:?}"
    );
}
