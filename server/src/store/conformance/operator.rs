//! The operator's overrides (`flexim-server admin`): aliases given and taken away, keys
//! blocked. Each check takes a fresh, empty store.

use flexim_protocol::PublicKey;

use crate::store::{Claim, Store};

/// `assign_alias` moves an alias to another key whatever the most aliases a key may hold,
/// takes it from its holder's record (the holder's other aliases stay, in order), says who
/// held it, keeps the operator's spelling, creates a user never seen, and with `None` frees
/// the alias so that anyone may claim it; assigning an alias to its holder changes nothing.
pub async fn the_operator_assigns_and_revokes_aliases(store: &dyn Store) {
    let (a, b, c) = (PublicKey([1; 32]), PublicKey([2; 32]), PublicKey([3; 32]));
    let claim = |key, alias: &str| store.claim_alias(key, alias.to_string(), 3);
    assert_eq!(claim(a, "first").await.unwrap(), Claim::Registered);
    assert_eq!(claim(a, "Alice").await.unwrap(), Claim::Registered);
    assert_eq!(claim(a, "last").await.unwrap(), Claim::Registered);
    store.touch(b, 50).await.unwrap();
    assert_eq!(claim(b, "bee").await.unwrap(), Claim::Registered);

    let before = store.assign_alias("ALICE".into(), Some(b)).await.unwrap();
    assert_eq!(before, Some(a), "the holder before is answered");
    assert_eq!(store.resolve_alias("alice".into()).await.unwrap(), Some(b));
    let a_now = store.user(a).await.unwrap().unwrap();
    assert_eq!(
        a_now.aliases,
        ["first", "last"],
        "the others stay, in order"
    );
    let b_now = store.user(b).await.unwrap().unwrap();
    assert_eq!(
        b_now.aliases,
        ["bee", "ALICE"],
        "as the operator spelled it"
    );
    assert_eq!(b_now.last_seen, 50, "the record is otherwise unchanged");

    assert_eq!(
        store.assign_alias("alice".into(), Some(b)).await.unwrap(),
        Some(b),
        "assigning to the holder"
    );
    assert_eq!(store.user(b).await.unwrap().unwrap().aliases.len(), 2);

    // The override ignores the limit: `a` holds 2, the claim limit above was 3, and `c` is
    // a key never seen.
    assert_eq!(
        store.assign_alias("first".into(), Some(c)).await.unwrap(),
        Some(a)
    );
    let c_now = store.user(c).await.unwrap().expect("the key is created");
    assert_eq!(
        (c_now.aliases.as_slice(), c_now.last_seen),
        (&["first".to_string()][..], 0)
    );

    assert_eq!(
        store.assign_alias("last".into(), None).await.unwrap(),
        Some(a)
    );
    assert_eq!(store.resolve_alias("last".into()).await.unwrap(), None);
    assert!(store.user(a).await.unwrap().unwrap().aliases.is_empty());
    assert_eq!(
        claim(c, "LAST").await.unwrap(),
        Claim::Registered,
        "a revoked alias is free to claim"
    );
    assert_eq!(
        store.assign_alias("nobody".into(), None).await.unwrap(),
        None,
        "revoking an alias nobody holds changes nothing"
    );
    assert_eq!(store.resolve_alias("nobody".into()).await.unwrap(), None);
}

/// `set_banned` marks a user blocked and unblocked; the record keeps its aliases and
/// `last_seen`; `touch` returns the mark (the login sees it in the same write); a key never
/// seen can be blocked before its first login.
pub async fn the_operator_blocks_and_unblocks_keys(store: &dyn Store) {
    let (a, b) = (PublicKey([1; 32]), PublicKey([2; 32]));
    store.touch(a, 10).await.unwrap();
    store.claim_alias(a, "alice".into(), 1).await.unwrap();
    store.set_banned(a, true).await.unwrap();
    let record = store.user(a).await.unwrap().unwrap();
    assert!(record.banned);
    assert_eq!(
        (record.aliases.as_slice(), record.last_seen),
        (&["alice".to_string()][..], 10)
    );
    assert!(
        store.touch(a, 20).await.unwrap().banned,
        "touch sees the block"
    );
    store.set_banned(a, false).await.unwrap();
    assert!(!store.touch(a, 30).await.unwrap().banned);
    assert!(!store.user(a).await.unwrap().unwrap().banned);

    store.set_banned(b, true).await.unwrap();
    let record = store
        .user(b)
        .await
        .unwrap()
        .expect("blocking creates the user");
    assert!(record.banned && record.last_seen == 0 && record.aliases.is_empty());
    assert!(store.touch(b, 40).await.unwrap().banned);
    let listed = store.users(10).await.unwrap();
    assert!(
        listed.iter().any(|(k, u)| *k == b && u.banned),
        "{listed:?}"
    );
}
