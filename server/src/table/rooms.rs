//! The table's part in rooms (docs/PROTOCOL.md §16): where a room's notice goes. The copies
//! of a room's messages are routed as any message ([`Table::route_as`]).

use bytes::Bytes;
use flexim_protocol::PublicKey;

use super::{Admit, Entry, Outlet, Table, Then, Write};

impl<O: Outlet> Table<O> {
    /// A write keeping a room's notice for `to` in the store, outside every bound
    /// ([`Admit::Room`]).
    pub(crate) fn store_room_notice(&mut self, to: PublicKey, frame: Bytes) -> Write {
        let entry = Entry {
            sender: to,
            id: None,
            frame,
            at: 0,
        };
        self.write(to, vec![entry], Admit::Room, Then::Nothing)
    }

    /// Where a room's notice for `to` goes: into its active session's queue if it is live and
    /// has room, else into the store, also when `to` is held by another node (whose session reads it
    /// from the shared queue once woken): a notice carries a Welcome, or a change of members,
    /// and must come before the room's next message.
    pub(crate) fn room_notice(&mut self, to: PublicKey, frame: Bytes) -> Option<Write> {
        match self.keys.get(&to) {
            // Only a live session is written to at once: one catching up from the store gets
            // the notice after the room's messages stored before it.
            Some(k) if k.live && !k.elsewhere && k.primary.outlet.offer(frame.clone()).is_ok() => {
                None
            }
            _ => Some(self.store_room_notice(to, frame)),
        }
    }
}
