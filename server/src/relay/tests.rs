//! The relay's part in the store's bounds, on a real embedded store and the relay's own
//! sessions (no sockets): what a routed message is answered, what a connection's held messages
//! become when it ends, and that receipts are not held back by the share or the budget.

use std::time::Duration;

use bytes::Bytes;
use flexim_protocol::datum::Status;
use flexim_protocol::{Datum, PublicKey, SecretKey, frame, status};

use super::{Answer, Login, Relay};
use crate::config::Limits;
use crate::frames::Id;
use crate::peer::FromRelay;
use crate::store::{EmbeddedStore, Store};

/// A relay with `limits` on an embedded store in a fresh directory, removed on drop.
struct Fixture {
    /// The relay.
    relay: std::sync::Arc<Relay>,
    /// Its store, to look at.
    store: EmbeddedStore,
    /// The directory.
    dir: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fixture(tag: &str, limits: Limits) -> Fixture {
    let dir = std::env::temp_dir().join(format!("flexim-relay-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = EmbeddedStore::open(&dir.join("db")).unwrap();
    let relay = std::sync::Arc::new(Relay::new(
        SecretKey::from_bytes([1; 32]),
        "test",
        std::sync::Arc::new(store.clone()),
        limits,
    ));
    Fixture { relay, store, dir }
}

fn key(n: u8) -> PublicKey {
    SecretKey::from_bytes([n; 32]).public_key()
}

fn status_of(frame: &Bytes) -> Option<Status> {
    let (kind, body) = frame::split_exact(frame, frame::MAX_BODY).ok()?;
    match Datum::decode(kind, body).ok()? {
        Datum::Status(s) => Some(s),
        _ => None,
    }
}

/// Routes a message with `id` and returns its answer.
async fn route(relay: &std::sync::Arc<Relay>, from: PublicKey, to: PublicKey, id: &str) -> Status {
    let frame = Bytes::from(format!("message {id}"));
    let answer = match relay.route(from, to, Some(Id::from(id.to_string())), frame) {
        Answer::Frame(f) => f,
        Answer::Later(rx) => rx.await.unwrap(),
    };
    status_of(&answer).expect("a Status")
}

/// Logs `key` in and makes its session live (it has read the store, which is empty).
async fn live(relay: &Relay, key: PublicKey) -> Login {
    let login = relay.login(key).await.unwrap();
    let mark = relay.catch_up(key, login.id).unwrap();
    assert_eq!(
        relay.go_live(key, login.id, mark),
        crate::table::GoLive::Live
    );
    login
}

/// The next receipt in `login`'s mailbox (presence notices skipped), as (code, ids).
async fn receipt(login: &mut Login) -> (i8, Vec<String>, String) {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), login.mailbox.next());
        match next.await.expect("a receipt comes") {
            FromRelay::Frame(f) => {
                let s = status_of(&f).expect("a Status");
                if s.status != status::PRESENCE_ONLINE && s.status != status::PRESENCE_OFFLINE {
                    let ids = s.about().map(str::to_string).collect();
                    return (s.status, ids, s.payload);
                }
            }
            FromRelay::Stored => {}
            FromRelay::Gone | FromRelay::Close(_) => panic!("the session was closed"),
        }
    }
}

#[tokio::test]
async fn held_messages_that_find_no_room_are_told_not_kept_and_the_rest_stored_later() {
    let f = fixture(
        "held",
        Limits {
            max_offline_messages: 2,
            ..Limits::default()
        },
    );
    let (alice, carol, bob) = (key(2), key(3), key(4));
    let mut a = live(&f.relay, alice).await;
    let mut c = live(&f.relay, carol).await;
    let b = live(&f.relay, bob).await;
    for (from, id) in [(alice, "a-1"), (carol, "c-1"), (alice, "a-2")] {
        assert_eq!(route(&f.relay, from, bob, id).await.status, status::RELAYED);
    }
    // Bob's connection ends before he acknowledges: his queue has room for two of the three.
    f.relay.logout(bob, b.id).await;
    let (mut from_alice, mut from_carol) = (
        vec![receipt(&mut a).await, receipt(&mut a).await],
        vec![receipt(&mut c).await],
    );
    from_alice.sort();
    assert_eq!(
        (from_alice[0].0, from_alice[0].1.as_slice()),
        (status::NOT_KEPT, ["a-2".to_string()].as_slice())
    );
    assert!(
        from_alice[0].2.contains("their queue is full (2 messages"),
        "{}",
        from_alice[0].2
    );
    assert_eq!(
        (from_alice[1].0, from_alice[1].1.as_slice()),
        (status::STORED_LATER, ["a-1".to_string()].as_slice())
    );
    from_carol.sort();
    assert_eq!(from_carol[0].0, status::STORED_LATER);
    assert_eq!(from_carol[0].1, ["c-1"]);
    // Bob's queue holds the two that fit, in order, and no more than its limit.
    let stored: Vec<Bytes> = f
        .store
        .peek(bob, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.entry.frame)
        .collect();
    assert_eq!(
        stored,
        [Bytes::from("message a-1"), Bytes::from("message c-1")]
    );
}

