//! The admin listener's actions (`--admin ADDR`): what an operator does to a running server,
//! each behind the token in `admin.token` in the data directory (made at the first start
//! with an admin listener, mode 0600, so that only who can read the data directory acts).
//! `/metrics`, `/healthz` and `/readyz` there need no token: they change nothing.
//!
//! `POST /admin/backup` with an absolute path as its body makes a consistent copy of the
//! embedded store at that path (a new file, on the server's machine) while the server runs.
//! Every action is logged.

use std::path::PathBuf;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header::AUTHORIZATION};
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::state::AppState;

/// The admin token's file in the data directory.
pub const TOKEN_FILE: &str = "admin.token";

/// The token an admin action must carry as `Authorization: Bearer HEX`.
#[derive(Clone, Copy)]
pub(crate) struct Token(pub(crate) [u8; 32]);

impl Token {
    /// Whether `headers` carry this token (compared in constant time).
    fn admits(&self, headers: &HeaderMap) -> bool {
        let given = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(|hex| flexim_protocol::SecretKey::from_hex(hex.trim()))
            .map(|k| k.to_bytes());
        given.is_some_and(|g| bool::from(g.ct_eq(&self.0)))
    }
}

/// The answer to an action without the token.
fn refused() -> Response {
    let why = "this needs the admin token: Authorization: Bearer <the hex in DATA/admin.token>\n";
    (StatusCode::UNAUTHORIZED, why).into_response()
}

/// Where a backup goes.
struct BackupTo {
    /// A new file, an absolute path on the server's machine.
    to: PathBuf,
}

/// Whether `headers` carry the server's admin token.
fn allowed(state: &AppState, headers: &HeaderMap) -> bool {
    state.admin_token.is_some_and(|t| t.admits(headers))
}

/// `POST /admin/backup` with the path as body: a consistent copy of the store, made while
/// it runs.
pub(crate) async fn backup(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if !allowed(&state, &headers) {
        tracing::warn!("admin: backup refused: no valid token");
        return refused();
    }
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
