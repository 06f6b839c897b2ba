//! The server never holds a message's plaintext: not in its data directory, not in its logs.

use flexim_client::{Client, Identity};
use flexim_protocol::status;
use flexim_tests::{TestServer, new_key};

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn plaintext_never_reaches_the_data_dir_or_the_logs() {
    let mut server = TestServer::start(); // logs at trace level
    let (alice_id, bob_id, carol_id) = (
        Identity::from_secret(new_key()),
        Identity::from_secret(new_key()),
        Identity::from_secret(new_key()),
    );
    let secret = "the eagle lands at midnight by the old mill";
    server.introduce(&[bob_id.secret()]).await;
    let mut alice = Client::connect(&server.tcp.to_string(), &alice_id, None)
        .await
        .unwrap();
    let _carol = Client::connect(&server.ws, &carol_id, None).await.unwrap();
    // One copy waits in the store for Bob; one goes straight to Carol.
    let stored = alice
        .send_text(&bob_id.public_key().to_hex(), secret, &[])
        .await
        .unwrap();
    assert_eq!(stored.status, status::STORED);
    let relayed = alice
        .send_text(&carol_id.public_key().to_hex(), secret, &[])
        .await
        .unwrap();
    assert_eq!(relayed.status, status::RELAYED);
    // Stop the server so everything it would write is written.
    assert!(server.stop());

    let server_secret = std::fs::read_to_string(server.data_dir().join("server.key")).unwrap();
    let mut looked_at = 0;
    for path in files_under(&server.dir.0) {
        let bytes = std::fs::read(&path).unwrap();
        looked_at += bytes.len();
        assert!(
            !contains(&bytes, secret.as_bytes()),
            "plaintext in {}",
            path.display()
        );
        // Neither client's secret key nor (outside its own key file) the server's appears.
        for id in [&alice_id, &bob_id, &carol_id] {
            assert!(!contains(&bytes, id.secret().to_hex().as_bytes()));
        }
        if !path.ends_with("server.key") {
            assert!(
                !contains(&bytes, server_secret.trim().as_bytes()),
                "server secret in {}",
                path.display()
            );
        }
    }
    // The check looked at real data: the store holds Bob's sealed message, the log has entries.
    assert!(
        looked_at > 1000,
        "only {looked_at} bytes under the server dir"
    );
    assert!(
        server.logs().contains("authenticated"),
        "trace logs were written"
    );
}
