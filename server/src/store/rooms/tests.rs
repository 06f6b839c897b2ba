//! The rule of rooms, case by case.

use super::*;

const LIMITS: RoomLimits = RoomLimits {
    members: 3,
    rooms: 2,
};

fn key(n: u8) -> PublicKey {
    PublicKey([n; 32])
}

fn created(by: PublicKey) -> Room {
    let create = RoomChange::Create {
        creator: by,
        peer: None,
        limits: LIMITS,
    };
    decide(None, &create, &[0]).unwrap().after.unwrap()
}

fn commit(author: u8, epoch: u64, add: &[u8], remove: &[u8]) -> RoomChange {
    RoomChange::Commit {
        author: key(author),
        epoch,
        add: add.iter().map(|n| key(*n)).collect(),
        remove: remove.iter().map(|n| key(*n)).collect(),
        limits: LIMITS,
    }
}

#[test]
fn a_room_is_created_once_and_within_the_creators_rooms() {
    let room = created(key(1));
    assert_eq!(room.admins, vec![key(1)]);
    assert_eq!(room.epoch, 0);
    let create = RoomChange::Create {
        creator: key(2),
        peer: None,
        limits: LIMITS,
    };
    assert_eq!(decide(Some(&room), &create, &[0]), Err(Refused::Exists));
    assert!(matches!(
        decide(None, &create, &[2]),
        Err(Refused::TooManyRooms { rooms: 2, .. })
    ));
}

#[test]
fn a_commit_must_be_made_in_the_rooms_epoch_by_a_member() {
    let room = created(key(1));
    assert_eq!(
        decide(Some(&room), &commit(1, 1, &[2], &[]), &[0]),
        Err(Refused::Stale { epoch: 0 })
    );
    assert_eq!(
        decide(Some(&room), &commit(9, 0, &[], &[]), &[]),
        Err(Refused::NotMember)
    );
    assert_eq!(
        decide(None, &commit(1, 0, &[], &[]), &[]),
        Err(Refused::NotMember)
    );
    let d = decide(Some(&room), &commit(1, 0, &[2], &[]), &[0]).unwrap();
    let after = d.after.unwrap();
    assert_eq!(after.epoch, 1);
    assert_eq!(
        after.members[1],
        RoomMember {
            key: key(2),
            by: key(1)
        }
    );
    assert_eq!(d.joined, vec![key(2)]);
}

#[test]
fn only_admins_add_and_remove_members_and_nobody_removes_itself() {
    let room = created(key(1));
    let room = decide(Some(&room), &commit(1, 0, &[2], &[]), &[0])
        .unwrap()
        .after
        .unwrap();
    assert_eq!(
        decide(Some(&room), &commit(2, 1, &[3], &[]), &[0]),
        Err(Refused::NotAdmin)
    );
    assert_eq!(
        decide(Some(&room), &commit(2, 1, &[], &[1]), &[]),
        Err(Refused::NotAdmin)
    );
    assert!(matches!(
        decide(Some(&room), &commit(1, 1, &[], &[1]), &[]),
        Err(Refused::Bad(_))
    ));
    assert!(matches!(
        decide(Some(&room), &commit(1, 1, &[2], &[]), &[0]),
        Err(Refused::Bad(_))
    ));
    // A key that is not a member any more may be removed by anyone: an empty change of
    // membership that still moves the epoch.
    let d = decide(Some(&room), &commit(2, 1, &[], &[7]), &[]).unwrap();
    assert_eq!(d.after.unwrap().epoch, 2);
    assert!(d.parted.is_empty());
    let d = decide(Some(&room), &commit(1, 1, &[], &[2]), &[]).unwrap();
    assert_eq!(d.parted, vec![key(2)]);
    assert_eq!(d.after.unwrap().members.len(), 1);
}

#[test]
fn rooms_and_users_are_bounded() {
    let room = created(key(1));
    assert!(matches!(
        decide(Some(&room), &commit(1, 0, &[2, 3, 4], &[]), &[0, 0, 0]),
        Err(Refused::RoomFull { members: 4, max: 3 })
    ));
    assert!(matches!(
        decide(Some(&room), &commit(1, 0, &[2, 3], &[]), &[0, 2]),
        Err(Refused::TooManyRooms { rooms: 2, .. })
    ));
}

#[test]
fn the_longest_standing_member_becomes_admin_and_the_last_leave_ends_the_room() {
    let room = created(key(1));
    let room = decide(Some(&room), &commit(1, 0, &[2, 3], &[]), &[0, 0])
        .unwrap()
        .after
        .unwrap();
    let leave = |n| RoomChange::Leave { member: key(n) };
    let d = decide(Some(&room), &leave(1), &[]).unwrap();
    let after = d.after.unwrap();
    assert_eq!(after.admins, vec![key(2)]);
    assert_eq!(after.epoch, room.epoch, "leaving is no commit");
    assert_eq!(d.parted, vec![key(1)]);
    assert_eq!(
        decide(Some(&after), &leave(1), &[]),
        Err(Refused::NotMember)
    );
    let after = decide(Some(&after), &leave(2), &[]).unwrap().after.unwrap();
    assert_eq!(decide(Some(&after), &leave(3), &[]).unwrap().after, None);
}

#[test]
fn records_encode_the_same_every_time() {
    let room = created(key(1));
    assert_eq!(room.encode(), room.clone().encode());
    assert_eq!(Room::decode(&room.encode()).unwrap(), room);
    assert!(Room::decode(b"\x01").is_err());
}
