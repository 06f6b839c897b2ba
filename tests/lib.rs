//! Helpers for the end-to-end suite: the kit it shares with the load generator
//! (`flexim-testkit`: real server and Redis processes, the framed connection), a small
//! WebDriver client for the browser tests, and certificates for the TLS tests.

pub mod certs;
pub mod webdriver;

pub use flexim_testkit::*;

/// Makes two users contacts, as two people who know each other would (docs/PROTOCOL.md §14):
/// each accepts the other (an Acknowledge naming its key), so that their messages are relayed
/// with no requests box and each sees the other's presence.
pub async fn befriend(a: &mut flexim_client::Client, b: &mut flexim_client::Client) {
    let (ka, kb) = (a.identity().public_key(), b.identity().public_key());
    a.accept_request(&kb.to_hex()).await.expect("a accepts b");
    b.accept_request(&ka.to_hex()).await.expect("b accepts a");
}
