//! The HTTP side: `/ws`, the browser client's static files, `/healthz` and `/metrics`.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use tokio::sync::watch;
use tower_http::services::ServeDir;

use crate::relay::Relay;

/// What every HTTP handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The one relay core, shared with the TCP transport.
    pub relay: Arc<Relay>,
    /// Flips to `true` when the server stops, so WebSocket sessions end cleanly.
    pub shutdown: watch::Receiver<bool>,
}

/// The router, used by `main` (through [`crate::Server`]) and by tests.
pub fn app(state: AppState, static_dir: &Path) -> Router {
    Router::new()
        .route("/ws", get(crate::ws::upgrade))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        // `just build-web` writes a gzipped copy beside the bundle; browsers that accept gzip
        // get it (the wasm is about a quarter of its size) without the server compressing.
        .fallback_service(ServeDir::new(static_dir).precompressed_gzip())
        .with_state(state)
}

/// Counters in Prometheus' text format.
async fn metrics(State(state): State<AppState>) -> String {
    let m = &state.relay.metrics;
    let mut out = String::new();
    for (name, help, value) in [
        (
            "flexim_connections_total",
            "Connections accepted (TCP and WebSocket).",
            &m.connections_total,
        ),
        (
            "flexim_connections_open",
            "Connections past the header now.",
            &m.connections_open,
        ),
        ("flexim_logins_total", "Successful AUTHs.", &m.logins),
        (
            "flexim_auth_failures_total",
            "Failed AUTHs.",
            &m.auth_failures,
        ),
        (
            "flexim_messages_relayed_total",
            "Messages handed to an online recipient.",
            &m.relayed,
        ),
        (
            "flexim_messages_stored_total",
            "Messages written to the offline store.",
            &m.stored,
        ),
        (
            "flexim_messages_delivered_offline_total",
            "Stored messages delivered.",
            &m.delivered_offline,
        ),
        (
            "flexim_errors_total",
            "Datums answered with an error Status.",
            &m.errors,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n{name} {}",
            value.load(Ordering::Relaxed)
        );
    }
    let store = state.relay.store_stats();
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
