//! The HTTP side: `/ws`, the browser client's static files, `/healthz`, `/readyz` and
//! `/metrics`, with the security headers on every answer. The same router serves plain http
//! and https.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::services::ServeDir;

use flexim_protocol::PublicKey;

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
        .route("/readyz", get(readyz))
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
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(admin_actions(state.clone()))
        .layer(from_fn_with_state(
            state.edge.clone(),
            edge::security_headers,
        ))
        .with_state(state)
}

/// The admin listener's actions (`admin/`), every one behind the token.
fn admin_actions(state: AppState) -> Router<AppState> {
    use crate::admin;
    use axum::routing::post;
    Router::new()
        .route("/admin/backup", post(admin::backup))
        .route("/admin/sessions", get(admin::sessions))
        .route("/admin/stats", get(admin::stats))
        .route("/admin/users", get(admin::users))
        .route("/admin/user/{who}", get(admin::user))
        .route("/admin/block/{who}", post(admin::block))
        .route("/admin/unblock/{who}", post(admin::unblock))
        .route("/admin/revoke/{alias}", post(admin::revoke))
        .route("/admin/reassign/{alias}", post(admin::reassign))
        .route("/admin/purge/{key}", post(admin::purge))
        .route("/admin/drain", post(admin::drain))
        .route("/admin/resume", post(admin::resume))
        .route("/admin/stop", post(admin::stop))
        .route_layer(from_fn_with_state(state, admin::require_token))
}

/// Whether the server runs (for load balancers and supervisors).
async fn healthz() -> &'static str {
    "ok\n"
}

/// How long `/readyz` waits for the store.
const READY_PROBE: Duration = Duration::from_secs(1);

/// Whether the server takes users now (for orchestrators and load balancers): 200 while it
/// accepts connections and its store answers a read within [`READY_PROBE`]; 503 with the
/// reason otherwise (shutting down, the store failing or not answering). `/healthz` says
/// only that the process runs.
async fn readyz(State(state): State<AppState>) -> Response {
    if *state.shutdown.borrow() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n",
        )
            .into_response();
    }
    if state.relay.draining() {
        let why = "not ready: draining (admin drain): no new sessions\n";
        return (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
    }
    let probe = state.relay.store.user(PublicKey([0; 32]));
    let why = match tokio::time::timeout(READY_PROBE, probe).await {
        Ok(Ok(_)) => return "ready\n".into_response(),
        Ok(Err(e)) => format!("not ready: the store failed: {e}\n"),
        Err(_) => format!("not ready: the store did not answer within {READY_PROBE:?}\n"),
    };
    (StatusCode::SERVICE_UNAVAILABLE, why).into_response()
}

/// `/metrics` on the HTTP listener: for a peer on this machine only, since the listener may
/// face everyone and the counters tell how busy the server is.
async fn loopback_metrics(
    state: State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
) -> Response {
    // A reverse proxy on this machine connects from loopback for everyone it serves: a
    // request it forwarded (it says so in these headers) is not this machine's own.
    let proxied = ["forwarded", "x-forwarded-for", "x-real-ip"]
        .iter()
        .any(|h| headers.contains_key(*h));
    if !peer.ip().to_canonical().is_loopback() || proxied {
        let why =
            "/metrics is served to this machine only; set --admin ADDR to serve it elsewhere\n";
        return (StatusCode::FORBIDDEN, why).into_response();
    }
    metrics(state).await.into_response()
}

/// Counters in Prometheus' text format.
async fn metrics(State(state): State<AppState>) -> String {
    let relay = &state.relay;
    // The store's byte count is kept with its bounds: a read of one counter. A store that
    // fails to answer leaves it out; /readyz says why.
    let nobody = PublicKey([0; 32]);
    let stored_bytes = relay
        .store
        .counts(nobody, nobody)
        .await
        .ok()
        .map(|c| c.store_bytes);
    let queue = crate::metrics::Queue {
        bytes: relay.queued.bytes(),
        frames: relay.queued.frames(),
        stored_bytes,
    };
    let mut text = relay.metrics.render(relay.store.stats(), queue);
    text.push_str(&relay.sessions.gauge());
    text
}
