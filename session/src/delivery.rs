//! Where a sent message stands, as the server's answers and receipts tell it.

use flexim_protocol::Status;
use flexim_protocol::status;
use serde::{Deserialize, Serialize};

use crate::text::refusal;

/// What became of an outgoing message.
///
/// The states are ordered: sending, then relayed, then stored, then delivered; failed ends a
/// message that was never confirmed, and expired a stored one its recipient never collected.
/// Answers and receipts can arrive late or more than once (a message sent again after a
/// reconnect is answered again), so a state only ever moves forward ([`Delivery::can_become`]):
/// a late `3` RELAYED never turns a stored or delivered message back into a relayed one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// Not answered yet: sent, waiting for the connection, or sent again after a reconnect.
    Sending,
    /// The recipient was online and the server handed the message to its connection, but the
    /// recipient has not acknowledged it yet (`3` RELAYED).
    Relayed,
    /// The server committed the message to durable storage (`2` STORED, or `8` STORED_LATER
    /// after a relay the recipient never acknowledged); it is delivered at the next login.
    Stored,
    /// The recipient acknowledged the message (`7` DELIVERED).
    Delivered,
    /// The message was stored, but its recipient did not log in before the server's retention
    /// ran out, and the server deleted it unread (`9` EXPIRED).
    Expired,
    /// The application lost the copy it keeps to send again (a browser's storage was full or
    /// was written by an older version): the message may or may not have arrived.
    Unconfirmed,
    /// The server refused the message (an error answer, or `-24` NOT_KEPT after it was
    /// relayed), or it could not be sealed; the text says why.
    Failed(String),
}

impl Delivery {
    /// What a Status about a message (the answer to it, or a receipt naming it) says about
    /// it: `2` and `8` stored, `3` relayed, `7` delivered, `9` expired, an error failed (with
    /// the refusal in words), and any other success code relayed, since the protocol says an
    /// unknown positive code means success but only the codes above confirm a message.
    pub fn from_status(s: &Status) -> Delivery {
        match s.status {
            status::STORED | status::STORED_LATER => Delivery::Stored,
            status::DELIVERED => Delivery::Delivered,
            status::EXPIRED => Delivery::Expired,
            code if status::is_error(code) => Delivery::Failed(refusal(s)),
            _ => Delivery::Relayed,
        }
    }

    /// The short text shown next to an outgoing message.
    pub fn label(&self) -> String {
        match self {
            Delivery::Sending => "sending…".into(),
            Delivery::Relayed => "sent".into(),
            Delivery::Stored => "stored".into(),
            Delivery::Delivered => "delivered ✓".into(),
            Delivery::Expired => "expired unread".into(),
            Delivery::Unconfirmed => "unconfirmed (connection lost)".into(),
            Delivery::Failed(reason) => format!("failed: {reason}"),
        }
    }

    /// The state's name, for a page's `data-state` attribute (and its styles and tests).
    pub fn state(&self) -> &'static str {
        match self {
            Delivery::Sending => "sending",
            Delivery::Relayed => "relayed",
            Delivery::Stored => "stored",
            Delivery::Delivered => "delivered",
            Delivery::Expired => "expired",
            Delivery::Unconfirmed => "unconfirmed",
            Delivery::Failed(_) => "failed",
        }
    }

    /// How far along the message is: 0 unanswered, 1 relayed, 2 stored, 3 at its end
    /// (delivered, expired or failed).
    fn rank(&self) -> u8 {
        match self {
            Delivery::Sending | Delivery::Unconfirmed => 0,
            Delivery::Relayed => 1,
            Delivery::Stored => 2,
            Delivery::Delivered | Delivery::Expired | Delivery::Failed(_) => 3,
        }
    }

    /// Whether a message in this state may move to `next`: only forward. Delivered, expired
    /// and failed are final, and a refusal can only concern a message that was not yet
    /// confirmed (stored or delivered).
    pub fn can_become(&self, next: &Delivery) -> bool {
        match (self, next) {
            (Delivery::Delivered | Delivery::Expired | Delivery::Failed(_), _) => false,
            (_, Delivery::Failed(_)) => self.rank() < 2,
            _ => next.rank() > self.rank(),
        }
    }
}

/// Whether a Status about a message settles it for good, so that it must not be sent again:
/// `2` STORED, `7` DELIVERED, `8` STORED_LATER, `9` EXPIRED, or any error.
///
/// `9` is final because sending a message again that expired unread would only store it again
/// for a recipient who does not log in; its sender is told instead (docs/PROTOCOL.md §8.2).
pub fn is_final(code: i8) -> bool {
    matches!(
        code,
        status::STORED | status::DELIVERED | status::STORED_LATER | status::EXPIRED
    ) || status::is_error(code)
}
