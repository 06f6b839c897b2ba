//! The write path every engine shares: a write is handed to one writer (a thread or a task)
//! the moment its method is called, and the writer applies everything waiting as one batch.
//!
//! Handing the write over in the call, not when the future is first polled, is what makes
//! writes take effect in call order (the [`Store`](super::Store) contract the relay relies on
//! for per-sender order); taking everything waiting at once is what lets many writes share
//! one commit (one sync).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use flexim_protocol::PublicKey;
use tokio::sync::{mpsc, oneshot};

use super::bounds::Mode;
use super::rooms::RoomSet;
use super::ties::{Tie, TieChange, TieChanged};
use super::{
    BoxFuture, Claim, Entry, Expired, Placed, QueueLimits, StoreError, StoreStats, UserRecord,
};

/// Most writes in one batch. Bounds the time one commit holds its callers; under load a
/// commit of this many small messages still takes about one sync.
pub(crate) const MAX_BATCH: usize = 4096;

/// A write for the writer.
pub(crate) enum Op {
    /// [`Store::touch`](super::Store::touch).
    Touch {
        /// The user.
        key: PublicKey,
        /// The new `last_seen`.
        now: i64,
    },
    /// [`Store::claim_alias`](super::Store::claim_alias).
    Claim {
        /// The claiming user.
        key: PublicKey,
        /// The alias as the user spelled it.
        alias: String,
        /// Most aliases one key may hold.
        max_aliases: usize,
    },
    /// [`Store::assign_alias`](super::Store::assign_alias).
    Assign {
        /// The alias as the operator spelled it.
        alias: String,
        /// Who gets it; `None` revokes it.
        to: Option<PublicKey>,
    },
    /// [`Store::set_banned`](super::Store::set_banned).
    Ban {
        /// The user.
        key: PublicKey,
        /// Whether it is blocked.
        on: bool,
    },
    /// [`Store::enqueue`](super::Store::enqueue) and
    /// [`Store::enqueue_fitting`](super::Store::enqueue_fitting).
    Enqueue {
        /// The recipient.
        to: PublicKey,
        /// The entries, in order.
        entries: Vec<Entry>,
        /// How the entries are held to their bounds.
        mode: Mode,
    },
    /// [`Store::remove`](super::Store::remove).
    Remove {
        /// The recipient.
        to: PublicKey,
        /// The sequence numbers to delete.
        seqs: Vec<u64>,
    },
    /// [`Store::expire`](super::Store::expire).
    Expire {
        /// Entries accepted before this time (Unix seconds) go.
        before: i64,
    },
    /// [`Store::tie`](super::Store::tie).
    Tie {
        /// Whose decision it is.
        owner: PublicKey,
        /// About whom.
        other: PublicKey,
        /// The change, decided by [`super::ties::decide`].
        change: TieChange,
    },
    /// [`Store::set_discoverable`](super::Store::set_discoverable).
    Discoverable {
        /// The user.
        key: PublicKey,
        /// Whether SEARCH finds it.
        on: bool,
    },
    /// The compare-and-set of a room change ([`super::rooms::change`]).
    RoomSet(RoomSet),
    /// [`Store::publish_key_packages`](super::Store::publish_key_packages).
    Publish {
        /// Whose KeyPackages they are (checked by the caller).
        owner: PublicKey,
        /// The KeyPackages, in order.
        packages: Vec<Vec<u8>>,
        /// Most the owner may have.
        max: u32,
    },
    /// [`Store::claim_key_package`](super::Store::claim_key_package).
    ClaimPackage {
        /// Whose oldest KeyPackage is handed out.
        owner: PublicKey,
    },
}

/// What a write produced.
pub(crate) enum Outcome {
    /// The user record before a touch.
    User(UserRecord),
    /// The outcome of an alias claim.
    Claim(Claim),
    /// Who held an alias before it was assigned.
    Owner(Option<PublicKey>),
    /// The sequence numbers of enqueued entries.
    Seqs(Vec<u64>),
    /// What became of each entry of an enqueue that takes what fits.
    Placed(Vec<Placed>),
    /// Entries were removed (or were not there).
    Removed,
    /// The entries an expiry deleted.
    Expired(Vec<Expired>),
    /// A tie before and after its change.
    Tie(Option<Tie>, Option<Tie>),
    /// A write with nothing to report.
    Done,
    /// Whether a compare-and-set found what it expected (and so wrote).
    Set(bool),
    /// How many KeyPackages the owner holds after a publish.
    Count(u32),
    /// The KeyPackage a claim took, if the owner had one.
    Package(Option<Vec<u8>>),
}

