//! Limits against a user who writes to keys that will never read (docs/PROTOCOL.md §8): only
//! keys that have logged in at least once are sent messages, so nobody fills the store for
//! random keys; a user who did log in still gets what is sent to them while away.

use flexim_protocol::status;
use flexim_tests::{Conn, TestServer, message_with_id, new_key};

#[tokio::test]
async fn messages_to_keys_that_never_logged_in_are_refused_and_stored_nowhere() {
    let server = TestServer::start();
    let (mallory, bob) = (new_key(), new_key());
    server.introduce(&[&bob]).await;
    let mut m = Conn::login_tcp(server.tcp, &mallory).await.unwrap();
    let body = "x".repeat(40_000);
    for i in 0..30 {
        let stranger = new_key().public_key().to_hex();
        let id = format!("junk-{i}");
        m.send(&message_with_id(
            &mallory.public_key(),
            &stranger,
            &body,
            &id,
        ))
        .await
        .unwrap();
        let s = m.status().await.unwrap();
        assert_eq!(s.status, status::NO_SUCH_USER, "{s:?}");
        assert_eq!(s.id.as_deref(), Some(id.as_str()), "{s:?}");
        assert!(s.payload.contains("has ever logged in"), "{s:?}");
    }
    // Nothing of it reached the store, and the operator sees which rule refused it.
    let metrics = server.metrics().await.unwrap();
    assert_eq!(
        metrics.get("flexim_refusals_total{status=\"no-such-user\"}"),
        Some(&30),
        "{metrics:?}"
    );
    assert_eq!(
        metrics
            .get("flexim_messages_stored_total")
            .copied()
            .unwrap_or(0),
        0,
        "{metrics:?}"
    );
    // Bob, who logged in once, is written to as before while he is away, and gets it.
    let bob_hex = bob.public_key().to_hex();
    m.send(&message_with_id(
        &mallory.public_key(),
        &bob_hex,
        "hi bob",
        "real-1",
    ))
    .await
    .unwrap();
    assert_eq!(m.status().await.unwrap().status, status::STORED);
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    assert_eq!(b.message().await.unwrap().id.as_deref(), Some("real-1"));
}
