//! The admin listener's actions (`--admin ADDR`): what an operator does to a running server,
//! each behind the token in `admin.token` in the data directory (made at the first start
//! with an admin listener, mode 0600, so that only who can read the data directory acts).
//! `/metrics`, `/healthz` and `/readyz` there need no token: they change nothing.
//!
//! - `POST /admin/backup` with an absolute path as its body: a consistent copy of the
//!   embedded store at that path (a new file, on the server's machine) while the server runs.
//! - `GET /admin/sessions`: the sessions logged in (key, aliases, transport, address, since),
//!   as JSON.
//! - `GET /admin/users?limit=N`: the users the store knows, most recently seen first (at
//!   most N, 1000 by default), as JSON.
//! - `GET /admin/user/WHO` (a key or an alias): the user's record, its queue's size and its
//!   sessions, as JSON. Never a message: the server holds none it could read.
//! - `POST /admin/block/WHO`, `POST /admin/unblock/WHO`: the key may not log in (its
//!   sessions end, with Status -31), or may again.
//! - `POST /admin/revoke/ALIAS`; `POST /admin/reassign/ALIAS` with a key or an alias as
//!   body: the alias is taken from its holder (and given to that user); the sessions of
//!   both end, so that each logs in again with the aliases it has now.
//! - `POST /admin/purge/KEY`: every message stored for that user deleted (their senders get
//!   no receipt); the count is answered.
//! - `GET /admin/stats`: sessions, connections, queued bytes and the store's writes, as JSON.
//! - `POST /admin/drain`, `POST /admin/resume`: no new sessions (those open go on), or new
//!   ones again.
//! - `POST /admin/stop`: the server stops as on SIGTERM (it drains, then exits).
//!
//! Every action is logged, with what it touched.

use std::path::PathBuf;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

pub(crate) mod token;
mod users;

pub use token::TOKEN_FILE;
pub(crate) use token::Token;
pub(crate) use users::{block, purge, reassign, revoke, unblock, user, users};

/// Every admin action's gate (a layer over their routes): the request must carry the token,
/// or it is answered 401 and logged.
pub(crate) async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if state
        .admin_token
        .is_some_and(|t| t.admits(request.headers()))
    {
        return next.run(request).await;
    }
    tracing::warn!(path = %request.uri().path(), "admin: refused, no valid token");
    let why = "this needs the admin token: Authorization: Bearer <the hex in DATA/admin.token>\n";
    (StatusCode::UNAUTHORIZED, why).into_response()
}

/// Where a backup goes.
struct BackupTo {
    /// A new file, an absolute path on the server's machine.
    to: PathBuf,
}

/// `POST /admin/backup` with the path as body: a consistent copy of the store, made while
/// it runs.
pub(crate) async fn backup(State(state): State<AppState>, body: String) -> Response {
    let q = BackupTo {
        to: PathBuf::from(body.trim()),
    };
    if !q.to.is_absolute() {
        let why = format!("{}: give an absolute path\n", q.to.display());
        return (StatusCode::BAD_REQUEST, why).into_response();
    }
    tracing::info!(to = %q.to.display(), "admin: backup started");
    match state.relay.store.backup(q.to.clone()).await {
        Ok(b) => {
            tracing::info!(
                to = %q.to.display(),
                users = b.users,
                stored = b.stored,
                bytes = b.bytes,
                "admin: backup made"
            );
            let text = format!(
                "backup: {} users, {} stored messages, {} rows, {} bytes in {}\n",
                b.users,
                b.stored,
                b.rows,
                b.bytes,
                q.to.display()
            );
            text.into_response()
        }
        Err(e) => {
            tracing::error!(to = %q.to.display(), error = %e, "admin: backup failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("backup failed: {e}\n"),
            )
                .into_response()
        }
    }
}

/// `GET /admin/sessions`.
pub(crate) async fn sessions(State(state): State<AppState>) -> Response {
    let list = state.relay.sessions.list();
    tracing::info!(sessions = list.len(), "admin: sessions listed");
    json(&list)
}

/// `GET /admin/stats`.
pub(crate) async fn stats(State(state): State<AppState>) -> Response {
    let relay = &state.relay;
    let store = relay.store.stats();
    let live = relay.live();
    let stats = serde_json::json!({
        "sessions": relay.sessions.list().len(),
        "connections": state.conns.len(),
        "queued_bytes": relay.queued.bytes(),
        "store_writes": store.writes,
        "store_commits": store.commits,
        "limits": serde_json::Map::from_iter(
            live.named().map(|(name, value)| (name.to_string(), value.into()))
        ),
    });
    tracing::info!("admin: stats read");
    json(&stats)
}

/// `POST /admin/stop`.
pub(crate) async fn stop(State(state): State<AppState>) -> Response {
    tracing::warn!("admin: stop asked");
    state.stop.notify_one();
    "stopping: the connections are told and drained, then the server exits\n".into_response()
}

/// `POST /admin/drain`: no new sessions from now on (a login is answered Status -17), and
/// `/readyz` answers 503, so that a load balancer sends users elsewhere; the sessions open
/// go on until they end. `POST /admin/resume` takes sessions again.
pub(crate) async fn drain(State(state): State<AppState>) -> Response {
    state.relay.set_draining(true);
    let open = state.relay.sessions.list().len();
    tracing::warn!(sessions = open, "admin: draining: no new sessions");
    format!(
        "draining: no new sessions; {open} sessions open go on until they end \
         (admin stop ends them; admin resume takes new ones again)\n"
    )
    .into_response()
}

/// `POST /admin/resume`: new sessions are taken again after a drain.
pub(crate) async fn resume(State(state): State<AppState>) -> Response {
    state.relay.set_draining(false);
    tracing::warn!("admin: resumed: new sessions are taken");
    "resumed: new sessions are taken again\n".into_response()
}

/// A JSON answer.
pub(super) fn json(value: &impl serde::Serialize) -> Response {
    let body = serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into()) + "\n";
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// The answer when the store failed.
pub(super) fn store_failed(e: crate::store::StoreError) -> Response {
    tracing::error!(error = %e, "admin: the store failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("the store failed: {e}\n"),
    )
        .into_response()
}