/// A write and where its outcome goes once it is committed.
pub(crate) struct Job {
    /// The write.
    pub(crate) op: Op,
    /// Answered after the commit (or with the engine's error).
    pub(crate) reply: oneshot::Sender<Result<Outcome, StoreError>>,
}

/// The writer's counters, for [`StoreStats`]. Relaxed atomics: they are statistics.
#[derive(Default)]
pub(crate) struct Counters {
    /// Writes committed.
    writes: AtomicU64,
    /// Commits.
    commits: AtomicU64,
    /// How long each commit took, from the batch taken to its outcome known (a disk sync,
    /// or a round trip to Redis and its sync).
    commit_time: crate::histogram::Histogram,
}

impl Counters {
    /// The counters as [`StoreStats`].
    pub(crate) fn stats(&self) -> StoreStats {
        StoreStats {
            writes: self.writes.load(Relaxed),
            commits: self.commits.load(Relaxed),
            commit_time: self.commit_time.snapshot(),
        }
    }
}

/// The callers' side of the writer's queue.
pub(crate) struct WriteQueue {
    /// The queue. Unbounded on purpose: callers submit while holding the relay's lock (that
    /// is how order is kept) and must never block there; the sessions bound how much each
    /// connection can have in flight. `None` once closed.
    writes: Option<mpsc::UnboundedSender<Job>>,
}

impl WriteQueue {
    /// A new queue and the writer's end of it.
    pub(crate) fn new() -> (WriteQueue, mpsc::UnboundedReceiver<Job>) {
        let (writes, jobs) = mpsc::unbounded_channel();
        (
            WriteQueue {
                writes: Some(writes),
            },
            jobs,
        )
    }

    /// Closes the queue: the writer ends once it has applied the writes already in it.
    pub(crate) fn close(&mut self) {
        self.writes.take();
    }

    /// Hands a write to the writer now (so that writes keep the order of the calls) and
    /// returns a future for its outcome, picked by `pick` from what the writer answers.
    fn write<T: Send + 'static>(
        &self,
        op: Op,
        pick: fn(Outcome) -> Option<T>,
    ) -> BoxFuture<'static, Result<T, StoreError>> {
        let (reply, outcome) = oneshot::channel();
        let sent = match &self.writes {
            Some(w) => w.send(Job { op, reply }).is_ok(),
            None => false,
        };
        Box::pin(async move {
            let stopped = || StoreError::Engine("the store writer has stopped".into());
            if !sent {
                return Err(stopped());
            }
            let outcome = outcome.await.map_err(|_| stopped())??;
            // Any other outcome is a bug in the writer.
            pick(outcome).ok_or_else(|| {
                StoreError::Engine("the store writer answered with the wrong outcome".into())
            })
        })
    }

    /// Submits [`Op::Touch`].
    pub(crate) fn touch(
        &self,
        key: PublicKey,
        now: i64,
    ) -> BoxFuture<'static, Result<UserRecord, StoreError>> {
        self.write(Op::Touch { key, now }, |o| match o {
            Outcome::User(u) => Some(u),
            _ => None,
        })
    }

    /// Submits [`Op::Claim`].
    pub(crate) fn claim(
        &self,
        key: PublicKey,
        alias: String,
        max_aliases: usize,
    ) -> BoxFuture<'static, Result<Claim, StoreError>> {
        let op = Op::Claim {
            key,
            alias,
            max_aliases,
        };
        self.write(op, |o| match o {
            Outcome::Claim(c) => Some(c),
            _ => None,
        })
    }

    /// Submits [`Op::Assign`].
    pub(crate) fn assign(
        &self,
        alias: String,
        to: Option<PublicKey>,
    ) -> BoxFuture<'static, Result<Option<PublicKey>, StoreError>> {
        self.write(Op::Assign { alias, to }, |o| match o {
            Outcome::Owner(k) => Some(k),
            _ => None,
        })
    }

    /// Submits [`Op::Ban`].
    pub(crate) fn ban(
        &self,
        key: PublicKey,
        on: bool,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        self.write(Op::Ban { key, on }, |o| match o {
            Outcome::Done => Some(()),
            _ => None,
        })
    }

    /// Submits [`Op::Enqueue`] for [`Store::enqueue`](super::Store::enqueue): all or nothing.
    pub(crate) fn enqueue(
        &self,
        to: PublicKey,
        entries: Vec<Entry>,
        limits: Option<QueueLimits>,
    ) -> BoxFuture<'static, Result<Vec<u64>, StoreError>> {
        let mode = limits.map_or(Mode::Unbounded, Mode::Whole);
        self.write(Op::Enqueue { to, entries, mode }, |o| match o {
            Outcome::Seqs(seqs) => Some(seqs),
            _ => None,
        })
    }

    /// Submits [`Op::Enqueue`] for [`Store::enqueue_fitting`](super::Store::enqueue_fitting):
    /// what fits.
    pub(crate) fn enqueue_fitting(
        &self,
        to: PublicKey,
        entries: Vec<Entry>,
        limits: QueueLimits,
    ) -> BoxFuture<'static, Result<Vec<Placed>, StoreError>> {
        let mode = Mode::Fitting(limits);
        self.write(Op::Enqueue { to, entries, mode }, |o| match o {
            Outcome::Placed(placed) => Some(placed),
            _ => None,
        })
    }

    /// Submits [`Op::Remove`].
    pub(crate) fn remove(
        &self,
        to: PublicKey,
        seqs: Vec<u64>,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        self.write(Op::Remove { to, seqs }, |o| match o {
            Outcome::Removed => Some(()),
            _ => None,
        })
    }

    /// Submits [`Op::Expire`].
    pub(crate) fn expire(
        &self,
        before: i64,
    ) -> BoxFuture<'static, Result<Vec<Expired>, StoreError>> {
        self.write(Op::Expire { before }, |o| match o {
            Outcome::Expired(found) => Some(found),
            _ => None,
        })
    }
}

