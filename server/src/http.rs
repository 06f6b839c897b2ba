//! The HTTP side: `/ws`, the browser client's static files, `/healthz` and `/metrics`, with
//! the security headers on every answer. The same router serves plain http and https.

use std::net::SocketAddr;
use std::path::Path;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::services::ServeDir;

use crate::edge;
use crate::state::AppState;

/// The router of the HTTP listener, used by [`crate::Server`] with TLS or without.
pub(crate) fn app(state: AppState, static_dir: &Path) -> Router {
    let ws = get(crate::ws::upgrade)
        .route_layer(from_fn_with_state(state.edge.clone(), edge::check_origin));
    // With an admin listener, /metrics lives there only; a 404 here then says nothing about
    // the server that a missing file would not.
    let metrics = if state.edge.admin {
        get(|| async { StatusCode::NOT_FOUND })
    } else {
        get(loopback_metrics)
    };
    Router::new()
        .route("/ws", ws)
        .route("/healthz", get(healthz))
        .route("/metrics", metrics)
        // `just build-web` writes a gzipped copy beside the bundle; browsers that accept gzip
        // get it (the wasm is about a quarter of its size) without the server compressing.
        .fallback_service(ServeDir::new(static_dir).precompressed_gzip())
        .layer(from_fn_with_state(
            state.edge.clone(),
            edge::security_headers,
        ))
        .with_state(state)
}

/// The router of the admin listener: `/metrics` for whoever reaches that address (the
/// operator chose it), and `/healthz`.
pub(crate) fn admin_app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .layer(from_fn_with_state(
            state.edge.clone(),
            edge::security_headers,
        ))
        .with_state(state)
}

/// Whether the server runs (for load balancers and supervisors).
async fn healthz() -> &'static str {
    "ok\n"
}

/// `/metrics` on the HTTP listener: for a peer on this machine only, since the listener may
/// face everyone and the counters tell how busy the server is.
async fn loopback_metrics(
    state: State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    if !peer.ip().to_canonical().is_loopback() {
        let why =
            "/metrics is served to this machine only; set --admin ADDR to serve it elsewhere\n";
        return (StatusCode::FORBIDDEN, why).into_response();
    }
    metrics(state).await.into_response()
}

/// Counters in Prometheus' text format.
async fn metrics(State(state): State<AppState>) -> String {
    let relay = &state.relay;
    relay
        .metrics
        .render(relay.store.stats(), relay.queued.bytes())
}
