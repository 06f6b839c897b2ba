//! The relay's side of several nodes on one Redis: claiming and releasing keys, GHOST across
//! nodes, wake-ups for keys held elsewhere, and the signals other nodes send. Without a
//! cluster every function here does nothing.

use std::sync::Arc;

use flexim_protocol::PublicKey;

use super::Relay;
use crate::cluster::{Claimed, Signal};

impl Relay {
    /// Gives `key` up in the cluster (its last session here ended) and tells the other nodes.
    pub(super) async fn release(&self, key: PublicKey, to: Vec<PublicKey>) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        if let Err(e) = cluster.release(&key).await {
            // The key stays marked as held here until this node's heartbeat stops; another
            // node's session takes it over then.
            tracing::warn!(error = %e, "could not release a key in the cluster");
        }
        let node = cluster.node().to_string();
        cluster.send(
            None,
            Signal::Presence {
                key,
                online: false,
                node,
                to,
            },
        );
    }

    /// GHOST for a key another node holds: takes the key from that node and tells it to close
    /// its session (it stores what that session had not acknowledged, then wakes us). Returns
    /// false if the claim failed.
    pub(super) async fn take_over(&self, key: PublicKey) -> bool {
        let Some(cluster) = &self.cluster else {
            return true;
        };
        let old = cluster
            .holders(&[key])
            .await
            .ok()
            .and_then(|h| h[0].clone());
        if cluster.claim(&key, true).await.is_err() {
            return false;
        }
        if let Some(old) = old.filter(|n| n != cluster.node()) {
            cluster.send(Some(&old), Signal::Kick(key));
        }
        true
    }

    /// Whether each key is online on this node or, with several nodes, on any live one.
    pub(crate) async fn online(&self, keys: &[PublicKey]) -> Vec<bool> {
        let here: Vec<bool> = keys.iter().map(|k| self.is_online(k)).collect();
        let Some(cluster) = &self.cluster else {
            return here;
        };
        match cluster.holders(keys).await {
            Ok(holders) => here
                .into_iter()
                .zip(holders)
                .map(|(h, node)| h || node.is_some())
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "presence from the cluster is unavailable");
                here
            }
        }
    }

    /// Tells the node holding `to`'s active session, if it is another one, that messages for
    /// it were stored.
    pub(super) fn wake_elsewhere(self: &Arc<Self>, to: PublicKey) {
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        if !self.waking.lock().expect("waking lock").insert(to) {
            return;
        }
        let relay = self.clone();
        tokio::spawn(async move {
            // Leave the set before looking: a message stored from now on wakes again.
            relay.waking.lock().expect("waking lock").remove(&to);
            if let Ok(holders) = cluster.holders(&[to]).await
                && let Some(node) = holders[0].as_ref().filter(|n| *n != cluster.node())
            {
                cluster.send(Some(node), Signal::Wake(to));
            }
        });
    }

    /// Hands a receipt to the node holding `to`, or keeps it in the store when `to` is offline
    /// everywhere: only an offline sender's receipt is worth a store write.
    pub(super) fn receipt_elsewhere(self: &Arc<Self>, to: PublicKey, frame: bytes::Bytes) {
        if self.cluster.is_none() {
            self.store_receipt(to, frame);
            return;
        }
        let relay = self.clone();
        tokio::spawn(async move {
            if !relay.sent_elsewhere(to, &frame).await {
                relay.store_receipt(to, frame);
            }
        });
    }

    /// Hands `frame` to `to`'s session on another node, if another node holds it; `false`
    /// when none does (or the cluster cannot say), so the caller stores it.
    pub(super) async fn sent_elsewhere(
        self: &Arc<Self>,
        to: PublicKey,
        frame: &bytes::Bytes,
    ) -> bool {
        let Some(cluster) = self.cluster.clone() else {
            return false;
        };
        match cluster.holders(&[to]).await {
            Ok(h) if h[0].as_ref().is_some_and(|n| n != cluster.node()) => {
                let node = h[0].clone().expect("checked");
                cluster.send(Some(&node), Signal::Frame(to, frame.to_vec()));
                true
            }
            _ => false,
        }
    }

    /// Acts on a signal from another node.
    pub(crate) async fn signal(self: &Arc<Self>, signal: Signal) {
        match signal {
            Signal::Wake(key) => self.wake_primary(key),
            // Best effort, like every receipt: a full queue drops it.
            Signal::Frame(key, frame) => self.lock(&key).offer_active(&key, frame.into()),
            Signal::Kick(key) => {
                let (taken, started) = {
                    let mut table = self.lock(&key);
                    let Some((close, write)) = table.taken_elsewhere(key) else {
                        return;
                    };
                    (close, write.map(|w| self.start(w)))
                };
                taken.outlet.close(taken.code, taken.text);
                if let Some(started) = started {
                    self.carry(started, None);
                }
            }
            Signal::End(key, code) => {
                self.end_here(key, code).await;
            }
            Signal::Untie(owner, other) => self.contacts.remove(&(owner, other)),
            Signal::Presence {
                key, online, to, ..
            } => {
                self.presence_here(key, online, &to);
                if !online {
                    // The key is free: a session waiting here may take it.
                    self.claim_waiting(&[key]).await;
                }
            }
            Signal::Room(id) => self.rooms.forget(&id),
            Signal::Resync => {
                // Signals were missed: a room record cached here may be one another node
                // changed meanwhile.
                self.rooms.forget_all();
                let mut woken = Vec::new();
                self.each_shard(|table| woken.extend(table.resync()));
                for peer in woken {
                    peer.wake();
                }
            }
        }
    }

    /// Tries to make the waiting sessions of these keys (or, with an empty list, of every key
    /// waiting here) active: their holder left or died. Run every second by the server.
    pub(crate) async fn claim_waiting(self: &Arc<Self>, keys: &[PublicKey]) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let mut waiting: Vec<PublicKey> = Vec::new();
        self.each_shard(|table| table.waiting(keys, &mut waiting));
        for key in waiting {
            if let Ok(Claimed::Here) = cluster.claim(&key, false).await {
                let peer = self.lock(&key).claimed_waiting(&key);
                if let Some(peer) = peer {
                    peer.wake();
                }
            }
        }
    }
}
