//! Receipts (`7`, `8`, `9`, `-24`) and the retention: one receipt per sender names all of
//! that sender's messages it is about (`Status.ids`), so an ACK of many messages costs one
//! frame per sender, not one per message.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use flexim_protocol::{PublicKey, status};

use super::Relay;
use crate::clock;
use crate::frames::{self, Id};
use crate::store::{Full, Placed, StoreError};
use crate::table::{ReceiptRoute, Receipts, Why};

impl Relay {
    /// Sends the receipts `code` (`7` or `8`) the table decided on, one frame per sender.
    pub(super) fn send_receipts(self: &Arc<Self>, code: i8, receipts: Receipts) {
        let about = receipts.about;
        let text: std::borrow::Cow<'_, str> = match receipts.why {
            None => match &receipts.delivered {
                Some(text) => text.as_ref().into(),
                None => format!("delivered to {about}").into(),
            },
            Some(Why::Offline) => format!("stored for {about}: delivered when they log in").into(),
            Some(Why::NextSession) => {
                format!("stored for {about}: their other session gets it now").into()
            }
            Some(Why::Ghost) => {
                format!("stored for {about}: their newer session (GHOST) gets it now").into()
            }
            Some(Why::SlowReader) => format!(
                "stored for {about}: they did not read fast enough; delivered when they reconnect"
            )
            .into(),
            Some(Why::TakenElsewhere) => {
                format!("stored for {about}: their session on another node gets it now").into()
            }
        };
        for (sender, ids) in receipts.senders {
            for frame in frames::receipts(code, &text, &ids) {
                self.receipt(sender, frame);
            }
        }
    }

    /// The held messages of `receipts` were written entry by entry (their senders are
    /// `senders`, in the entries' order, and `placed` says what became of each): each sender
    /// gets one `8` naming those the store kept and one `-24` naming those it found no room
    /// for. A sender's messages are in its list in the order of the entries, so its n-th
    /// entry is its n-th id.
    pub(super) fn kept_or_not(
        self: &Arc<Self>,
        receipts: Receipts,
        senders: &[PublicKey],
        placed: Vec<Placed>,
    ) {
        // Each sender's verdicts, in the order of its entries.
        let mut verdicts: HashMap<PublicKey, VecDeque<Placed>> = HashMap::new();
        for (sender, p) in senders.iter().zip(placed) {
            verdicts.entry(*sender).or_default().push_back(p);
        }
        let about = receipts.about;
        let mut kept = Vec::with_capacity(receipts.senders.len());
        for (sender, ids) in receipts.senders {
            let mut mine = verdicts.remove(&sender).unwrap_or_default();
            let (mut stored, mut lost, mut why) = (Vec::new(), Vec::new(), None);
            for id in ids {
                match mine.pop_front() {
                    Some(Ok(_)) => stored.push(id),
                    Some(Err(full)) => {
                        why.get_or_insert(full);
                        lost.push(id);
                    }
                    None => tracing::error!("a held message has no verdict from the store"),
                }
            }
            if let Some(full) = why {
                let text = not_kept(about, full);
                for frame in frames::receipts(status::NOT_KEPT, &text, &lost) {
                    self.receipt(sender, frame);
                }
            }
            if !stored.is_empty() {
                kept.push((sender, stored));
            }
        }
        let receipts = Receipts {
            senders: kept,
            ..receipts
        };
        self.send_receipts(status::STORED_LATER, receipts);
    }

    /// Sends a receipt to `to`'s primary session, or keeps it in the store for its next login
    /// when it is offline or not reading.
    pub(super) fn receipt(self: &Arc<Self>, to: PublicKey, frame: Bytes) {
        let started = {
            let mut table = self.lock(&to);
            match table.receipt(to, frame, self.cluster.is_some()) {
                ReceiptRoute::Sent => return,
                ReceiptRoute::AskCluster(frame) => {
                    drop(table);
                    self.receipt_elsewhere(to, frame);
                    return;
                }
                ReceiptRoute::Store(write) => self.start(write),
            }
        };
        self.carry(started, None);
    }

    /// Sends a notice that must not be lost (a Request's notice, §14.3) the way a receipt
    /// goes, but returns only once it is in `to`'s session or durable in the store, so that
    /// the answer that follows cannot overtake it: a server killed after the answer went out
    /// still delivers the notice at `to`'s next login.
    pub(super) async fn durable_notice(
        self: &Arc<Self>,
        to: PublicKey,
        frame: Bytes,
    ) -> Result<(), StoreError> {
        // The write starts under the table's lock, as every write does, so that its place in
        // `to`'s queue is the order the table decided.
        let asked = {
            let mut table = self.lock(&to);
            match table.receipt(to, frame, self.cluster.is_some()) {
                ReceiptRoute::Sent => return Ok(()),
                ReceiptRoute::AskCluster(frame) => Err(frame),
                ReceiptRoute::Store(write) => Ok(self.start(write)),
            }
        };
        let started = match asked {
            Ok(started) => started,
            Err(frame) => {
                if self.sent_elsewhere(to, &frame).await {
                    return Ok(());
                }
                let mut table = self.lock(&to);
                let write = table.store_receipt(to, frame);
                self.start(write)
            }
        };
        self.finish_whole(started).await
    }

    /// Keeps a receipt in the store for `to`'s next login (or its session catching up).
    pub(super) fn store_receipt(self: &Arc<Self>, to: PublicKey, frame: Bytes) {
        let started = {
            let mut table = self.lock(&to);
            let write = table.store_receipt(to, frame);
            self.start(write)
        };
        self.carry(started, None);
    }

    /// Deletes stored messages older than the retention, telling the senders of those with an
    /// id (one `9` per sender and recipient, naming the ids) and each recipient how many it
    /// lost. Returns how many were deleted.
    pub(crate) async fn expire(self: &Arc<Self>, retention: std::time::Duration) -> usize {
        let before = clock::now().saturating_sub(retention.as_secs() as i64);
        let gone = match self.store.expire(before).await {
            Ok(gone) => gone,
            Err(e) => {
                tracing::error!(error = %e, "could not delete expired messages");
                return 0;
            }
        };
        if gone.is_empty() {
            return 0;
        }
        let age = describe_duration(retention);
        let mut per_recipient: HashMap<PublicKey, usize> = HashMap::new();
        let mut per_sender: HashMap<(PublicKey, PublicKey), Vec<Id>> = HashMap::new();
        for e in &gone {
            *per_recipient.entry(e.to).or_default() += 1;
            if let Some(id) = &e.id {
                per_sender
                    .entry((e.sender, e.to))
                    .or_default()
                    .push(Id::from(id.clone()));
            }
        }
        for ((sender, to), ids) in per_sender {
            let text = format!("expired unread after {age}: {to} did not log in");
            for frame in frames::receipts(status::EXPIRED, &text, &ids) {
                self.receipt(sender, frame);
            }
        }
        for (to, n) in per_recipient {
            let text = format!(
                "{n} stored message{} expired unread after {age}",
                if n == 1 { "" } else { "s" }
            );
            self.receipt(to, frames::status_frame(status::EXPIRED, text));
        }
        tracing::info!(messages = gone.len(), retention = %age, "deleted expired stored messages");
        gone.len()
    }
}

/// The text of a `-24` about messages for `about` that the store had no room for.
fn not_kept(about: PublicKey, full: Full) -> String {
    let room = match full {
        Full::Share { messages, bytes } => format!(
            "you already have {messages} messages ({bytes} bytes) waiting for them, as many as \
             one sender may"
        ),
        Full::Queue { messages, bytes } => {
            format!("their queue is full ({messages} messages, {bytes} bytes)")
        }
        Full::Store { .. } => "the server's store is full".to_string(),
    };
    format!(
        "not kept for {about}: their session ended before they acknowledged it, and {room}; \
         it was not stored"
    )
}

/// A retention in the largest whole unit: "30 days", "12 hours", "90 seconds".
pub(crate) fn describe_duration(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = if secs >= 86_400 && secs.is_multiple_of(86_400) {
        (secs / 86_400, "day")
    } else if secs >= 3_600 && secs.is_multiple_of(3_600) {
        (secs / 3_600, "hour")
    } else if secs >= 60 && secs.is_multiple_of(60) {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}
