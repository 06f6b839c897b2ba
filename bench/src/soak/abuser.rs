//! What every abuser shares: logging a client in again while the abuse lasts, waiting for it
//! to end, and telling a kill from the server's rules. Apart from `abuse.rs`, which runs the
//! abusers, so that the abusers and what runs them do not import each other.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flexim_client::{Client, Identity};
use tokio::sync::watch;

use super::Stage;
use super::tally::{Tally, error_kind};

/// How long an abuser waits before it logs in again after the server ended its connection or
/// refused its login: short, since abusing is the point, but not a busy loop against a server
/// that is down (which would measure this tool, not the server).
pub const PAUSE: Duration = Duration::from_millis(100);

/// The server's lives: a number that `faults.rs` moves on when it kills the server and again
/// once the server is back, odd while it is down. A connection that ended while the number
/// moved, or that began or ended while the server was down, was ended by a kill, not by the
/// server's rules, and is counted apart.
#[derive(Debug, Default)]
pub struct Lives(AtomicU64);

impl Lives {
    /// The current number.
    pub fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    /// The server is being killed, or is back.
    pub fn next(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether something that began at `began` (a [`Lives::now`]) and ends now met a kill.
    pub fn met_a_kill(&self, began: u64) -> bool {
        let now = self.now();
        now != began || !now.is_multiple_of(2)
    }
}

/// Whether the abuse still runs.
pub fn abusing(stage: &watch::Receiver<Stage>) -> bool {
    *stage.borrow() == Stage::Abuse
}

/// Resolves once the abuse is over (at once if it is).
pub async fn abuse_over(stage: &mut watch::Receiver<Stage>) {
    while *stage.borrow_and_update() == Stage::Abuse {
        if stage.changed().await.is_err() {
            return;
        }
    }
}

/// Logs `me` in at `addr`, pausing between tries, while the abuse lasts; counts logins and
/// failed ones by kind. `None` once the abuse is over.
pub async fn connect(
    addr: &str,
    me: &Identity,
    stage: &mut watch::Receiver<Stage>,
    tally: &Tally,
) -> Option<Client> {
    while abusing(stage) {
        let attempt = tokio::select! {
            c = Client::connect(addr, me, None) => Some(c),
            _ = abuse_over(stage) => None,
        };
        match attempt? {
            Ok(c) => {
                tally.add("logins");
                return Some(c);
            }
            Err(e) => tally.add(&format!("login failed: {}", error_kind(&e))),
        }
        tokio::time::sleep(PAUSE).await;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_meets_a_kill_if_it_spans_one_or_lives_while_the_server_is_down() {
        let lives = Lives::default();
        let before = lives.now();
        assert!(!lives.met_a_kill(before));
        lives.next(); // killed
        assert!(lives.met_a_kill(before), "ended by the kill");
        let during = lives.now();
        assert!(lives.met_a_kill(during), "began while down");
        lives.next(); // back
        let after = lives.now();
        assert!(!lives.met_a_kill(after));
    }
}
