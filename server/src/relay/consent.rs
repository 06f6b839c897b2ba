//! Consent (docs/PROTOCOL.md §14): who accepted whom, the requests box, and what the relay
//! tells each side. The store keeps the ties and applies their rule ([`crate::store::ties`]);
//! this layer caches acceptances, turns admissions into answers and sends the notices.

use std::sync::Arc;

use flexim_protocol::conversation::pair_id;
use flexim_protocol::datum::{Connection, Request, Status};
use flexim_protocol::{PublicKey, status};

use crate::clock;
use crate::cluster::Signal;
use crate::frames;
use crate::relay::Relay;
use crate::relay::known::ShardedSet;
use crate::store::{Admission, RequestLimits, Tie, TieChange};

/// Most acceptances cached, all shards together. A shard that outgrows its part is emptied
/// (it fills again from the store as messages come), so the cache costs at most about 30 MB
/// however many users write to each other.
pub(crate) const CACHED: usize = 1 << 18;

/// Acceptances known to the relay: (owner, other) for each `owner` that accepted `other`.
/// Positive answers only, and dropped when the owner declines or blocks (on every node:
/// [`Signal::Untie`]), so that a cached acceptance is never one the store no longer has.
pub(crate) type Contacts = ShardedSet<(PublicKey, PublicKey)>;

/// Where a sender stands with a recipient, once admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admitted {
    /// The recipient accepted the sender.
    Contact,
    /// Into the recipient's requests box; `first` when the request is new.
    Request {
        /// Whether this opened the request.
        first: bool,
    },
}

impl Relay {
    /// The requests box's bounds, from the limits.
    fn request_limits(&self) -> RequestLimits {
        RequestLimits {
            messages: self.live().request_messages,
            pending: self.live().max_requests,
        }
    }

    /// Admits a Message (`message`) or a Request from `sender` to `to`: relayed if `to`
    /// accepted `sender`, into `to`'s requests box if it fits, else refused with the Status
    /// to answer.
    pub(crate) async fn admit(
        &self,
        sender: PublicKey,
        to: PublicKey,
        message: bool,
    ) -> Result<Admitted, Status> {
        if sender == to || self.contacts.contains(&(to, sender)) {
            return Ok(Admitted::Contact);
        }
        let limits = self.request_limits();
        let change = TieChange::Admit { limits, message };
        let (before, after) = self.store.tie(to, sender, change).await.map_err(|e| {
            tracing::error!(error = %e, "could not read a tie");
            Status::new(status::INTERNAL, "storage failure: nothing was sent")
        })?;
        let refused = |text: String| Err(Status::new(status::NOT_ACCEPTED, text));
        match Admission::of(before, after) {
            Admission::Contact => {
                self.contacts.insert((to, sender));
                Ok(Admitted::Contact)
            }
            Admission::Request { first, .. } => Ok(Admitted::Request { first }),
            // A Request (or what stands for one) while the request is open already: nothing to
            // count, and nothing refused.
            Admission::BoxFull { .. } if !message => Ok(Admitted::Request { first: false }),
            Admission::BoxFull { messages } => refused(format!(
                "{to} has not accepted you yet, and {messages} of your messages are waiting \
                 in their requests box (at most {}); nothing was sent",
                limits.messages
            )),
            Admission::TooManyRequests => refused(format!(
                "{to} has not accepted you, and their requests box is full; nothing was sent"
            )),
            Admission::Declined => refused(format!(
                "{to} has not accepted your request; nothing was sent"
            )),
            Admission::Blocked => Err(Status::new(
                status::BLOCKED,
                format!("{to} has blocked you; nothing was sent"),
            )),
        }
    }

