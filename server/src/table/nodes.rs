//! The table's part in several nodes on one Redis: keys claimed for this node, taken over by
//! another, waiting for one, and frames and wake-ups that come from the others.

use bytes::Bytes;
use flexim_protocol::PublicKey;
use flexim_protocol::status;

use super::{Close, Outlet, SessionId, Table, Why, Write};

impl<O: Outlet> Table<O> {
    /// The cluster gave `key` to this node for session `id`: it is the active session, if it
    /// is still the primary. Returns whether it is.
    pub(crate) fn claimed(&mut self, key: PublicKey, id: SessionId) -> bool {
        match self.keys.get_mut(&key) {
            Some(k) if k.primary.id == id => {
                k.elsewhere = false;
                true
            }
            _ => false,
        }
    }

    /// A frame from another node for `key`'s active session (a receipt), best effort.
    pub(crate) fn offer_active(&self, key: &PublicKey, frame: Bytes) {
        if let Some(k) = self.keys.get(key)
            && !k.elsewhere
        {
            let _ = k.primary.outlet.offer(frame);
        }
    }

    /// Another node took `key` over (GHOST there): the sessions here wait again, the primary
    /// is closed, and what it held goes to the store.
    pub(crate) fn taken_elsewhere(&mut self, key: PublicKey) -> Option<(Close<O>, Option<Write>)> {
        let k = self.keys.get_mut(&key)?;
        k.elsewhere = true;
        k.closing = true;
        let close = Close {
            outlet: k.primary.outlet.clone(),
            code: status::TAKEN_OVER,
            text: "a newer session of this key took over (GHOST) on another node",
        };
        Some((close, self.demote(key, Why::TakenElsewhere)))
    }

    /// Appends the keys here whose sessions wait for another node (of `among`, or all when it
    /// is empty) and are not closing.
    pub(crate) fn waiting(&self, among: &[PublicKey], out: &mut Vec<PublicKey>) {
        out.extend(
            self.keys
                .iter()
                .filter(|(key, k)| {
                    k.elsewhere && !k.closing && (among.is_empty() || among.contains(key))
                })
                .map(|(key, _)| *key),
        );
    }

    /// The cluster gave `key` to this node for its waiting sessions: the primary is active now
    /// and catches up.
    pub(crate) fn claimed_waiting(&mut self, key: &PublicKey) -> Option<O> {
        let k = self.keys.get_mut(key)?;
        k.elsewhere = false;
        Some(k.primary.outlet.clone())
    }

    /// Every active primary here, to look at the store again (signals may have been missed).
    pub(crate) fn resync(&self) -> Vec<O> {
        self.keys
            .values()
            .filter(|k| !k.elsewhere)
            .map(|k| k.primary.outlet.clone())
            .collect()
    }
}
