//! The contract of rooms and KeyPackages ([`Store::change_room`], [`Store::publish_key_packages`],
//! [`Store::claim_key_package`]): every engine applies the rule of `store/rooms.rs`, durably
//! and atomically.

use flexim_protocol::PublicKey;
use flexim_protocol::conversation::RoomId;

use crate::store::{Refused, RoomChange, RoomLimits, Store};

const LIMITS: RoomLimits = RoomLimits {
    members: 3,
    rooms: 2,
};

fn commit(author: PublicKey, epoch: u64, add: &[PublicKey], remove: &[PublicKey]) -> RoomChange {
    RoomChange::Commit {
        author,
        epoch,
        add: add.to_vec(),
        remove: remove.to_vec(),
        limits: LIMITS,
    }
}

fn create(creator: PublicKey) -> RoomChange {
    RoomChange::Create {
        creator,
        peer: None,
        limits: LIMITS,
    }
}

/// Rooms are created once, changed by commits at their epoch, left, and deleted with their
/// last member; each user's count of rooms follows, and bounds creating and adding.
pub async fn rooms_follow_the_rule(store: &dyn Store) {
    let (alice, bob, carol) = (PublicKey([1; 32]), PublicKey([2; 32]), PublicKey([3; 32]));
    let (r1, r2, r3) = (RoomId([1; 16]), RoomId([2; 16]), RoomId([3; 16]));
    assert_eq!(store.room(r1).await.unwrap(), None);
    let made = store.change_room(r1, create(alice)).await.unwrap().unwrap();
    assert_eq!(made.before, None);
    let room = store.room(r1).await.unwrap().expect("the room is kept");
    assert_eq!((room.epoch, room.admins.clone()), (0, vec![alice]));
    assert_eq!(
        store.change_room(r1, create(bob)).await.unwrap(),
        Err(Refused::Exists)
    );
    assert_eq!(store.rooms_of(alice).await.unwrap(), 1);

    let added = store
        .change_room(r1, commit(alice, 0, &[bob, carol], &[]))
        .await
        .unwrap()
        .unwrap();
    let after = added.after.unwrap();
    assert_eq!(after.epoch, 1);
    assert!(after.has(&bob) && after.has(&carol));
    assert_eq!(store.room(r1).await.unwrap(), Some(after));
    assert_eq!(store.rooms_of(bob).await.unwrap(), 1);
    assert_eq!(
        store
            .change_room(r1, commit(alice, 0, &[], &[bob]))
            .await
            .unwrap(),
        Err(Refused::Stale { epoch: 1 })
    );
    assert_eq!(
        store
            .change_room(r1, commit(bob, 1, &[], &[carol]))
            .await
            .unwrap(),
        Err(Refused::NotAdmin)
    );

    // Bob's second room is his last: a third is refused, and so is adding him to one.
    store.change_room(r2, create(bob)).await.unwrap().unwrap();
    assert!(matches!(
        store.change_room(r3, create(bob)).await.unwrap(),
        Err(Refused::TooManyRooms { rooms: 2, .. })
    ));
    store.change_room(r3, create(carol)).await.unwrap().unwrap();
    assert!(matches!(
        store
            .change_room(r3, commit(carol, 0, &[bob], &[]))
            .await
            .unwrap(),
        Err(Refused::TooManyRooms { .. })
    ));

    // Leaving: the admin goes, the longest-standing member becomes admin; the last leave
    // deletes the room and every count follows.
    let left = store
        .change_room(r1, RoomChange::Leave { member: alice })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(left.after.unwrap().admins, vec![bob]);
    assert_eq!(store.rooms_of(alice).await.unwrap(), 0);
    assert_eq!(
        store
            .change_room(r1, RoomChange::Leave { member: alice })
            .await
            .unwrap(),
        Err(Refused::NotMember)
    );
    for who in [bob, carol] {
        store
            .change_room(r1, RoomChange::Leave { member: who })
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(store.room(r1).await.unwrap(), None);
    assert_eq!(store.rooms_of(bob).await.unwrap(), 1);
    assert_eq!(store.rooms_of(carol).await.unwrap(), 1);
    // The id is free again.
    store.change_room(r1, create(alice)).await.unwrap().unwrap();
}

/// Two commits at one epoch, submitted at once: exactly one goes through, the other finds the
/// epoch moved on; so do many.
pub async fn concurrent_commits_at_one_epoch_have_one_winner(store: &dyn Store) {
    let (alice, bob) = (PublicKey([1; 32]), PublicKey([2; 32]));
    let room = RoomId([9; 16]);
    store
        .change_room(room, create(alice))
        .await
        .unwrap()
        .unwrap();
    store
        .change_room(room, commit(alice, 0, &[bob], &[]))
        .await
        .unwrap()
        .unwrap();
    for round in 0..4u64 {
        let epoch = 1 + round;
        let departed = PublicKey([100 + round as u8; 32]);
        let a = store.change_room(room, commit(alice, epoch, &[], &[departed]));
        let b = store.change_room(room, commit(bob, epoch, &[], &[departed]));
        let (a, b) = tokio::join!(a, b);
        let outcomes = [a.unwrap(), b.unwrap()];
        let won = outcomes.iter().filter(|o| o.is_ok()).count();
        assert_eq!(won, 1, "one commit wins at epoch {epoch}: {outcomes:?}");
        assert!(
            outcomes
                .iter()
                .any(|o| *o == Err(Refused::Stale { epoch: epoch + 1 })),
            "the other is stale: {outcomes:?}"
        );
    }
    assert_eq!(store.room(room).await.unwrap().unwrap().epoch, 5);
}

/// KeyPackages: kept up to the cap (the oldest; the rest ignored), counted, handed out oldest
/// first and each once.
pub async fn key_packages_are_kept_up_to_a_cap_and_claimed_once(store: &dyn Store) {
    let (alice, bob) = (PublicKey([1; 32]), PublicKey([2; 32]));
    assert_eq!(store.key_packages(alice).await.unwrap(), 0);
    assert_eq!(store.claim_key_package(alice).await.unwrap(), None);
    let packages: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 10]).collect();
    assert_eq!(
        store
            .publish_key_packages(alice, packages[..2].to_vec(), 3)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .publish_key_packages(alice, vec![packages[2].clone(), vec![9; 4]], 3)
            .await
            .unwrap(),
        3,
        "beyond the cap the rest is ignored"
    );
    assert_eq!(
        store
            .publish_key_packages(alice, Vec::new(), 3)
            .await
            .unwrap(),
        3
    );
    assert_eq!(store.key_packages(bob).await.unwrap(), 0);
    // Claims at once still hand each out once.
    let claims =
        futures_util::future::join_all((0..4).map(|_| store.claim_key_package(alice))).await;
    let got: Vec<Option<Vec<u8>>> = claims.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        got,
        vec![
            Some(packages[0].clone()),
            Some(packages[1].clone()),
            Some(packages[2].clone()),
            None
        ]
    );
    assert_eq!(store.key_packages(alice).await.unwrap(), 0);
}

