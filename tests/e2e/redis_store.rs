//! The Redis store against a real `redis-server` (each test starts its own): the same
//! conformance checks as the embedded store, then what only a networked store has to get
//! right: several stores (nodes) on one Redis, a Redis crash and restart, an unreachable
//! Redis, durability settings, and keeping to its key prefix.

use std::time::{Duration, Instant};

use flexim_protocol::PublicKey;
use flexim_protocol::conversation::RoomId;
use flexim_server::store::{
    Claim, Counts, Entry, Full, QueueLimits, RedisStore, RoomChange, RoomLimits, Store, StoreError,
    conformance,
};
use flexim_tests::{RedisServer, WAIT};

/// A Redis of its own and a store on it.
async fn fresh() -> (RedisServer, RedisStore) {
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url)
        .await
        .expect("the store connects");
    (redis, store)
}

#[tokio::test]
async fn redis_store_conformance_queue_order_limits_peek_and_remove() {
    let (_redis, store) = fresh().await;
    conformance::queue_order_limits_peek_and_remove(&store).await;
}

#[tokio::test]
async fn redis_store_conformance_queue_limits_are_all_or_nothing() {
    let (_redis, store) = fresh().await;
    conformance::queue_limits_are_all_or_nothing(&store).await;
}

#[tokio::test]
async fn redis_store_conformance_sequence_numbers_are_one_global_order() {
    let (_redis, store) = fresh().await;
    conformance::sequence_numbers_are_one_global_order(&store).await;
}

