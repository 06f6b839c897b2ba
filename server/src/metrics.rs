//! Counters for `/metrics` and the benchmarks, and their text format.
//!
//! Relaxed atomics: they are statistics, never used to decide anything.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::StoreStats;

/// The server's counters since start.
#[derive(Default)]
pub(crate) struct Metrics {
    /// Connections accepted since start (both transports), refused ones included.
    pub(crate) connections_total: AtomicU64,
    /// Connections past the header now (sessions).
    pub(crate) connections_open: AtomicU64,
    /// Connections refused because the server had `max_connections` already.
    pub(crate) connections_refused: AtomicU64,
    /// Successful AUTHs.
    pub(crate) logins: AtomicU64,
    /// Failed AUTHs.
    pub(crate) auth_failures: AtomicU64,
    /// Messages handed to an online recipient.
    pub(crate) relayed: AtomicU64,
    /// Messages written to the durable queue.
    pub(crate) stored: AtomicU64,
    /// Stored messages delivered (removed from the store after delivery or acknowledgement).
    pub(crate) delivered_offline: AtomicU64,
    /// Datums answered with an error Status.
    pub(crate) errors: AtomicU64,
    /// Error Statuses sent, by code (index: minus the code), so that an operator sees which
    /// rule or limit fires: `flexim_refusals_total{status="queue-full"}`.
    refusals: [AtomicU64; 32],
    /// Sessions the server ended without a Status, by reason ([`Disconnect`]).
    disconnects: [AtomicU64; 2],
}

/// Why the server ended a session without telling it (a Status could not be read or trusted).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Disconnect {
    /// A write waited past `write_timeout`: the client stopped reading.
    WriteTimeout = 0,
    /// A record did not authenticate.
    LinkBroken = 1,
}

impl Disconnect {
    /// The label in `/metrics`.
    fn label(self) -> &'static str {
        match self {
            Disconnect::WriteTimeout => "write-timeout",
            Disconnect::LinkBroken => "link-broken",
        }
    }
}

/// Adds one to a counter.
pub(crate) fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Takes one from a counter.
pub(crate) fn dec(counter: &AtomicU64) {
    counter.fetch_sub(1, Ordering::Relaxed);
}

impl Metrics {
    /// Counts an error Status sent to a client.
    pub(crate) fn refused(&self, code: i8) {
        if let Some(c) = self.refusals.get(usize::from(code.unsigned_abs())) {
            inc(c);
        }
    }

    /// Counts a session ended without a Status.
    pub(crate) fn disconnected(&self, why: Disconnect) {
        inc(&self.disconnects[why as usize]);
    }

    /// The counters and the store's figures in Prometheus' text format.
    pub(crate) fn render(&self, store: StoreStats) -> String {
        let mut out = String::new();
        for (name, help, value) in [
            (
                "flexim_connections_total",
                "Connections accepted (TCP and WebSocket).",
                &self.connections_total,
            ),
            (
                "flexim_connections_open",
                "Connections past the header now.",
                &self.connections_open,
            ),
            (
                "flexim_connections_refused_total",
                "Connections refused because the server was full (max_connections).",
                &self.connections_refused,
            ),
            ("flexim_logins_total", "Successful AUTHs.", &self.logins),
            (
                "flexim_auth_failures_total",
                "Failed AUTHs.",
                &self.auth_failures,
            ),
            (
                "flexim_messages_relayed_total",
                "Messages handed to an online recipient.",
                &self.relayed,
            ),
            (
                "flexim_messages_stored_total",
                "Messages written to the offline store.",
                &self.stored,
            ),
            (
                "flexim_messages_delivered_offline_total",
                "Stored messages delivered.",
                &self.delivered_offline,
            ),
            (
                "flexim_errors_total",
                "Datums answered with an error Status.",
                &self.errors,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP flexim_refusals_total Error Statuses sent to clients, by status name."
        );
        for (i, count) in self.refusals.iter().enumerate().skip(1) {
            let n = count.load(Ordering::Relaxed);
            if n > 0 {
                let code = flexim_protocol::status::name(-(i as i8));
                let _ = writeln!(out, "flexim_refusals_total{{status=\"{code}\"}} {n}");
            }
        }
        let _ = writeln!(
            out,
            "# HELP flexim_disconnects_total Sessions ended without a Status, by reason."
        );
        for why in [Disconnect::WriteTimeout, Disconnect::LinkBroken] {
            let n = self.disconnects[why as usize].load(Ordering::Relaxed);
            let label = why.label();
            let _ = writeln!(out, "flexim_disconnects_total{{reason=\"{label}\"}} {n}");
        }
        for (name, help, value) in [
            (
                "flexim_store_writes_total",
                "Writes committed to the store.",
                store.writes,
            ),
            (
                "flexim_store_commits_total",
                "Store commits (disk syncs); many writes share one.",
                store.commits,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n{name} {value}");
        }
        out
    }
}
