//! What the operator does to users through the admin listener (`admin/`): block and unblock
//! a key, give or take away an alias, drain the server. The store keeps the decision (so
//! that every node of several sees it); this module ends the sessions it touches, here and
//! on the other nodes, so that no session goes on under the old decision.

use std::sync::atomic::Ordering;

use flexim_protocol::datum::Status;
use flexim_protocol::{PublicKey, status};

use super::Relay;
use crate::cluster::Signal;
use crate::store::StoreError;

/// Why a login was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoginError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The operator blocked the key.
    #[error("the key is blocked")]
    Banned,
    /// The operator drains the server: no new sessions.
    #[error("the server is draining")]
    Draining,
}

impl LoginError {
    /// The Status the client is told, for a refusal (not a store failure).
    pub(crate) fn status(&self) -> Status {
        match self {
            LoginError::Banned => Status::new(status::BANNED, end_text(status::BANNED)),
            LoginError::Draining => Status::new(
                status::SHUTTING_DOWN,
                "this server is draining (its operator is taking it out of service): connect \
                 again later, or to another of its servers",
            ),
            LoginError::Store(_) => Status::new(status::INTERNAL, "storage failure; try again"),
        }
    }
}

/// What a session ended by the operator is told, by the code it is told with.
pub(crate) fn end_text(code: i8) -> &'static str {
    match code {
        status::BANNED => {
            "this key is blocked on this server by its operator; ask them if you think this is \
             a mistake"
        }
        _ => "the server's operator changed this key's aliases: log in again to have them",
    }
}

impl Relay {
    /// Whether the server drains: it takes no new sessions, and `/readyz` says so.
    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Starts (or with `false` ends) draining.
    pub(crate) fn set_draining(&self, on: bool) {
        self.draining.store(on, Ordering::Relaxed);
    }

    /// Whether other nodes share this one's store (and so are told of what the operator did).
    pub(crate) fn has_other_nodes(&self) -> bool {
        self.cluster.is_some()
    }

    /// Blocks or unblocks `key`; a block ends its sessions, here and on the other nodes.
    /// Returns how many sessions it ended here.
    pub(crate) async fn ban(&self, key: PublicKey, on: bool) -> Result<usize, StoreError> {
        self.store.set_banned(key, on).await?;
        Ok(if on {
            self.end_sessions(key, status::BANNED).await
        } else {
            0
        })
    }

    /// Gives `alias` to `to` (or to nobody) and ends the sessions of whoever held it and of
    /// `to`, so that each logs in again with the aliases it has now (a session checks `from`
    /// against the aliases it logged in with). Returns who held the alias.
    pub(crate) async fn assign_alias(
        &self,
        alias: &str,
        to: Option<PublicKey>,
    ) -> Result<Option<PublicKey>, StoreError> {
        let before = self.store.assign_alias(alias.to_string(), to).await?;
        if before != to {
            for key in [before, to].into_iter().flatten() {
                self.end_sessions(key, status::SHUTTING_DOWN).await;
            }
        }
        Ok(before)
    }

    /// Closes every session of `key` with `code` (and [`end_text`]), here and, with several
    /// nodes, on the others. Returns how many were closed here. Called once the store has the
    /// decision, so that a login from then on reads it.
    async fn end_sessions(&self, key: PublicKey, code: i8) -> usize {
        if let Some(cluster) = &self.cluster {
            cluster.send(None, Signal::End(key, code));
        }
        self.end_here(key, code).await
    }

    /// Closes the sessions of `key` on this node ([`Signal::End`] from another node), after
    /// the logins under way have joined (the login gate): one that read the user before the
    /// decision is among them.
    pub(crate) async fn end_here(&self, key: PublicKey, code: i8) -> usize {
        let _all = self.login_gate.write().await;
        let outlets = self.lock(&key).outlets(&key);
        for outlet in &outlets {
            outlet.close(code, end_text(code));
        }
        outlets.len()
    }
}
