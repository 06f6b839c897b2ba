//! Delivery from the store to the key's active session, by cursor, in batches.

use std::io;

use bytes::Bytes;
use flexim_protocol::datum::{DatumKind, Status};
use flexim_protocol::status;
use futures_util::Sink;

use super::{End, Flow, Session};
use crate::frames::Id;
use crate::store::Stored;
use crate::table::{GoLive, Held, SessionId, Unacked};
use flexim_protocol::PublicKey;

/// How long a session waits before looking at the store again after a failed read.
const STORE_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

/// What one delivery from the store wrote.
#[derive(Default)]
struct Delivered {
    /// Message datums.
    messages: usize,
    /// Receipts kept for this key while it was away (Status datums).
    receipts: usize,
    /// Consent notices kept for it (Request and Connection datums, docs/PROTOCOL.md §14).
    notices: usize,
}

impl Delivered {
    /// "delivered N stored messages", and the receipts apart when there were any.
    fn text(&self) -> String {
        let mut text = format!("delivered {} stored messages", self.messages);
        if self.receipts > 0 {
            let s = if self.receipts == 1 { "" } else { "s" };
            text += &format!(" and {} stored receipt{s}", self.receipts);
        }
        if self.notices > 0 {
            let s = if self.notices == 1 { "" } else { "s" };
            text += &format!(" and {} stored notice{s}", self.notices);
        }
        text
    }
}

impl<Si: Sink<Bytes, Error = io::Error> + Unpin> Session<Si> {
    /// Writes what the store holds for this session's key that it has not been given yet, in
    /// batches. Entries with an id stay stored until the client acknowledges them; the others
    /// leave once written and flushed. When a look finds nothing new and no store write for
    /// the key was decided since it began, the session goes live (new messages come straight
    /// to it from then on, behind everything it was given from the store). With
    /// `always_report` (OFFLINES, which asks), a Status answers even when nothing waited.
    pub(super) async fn deliver_stored(&mut self, always_report: bool) -> Flow {
        let Some((key, id)) = self.authed() else {
            return Flow::Continue;
        };
        // Messages go to the key's active session only; another one would take them from it.
        let Some(mut since) = self.relay.catch_up(key, id) else {
            if always_report {
                let text = "delivered 0 stored messages: another session of this key is the \
                    active one; send GHOST to take over";
                return self.reply(Status::new(status::OK, text)).await;
            }
            return Flow::Continue;
        };
        let mut delivered = Delivered::default();
        loop {
            let batch = match self.relay.peek_offline(key, self.cursor).await {
                Ok(b) => b,
                Err(e) => return self.store_failed(e, &delivered, always_report).await,
            };
            if batch.is_empty() {
                match self.relay.go_live(key, id, since) {
                    // Written and ended since the look began: look again.
                    GoLive::Again(mark) => {
                        since = mark;
                        continue;
                    }
                    // Live; or a running write's end wakes this session to look again; or it
                    // is closing.
                    GoLive::Live | GoLive::Wait | GoLive::Stop => break,
                }
            }
            // A session closed or taken over while it read must not write what it read.
            if self.relay.catch_up(key, id).is_none() {
                break;
            }
            if let Flow::Stop(end) = self.write_batch(key, id, batch, &mut delivered).await {
                return Flow::Stop(end);
            }
        }
        let text = delivered.text();
        if always_report {
            return self.reply(Status::new(status::OK, text)).await;
        }
        if delivered.messages + delivered.receipts + delivered.notices > 0 {
            return self
                .notice(Status::new(status::DELIVERED_STORED, text))
                .await;
        }
        Flow::Continue
    }

    /// At login, before the welcome: a look at the store that finds nothing for the key puts
    /// the session live at once, so that a message sent to a user who just logged in with
    /// nothing waiting is relayed rather than stored. Returns whether it went live (else the
    /// welcome delivers what is stored, see [`Session::deliver_stored`]).
    pub(super) async fn first_look(&mut self, key: PublicKey, id: SessionId) -> bool {
        let Some(mark) = self.relay.catch_up(key, id) else {
            return false;
        };
        match self.relay.has_stored(key).await {
            Ok(false) => self.relay.go_live(key, id, mark) == GoLive::Live,
            _ => false,
        }
    }

    /// Writes one batch from the store and notes it: the entries with an id are tracked until
    /// acknowledged, the others removed.
    async fn write_batch(
        &mut self,
        key: PublicKey,
        id: SessionId,
        batch: Vec<Stored>,
        delivered: &mut Delivered,
    ) -> Flow {
        let mut plain = Vec::new();
        let mut tracked = Vec::new();
        for stored in batch {
            self.cursor = stored.seq + 1;
            let entry = stored.entry;
            match entry.frame.first().copied() {
                Some(k) if k == DatumKind::Status as u8 => delivered.receipts += 1,
                Some(k) if k == DatumKind::Message as u8 => delivered.messages += 1,
                _ => delivered.notices += 1,
            }
            if let Err(e) = self.out.feed(entry.frame).await {
                return Flow::Stop(End::Io(e));
            }
            match entry.id {
                Some(i) => tracked.push(Unacked {
                    id: Id::from(i),
                    sender: entry.sender,
                    held: Held::Stored(stored.seq),
                }),
                None => plain.push(stored.seq),
            }
        }
        if let Err(e) = self.out.flush().await {
            return Flow::Stop(End::Io(e));
        }
        self.relay.track(key, id, tracked);
        if !plain.is_empty()
            && let Err(e) = self.relay.remove_offline(key, plain).await
        {
            // They were delivered; they come again at the next login, and clients drop
            // repeats. Nothing to tell the client now (it did not ask).
            tracing::error!(error = %e, "could not remove delivered messages");
        }
        Flow::Continue
    }

    /// The store could not be read: look again soon, and say so if the client asked.
    async fn store_failed(
        &mut self,
        e: crate::store::StoreError,
        delivered: &Delivered,
        always_report: bool,
    ) -> Flow {
        tracing::error!(error = %e, "could not read stored messages; retrying soon");
        // The store may be back in a moment (a restarting Redis): look again then, rather
        // than leave the messages until the next login.
        if let Some(wake) = self.mailbox.as_ref().map(|m| m.waker()) {
            tokio::spawn(async move {
                tokio::time::sleep(STORE_RETRY).await;
                wake();
            });
        }
        if !always_report {
            // Unasked, so no Status: only answers may be errors.
            return Flow::Continue;
        }
        let text = format!(
            "storage failure after {} stored messages; they will come when the store is back",
            delivered.messages
        );
        self.reply(Status::new(status::INTERNAL, text)).await
    }
}
