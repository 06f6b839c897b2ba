//! Users on TCP and on WebSocket chat through the one relay core, end to end encrypted.

use flexim_client::{Client, Event, Identity};
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
