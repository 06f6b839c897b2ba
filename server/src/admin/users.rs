//! The admin actions on users: list and look up, block and unblock, revoke and reassign an
//! alias, purge a queue. Users are named by key (64 hex digits) or by alias.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use flexim_protocol::PublicKey;
use flexim_protocol::keys::validate_alias;

use super::{json, store_failed};
use crate::state::AppState;

/// Most users `GET /admin/users` lists when no `limit` is given.
const USERS_LISTED: usize = 1000;

/// The key `who` names (a key or a registered alias), or the answer that says why none.
async fn key_of(state: &AppState, who: &str) -> Result<PublicKey, Response> {
    match state.relay.resolve(who).await {
        Ok(Some(key)) => Ok(key),
        Ok(None) => {
            let why =
                format!("no user {who:?}: give a key (64 hex digits) or a registered alias\n");
            Err((StatusCode::NOT_FOUND, why).into_response())
        }
        Err(e) => Err(store_failed(e)),
    }
}

/// `GET /admin/users?limit=N`.
pub(crate) async fn users(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let limit = match query.as_deref().and_then(|q| q.strip_prefix("limit=")) {
        None => USERS_LISTED,
        Some(n) => match n.parse() {
            Ok(n) => n,
            Err(_) => {
                let why = format!("limit={n:?}: give a number of users\n");
                return (StatusCode::BAD_REQUEST, why).into_response();
            }
        },
    };
    let found = match state.relay.store.users(limit).await {
        Ok(found) => found,
        Err(e) => return store_failed(e),
    };
    // Online here or, with several nodes, on any of them.
    let keys: Vec<PublicKey> = found.iter().map(|(k, _)| *k).collect();
    let online = state.relay.online(&keys).await;
    let list: Vec<_> = found
        .into_iter()
        .zip(online)
        .map(|((key, record), online)| {
            serde_json::json!({
                "online": online,
                "key": key.to_hex(),
                "aliases": record.aliases,
                "last_seen": record.last_seen,
                "blocked": record.banned,
            })
        })
        .collect();
    tracing::info!(users = list.len(), "admin: users listed");
    json(&list)
}

/// `GET /admin/user/WHO`.
pub(crate) async fn user(State(state): State<AppState>, Path(who): Path<String>) -> Response {
    let relay = &state.relay;
    let key = match key_of(&state, &who).await {
        Ok(key) => key,
        Err(answer) => return answer,
    };
    let (record, counts) = match (
        relay.store.user(key).await,
        relay.store.counts(key, key).await,
    ) {
        (Ok(Some(record)), Ok(counts)) => (record, counts),
        (Ok(None), _) => {
            return (StatusCode::NOT_FOUND, format!("no user {who:?}\n")).into_response();
        }
        (Err(e), _) | (_, Err(e)) => return store_failed(e),
    };
    let hex = key.to_hex();
    let sessions: Vec<_> = relay
        .sessions
        .list()
        .into_iter()
        .filter(|s| s.key == hex)
        .collect();
    tracing::info!(key = %key, "admin: user looked up");
    json(&serde_json::json!({
        "key": hex,
        "fingerprint": key.fingerprint(),
        "aliases": record.aliases,
        "last_seen": record.last_seen,
        "blocked": record.banned,
        "stored": counts.messages,
        "stored_bytes": counts.bytes,
        "sessions": sessions,
    }))
}

/// `POST /admin/purge/KEY`.
pub(crate) async fn purge(State(state): State<AppState>, Path(who): Path<String>) -> Response {
    let Some(key) = PublicKey::from_hex(&who) else {
        let why = format!("{who:?} is not a key (64 hex digits): purge names a user by key\n");
        return (StatusCode::BAD_REQUEST, why).into_response();
    };
    let mut purged = 0u64;
    loop {
        let batch = match state.relay.store.peek(key, 0, 1024).await {
            Ok(batch) => batch,
            Err(e) => return store_failed(e),
        };
        if batch.is_empty() {
            break;
        }
        let seqs: Vec<u64> = batch.iter().map(|s| s.seq).collect();
        purged += seqs.len() as u64;
        if let Err(e) = state.relay.store.remove(key, seqs).await {
            return store_failed(e);
        }
    }
    tracing::warn!(key = %key, purged, "admin: queue purged");
    format!("purged {purged} stored messages of {key}\n").into_response()
}

/// `POST /admin/block/WHO` and `POST /admin/unblock/WHO`.
async fn set_blocked(state: AppState, who: String, on: bool) -> Response {
    let key = match key_of(&state, &who).await {
        Ok(key) => key,
        Err(answer) => return answer,
    };
    match state.relay.ban(key, on).await {
        Ok(ended) if on => {
            tracing::warn!(key = %key, sessions = ended, "admin: key blocked");
            let elsewhere = match state.relay.has_other_nodes() {
                true => ", and the other nodes end theirs",
                false => "",
            };
            format!("blocked {key}: it cannot log in; {ended} sessions ended here{elsewhere}\n")
                .into_response()
        }
        Ok(_) => {
            tracing::warn!(key = %key, "admin: key unblocked");
            format!("unblocked {key}: it may log in again\n").into_response()
        }
        Err(e) => store_failed(e),
    }
}

/// `POST /admin/block/WHO`.
pub(crate) async fn block(State(state): State<AppState>, Path(who): Path<String>) -> Response {
    set_blocked(state, who, true).await
}

/// `POST /admin/unblock/WHO`.
pub(crate) async fn unblock(State(state): State<AppState>, Path(who): Path<String>) -> Response {
    set_blocked(state, who, false).await
}

/// `POST /admin/revoke/ALIAS`.
pub(crate) async fn revoke(State(state): State<AppState>, Path(alias): Path<String>) -> Response {
    if let Err(e) = validate_alias(&alias) {
        return (
            StatusCode::BAD_REQUEST,
            format!("{alias:?} is not an alias: {e}\n"),
        )
            .into_response();
    }
    match state.relay.assign_alias(&alias, None).await {
        Ok(Some(before)) => {
            tracing::warn!(alias = %alias, from = %before, "admin: alias revoked");
            format!("revoked {alias} from {before}; anyone may register it now\n").into_response()
        }
        Ok(None) => (
            StatusCode::NOT_FOUND,
            format!("nobody has the alias {alias}\n"),
        )
            .into_response(),
        Err(e) => store_failed(e),
    }
}

/// `POST /admin/reassign/ALIAS` with the new holder (a key, or another alias of it) as body.
pub(crate) async fn reassign(
    State(state): State<AppState>,
    Path(alias): Path<String>,
    body: String,
) -> Response {
    if let Err(why) = crate::directory::alias_to_give(&alias) {
        let why = format!("{alias:?} is not an alias: {why}\n");
        return (StatusCode::BAD_REQUEST, why).into_response();
    }
    let to = match key_of(&state, body.trim()).await {
        Ok(key) => key,
        Err(answer) => return answer,
    };
    match state.relay.assign_alias(&alias, Some(to)).await {
        Ok(before) => {
            let from = before.map_or("nobody".to_string(), |k| k.to_hex());
            tracing::warn!(alias = %alias, from = %from, to = %to, "admin: alias reassigned");
            format!("{alias} is {to}'s now (it was {from}'s)\n").into_response()
        }
        Err(e) => store_failed(e),
    }
}
