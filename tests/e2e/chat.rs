//! Users on TCP and on WebSocket chat through the one relay core, end to end encrypted.

use flexim_client::{Client, Event, Identity, Outbox, Outgoing};
use flexim_protocol::status;
use flexim_tests::{TestServer, new_key};

async fn next_message(c: &mut Client) -> flexim_client::Received {
    loop {
        let ev = tokio::time::timeout(flexim_tests::WAIT, c.next_event())
            .await
            .expect("a message arrives")
            .unwrap();
        match ev {
            Event::Message(m) => return m,
            Event::Closed => panic!("closed"),
            _ => continue,
        }
    }
}

#[tokio::test]
async fn a_tcp_user_and_a_websocket_user_chat_both_ways() {
    let server = TestServer::start();
    let (alice_id, bob_id) = (
        Identity::from_secret(new_key()),
        Identity::from_secret(new_key()),
    );
    let mut alice = Client::connect(&server.tcp.to_string(), &alice_id, Some("alice"))
        .await
        .unwrap();
    let mut bob = Client::connect(&server.ws, &bob_id, Some("bob"))
        .await
        .unwrap();
    assert_eq!(alice.server().key.to_hex(), server.key);
    assert_eq!(bob.server().key, alice.server().key);

    let s = alice
        .send_text("bob", "hello from TCP", &["NOTIFY".to_string()])
        .await
        .unwrap();
    assert_eq!(s.status, status::RELAYED);
    let m = next_message(&mut bob).await;
    assert_eq!(m.text, "hello from TCP");
    assert_eq!(m.from, alice_id.public_key());
    assert_eq!(m.flags, ["NOTIFY"]);

    let s = bob
        .send_text(&alice_id.public_key().to_hex(), "hello from WebSocket", &[])
        .await
        .unwrap();
    assert_eq!(s.status, status::RELAYED);
    let m = next_message(&mut alice).await;
    assert_eq!(m.text, "hello from WebSocket");
    assert_eq!(m.from, bob_id.public_key());
}

#[tokio::test]
async fn a_websocket_user_gets_what_a_tcp_user_sent_while_it_was_away() {
    let server = TestServer::start();
    let (alice_id, bob_id) = (
        Identity::from_secret(new_key()),
        Identity::from_secret(new_key()),
    );
    server.introduce(&[bob_id.secret()]).await;
    let mut alice = Client::connect(&server.tcp.to_string(), &alice_id, None)
        .await
        .unwrap();
    let s = alice
        .send_text(&bob_id.public_key().to_hex(), "while you were out", &[])
        .await
        .unwrap();
    assert_eq!(s.status, status::STORED);
    let mut bob = Client::connect(&server.ws, &bob_id, None).await.unwrap();
    let m = next_message(&mut bob).await;
    assert_eq!(m.text, "while you were out");
    assert_eq!(m.from, alice_id.public_key());
}

/// Waits for the receipt about message `id`.
async fn next_receipt(c: &mut Client, id: &str) -> flexim_protocol::Status {
    loop {
        let ev = tokio::time::timeout(flexim_tests::WAIT, c.next_event())
            .await
            .expect("a receipt arrives")
            .unwrap();
        match ev {
            Event::Receipt {
                id: about, status, ..
            } if about == id => return status,
            Event::Closed => panic!("closed"),
            _ => continue,
        }
    }
}

/// The delivery contract as the library sees it: a relayed message stays in the sender's
/// outbox until the recipient's ACK comes back as a receipt, and a message sent again after a
/// (pretended) reconnect, same id and same bytes, is not shown twice but acknowledged again.
#[tokio::test]
async fn receipts_settle_the_outbox_and_a_resent_message_is_shown_once() {
    let server = TestServer::start();
    let (alice_id, bob_id) = (
        Identity::from_secret(new_key()),
        Identity::from_secret(new_key()),
    );
    let bob_key = bob_id.public_key();
    let mut alice = Client::connect(&server.tcp.to_string(), &alice_id, None)
        .await
        .unwrap();
    let mut bob = Client::connect(&server.ws, &bob_id, None).await.unwrap();

    let s = alice
        .send_text(&bob_key.to_hex(), "are you there?", &[])
        .await
        .unwrap();
    assert_eq!(s.status, status::RELAYED);
    let id = s.id.clone().expect("the answer names the message");
    assert!(alice.outbox().contains(&id), "relayed is not confirmed");
    let m = next_message(&mut bob).await;
    assert_eq!(m.id.as_deref(), Some(id.as_str()));
    assert_eq!(
        bob.ack(std::slice::from_ref(&id)).await.unwrap().status,
        status::OK
    );
    assert_eq!(
        next_receipt(&mut alice, &id).await.status,
        status::DELIVERED
    );
    assert!(alice.outbox().is_empty());

    // A message whose first copy got through, sent again as after a reconnect.
    let message = alice.seal_message(&bob_key, "only once", &[]).unwrap();
    let id = message.id.clone().unwrap();
    let mut unconfirmed = Outbox::new();
    assert!(unconfirmed.push(Outgoing::from_message(&message).unwrap().unwrap()));
    let answers = alice.resend(unconfirmed.clone()).await.unwrap();
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].status, status::RELAYED);
    assert_eq!(answers[0].id.as_deref(), Some(id.as_str()));
    let m = next_message(&mut bob).await;
    assert_eq!(m.text, "only once");
    bob.ack(std::slice::from_ref(&id)).await.unwrap();
    assert_eq!(
        next_receipt(&mut alice, &id).await.status,
        status::DELIVERED
    );

    let answers = alice.resend(unconfirmed).await.unwrap();
    assert_eq!(answers[0].status, status::RELAYED);
    // Bob's client drops the copy: no event comes out...
    let nothing = tokio::time::timeout(std::time::Duration::from_secs(1), bob.next_event()).await;
    assert!(nothing.is_err(), "the copy was reported: {nothing:?}");
    // ...but acknowledges it, or the server would deliver it again at every login.
    assert_eq!(
        next_receipt(&mut alice, &id).await.status,
        status::DELIVERED
    );
    assert!(alice.outbox().is_empty());

    // And the conversation goes on.
    alice
        .send_text(&bob_key.to_hex(), "still here", &[])
        .await
        .unwrap();
    assert_eq!(next_message(&mut bob).await.text, "still here");
}
