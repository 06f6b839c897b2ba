//! The driver on channels instead of sockets: the same code path both transports use.

use super::*;
use crate::config::Limits;
use crate::frames::Id;
use crate::relay::Answer;
use crate::store::EmbeddedStore;
use flexim_protocol::datum::Message;
use flexim_protocol::handshake::{ClientHandshake, ClientStep};
use flexim_protocol::{Link, SecretKey, frame};
use tokio::sync::mpsc;

fn decode(b: &Bytes) -> Datum {
    let (kind, body) = frame::split_exact(b, frame::MAX_BODY).unwrap();
    Datum::decode(kind, body).unwrap()
}

/// A relay on an embedded store in a fresh directory `dir`.
fn relay_in(dir: &std::path::Path) -> (Arc<Relay>, EmbeddedStore) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let store = EmbeddedStore::open(&dir.join("db")).unwrap();
    let relay = Arc::new(Relay::new(
        SecretKey::from_bytes([1; 32]),
        "test",
        Arc::new(store.clone()),
        Limits::default(),
    ));
    (relay, store)
}

/// The two ends of a session driven over channels, and its task.
type Driven = (
    mpsc::UnboundedSender<Inbound>,
    mpsc::UnboundedReceiver<Bytes>,
    tokio::task::JoinHandle<End>,
);

/// Runs a session on channels: what the test sends is its inbound side, what it writes comes
/// out of the receiver.
fn drive(relay: Arc<Relay>) -> Driven {
    let (in_tx, in_rx) = mpsc::unbounded_channel::<Inbound>();
    let (out_tx, out_rx) = mpsc::unbounded_channel::<Bytes>();
    let task = tokio::spawn(async move {
        let (_stop_tx, stop_rx) = watch::channel(false);
        let mut inbound = Box::pin(futures_util::stream::unfold(in_rx, |mut r| async move {
            r.recv().await.map(|x| (x, r))
        }));
        let outbound = Box::pin(futures_util::sink::unfold(
            out_tx,
            |tx, b: Bytes| async move {
                tx.send(b).map_err(io::Error::other)?;
                Ok::<_, io::Error>(tx)
            },
        ));
        run(
            relay,
            (std::net::IpAddr::from([127, 0, 0, 1]), "test"),
            &mut inbound,
            outbound,
            stop_rx,
        )
        .await
    });
    (in_tx, out_rx, task)
}

/// Logs `me` in over a driven session and claims the alias `alice`: the client's end of the
/// link, for the rest of the test.
async fn handshake(driven: &mut Driven, me: &SecretKey) -> Link {
    let mut hs = ClientHandshake::new(me.clone());
    let mut rng = |b: &mut [u8]| b.fill(9);
    let mut link = None::<Link>;
    loop {
        let got = driven.1.recv().await.unwrap();
        let frame = match &mut link {
            Some(l) => Bytes::from(l.open(&got).unwrap()),
            None => got,
        };
        match hs.handle(decode(&frame), &frame, &mut rng).unwrap() {
            ClientStep::Send(d) => driven
                .0
                .send(Inbound::Frame(d.to_frame().unwrap().into()))
                .unwrap(),
            ClientStep::Linked { send, link: l } => {
                driven
                    .0
                    .send(Inbound::Frame(send.to_frame().unwrap().into()))
                    .unwrap();
                link = Some(l);
            }
            ClientStep::Done { me: user, .. } => {
                assert_eq!(user.key, me.public_key());
                break;
            }
        }
    }
    let mut link = link.expect("linked before the User datum");
    let register = Datum::Command(flexim_protocol::Command::new("REGISTER", &["alice"]));
    let record = link.seal(&register.to_frame().unwrap()).unwrap();
    driven.0.send(Inbound::Frame(record.into())).unwrap();
    link
}

/// Seals a frame for the session.
fn send(tx: &mpsc::UnboundedSender<Inbound>, link: &mut Link, frame: &[u8]) {
    tx.send(Inbound::Frame(link.seal(frame).unwrap().into()))
        .unwrap();
}

