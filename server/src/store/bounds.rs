//! Which entries of an enqueue fit their bounds: the rule of [`Store::enqueue`] and
//! [`Store::enqueue_fitting`](super::Store::enqueue_fitting), for an engine that checks in Rust
//! (the embedded one). The Redis engine's `ENQUEUE` script is the same rule in Lua, inside
//! Redis, so that it is atomic across nodes; the conformance checks hold the two together.
//!
//! [`Store::enqueue`]: super::Store::enqueue

use std::collections::HashMap;

use flexim_protocol::PublicKey;

use super::{Full, QueueLimits};

/// What a queue and the store hold before a write: the counts the bounds are checked against.
#[derive(Debug, Clone, Default)]
pub(crate) struct Held {
    /// Entries in the recipient's queue.
    pub(crate) messages: u64,
    /// Bytes in the recipient's queue.
    pub(crate) bytes: u64,
    /// Bytes in every queue together.
    pub(crate) store_bytes: u64,
    /// Entries and bytes of each sender of the write in the queue (every sender of the write
    /// must be here; one with nothing queued as zeros).
    pub(crate) shares: HashMap<PublicKey, (u64, u64)>,
}

/// How a write is held to its bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// No bounds: every entry is taken.
    Unbounded,
    /// Every entry fits or none is taken ([`Store::enqueue`](super::Store::enqueue)).
    Whole(QueueLimits),
    /// The entries that fit are taken ([`Store::enqueue_fitting`](super::Store::enqueue_fitting)).
    Fitting(QueueLimits),
}

/// Decides, for each entry (its sender and its size in bytes, in order), whether it is taken
/// or which bound leaves it out, and updates `held` with what is taken. In [`Mode::Whole`] the
/// answer is all taken, or `Err` with the first refusal and the counts before the write (as
/// nothing of it is stored); `held` is then left as it was.
pub(crate) fn place(
    held: &mut Held,
    entries: &[(PublicKey, u64)],
    mode: Mode,
) -> Result<Vec<Result<(), Full>>, Full> {
    let limits = match mode {
        Mode::Unbounded => None,
        Mode::Whole(l) | Mode::Fitting(l) => Some(l),
    };
    let before = held.clone();
    // Senders one of whose entries was left out, and why: their later entries follow it.
    let mut refused: Vec<(PublicKey, Full)> = Vec::new();
    let mut out = Vec::with_capacity(entries.len());
    for &(sender, size) in entries {
        let share = *held.shares.get(&sender).unwrap_or(&(0, 0));
        let verdict = match refused.iter().find(|(s, _)| *s == sender) {
            Some((_, full)) => Err(*full),
            None => match limits {
                Some(l) => check(held, share, size, &l),
                None => Ok(()),
            },
        };
        match verdict {
            Ok(()) => {
                held.messages += 1;
                held.bytes += size;
                held.store_bytes += size;
                held.shares.insert(sender, (share.0 + 1, share.1 + size));
            }
            Err(full) if matches!(mode, Mode::Whole(_)) => {
                *held = before;
                return Err(as_before(full, held, sender));
            }
            Err(full) => refused.push((sender, full)),
        }
        out.push(verdict);
    }
    Ok(out)
}

/// The first bound one more entry of `size` bytes would pass: the queue, then the sender's
/// share (`share`, its entries and bytes), then the store's budget. The queue comes first so
/// that a share at or above the queue's limits changes nothing, and a full queue is reported
/// as full to every sender alike.
fn check(held: &Held, share: (u64, u64), size: u64, l: &QueueLimits) -> Result<(), Full> {
    let over = |count: u64, add: u64, max: u64| count.saturating_add(add) > max;
    if over(held.messages, 1, l.messages) || over(held.bytes, size, l.bytes) {
        Err(Full::Queue {
            messages: held.messages,
            bytes: held.bytes,
        })
    } else if over(share.0, 1, l.share_messages) || over(share.1, size, l.share_bytes) {
        Err(Full::Share {
            messages: share.0,
            bytes: share.1,
        })
    } else if over(held.store_bytes, size, l.store_bytes) {
        Err(Full::Store {
            bytes: held.store_bytes,
        })
    } else {
        Ok(())
    }
}

/// `full` with the counts of `held` (what the store held before the write) for `sender`.
fn as_before(full: Full, held: &Held, sender: PublicKey) -> Full {
    match full {
        Full::Share { .. } => {
            let (messages, bytes) = *held.shares.get(&sender).unwrap_or(&(0, 0));
            Full::Share { messages, bytes }
        }
        Full::Queue { .. } => Full::Queue {
            messages: held.messages,
            bytes: held.bytes,
        },
        Full::Store { .. } => Full::Store {
            bytes: held.store_bytes,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: PublicKey = PublicKey([1; 32]);
    const B: PublicKey = PublicKey([2; 32]);

    fn limits() -> QueueLimits {
        QueueLimits {
            messages: 10,
            bytes: 1000,
            share_messages: 2,
            share_bytes: 1000,
            store_bytes: 1000,
        }
    }

    #[test]
    fn a_sender_left_out_stays_out_for_the_rest_of_the_write() {
        let mut held = Held::default();
        // A's third entry passes its share; its fourth, although it would fit alone after
        // nothing, follows it; B's entries still fit.
        let entries = [(A, 10), (A, 10), (A, 10), (B, 10), (A, 1)];
        let got = place(&mut held, &entries, Mode::Fitting(limits())).unwrap();
        let share = Full::Share {
            messages: 2,
            bytes: 20,
        };
        assert_eq!(got, [Ok(()), Ok(()), Err(share), Ok(()), Err(share)]);
        assert_eq!((held.messages, held.bytes, held.store_bytes), (3, 30, 30));
        assert_eq!(held.shares[&A], (2, 20));
        assert_eq!(held.shares[&B], (1, 10));
    }

    #[test]
    fn a_whole_write_is_refused_with_the_counts_before_it() {
        let mut held = Held {
            messages: 1,
            bytes: 100,
            store_bytes: 950,
            shares: [(A, (1, 100))].into(),
        };
        let entries = [(A, 10), (B, 100)];
        assert_eq!(
            place(&mut held, &entries, Mode::Whole(limits())),
            Err(Full::Store { bytes: 950 })
        );
        assert_eq!((held.messages, held.store_bytes), (1, 950), "unchanged");
        // Without bounds everything is taken and counted.
        let got = place(&mut held, &entries, Mode::Unbounded).unwrap();
        assert_eq!(got, [Ok(()), Ok(())]);
        assert_eq!((held.messages, held.store_bytes), (3, 1060));
    }
}
