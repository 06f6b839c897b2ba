//! A room's life through flexim-mls, with real OpenMLS groups: what both clients and the
//! server's checks rely on.

use flexim_mls::ds::{self, Kind};
use flexim_mls::{Member, Received, safety_number};

const ROOM: [u8; 16] = [0x42; 16];

fn member(byte: u8) -> Member {
    Member::new([byte; 32]).unwrap()
}

/// Alice creates the room and adds Bob with one of his KeyPackages; both are then at epoch 1.
fn alice_and_bob() -> (Member, Member) {
    let mut alice = member(1);
    let mut bob = member(2);
    alice.create(ROOM).unwrap();
    let package = bob.key_packages(1).unwrap().remove(0);
    let commit = alice.add(ROOM, &[([2; 32], package)]).unwrap();
    assert_eq!(commit.epoch, 0);
    assert_eq!(alice.confirm(ROOM).unwrap(), 1);
    assert_eq!(bob.join(&commit.welcome.unwrap()).unwrap(), ROOM);
    (alice, bob)
}

#[test]
fn members_talk_and_agree_on_the_safety_number() {
    let (mut alice, mut bob) = alice_and_bob();
    let sealed = alice.seal(ROOM, b"hello room").unwrap();
    let header = ds::header(&sealed).unwrap();
    assert_eq!(header.group, ROOM.to_vec());
    assert_eq!((header.epoch, header.kind), (1, Kind::Application));
    assert_eq!(
        bob.open(ROOM, &sealed).unwrap(),
        Received::Application {
            sender: [1; 32],
            plaintext: b"hello room".to_vec(),
            aad: Vec::new(),
        }
    );
    assert_eq!(
        alice.safety_number(ROOM).unwrap(),
        bob.safety_number(ROOM).unwrap()
    );
    // A message opens once: a replayed copy is refused by MLS itself.
    assert!(bob.open(ROOM, &sealed).is_err());
}

#[test]
fn a_removed_member_cannot_read_what_follows() {
    let (mut alice, mut bob) = alice_and_bob();
    let mut carol = member(3);
    let package = carol.key_packages(1).unwrap().remove(0);
    let add = alice.add(ROOM, &[([3; 32], package)]).unwrap();
    alice.confirm(ROOM).unwrap();
    carol.join(&add.welcome.unwrap()).unwrap();
    bob.open(ROOM, &add.message).unwrap();

    let removal = alice.remove(ROOM, &[[2; 32]]).unwrap();
    assert_eq!(ds::header(&removal.message).unwrap().kind, Kind::Commit);
    alice.confirm(ROOM).unwrap();
    match bob.open(ROOM, &removal.message).unwrap() {
        Received::Commit {
            removed_me,
            removed,
            ..
        } => {
            assert!(removed_me);
            assert_eq!(removed, vec![[2; 32]]);
        }
        other => panic!("expected a commit, got {other:?}"),
    }
    carol.open(ROOM, &removal.message).unwrap();
    let after = alice.seal(ROOM, b"bob must not read this").unwrap();
    assert!(
        bob.open(ROOM, &after).is_err(),
        "a removed member opened a later message"
    );
    assert!(matches!(
        carol.open(ROOM, &after).unwrap(),
        Received::Application { .. }
    ));
}

#[test]
fn key_packages_are_checked_for_their_owner() {
    let mut bob = member(2);
    let package = bob.key_packages(1).unwrap().remove(0);
    ds::check_key_package(&package, &[2; 32]).unwrap();
    assert!(ds::check_key_package(&package, &[9; 32]).is_err());
    let mut tampered = package.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(ds::check_key_package(&tampered, &[2; 32]).is_err());
    assert!(ds::check_key_package(b"not a key package", &[2; 32]).is_err());
    // A client adding "Bob" refuses a package that is someone else's.
    let mut alice = member(1);
    alice.create(ROOM).unwrap();
    assert!(alice.add(ROOM, &[([9; 32], package)]).is_err());
}