#[tokio::test]
async fn a_sender_over_its_share_and_a_message_over_the_budget_are_refused_with_their_codes() {
    let f = fixture(
        "refusals",
        Limits {
            max_offline_per_sender: 2,
            // Room for four of these messages (41 bytes, the id and the frame each).
            max_store_bytes: Some(4 * (41 + 3 + 11)),
            ..Limits::default()
        },
    );
    let (mallory, friend, bob, dave) = (key(2), key(3), key(4), key(5));
    for id in ["m-1", "m-2"] {
        assert_eq!(
            route(&f.relay, mallory, bob, id).await.status,
            status::STORED
        );
    }
    let s = route(&f.relay, mallory, bob, "m-3").await;
    assert_eq!(s.status, status::SHARE_FULL, "{s:?}");
    assert_eq!(s.id.as_deref(), Some("m-3"));
    assert!(
        s.payload.contains("you have 2 messages") && s.payload.contains("one sender may have 2"),
        "{}",
        s.payload
    );
    // The friend still has room in the same queue.
    assert_eq!(
        route(&f.relay, friend, bob, "f-1").await.status,
        status::STORED
    );
    assert_eq!(
        route(&f.relay, friend, dave, "f-2").await.status,
        status::STORED
    );
    // The store's budget is used up: nobody's message is stored now.
    let s = route(&f.relay, friend, dave, "f-3").await;
    assert_eq!(s.status, status::STORE_FULL, "{s:?}");
    assert!(
        s.payload.contains("the server's store is full"),
        "{}",
        s.payload
    );
    // A receipt for an offline sender is kept all the same: it is small, and bounded by the
    // sender's own queue.
    let receipt = crate::frames::status_frame(status::DELIVERED, "delivered");
    f.relay.receipt(mallory, receipt.clone());
    let kept = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let got = f.store.peek(mallory, 0, 10).await.unwrap();
            if let Some(s) = got.first() {
                return s.entry.frame.clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    assert_eq!(kept.await.expect("the receipt is stored"), receipt);
}

/// The answer to a Request follows its notice, so the notice must be durable when
/// `request_notice` returns: a server killed right after the answer still has it for the
/// recipient's next login. (The notice used to be written in a task of its own, like a
/// receipt; this looked at the store before that task had run.)
#[tokio::test]
async fn a_request_notice_is_in_the_store_when_it_returns() {
    let f = fixture("notice", Limits::default());
    let (alice, bob) = (key(2), key(3));
    f.relay.request_notice(alice, bob).await;
    let stored = f.store.peek(bob, 0, 10).await.unwrap();
    let [only] = stored.as_slice() else {
        panic!("one notice stored, not {}", stored.len())
    };
    let (kind, body) = frame::split_exact(&only.entry.frame, frame::MAX_BODY).unwrap();
    let Datum::Request(r) = Datum::decode(kind, body).unwrap() else {
        panic!("the stored notice is a Request")
    };
    assert_eq!(r.from, alice.to_hex());
}

/// A block made while logins of the key are under way leaves none of them logged in: each is
/// refused, or ended with -31 (`operator.rs`). Without the login gate, a login whose store
/// write came before the block's but that joined the table after the block had ended the
/// key's sessions stayed logged in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_login_outlives_a_block_made_while_it_ran() {
    let f = fixture("ban-race", Limits::default());
    let mut outlived = 0;
    for n in 0..400u32 {
        let mut bytes = [9u8; 32];
        bytes[..4].copy_from_slice(&n.to_le_bytes());
        let k = PublicKey(bytes);
        let relay = f.relay.clone();
        let login = tokio::spawn(async move { relay.login(k).await });
        f.relay.ban(k, true).await.unwrap();
        match login.await.unwrap() {
            Err(super::LoginError::Banned) => {}
            Ok(l) => {
                let closed = tokio::time::timeout(Duration::from_millis(200), l.mailbox.closed());
                match closed.await {
                    Ok(s) => assert_eq!(s.status, status::BANNED, "{s:?}"),
                    Err(_) => outlived += 1,
                }
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(outlived, 0, "sessions that outlived a block");
}
