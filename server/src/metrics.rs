//! Counters for `/metrics` and the benchmarks, and their text format.
//!
//! Relaxed atomics: they are statistics, never used to decide anything.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::histogram::Histogram;
use crate::store::StoreStats;

/// The server's counters since start.
#[derive(Default)]
pub(crate) struct Metrics {
    /// Connections accepted since start (both transports), refused ones included.
    pub(crate) connections_total: AtomicU64,
    /// Connections past the header now (sessions).
    pub(crate) connections_open: AtomicU64,
    /// Connections refused at the door: the server or the address had as many as allowed,
    /// or the address opened them too fast.
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
    /// Times each limit of [`Limit`] fired, so that an operator sees which one, where a
    /// Status name covers several (`address-full` is two limits) or none is sent (a sender
    /// slowed by the message rate is not told).
    limits: [AtomicU64; Limit::ALL.len()],
    /// How long frames wait in a session's queue, from the relay handing them over to the
    /// session taking them to write: the server's part of a message's delivery to an online
    /// user (a slow reader's queue backs up, and shows here).
    pub(crate) delivery_time: Histogram,
    /// From AUTH to logged in: the client's round trip, the Noise handshake and the login's
    /// store write.
    pub(crate) handshake_time: Histogram,
}

/// The limits `/metrics` counts by name (`flexim_limit_hits_total{limit="..."}`), each a
/// setting of [`crate::config::Limits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// `max_connections`.
    MaxConnections,
    /// `max_connections_per_address`.
    ConnectionsPerAddress,
    /// `connection_rate`.
    ConnectionRate,
    /// `new_key_rate`.
    NewKeyRate,
    /// `message_rate`: the sender was slowed.
    MessageRate,
    /// `command_rate`.
    CommandRate,
    /// `lookup_rate`.
    LookupRate,
    /// `outbound_queue` or `outbound_bytes`: a session's queue was full.
    OutboundQueue,
    /// `queued_bytes_budget`: a slow session was shed to keep the server's budget.
    QueuedBudget,
}

impl Limit {
    /// Every limit, in the order of the counters.
    const ALL: [Limit; 9] = [
        Limit::MaxConnections,
        Limit::ConnectionsPerAddress,
        Limit::ConnectionRate,
        Limit::NewKeyRate,
        Limit::MessageRate,
        Limit::CommandRate,
        Limit::LookupRate,
        Limit::OutboundQueue,
        Limit::QueuedBudget,
    ];

    /// The label in `/metrics`: the setting's name as its flag spells it.
    fn label(self) -> &'static str {
        match self {
            Limit::MaxConnections => "max-connections",
            Limit::ConnectionsPerAddress => "max-connections-per-address",
            Limit::ConnectionRate => "connection-rate",
            Limit::NewKeyRate => "new-key-rate",
            Limit::MessageRate => "message-rate",
            Limit::CommandRate => "command-rate",
            Limit::LookupRate => "lookup-rate",
            Limit::OutboundQueue => "outbound-queue",
            Limit::QueuedBudget => "queued-bytes-budget",
        }
    }
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

    /// Counts a limit that fired.
    pub(crate) fn hit(&self, limit: Limit) {
        inc(&self.limits[limit as usize]);
    }

    /// Counts a connection refused at the door, by the limit that refused it.
    pub(crate) fn connection_refused(&self, why: crate::conns::Refusal) {
        use crate::conns::Refusal;
        inc(&self.connections_refused);
        self.refused(why.code());
        self.hit(match why {
            Refusal::ServerFull => Limit::MaxConnections,
            Refusal::AddressFull => Limit::ConnectionsPerAddress,
            Refusal::TooFast(_) => Limit::ConnectionRate,
        });
    }

    /// Counts a session ended without a Status.
    pub(crate) fn disconnected(&self, why: Disconnect) {
        inc(&self.disconnects[why as usize]);
    }

    /// The counters, what is queued for sessions, the store's figures and the histograms in
    /// Prometheus' text format.
    pub(crate) fn render(&self, store: StoreStats, queued: Queue) -> String {
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
                "Connections refused at the door (max_connections, or an address's limits).",
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
        let _ = writeln!(
            out,
            "# HELP flexim_limit_hits_total Times each limit fired, by its setting's name."
        );
        for limit in Limit::ALL {
            let n = self.limits[limit as usize].load(Ordering::Relaxed);
            let label = limit.label();
            let _ = writeln!(out, "flexim_limit_hits_total{{limit=\"{label}\"}} {n}");
        }
        for (name, help, value) in [
            (
                "flexim_queued_bytes",
                "Bytes waiting in the sessions' outbound queues now.",
                queued.bytes as u64,
            ),
            (
                "flexim_queued_frames",
                "Frames waiting in the sessions' outbound queues now.",
                queued.frames as u64,
            ),
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
        // Absent, rather than a false 0, when the store did not answer.
        if let Some(bytes) = queued.stored_bytes {
            let _ = writeln!(
                out,
                "# HELP flexim_stored_bytes Bytes of the messages in the offline store now.\n\
                 flexim_stored_bytes {bytes}"
            );
        }
        self.delivery_time.snapshot().render(
            &mut out,
            "flexim_delivery_seconds",
            "How long frames for online users wait in their session's queue before it writes \
             them.",
        );
        self.handshake_time.snapshot().render(
            &mut out,
            "flexim_handshake_seconds",
            "From AUTH to logged in: the client's round trip, the handshake and the login's \
             store write.",
        );
        store.commit_time.render(
            &mut out,
            "flexim_store_commit_seconds",
            "How long each store commit (one sync for many writes) took.",
        );
        out
    }
}

/// What waits now, for [`Metrics::render`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Queue {
    /// Bytes in the sessions' outbound queues.
    pub(crate) bytes: usize,
    /// Frames in them.
    pub(crate) frames: usize,
    /// Bytes of stored messages in the offline store; `None` if the store did not answer.
    pub(crate) stored_bytes: Option<u64>,
}