/// A pair room (§16.9): its record keeps the two users, both admins; it takes the peer and
/// nobody else, removes neither, and counts in neither user's rooms.
pub async fn pair_rooms_hold_their_two_users_only(store: &dyn Store) {
    let (alice, bob, carol) = (PublicKey([1; 32]), PublicKey([2; 32]), PublicKey([3; 32]));
    let room = flexim_protocol::conversation::pair_room(&alice, &bob);
    let create = RoomChange::Create {
        creator: alice,
        peer: Some(bob),
        limits: LIMITS,
    };
    store.change_room(room, create).await.unwrap().unwrap();
    let made = store
        .room(room)
        .await
        .unwrap()
        .expect("the pair room is kept");
    assert_eq!(made.pair, vec![alice, bob]);
    assert_eq!(made.admins, vec![alice, bob]);
    assert_eq!(store.rooms_of(alice).await.unwrap(), 0);
    assert!(matches!(
        store
            .change_room(room, commit(alice, 0, &[carol], &[]))
            .await
            .unwrap(),
        Err(Refused::Pair(_))
    ));
    let added = store
        .change_room(room, commit(alice, 0, &[bob], &[]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(added.after.as_ref().map(|r| r.members.len()), Some(2));
    assert_eq!(store.rooms_of(bob).await.unwrap(), 0);
    assert!(matches!(
        store
            .change_room(room, commit(bob, 1, &[], &[alice]))
            .await
            .unwrap(),
        Err(Refused::Pair(_))
    ));
    // An empty commit (an update of one's own leaf) moves the epoch on.
    let updated = store
        .change_room(room, commit(bob, 1, &[], &[]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.after.map(|r| r.epoch), Some(2));
    // Bob leaves; Alice may add him back, as both stay admins.
    let left = store
        .change_room(room, RoomChange::Leave { member: bob })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(left.after.map(|r| r.admins), Some(vec![alice, bob]));
}
