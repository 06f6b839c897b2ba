//! What the soak assumes about the server, in one place: the deadlines it documents, what
//! confirms a message, what a legitimate client does with a refusal, and how fast clients come
//! back after a disconnect. The server's limits change (per-sender queue shares, rate limits,
//! memory budgets are being added), so nothing else in `soak/` names a Status code or a
//! deadline; when the server's rules change, this file is what changes with them.

use std::time::Duration;

use flexim_client::Delivery;
use flexim_client::protocol::status;

/// The time a client has to send the 5-byte FLEX header (docs/PROTOCOL.md §2.2 and §2.3; the
/// server's `Limits::header_timeout`): a TCP connection is reset after it, a WebSocket closed
/// with code 1002.
pub const HEADER_DEADLINE: Duration = Duration::from_secs(5);

/// The time an HTTP client has for each request head (`--http-timeout`, default 10 s, §2.4):
/// a half-sent head, and so a WebSocket upgrade that never finishes, is closed after it.
pub const HTTP_DEADLINE: Duration = Duration::from_secs(10);

/// How late after its deadline the server may close a connection before the soak counts it
/// as held past the deadline. Generous on purpose: during the abuse two cores run the server,
/// the abusers and the legitimate clients, and every timer fires late.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(3);

/// Whether a receipt confirms a message (docs/PROTOCOL.md §8.1): `7` delivered or `8` stored
/// later (the engine reports both `2` and `8` as [`Delivery::Stored`]). `3` relayed does not:
/// it lives only in the server's memory until a receipt follows.
pub fn confirms(delivery: &Delivery) -> bool {
    matches!(delivery, Delivery::Delivered | Delivery::Stored)
}

/// Whether the answer to a sent message confirms it by itself: `2` stored.
pub fn answer_confirms(code: i8) -> bool {
    code == status::STORED
}

/// How long a legitimate sender waits before it sends again a message the server refused
/// with an error Status, after `attempt` earlier refusals of it. Every error is retried: the
/// protocol calls most of them final for that attempt (`-13` queue-full until the recipient
/// catches up), and the limits being added (rate limits, queue shares) are refusals a client
/// should back off from, not crash on. A retry is a new message (a new id and box) with the
/// same text, which the ledger recognises as the same one.
pub fn retry_delay(attempt: u32) -> Duration {
    backoff(Duration::from_millis(100), attempt, Duration::from_secs(2))
}

/// How long a client whose connection ended waits before its `attempt`-th try to log in
/// again: quick at first (a restarted server is back within a second or so), then slower, so
/// that clients do not hammer a server that is down.
pub fn reconnect_delay(attempt: u32) -> Duration {
    backoff(Duration::from_millis(50), attempt, Duration::from_secs(1))
}

/// `first`, doubled for each attempt, at most `cap`, with up to a quarter of random jitter so
/// that many clients cut by one kill do not come back in lockstep.
fn backoff(first: Duration, attempt: u32, cap: Duration) -> Duration {
    let base = first.saturating_mul(1 << attempt.min(16)).min(cap);
    let mut b = [0u8; 2];
    flexim_testkit::random(&mut b);
    let jitter = base.mul_f64(f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX) / 4.0);
    base + jitter
}

/// The name a tally uses for a Status code: the protocol's short name, with the number for
/// codes this tool does not know (a limit added to the server after it), so that a new
/// refusal shows up in the report instead of being lumped with others.
pub fn code_name(code: i8) -> String {
    match status::name(code) {
        "unknown" => format!("status {code}"),
        name => name.to_string(),
    }
}

/// Flags the soak gives the server on top of those the user passes with `--server-arg`: none.
/// The run measures the server as shipped (its default limits), in both phases alike; the
/// server's limits are what the abuse is meant to meet.
pub fn server_flags(store: Option<&str>, user: &[String]) -> Vec<String> {
    let mut flags = Vec::new();
    if let Some(url) = store {
        flags.extend(["--store".to_string(), url.to_string()]);
    }
    flags.extend(user.iter().cloned());
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_with_bounded_jitter() {
        for attempt in 0..20 {
            let d = retry_delay(attempt);
            let base = Duration::from_millis(100 << attempt.min(16)).min(Duration::from_secs(2));
            assert!(d >= base && d <= base.mul_f64(1.25), "{attempt}: {d:?}");
        }
        assert!(reconnect_delay(0) < Duration::from_millis(63));
        assert!(reconnect_delay(30) <= Duration::from_millis(1250));
    }

    #[test]
    fn codes_are_named_and_unknown_ones_keep_their_number() {
        assert_eq!(code_name(status::QUEUE_FULL), "queue-full");
        assert_eq!(code_name(-77), "status -77");
        assert!(answer_confirms(status::STORED) && !answer_confirms(status::RELAYED));
        assert!(confirms(&Delivery::Delivered) && !confirms(&Delivery::Relayed));
    }
}