    /// `owner` accepts `other`: it wrote to it, asked to talk to it, or acknowledged its
    /// request. Returns the tie before (`None` also when it was known already).
    pub(crate) async fn accept(
        &self,
        owner: PublicKey,
        other: PublicKey,
    ) -> Result<Option<Tie>, Status> {
        if owner == other || self.contacts.contains(&(owner, other)) {
            return Ok(Some(Tie::Accepted));
        }
        let (before, _) = self
            .store
            .tie(owner, other, TieChange::Accept)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "could not write a tie");
                Status::new(status::INTERNAL, "storage failure: nothing was sent")
            })?;
        self.contacts.insert((owner, other));
        Ok(before)
    }

    /// `owner` declines or blocks `other`, or clears what it decided (UNBLOCK): the
    /// acceptance is forgotten here and on every node. Returns the tie before and after.
    pub(crate) async fn untie(
        &self,
        owner: PublicKey,
        other: PublicKey,
        change: TieChange,
    ) -> Result<(Option<Tie>, Option<Tie>), Status> {
        let ties = self.store.tie(owner, other, change).await.map_err(|e| {
            tracing::error!(error = %e, "could not write a tie");
            Status::new(status::INTERNAL, "storage failure: nothing changed")
        })?;
        if ties.1 != Some(Tie::Accepted) {
            self.contacts.remove(&(owner, other));
            if let Some(cluster) = &self.cluster {
                cluster.send(None, Signal::Untie(owner, other));
            }
        }
        Ok(ties)
    }

    /// Whether `owner` accepted `other` (or is `other`): what lets `other` see `owner`'s
    /// presence, and what makes a conversation mutual. A failed read says no.
    pub(crate) async fn has_accepted(&self, owner: PublicKey, other: PublicKey) -> bool {
        owner == other
            || self.contacts.contains(&(owner, other))
            || matches!(
                self.store.tie_of(owner, other).await,
                Ok(Some(Tie::Accepted))
            )
    }

    /// The users `key` accepted: the ones told of its presence. A failed read tells nobody
    /// (presence is best effort).
    pub(crate) async fn contacts_of(&self, key: PublicKey) -> Vec<PublicKey> {
        match self.store.ties(key).await {
            Ok(ties) => ties
                .into_iter()
                .filter(|(_, t)| *t == Tie::Accepted)
                .map(|(k, _)| k)
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "could not read whom to tell of a presence");
                Vec::new()
            }
        }
    }

    /// Tells `to` that `from` asks to talk: a Request datum ahead of `from`'s first message.
    /// It goes the way receipts go (to `to`'s active session now, or into the store for its
    /// next login, outside the queue's bounds: it is small, and `--max-requests` bounds how
    /// many a user can be sent), so that it takes no room from messages. It returns once the
    /// notice is in `to`'s session or durable, so the answer that follows (and the message
    /// that opened the request) comes after it.
    pub(crate) async fn request_notice(self: &Arc<Self>, from: PublicKey, to: PublicKey) {
        let notice = Request {
            to: vec![to.to_hex()],
            from: from.to_hex(),
            options: Vec::new(),
            id: Some(pair_id(&from, &to)),
            ..Default::default()
        };
        // The answer to the Request (or to the message that opened it) follows this, so the
        // notice must be durable first: otherwise a crash between the two loses the request
        // while its sender was told it was made.
        if let Err(e) = self.durable_notice(to, frames::frame(notice)).await {
            tracing::warn!(error = %e, "a request's notice was not kept for its recipient");
        }
    }

    /// The Connection datum of the conversation of `a` and `b`, naming in `pending` those
    /// of the two who have not accepted the other.
    pub(crate) fn connection(
        &self,
        a: PublicKey,
        b: PublicKey,
        pending: Vec<PublicKey>,
    ) -> Connection {
        Connection {
            id: pair_id(&a, &b),
            users: vec![a.to_hex(), b.to_hex()],
            last_active: clock::now(),
            pending: pending.iter().map(PublicKey::to_hex).collect(),
        }
    }

    /// Tells `to` that `who` accepted it: a Connection datum, kept in the store if `to` is
    /// offline (like a receipt).
    pub(crate) fn accepted_notice(self: &Arc<Self>, who: PublicKey, to: PublicKey) {
        let c = self.connection(to, who, Vec::new());
        self.receipt(to, frames::frame(c));
    }
}
