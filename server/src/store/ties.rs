//! Consent as the store keeps it (docs/PROTOCOL.md §14): what each user decided about each
//! other user, one [`Tie`] per (owner, other), and the one rule ([`decide`]) every engine
//! applies, inside its writer (embedded) or its script (Redis), so that it holds however many
//! sessions and nodes write at once.

use serde::{Deserialize, Serialize};

/// What `owner` decided about `other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tie {
    /// `other` wrote first and `owner` has not answered: `messages` of its messages went into
    /// `owner`'s requests box (the Request itself counts none).
    Pending {
        /// Messages admitted into the box so far.
        messages: u32,
    },
    /// `owner` accepted `other` (or wrote to it first): `other`'s messages are relayed, and
    /// `owner`'s presence is shown to it.
    Accepted,
    /// `owner` declined `other`'s request: its messages are refused (`-25`, as if the box were
    /// full, so a declined stranger learns nothing more than a waiting one).
    Declined,
    /// `owner` blocked `other`: its messages are refused (`-26`).
    Blocked,
}

impl Tie {
    /// The tie as engines keep it: `p<messages>`, `a`, `d` or `b`.
    pub fn encode(&self) -> String {
        match self {
            Tie::Pending { messages } => format!("p{messages}"),
            Tie::Accepted => "a".into(),
            Tie::Declined => "d".into(),
            Tie::Blocked => "b".into(),
        }
    }

    /// The tie [`Tie::encode`] wrote, or `None` for anything else (damaged data).
    pub fn decode(text: &str) -> Option<Tie> {
        match text {
            "a" => Some(Tie::Accepted),
            "d" => Some(Tie::Declined),
            "b" => Some(Tie::Blocked),
            _ => Some(Tie::Pending {
                messages: text.strip_prefix('p')?.parse().ok()?,
            }),
        }
    }
}

/// A tie before and after a change ([`crate::store::Store::tie`]).
pub type TieChanged = (Option<Tie>, Option<Tie>);

/// The bounds of a requests box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Most messages of one stranger in the box (`--request-messages`).
    pub messages: u32,
    /// Most strangers waiting in the box at once (`--max-requests`).
    pub pending: u32,
}

/// A change to the tie of (owner, other).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TieChange {
    /// `owner` accepts `other`: it acknowledged its request, or wrote to it.
    Accept,
    /// `owner` declines `other`'s request.
    Decline,
    /// `owner` blocks `other`.
    Block,
    /// `owner` forgets what it decided (UNBLOCK): `other` is a stranger again.
    Clear,
    /// A Request or Message from `other` arrives for `owner`: a stranger's goes into the box
    /// if it fits `limits`; `message` says whether it is a Message (counted) or a Request.
    Admit {
        /// The box's bounds.
        limits: RequestLimits,
        /// True for a Message, false for a Request (which counts no message).
        message: bool,
    },
}

/// The tie after `change`, given the tie before it and how many strangers wait in `owner`'s
/// box (`pending`, the ties that are [`Tie::Pending`]). `None` means no tie.
///
/// An admission that does not fit leaves the tie as it was; the caller tells what happened
/// from the two ties ([`Admission::of`]).
pub fn decide(before: Option<Tie>, change: TieChange, pending: u32) -> Option<Tie> {
    match change {
        TieChange::Accept => Some(Tie::Accepted),
        // Declining a contact or a blocked user changes nothing: the request is what is
        // declined, and only a stranger has one.
        TieChange::Decline => match before {
            Some(Tie::Pending { .. }) | None => Some(Tie::Declined),
            other => other,
        },
        TieChange::Block => Some(Tie::Blocked),
        TieChange::Clear => None,
        TieChange::Admit { limits, message } => match before {
            None if pending >= limits.pending => None,
            None => Some(Tie::Pending {
                messages: u32::from(message),
            }),
            Some(Tie::Pending { messages }) if message && messages >= limits.messages => before,
            Some(Tie::Pending { messages }) => Some(Tie::Pending {
                messages: messages + u32::from(message),
            }),
            other => other,
        },
    }
}