#[test]
fn a_stale_commit_is_dropped_and_the_first_one_merged() {
    let (mut alice, mut bob) = alice_and_bob();
    let mut carol = member(3);
    let package = carol.key_packages(1).unwrap().remove(0);
    // Both commit at epoch 1; the server takes Alice's.
    let alices = alice.add(ROOM, &[([3; 32], package)]).unwrap();
    let bobs = bob.remove(ROOM, &[[1; 32]]).unwrap();
    assert_eq!((alices.epoch, bobs.epoch), (1, 1));
    alice.confirm(ROOM).unwrap();
    match bob.open(ROOM, &alices.message).unwrap() {
        Received::Commit { added, epoch, .. } => assert_eq!((added, epoch), (vec![[3; 32]], 2)),
        other => panic!("expected a commit, got {other:?}"),
    }
    // Bob's own commit is gone: he is at Alice's epoch and reads her.
    let sealed = alice.seal(ROOM, b"after the race").unwrap();
    assert!(matches!(
        bob.open(ROOM, &sealed).unwrap(),
        Received::Application { .. }
    ));
    assert!(
        alice.open(ROOM, &bobs.message).is_err(),
        "a commit of a past epoch merged"
    );
}

#[test]
fn state_survives_a_snapshot() {
    let (alice, mut bob) = alice_and_bob();
    let saved = alice.snapshot().unwrap();
    drop(alice);
    let mut alice = Member::restore(&saved).unwrap();
    assert_eq!(alice.identity(), [1; 32]);
    assert_eq!(alice.epoch(ROOM).unwrap(), 1);
    let sealed = alice.seal(ROOM, b"after a restart").unwrap();
    assert!(matches!(
        bob.open(ROOM, &sealed).unwrap(),
        Received::Application { .. }
    ));
    assert!(Member::restore(b"garbage").is_err());
}

/// The vector of docs/PROTOCOL.md §13.10.
#[test]
fn safety_number_vector() {
    let members = [([1u8; 32], vec![7u8; 32]), ([2u8; 32], vec![8u8; 32])];
    assert_eq!(
        safety_number(&members),
        "97401 25219 60462 17174 79440 52979 10767 13041"
    );
}

/// A member that made a group under an id itself (both users of a pair room writing first at
/// once, §16.9) and then joins another's group of that id from its Welcome keeps a working
/// group, also after a snapshot: the old group's state is deleted before the new one is
/// stored under the same id, not after.
#[test]
fn joining_a_group_whose_id_one_made_too_replaces_it_for_good() {
    let mut alice = member(1);
    let mut bob = member(2);
    bob.create(ROOM).unwrap();
    alice.create(ROOM).unwrap();
    let package = bob.key_packages(1).unwrap().remove(0);
    let commit = alice.add(ROOM, &[([2; 32], package)]).unwrap();
    alice.confirm(ROOM).unwrap();
    assert_eq!(bob.join(&commit.welcome.unwrap()).unwrap(), ROOM);
    let mut bob = Member::restore(&bob.snapshot().unwrap()).unwrap();
    assert_eq!(bob.members(ROOM).unwrap().len(), 2);
    let update = alice.update(ROOM).unwrap();
    alice.confirm(ROOM).unwrap();
    assert!(matches!(
        bob.open(ROOM, &update.message).unwrap(),
        Received::Commit { .. }
    ));
    let sealed = alice.seal(ROOM, b"after the join").unwrap();
    assert!(matches!(
        bob.open(ROOM, &sealed).unwrap(),
        Received::Application { .. }
    ));
    let back = bob.seal(ROOM, b"and back").unwrap();
    assert!(matches!(
        alice.open(ROOM, &back).unwrap(),
        Received::Application { .. }
    ));
}

/// A Welcome under the id of a group this member shares with others is refused, and the group
/// goes on: nobody who holds one of a member's KeyPackages can take a room from under it.
#[test]
fn a_welcome_for_a_room_one_shares_is_refused_and_the_room_goes_on() {
    let (mut alice, mut bob) = alice_and_bob();
    let mut mallory = member(3);
    mallory.create(ROOM).unwrap();
    let package = bob.key_packages(1).unwrap().remove(0);
    let commit = mallory.add(ROOM, &[([2; 32], package)]).unwrap();
    mallory.confirm(ROOM).unwrap();
    assert!(bob.join(&commit.welcome.unwrap()).is_err());
    let sealed = alice.seal(ROOM, b"still ours").unwrap();
    assert!(matches!(
        bob.open(ROOM, &sealed).unwrap(),
        Received::Application { sender, .. } if sender == [1; 32]
    ));
}
