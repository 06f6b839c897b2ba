//! The HTTP side: `/ws`, the browser client's static files, `/healthz` and `/metrics`.

use std::path::Path;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use tower_http::services::ServeDir;

use crate::state::AppState;

/// The router, used by [`crate::Server`].
pub(crate) fn app(state: AppState, static_dir: &Path) -> Router {
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
    state.relay.metrics.render(state.relay.store.stats())
}