/// What an admission ([`TieChange::Admit`]) found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The owner accepted the sender: relay as usual.
    Contact,
    /// Into the requests box; `first` when this opened the request (the owner is told of it).
    Request {
        /// Whether the request is new.
        first: bool,
        /// The sender's messages in the box now.
        messages: u32,
    },
    /// The sender's messages in the box reached the limit.
    BoxFull {
        /// Its messages in the box.
        messages: u32,
    },
    /// Too many strangers wait in the owner's box already.
    TooManyRequests,
    /// The owner declined the sender's request.
    Declined,
    /// The owner blocked the sender.
    Blocked,
}

impl Admission {
    /// What an admission found, from the ties before and after it.
    pub fn of(before: Option<Tie>, after: Option<Tie>) -> Admission {
        match (before, after) {
            (Some(Tie::Accepted), _) => Admission::Contact,
            (Some(Tie::Blocked), _) => Admission::Blocked,
            (Some(Tie::Declined), _) => Admission::Declined,
            (None, None) => Admission::TooManyRequests,
            (b, Some(Tie::Pending { messages })) if b != after => Admission::Request {
                first: b.is_none(),
                messages,
            },
            (_, Some(Tie::Pending { messages })) => Admission::BoxFull { messages },
            // `decide` never makes another tie from an admission.
            _ => Admission::Contact,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: RequestLimits = RequestLimits {
        messages: 2,
        pending: 1,
    };
    const MESSAGE: TieChange = TieChange::Admit {
        limits: LIMITS,
        message: true,
    };
    const REQUEST: TieChange = TieChange::Admit {
        limits: LIMITS,
        message: false,
    };

    fn admit(before: Option<Tie>, change: TieChange, pending: u32) -> (Option<Tie>, Admission) {
        let after = decide(before, change, pending);
        (after, Admission::of(before, after))
    }

    #[test]
    fn a_stranger_gets_the_box_up_to_its_limit() {
        let (t, a) = admit(None, MESSAGE, 0);
        assert_eq!(
            a,
            Admission::Request {
                first: true,
                messages: 1
            }
        );
        let (t, a) = admit(t, MESSAGE, 1);
        assert_eq!(
            a,
            Admission::Request {
                first: false,
                messages: 2
            }
        );
        let (t2, a) = admit(t, MESSAGE, 1);
        assert_eq!((t2, a), (t, Admission::BoxFull { messages: 2 }));
        // A Request counts no message, even in a full box.
        let (_, a) = admit(t, REQUEST, 1);
        assert_eq!(a, Admission::BoxFull { messages: 2 });
    }

    #[test]
    fn a_request_opens_the_box_without_a_message() {
        let (t, a) = admit(None, REQUEST, 0);
        assert_eq!(t, Some(Tie::Pending { messages: 0 }));
        assert_eq!(
            a,
            Admission::Request {
                first: true,
                messages: 0
            }
        );
    }

    #[test]
    fn a_full_box_refuses_new_strangers_only() {
        assert_eq!(admit(None, MESSAGE, 1), (None, Admission::TooManyRequests));
        let waiting = Some(Tie::Pending { messages: 0 });
        assert!(matches!(
            admit(waiting, MESSAGE, 1).1,
            Admission::Request { .. }
        ));
    }

    #[test]
    fn decisions_stand_until_changed() {
        for (tie, found) in [
            (Tie::Accepted, Admission::Contact),
            (Tie::Declined, Admission::Declined),
            (Tie::Blocked, Admission::Blocked),
        ] {
            assert_eq!(admit(Some(tie), MESSAGE, 9), (Some(tie), found));
        }
        assert_eq!(
            decide(Some(Tie::Accepted), TieChange::Decline, 0),
            Some(Tie::Accepted)
        );
        assert_eq!(
            decide(Some(Tie::Pending { messages: 1 }), TieChange::Decline, 0),
            Some(Tie::Declined)
        );
        assert_eq!(
            decide(Some(Tie::Blocked), TieChange::Accept, 0),
            Some(Tie::Accepted)
        );
        assert_eq!(decide(Some(Tie::Blocked), TieChange::Clear, 0), None);
    }

    #[test]
    fn ties_encode_and_decode() {
        for t in [
            Tie::Pending { messages: 0 },
            Tie::Pending { messages: 17 },
            Tie::Accepted,
            Tie::Declined,
            Tie::Blocked,
        ] {
            assert_eq!(Tie::decode(&t.encode()), Some(t));
        }
        assert_eq!(Tie::decode("x"), None);
        assert_eq!(Tie::decode("p-1"), None);
    }
}