impl WriteQueue {
    /// Submits [`Op::Tie`].
    pub(crate) fn tie(
        &self,
        owner: PublicKey,
        other: PublicKey,
        change: TieChange,
    ) -> BoxFuture<'static, Result<TieChanged, StoreError>> {
        let op = Op::Tie {
            owner,
            other,
            change,
        };
        self.write(op, |o| match o {
            Outcome::Tie(before, after) => Some((before, after)),
            _ => None,
        })
    }

    /// Submits [`Op::Discoverable`].
    pub(crate) fn discoverable(
        &self,
        key: PublicKey,
        on: bool,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        self.write(Op::Discoverable { key, on }, |o| match o {
            Outcome::Done => Some(()),
            _ => None,
        })
    }
}

impl WriteQueue {
    /// Submits [`Op::RoomSet`].
    pub(crate) fn room_set(&self, set: RoomSet) -> BoxFuture<'static, Result<bool, StoreError>> {
        self.write(Op::RoomSet(set), |o| match o {
            Outcome::Set(done) => Some(done),
            _ => None,
        })
    }

    /// Submits [`Op::Publish`].
    pub(crate) fn publish(
        &self,
        owner: PublicKey,
        packages: Vec<Vec<u8>>,
        max: u32,
    ) -> BoxFuture<'static, Result<u32, StoreError>> {
        let op = Op::Publish {
            owner,
            packages,
            max,
        };
        self.write(op, |o| match o {
            Outcome::Count(n) => Some(n),
            _ => None,
        })
    }

    /// Submits [`Op::ClaimPackage`].
    pub(crate) fn claim_package(
        &self,
        owner: PublicKey,
    ) -> BoxFuture<'static, Result<Option<Vec<u8>>, StoreError>> {
        self.write(Op::ClaimPackage { owner }, |o| match o {
            Outcome::Package(p) => Some(p),
            _ => None,
        })
    }
}

/// `first` and every job waiting behind it, up to [`MAX_BATCH`]: what one commit applies.
pub(crate) fn take_waiting(first: Job, jobs: &mut mpsc::UnboundedReceiver<Job>) -> Vec<Job> {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match jobs.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    batch
}

/// Answers each caller of a batch with its outcome, or all of them with the commit's error
/// (nothing of a failed commit may be reported done), and counts the commit.
pub(crate) fn answer(
    replies: Vec<oneshot::Sender<Result<Outcome, StoreError>>>,
    committed: Result<Vec<Result<Outcome, StoreError>>, StoreError>,
    counters: &Counters,
    began: std::time::Instant,
) {
    counters.commit_time.observe(began.elapsed());
    match committed {
        Ok(outcomes) => {
            counters.commits.fetch_add(1, Relaxed);
            counters.writes.fetch_add(outcomes.len() as u64, Relaxed);
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                // A caller that stopped waiting does not matter: the write is done.
                let _ = reply.send(outcome);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, writes = replies.len(), "a store commit failed");
            let e = match e {
                StoreError::Engine(e) => e,
                other => other.to_string(),
            };
            for reply in replies {
                let _ = reply.send(Err(StoreError::Engine(e.clone())));
            }
        }
    }
}