/// The next frame the session wrote, opened.
async fn recv(rx: &mut mpsc::UnboundedReceiver<Bytes>, link: &mut Link) -> Bytes {
    Bytes::from(link.open(&rx.recv().await.unwrap()).unwrap())
}

#[tokio::test]
async fn handshake_routing_and_spoofing_without_sockets() {
    let dir = std::env::temp_dir().join(format!("flexim-session-{}", std::process::id()));
    let (relay, store_handle) = relay_in(&dir);
    let core = relay.clone();
    let mut driven = drive(relay);
    let me = SecretKey::from_bytes([2; 32]);
    let mut link = handshake(&mut driven, &me).await;
    let (in_tx, mut out_rx, task) = driven;
    // Everything after the handshake is a record of the link, both ways.
    assert!(
        matches!(decode(&recv(&mut out_rx, &mut link).await), Datum::Status(s) if s.status == status::OK)
    );

    let to_self = |from: &str| Message {
        to: "alice".into(),
        from: from.into(),
        flags: vec![],
        date: 0,
        msg: "sealed".into(),
        id: None,
        ..Default::default()
    };
    let frame = Bytes::from(Datum::Message(to_self("ALICE")).to_frame().unwrap());
    send(&in_tx, &mut link, &frame);
    let mut got = [
        recv(&mut out_rx, &mut link).await,
        recv(&mut out_rx, &mut link).await,
    ];
    got.sort_by_key(|b| b[0]);
    assert_eq!(got[0], frame, "the message comes back byte for byte");
    assert!(matches!(decode(&got[1]), Datum::Status(s) if s.status == status::RELAYED));

    let spoof = Datum::Message(to_self("bob")).to_frame().unwrap();
    send(&in_tx, &mut link, &spoof);
    assert!(
        matches!(decode(&recv(&mut out_rx, &mut link).await), Datum::Status(s) if s.status == status::SPOOF)
    );

    // A message that reached the store while the session was online (routed during its
    // login) is delivered as soon as the core wakes the session.
    use crate::store::{Entry, Store};
    let late = Bytes::from(Datum::Message(to_self("ALICE")).to_frame().unwrap());
    let entry = Entry {
        sender: me.public_key(),
        id: None,
        frame: late.clone(),
        at: clock::now(),
    };
    store_handle
        .enqueue(me.public_key(), vec![entry], None)
        .await
        .unwrap();
    core.wake_primary(me.public_key());
    let woken = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        recv(&mut out_rx, &mut link),
    );
    assert_eq!(woken.await.expect("delivered when woken"), late);
    assert!(matches!(decode(&recv(&mut out_rx, &mut link).await),
        Datum::Status(s) if s.status == status::DELIVERED_STORED));

    drop(in_tx);
    assert!(matches!(task.await.unwrap(), End::Closed));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_message_stored_while_online_wakes_the_session() {
    let dir = std::env::temp_dir().join(format!("flexim-wake-{}", std::process::id()));
    let (relay, _) = relay_in(&dir);
    let bob = SecretKey::from_bytes([3; 32]).public_key();
    let mut login = relay.login(bob).await.unwrap();
    // Bob's session is registered but not caught up (as if it were still logging in): the
    // message goes to the store...
    let frame = Bytes::from_static(b"\x03\x00\x01\x80");
    let answer = match relay.route(bob, bob, None::<Id>, frame.clone()) {
        Answer::Frame(f) => f,
        Answer::Later(rx) => rx.await.unwrap(),
    };
    assert!(matches!(decode(&answer), Datum::Status(s) if s.status == status::STORED));
    // ...and the session is told to look at the store again.
    let woken = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            if let FromRelay::Stored = login.mailbox.next().await {
                break;
            }
        }
    });
    woken.await.expect("the session is woken");
    let stored = relay.peek_offline(bob, 0).await.unwrap();
    assert_eq!(stored[0].entry.frame, frame);
    let _ = std::fs::remove_dir_all(dir);
}