#[tokio::test]
async fn redis_store_conformance_writes_take_effect_in_call_order() {
    let (_redis, store) = fresh().await;
    conformance::writes_take_effect_in_call_order(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_conformance_writes_take_effect_in_call_order_on_many_threads() {
    // The writer task may run while the calls are still being made: order must not depend
    // on the writer waiting for all of them.
    let (_redis, store) = fresh().await;
    conformance::writes_take_effect_in_call_order(&store).await;
}

#[tokio::test]
async fn redis_store_conformance_aliases_are_unique_ignoring_case() {
    let (_redis, store) = fresh().await;
    conformance::aliases_are_unique_ignoring_case(&store).await;
}

#[tokio::test]
async fn redis_store_conformance_the_operator_assigns_and_revokes_aliases() {
    let (_redis, store) = fresh().await;
    conformance::the_operator_assigns_and_revokes_aliases(&store).await;
}

#[tokio::test]
async fn redis_store_conformance_the_operator_blocks_and_unblocks_keys() {
    let (_redis, store) = fresh().await;
    conformance::the_operator_blocks_and_unblocks_keys(&store).await;
}

#[tokio::test]
async fn redis_store_conformance_ties_follow_the_rule() {
    let (_redis, store) = fresh().await;
    conformance::ties_follow_the_rule(&store).await;
}

#[tokio::test]
async fn redis_store_conformance_rooms_follow_the_rule() {
    let (_redis, store) = fresh().await;
    conformance::rooms_follow_the_rule(&store).await;
}

#[tokio::test]
async fn redis_store_conformance_pair_rooms_hold_their_two_users_only() {
    let (_redis, store) = fresh().await;
    conformance::pair_rooms_hold_their_two_users_only(&store).await;
}

#[tokio::test]
async fn redis_store_conformance_rooms_concurrent_commits_at_one_epoch_have_one_winner() {
    let (_redis, store) = fresh().await;
    conformance::concurrent_commits_at_one_epoch_have_one_winner(&store).await;
}

/// Two stores (two nodes) on one Redis committing at one epoch: one wins.
#[tokio::test]
async fn redis_store_rooms_two_nodes_committing_at_one_epoch_have_one_winner() {
    let (redis, one) = fresh().await;
    let two = RedisStore::connect(&redis.url)
        .await
        .expect("the second store connects");
    let (alice, bob) = (PublicKey([1; 32]), PublicKey([2; 32]));
    let room = RoomId([5; 16]);
    let limits = RoomLimits {
        members: 10,
        rooms: 10,
    };
    let commit = |author, epoch| RoomChange::Commit {
        author,
        epoch,
        add: Vec::new(),
        remove: vec![PublicKey([99; 32])],
        limits,
    };
    one.change_room(
        room,
        RoomChange::Create {
            creator: alice,
            peer: None,
            limits,
        },
    )
    .await
    .unwrap()
    .unwrap();
    let add = RoomChange::Commit {
        author: alice,
        epoch: 0,
        add: vec![bob],
        remove: Vec::new(),
        limits,
    };
    one.change_room(room, add).await.unwrap().unwrap();
    for epoch in 1..6 {
        let (a, b) = tokio::join!(
            one.change_room(room, commit(alice, epoch)),
            two.change_room(room, commit(bob, epoch))
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(
            a.is_ok() != b.is_ok(),
            "one winner at epoch {epoch}: {a:?} {b:?}"
        );
    }
    assert_eq!(two.room(room).await.unwrap().unwrap().epoch, 6);
}

#[tokio::test]
async fn redis_store_conformance_rooms_key_packages_are_kept_up_to_a_cap_and_claimed_once() {
    let (_redis, store) = fresh().await;
    conformance::key_packages_are_kept_up_to_a_cap_and_claimed_once(&store).await;
}

#[tokio::test]
async fn redis_store_conformance_users_touch_and_search() {
    let (_redis, store) = fresh().await;
    conformance::users_touch_and_search(&store).await;
}

#[tokio::test]
async fn redis_store_conformance_old_entries_expire_and_say_whose_they_were() {
    let (_redis, store) = fresh().await;
    conformance::old_entries_expire_and_say_whose_they_were(&store).await;
}

#[tokio::test]
async fn redis_store_conformance_stats_count_writes() {
    let (_redis, store) = fresh().await;
    conformance::stats_count_writes(&store).await;
}

#[tokio::test]
async fn redis_store_conformance_each_sender_has_a_share_of_a_queue() {
    let (_redis, store) = fresh().await;
    conformance::each_sender_has_a_share_of_a_queue(&store).await;
}

#[tokio::test]
async fn redis_store_conformance_the_store_budget_counts_every_queue() {
    let (_redis, store) = fresh().await;
    conformance::the_store_budget_counts_every_queue(&store).await;
}

#[tokio::test]
async fn redis_store_conformance_enqueue_fitting_keeps_what_fits_in_order() {
    let (_redis, store) = fresh().await;
    conformance::enqueue_fitting_keeps_what_fits_in_order(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_conformance_bounds_are_exact_under_concurrent_writes() {
    let (_redis, store) = fresh().await;
    conformance::bounds_are_exact_under_concurrent_writes(&store).await;
}

#[tokio::test]
async fn redis_store_two_stores_on_one_redis_share_users_aliases_and_queues() {
    let (redis, a) = fresh().await;
    let b = RedisStore::connect(&redis.url).await.unwrap();
    let (alice, bob, carol) = (PublicKey([1; 32]), PublicKey([2; 32]), PublicKey([3; 32]));

    // Both nodes claim one alias at once (different case): exactly one gets it.
    let (x, y) = tokio::join!(
        a.claim_alias(alice, "Shared".into(), 3),
        b.claim_alias(bob, "SHARED".into(), 3)
    );
    let mut outcomes = [x.unwrap(), y.unwrap()];
    outcomes.sort_by_key(|c| *c as u8);
    assert_eq!(outcomes, [Claim::Registered, Claim::Taken]);
    let owner = b.resolve_alias("shared".into()).await.unwrap().unwrap();
    assert_eq!(a.resolve_alias("SHARED".into()).await.unwrap(), Some(owner));

    // One counter: sequence numbers interleave across nodes in acceptance order.
    let s1 = a
        .enqueue(carol, vec![conformance::entry(b"from a", None)], None)
        .await
        .unwrap();
    let s2 = b
        .enqueue(carol, vec![conformance::entry(b"from b", None)], None)
        .await
        .unwrap();
    assert!(s1[0] < s2[0]);
    let seen: Vec<_> = a
        .peek(carol, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.seq)
        .collect();
    assert_eq!(seen, [s1[0], s2[0]], "either node sees the whole queue");
    b.remove(carol, s1).await.unwrap();
    assert_eq!(a.peek(carol, 0, 10).await.unwrap().len(), 1);

    // A limit holds across nodes: their writes meet in one queue.
    let limits = QueueLimits::queue(2, u64::MAX);
    a.enqueue(carol, vec![conformance::entry(b"2", None)], Some(limits))
        .await
        .unwrap();
    assert!(matches!(
        b.enqueue(carol, vec![conformance::entry(b"3", None)], Some(limits))
            .await,
        Err(StoreError::Full(Full::Queue { messages: 2, .. }))
    ));
    a.touch(carol, 77).await.unwrap();
    assert_eq!(b.user(carol).await.unwrap().unwrap().last_seen, 77);
}

#[tokio::test]
async fn redis_store_a_share_and_the_budget_hold_across_nodes() {
    // Both nodes count into the same figures, and writes from both at once are held to them
    // exactly.
    let (redis, a) = fresh().await;
    let b = RedisStore::connect(&redis.url).await.unwrap();
    let dave = PublicKey([4; 32]);
    let share = QueueLimits {
        share_messages: 10,
        ..QueueLimits::queue(1000, u64::MAX)
    };
    let pending: Vec<_> = (0..30u32)
        .map(|i| {
            let store = if i % 2 == 0 { &a } else { &b };
            store.enqueue(
                dave,
                vec![conformance::entry(&i.to_be_bytes(), None)],
                Some(share),
            )
        })
        .collect();
    let mut kept = 0;
    for p in pending {
        match p.await {
            Ok(_) => kept += 1,
            Err(StoreError::Full(Full::Share { .. })) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(kept, 10, "a share of ten across two nodes");
    let counts = b.counts(dave, conformance::SENDER).await.unwrap();
    assert_eq!((counts.messages, counts.share_messages), (10, 10));
    let budget = QueueLimits {
        store_bytes: counts.store_bytes,
        ..QueueLimits::queue(1000, u64::MAX)
    };
    assert!(matches!(
        a.enqueue(
            PublicKey([5; 32]),
            vec![conformance::entry(b"e", None)],
            Some(budget)
        )
        .await,
        Err(StoreError::Full(Full::Store { .. }))
    ));
}

/// Retries `write` until it succeeds (the store reconnects by itself) or [`WAIT`] passes.
async fn until_ok<T, F: std::future::Future<Output = Result<T, StoreError>>>(
    mut write: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        match write().await {
            Ok(v) => return v,
            Err(StoreError::Engine(e)) if Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the store did not recover within {WAIT:?}: {e}"),
        }
    }
}

#[tokio::test]
async fn redis_store_keeps_what_it_acknowledged_across_a_redis_crash_and_fails_writes_while_redis_is_away()
 {
    let (mut redis, store) = fresh().await;
    let bob = PublicKey([2; 32]);
    let before = store
        .enqueue(
            bob,
            vec![
                conformance::entry(b"one", Some("i1")),
                conformance::entry(b"two", None),
            ],
            None,
        )
        .await
        .unwrap();
    store.claim_alias(bob, "bob".into(), 1).await.unwrap();

    // While Redis is away, writes fail (promptly, as engine errors) instead of hanging.
    redis.kill();
    let started = Instant::now();
    let refused = store
        .enqueue(bob, vec![conformance::entry(b"lost", None)], None)
        .await;
    assert!(
        matches!(refused, Err(StoreError::Engine(_))),
        "a write while Redis is down fails: {refused:?}"
    );
    assert!(started.elapsed() < WAIT, "it fails within {WAIT:?}");
    assert!(matches!(
        store.peek(bob, 0, 10).await,
        Err(StoreError::Engine(_))
    ));

    // After a crash (SIGKILL) and restart, everything acknowledged is there, and the same
    // store (its writer task included) carries on.
    redis.restart();
    let after =
        until_ok(|| store.enqueue(bob, vec![conformance::entry(b"three", None)], None)).await;
    assert!(
        after[0] > before[1],
        "sequence numbers never repeat after a restart: {before:?} then {after:?}"
    );
    let frames: Vec<_> = store
        .peek(bob, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.entry.frame)
        .collect();
    assert_eq!(frames, [&b"one"[..], b"two", b"three"]);
    assert_eq!(store.resolve_alias("BOB".into()).await.unwrap(), Some(bob));

    // A clean stop and start works the same.
    redis.stop();
    redis.start_again();
    until_ok(|| store.touch(bob, 5)).await;
    assert_eq!(store.peek(bob, 0, 10).await.unwrap().len(), 3);
}

#[tokio::test]
async fn redis_store_connect_fails_clearly_when_redis_is_unreachable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let err = RedisStore::connect(&format!("redis://127.0.0.1:{port}"))
        .await
        .err()
        .expect("nothing listens there");
    let text = err.to_string();
    assert!(
        text.contains("cannot reach Redis at redis://127.0.0.1:"),
        "{text}"
    );
    assert!(started.elapsed() < WAIT, "it gives up soon");
    let err = RedisStore::connect("http://example.com")
        .await
        .err()
        .expect("not a Redis URL");
    assert!(err.to_string().contains("bad Redis URL"), "{err}");
}

#[tokio::test]
async fn redis_store_durability_warnings_follow_the_redis_settings() {
    let (redis, store) = fresh().await;
    assert_eq!(
        store.durability_warnings().await,
        Vec::<String>::new(),
        "appendonly yes with appendfsync always is durable"
    );
    redis
        .command(&["CONFIG", "SET", "appendfsync", "everysec"])
        .unwrap();
    let w = store.durability_warnings().await;
    assert!(
        w.len() == 1 && w[0].contains("up to one second of stored messages can be lost"),
        "{w:?}"
    );
    redis
        .command(&["CONFIG", "SET", "appendonly", "no"])
        .unwrap();
    let w = store.durability_warnings().await;
    assert!(
        w.len() == 1 && w[0].contains("a crash of Redis loses stored messages"),
        "{w:?}"
    );
}

#[tokio::test]
async fn redis_store_keeps_every_key_under_its_prefix_and_empties_what_it_empties() {
    let (redis, store) = fresh().await;
    let (alice, bob) = (PublicKey([1; 32]), PublicKey([2; 32]));
    store.touch(alice, 1).await.unwrap();
    store.claim_alias(alice, "alice".into(), 1).await.unwrap();
    let seqs = store
        .enqueue(bob, vec![conformance::entry(b"x", None)], None)
        .await
        .unwrap();
    let keys = redis.command(&["KEYS", "*"]).unwrap();
    assert!(!keys.is_empty());
    assert!(
        keys.iter()
            .all(|k| k.starts_with(flexim_server::store::REDIS_PREFIX)),
        "{keys:?}"
    );
    // An emptied queue leaves no queue, byte count, shares or expiry behind; the store's
    // own counters stay (its bytes are 0 again).
    store.remove(bob, seqs).await.unwrap();
    let mut keys = redis.command(&["KEYS", "*"]).unwrap();
    keys.sort();
    let hex = alice.to_hex();
    assert_eq!(
        keys,
        [
            "flexim:aliases".to_string(),
            "flexim:bytes".into(),
            "flexim:counted".into(),
            "flexim:seq".into(),
            format!("flexim:user:{hex}"),
            "flexim:users".into(),
        ]
    );
    assert_eq!(redis.command(&["GET", "flexim:bytes"]).unwrap(), ["0"]);
}

#[tokio::test]
async fn redis_store_data_written_before_the_shares_were_kept_is_counted_once_at_connect() {
    let (redis, store) = fresh().await;
    let (bob, carol, mallory) = (PublicKey([2; 32]), PublicKey([3; 32]), PublicKey([9; 32]));
    let junk = Entry {
        sender: mallory,
        ..conformance::entry(b"junk", Some("j-1"))
    };
    let mine = conformance::entry(b"one", Some("i-1"));
    store
        .enqueue(bob, vec![mine.clone(), junk.clone()], None)
        .await
        .unwrap();
    store
        .enqueue(carol, vec![junk.clone()], None)
        .await
        .unwrap();
    let counts = store.counts(bob, mallory).await.unwrap();
    let (j, m) = (
        conformance::entry_size(&junk),
        conformance::entry_size(&mine),
    );
    assert_eq!(
        counts,
        Counts {
            messages: 2,
            bytes: m + j,
            share_messages: 1,
            share_bytes: j,
            store_bytes: m + 2 * j,
        }
    );
    // Take away what an older version did not keep, then start a node again.
    let shares = |to: PublicKey| format!("flexim:shares:{}", to.to_hex());
    redis
        .command(&[
            "DEL",
            &shares(bob),
            &shares(carol),
            "flexim:bytes",
            "flexim:counted",
        ])
        .unwrap();
    drop(store);
    let store = RedisStore::connect(&redis.url).await.unwrap();
    assert_eq!(store.counts(bob, mallory).await.unwrap(), counts);
    assert_eq!(
        store.counts(carol, mallory).await.unwrap().share_messages,
        1
    );
    // Once: another node starting counts nothing again.
    let again = RedisStore::connect(&redis.url).await.unwrap();
    assert_eq!(again.counts(bob, mallory).await.unwrap(), counts);
}

#[tokio::test]
async fn redis_store_a_write_that_fails_in_redis_fails_alone() {
    let (redis, store) = fresh().await;
    let (bob, carol) = (PublicKey([2; 32]), PublicKey([3; 32]));
    // Damage Bob's byte count so that his enqueue's script fails inside Redis.
    let bytes_key = format!(
        "{}qbytes:{}",
        flexim_server::store::REDIS_PREFIX,
        bob.to_hex()
    );
    redis.command(&["SET", &bytes_key, "not a number"]).unwrap();
    // Both are submitted before either is awaited, so they travel in one transaction.
    let damaged = store.enqueue(bob, vec![conformance::entry(b"b", None)], None);
    let healthy = store.enqueue(carol, vec![conformance::entry(b"c", None)], None);
    let damaged = damaged.await;
    assert!(
        matches!(damaged, Err(StoreError::Engine(_))),
        "the damaged queue's write fails: {damaged:?}"
    );
    healthy.await.expect("the other write in the batch is done");
    assert_eq!(store.peek(carol, 0, 10).await.unwrap().len(), 1);
    assert!(store.peek(bob, 0, 10).await.unwrap().is_empty());
    // The writer carries on.
    store.touch(bob, 1).await.unwrap();
}
