//! The reconnect storm: several tasks each connecting, completing the real handshake and
//! disconnecting in a tight loop, over TCP and WebSocket in turn, with a few keys each (the
//! same users coming back again and again, as after an outage, rather than a stream of new
//! users). Every login costs the server the Noise handshake, a store read and write, and a
//! presence notice to every other online session, the legitimate ones included.

use std::sync::Arc;
use std::time::Instant;

use flexim_client::{Client, Identity};
use tokio::sync::watch;

use super::Stage;
use super::abuser::{PAUSE, abuse_over, abusing};
use super::tally::{Tally, error_kind};

/// Keys each storm task cycles through.
const KEYS_PER_TASK: usize = 4;

/// What the storm does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Tasks logging in and out at once.
    pub tasks: usize,
    /// The server's TCP address.
    pub tcp: String,
    /// The server's WebSocket URL.
    pub ws: String,
}

/// Runs the storm while the stage is the abuse, counting into `tally`; returns a note on the
/// rate it reached.
pub async fn run(plan: Plan, stage: watch::Receiver<Stage>, tally: Arc<Tally>) -> Vec<String> {
    let start = Instant::now();
    let tasks: Vec<_> = (0..plan.tasks)
        .map(|_| tokio::spawn(storm(plan.clone(), stage.clone(), tally.clone())))
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let logins = tally.get("logins");
    let secs = start.elapsed().as_secs_f64();
    vec![format!(
        "{logins} logins in {secs:.1} s: {:.0} per second",
        logins as f64 / secs.max(1e-9)
    )]
}

/// One storm task.
async fn storm(plan: Plan, mut stage: watch::Receiver<Stage>, tally: Arc<Tally>) {
    let keys: Vec<Identity> = (0..KEYS_PER_TASK)
        .filter_map(|_| Identity::generate().ok())
        .collect();
    let mut n = 0usize;
    while abusing(&stage) && !keys.is_empty() {
        let addr = if n.is_multiple_of(2) {
            &plan.tcp
        } else {
            &plan.ws
        };
        let me = &keys[n % keys.len()];
        n += 1;
        let login = tokio::select! {
            c = Client::connect(addr, me, None) => c,
            _ = abuse_over(&mut stage) => return,
        };
        match login {
            Ok(mut c) => {
                tally.add("logins");
                let _ = c.close().await;
            }
            Err(e) => {
                tally.add(&format!("login failed: {}", error_kind(&e)));
                // Not a busy loop against a server that is down or refusing.
                tokio::time::sleep(PAUSE).await;
            }
        }
    }
}
