//! Counting what clients got from the server: every abuser, and the legitimate clients per
//! phase, keep a [`Tally`] of outcomes by name ("answer relayed", "refused queue-full",
//! "disconnected", ...), shared by their tasks and read once at the end.

use std::collections::BTreeMap;
use std::sync::Mutex;

use flexim_client::{Answer, ClientError, Event};
use serde::Serialize;

use super::rules::code_name;

/// Outcomes by name, counted by many tasks at once.
#[derive(Debug, Default)]
pub struct Tally {
    /// The counts. A mutex rather than atomics because the names are open-ended (a Status
    /// code this tool does not know gets a name of its own); the tasks count a few thousand
    /// times a second at most, well within what an uncontended lock does.
    counts: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    /// Counts `n` more of `what`.
    pub fn add_n(&self, what: &str, n: u64) {
        let mut counts = self.counts.lock().expect("tally lock");
        match counts.get_mut(what) {
            Some(c) => *c += n,
            None => {
                counts.insert(what.to_string(), n);
            }
        }
    }

    /// Counts one more of `what`.
    pub fn add(&self, what: &str) {
        self.add_n(what, 1);
    }

    /// Counts one Status by its code's name, after `prefix` ("refused", "answer", ...).
    pub fn status(&self, prefix: &str, code: i8) {
        self.add(&format!("{prefix} {}", code_name(code)));
    }

    /// The count of `what` so far.
    pub fn get(&self, what: &str) -> u64 {
        let counts = self.counts.lock().expect("tally lock");
        counts.get(what).copied().unwrap_or(0)
    }

    /// Everything counted so far.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts.lock().expect("tally lock").clone()
    }
}

/// What one abuser got from the server, for the report.
#[derive(Debug, Serialize)]
pub struct AbuserReport {
    /// The abuser's name (`flood`, `stall`, `slowloris`, `storm`).
    pub name: &'static str,
    /// What it did and what it got, by name.
    pub counts: BTreeMap<String, u64>,
    /// Figures that are not counts (how long connections were held), in words.
    pub notes: Vec<String>,
}

/// Counts an event a sending abuser (a flood key, a stall sender) read from its client, and
/// says whether its connection has ended (then it logs in again).
pub fn count_event(tally: &Tally, event: &Result<Event, ClientError>) -> bool {
    match event {
        Ok(Event::Answer {
            answer: Answer::Sent { result, .. },
            ..
        }) => match result {
            Ok(s) => tally.status("answer", s.status),
            Err(r) if r.status != 0 => tally.status("refused", r.status),
            Err(_) => tally.add("garbled answer"),
        },
        Ok(Event::Receipt { status, .. }) => tally.status("receipt", status.status),
        Ok(Event::Closing { status, .. }) => tally.status("closed by the server with", *status),
        Ok(Event::Closed) | Err(_) => {
            tally.add("disconnected");
            return true;
        }
        _ => {}
    }
    false
}

/// A failed login in a few words, for a tally: the server's refusal by its Status name, else
/// the kind of failure (the details vary with every attempt, the kind does not).
pub fn error_kind(e: &ClientError) -> String {
    match e {
        ClientError::Server { status, .. } => format!("refused {}", code_name(*status)),
        ClientError::Connect { .. } => "no connection".into(),
        ClientError::Timeout { .. } => "timed out".into(),
        ClientError::ClosedDuringHandshake | ClientError::Closed => {
            "closed during the login".into()
        }
        ClientError::Upgrade { .. } => "WebSocket upgrade failed".into(),
        e if e.is_connection_lost() => "connection lost".into(),
        _ => "other error".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flexim_client::protocol::{Status, status};

    #[test]
    fn events_are_counted_by_their_status_names() {
        let t = Tally::default();
        let receipt = Ok(Event::Receipt {
            id: "a".into(),
            delivery: flexim_client::Delivery::Delivered,
            status: Status::new(status::DELIVERED, "delivered"),
        });
        assert!(!count_event(&t, &receipt));
        assert!(!count_event(&t, &receipt));
        assert!(count_event(&t, &Ok(Event::Closed)));
        t.status("refused", -77);
        assert_eq!(t.get("receipt delivered"), 2);
        assert_eq!(t.get("disconnected"), 1);
        assert_eq!(t.get("refused status -77"), 1);
        assert_eq!(t.snapshot().len(), 3);
    }
}
