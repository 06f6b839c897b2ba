//! The table's part in acknowledgements: an ACK forgets what the primary held under the ids it
//! names and gathers the senders' receipts, and the stored messages a session was given are
//! tracked until it acknowledges them. It is apart from `mod.rs` because matching an ACK
//! against what is held is the longest single decision the table makes.

use flexim_protocol::PublicKey;

use super::{Acked, Held, Outlet, Receipts, SessionId, Table, Unacked, add_receipt};
use crate::frames::Id;

impl<O: Outlet> Table<O> {
    /// ACK from session `id` of `key`: forgets the messages it held with these ids (all copies
    /// of each). Only the primary's acknowledgements count: the others are given nothing.
    pub(crate) fn ack(&mut self, key: PublicKey, id: SessionId, ids: &[&str]) -> Acked {
        let mut acked = Acked {
            matched: 0,
            remove: Vec::new(),
            receipts: None,
        };
        let Some(k) = self.keys.get_mut(&key) else {
            return acked;
        };
        if k.primary.id != id || k.unacked.is_empty() {
            return acked;
        }
        // Each id the ACK names by its hash, sorted to be found by bisection, and whether it
        // matched: an id counts once however many copies of its message the session held.
        let mut named: Vec<(u64, &[u8], bool)> = ids
            .iter()
            .map(|i| (crate::frames::hash_id(i.as_bytes()), i.as_bytes(), false))
            .collect();
        named.sort_unstable();
        named.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
        // A bit per id hash, so that most entries the ACK does not name cost one test.
        let mut filter = [0u64; 4];
        for n in &named {
            filter[(n.0 >> 6 & 3) as usize] |= 1 << (n.0 & 63);
        }
        let find = |named: &[(u64, &[u8], bool)], id: &Id| {
            let h = id.hash();
            if filter[(h >> 6 & 3) as usize] & (1 << (h & 63)) == 0 {
                return None;
            }
            let from = named.partition_point(|n| n.0 < h);
            named[from..]
                .iter()
                .take_while(|n| n.0 == h)
                .position(|n| n.1 == id.as_bytes())
                .map(|i| from + i)
        };
        let mut senders: Vec<(PublicKey, Vec<Id>)> = Vec::new();
        let (mut freed, mut freed_bytes) = (0, 0);
        let mut take = |u: &Unacked, at: usize, named: &mut [(u64, &[u8], bool)]| {
            match u.held {
                Held::Stored(seq) => acked.remove.push(seq),
                Held::Memory(ref frame) => {
                    freed += 1;
                    freed_bytes += frame.len();
                }
            }
            if !named[at].2 {
                named[at].2 = true;
                acked.matched += 1;
                add_receipt(&mut senders, u.sender, u.id.clone(), ids.len());
            }
        };
        // Usually the ACK names the oldest messages the session holds and nothing after them:
        // those are taken off the front, and the rest stays where it is.
        let front = k
            .unacked
            .iter()
            .take_while(|u| find(&named, &u.id).is_some())
            .count();
        let beyond = k
            .unacked
            .iter()
            .skip(front)
            .any(|u| find(&named, &u.id).is_some());
        if beyond {
            k.unacked.retain(|u| match find(&named, &u.id) {
                Some(at) => {
                    take(u, at, &mut named);
                    false
                }
                None => true,
            });
        } else {
            for u in k.unacked.drain(..front) {
                let at = find(&named, &u.id).expect("found above");
                take(&u, at, &mut named);
            }
        }
        k.in_memory -= freed;
        k.in_memory_bytes -= freed_bytes;
        if !senders.is_empty() {
            acked.receipts = Some(Receipts {
                about: key,
                why: None,
                delivered: Some(k.delivered.clone()),
                senders,
            });
        }
        acked
    }

    /// Session `id` of `key` was given these stored messages; they stay stored until
    /// acknowledged. Ignored unless it is the primary (only the primary's ACKs count).
    pub(crate) fn track(&mut self, key: PublicKey, id: SessionId, delivered: Vec<Unacked>) {
        if let Some(k) = self.keys.get_mut(&key)
            && k.primary.id == id
        {
            k.unacked.extend(delivered);
        }
    }
}
