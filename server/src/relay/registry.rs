//! The sessions that are logged in now, as the admin listener lists them: who, over what,
//! from where, since when. Kept apart from the routing table, which knows only keys and
//! queues, and read by nothing on the path of a message.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use flexim_protocol::PublicKey;
use serde::Serialize;

use crate::table::SessionId;

/// One logged-in session.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SessionInfo {
    /// The user's key, in hex.
    pub(crate) key: String,
    /// Its aliases when it logged in.
    pub(crate) aliases: Vec<String>,
    /// `tcp` or `ws`.
    pub(crate) transport: &'static str,
    /// The client's address.
    pub(crate) address: String,
    /// When it logged in (Unix seconds).
    pub(crate) since: i64,
    /// Whether it was the key's active session (the one messages go to) when it logged in.
    pub(crate) primary: bool,
}

/// The sessions logged in now, by session id.
#[derive(Default)]
pub(crate) struct Registry(Mutex<HashMap<SessionId, SessionInfo>>);

impl Registry {
    /// A session logged in.
    pub(crate) fn add(
        &self,
        id: SessionId,
        key: PublicKey,
        aliases: Vec<String>,
        transport: &'static str,
        address: IpAddr,
        primary: bool,
    ) {
        let info = SessionInfo {
            key: key.to_hex(),
            aliases,
            transport,
            address: address.to_canonical().to_string(),
            since: crate::clock::now(),
            primary,
        };
        self.0.lock().expect("registry lock").insert(id, info);
    }

    /// A session ended.
    pub(crate) fn remove(&self, id: SessionId) {
        self.0.lock().expect("registry lock").remove(&id);
    }

    /// The `/metrics` gauge of the sessions logged in now, by transport.
    pub(crate) fn gauge(&self) -> String {
        let all = self.0.lock().expect("registry lock");
        let count = |t: &str| all.values().filter(|s| s.transport == t).count();
        let (tcp, ws) = (count("tcp"), count("ws"));
        drop(all);
        format!(
            "# HELP flexim_sessions Sessions logged in now, by transport.\n\
             flexim_sessions{{transport=\"tcp\"}} {tcp}\n\
             flexim_sessions{{transport=\"ws\"}} {ws}\n"
        )
    }

    /// Every session, oldest first.
    pub(crate) fn list(&self) -> Vec<SessionInfo> {
        let mut all: Vec<SessionInfo> = self
            .0
            .lock()
            .expect("registry lock")
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.since.cmp(&b.since).then(a.key.cmp(&b.key)));
        all
    }
}
