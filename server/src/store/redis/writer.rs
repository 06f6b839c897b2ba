//! The Redis engine's writer task: every write as its script, a batch as one MULTI/EXEC,
//! and what each script answered as the write's outcome.

use std::sync::Arc;

use ::redis::aio::ConnectionManager;
use ::redis::{RedisResult, Value};
use tokio::sync::mpsc;

use super::replies::{array_of, bytes_of, int_of, parse_key, record_of, stored_of, tie_of};
use super::scripts::{self, Scripts};
use super::{counted_key, eng, expiry_key, queue_prefix, shares_prefix, store_bytes_key};
use crate::store::bounds::Mode;
use crate::store::writes::{Counters, Job, Op, Outcome, answer, take_waiting};
use crate::store::{Claim, Expired, Full, StoreError};

/// Counts what an older version stored into the shares and the store's bytes, once.
pub(super) async fn count_once(conn: &mut ConnectionManager) -> Result<(), StoreError> {
    let counted: i64 = scripts::count_once()
        .key(expiry_key())
        .key(store_bytes_key())
        .key(counted_key())
        .arg(queue_prefix())
        .arg(shares_prefix())
        .invoke_async(conn)
        .await
        .map_err(eng)?;
    if counted > 0 {
        tracing::info!(
            entries = counted,
            "counted stored messages per sender and for the store's budget"
        );
    }
    Ok(())
}

/// The writer task: takes everything waiting, sends it as one MULTI/EXEC pipeline, then
/// answers each caller. It lives as long as the store: a failed pipeline (Redis away or
/// restarting) fails the writes in it, and the next batch goes to the reconnected Redis.
pub(super) async fn writer(
    mut conn: ConnectionManager,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    counters: Arc<Counters>,
) {
    let scripts = Scripts::new();
    while let Some(first) = jobs.recv().await {
        let batch = take_waiting(first, &mut jobs);
        let (ops, replies): (Vec<Op>, Vec<_>) = batch.into_iter().map(|j| (j.op, j.reply)).unzip();
        let began = std::time::Instant::now();
        let committed = commit(&mut conn, &scripts, ops).await;
        answer(replies, committed, &counters, began);
    }
}

/// Applies `ops` in one MULTI/EXEC and reads each one's outcome. The outer error means the
/// transaction failed as a whole; an inner one, that one script failed (Redis does not roll
/// back the others, which did happen and are answered as such).
///
/// As with any networked store, a failure can be ambiguous: if the connection drops after
/// Redis ran EXEC but before its reply arrived, the writes happened although their callers
/// are told they failed. For an enqueue that means the sender is told the message was not
/// stored while its recipient may still get it; clients already drop duplicates by id.
/// Nothing is ever reported stored that was not.
async fn commit(
    conn: &mut ConnectionManager,
    scripts: &Scripts,
    ops: Vec<Op>,
) -> Result<Vec<Result<Outcome, StoreError>>, StoreError> {
    let mut pipe = ::redis::pipe();
    pipe.atomic().ignore_errors();
    // Load each script the batch uses first, in the same transaction: after a restart Redis
    // knows no script, and loading a known one costs only its hash.
    let mut loaded: Vec<&str> = Vec::new();
    for op in &ops {
        let (script, code) = scripts.of(op);
        if !loaded.contains(&script.get_hash()) {
            loaded.push(script.get_hash());
            pipe.cmd("SCRIPT").arg("LOAD").arg(code.as_str()).ignore();
        }
    }
    for op in &ops {
        let inv = scripts.invocation(op);
        pipe.invoke_script(&inv);
    }
    let replies: Vec<RedisResult<Value>> = pipe.query_async(conn).await.map_err(eng)?;
    if replies.len() != ops.len() {
        return Err(StoreError::Engine(format!(
            "Redis answered {} of {} writes",
            replies.len(),
            ops.len()
        )));
    }
    Ok(ops
        .into_iter()
        .zip(replies)
        .map(|(op, reply)| outcome(op, reply.map_err(eng)?))
        .collect())
}

/// What the script of `op` answered, as its [`Outcome`].
fn outcome(op: Op, reply: Value) -> Result<Outcome, StoreError> {
    Ok(match op {
        Op::Touch { .. } => {
            let fields = array_of(reply)?;
            let [last_seen, aliases, banned] = fields.as_slice() else {
                return Err(StoreError::Engine("touch answered the wrong count".into()));
            };
            Outcome::User(record_of(
                Some(bytes_of(last_seen)?),
                Some(bytes_of(aliases)?),
                Some(bytes_of(banned)?),
            )?)
        }
        Op::Assign { .. } => {
            let before = bytes_of(&reply)?;
            Outcome::Owner(if before.is_empty() {
                None
            } else {
                Some(parse_key(before)?)
            })
        }
        Op::Ban { .. } => {
            int_of(&reply)?;
            Outcome::Done
        }
        Op::Claim { .. } => Outcome::Claim(match int_of(&reply)? {
            0 => Claim::Registered,
            1 => Claim::AlreadyYours,
            2 => Claim::Taken,
            3 => Claim::TooMany,
            other => {
                return Err(StoreError::Engine(format!(
                    "claim answered the unknown outcome {other}"
                )));
            }
        }),
        Op::Enqueue { mode, .. } => enqueued(mode, reply)?,
        Op::Remove { .. } => {
            int_of(&reply)?;
            Outcome::Removed
        }
        Op::Discoverable { .. } => {
            int_of(&reply)?;
            Outcome::Done
        }
        Op::RoomSet(_) => Outcome::Set(int_of(&reply)? == 1),
        Op::Publish { .. } => Outcome::Count(int_of(&reply)?.max(0) as u32),
        Op::ClaimPackage { .. } => {
            let package = bytes_of(&reply)?;
            Outcome::Package((!package.is_empty()).then(|| package.to_vec()))
        }
        Op::Tie { .. } => {
            let fields = array_of(reply)?;
            let [before, after] = fields.as_slice() else {
                return Err(StoreError::Engine("tie answered the wrong count".into()));
            };
            Outcome::Tie(tie_of(bytes_of(before)?)?, tie_of(bytes_of(after)?)?)
        }
        Op::Expire { .. } => {
            let items = array_of(reply)?;
            let mut found = Vec::with_capacity(items.len() / 2);
            for pair in items.chunks(2) {
                let [to, member] = pair else {
                    return Err(StoreError::Engine("expire answered an odd count".into()));
                };
                let entry = stored_of(bytes_of(member)?)?.entry;
                found.push(Expired {
                    to: parse_key(bytes_of(to)?)?,
                    sender: entry.sender,
                    id: entry.id,
                });
            }
            Outcome::Expired(found)
        }
    })
}

/// The bound the `ENQUEUE` script names by number, with its two counts.
fn full_of(bound: i64, a: i64, b: i64) -> Result<Full, StoreError> {
    let (a, b) = (a.max(0) as u64, b.max(0) as u64);
    Ok(match bound {
        1 => Full::Share {
            messages: a,
            bytes: b,
        },
        2 => Full::Queue {
            messages: a,
            bytes: b,
        },
        3 => Full::Store { bytes: a },
        other => {
            return Err(StoreError::Engine(format!(
                "enqueue answered the unknown bound {other}"
            )));
        }
    })
}

/// What the `ENQUEUE` script answered, as the outcome `mode` asks for.
fn enqueued(mode: Mode, reply: Value) -> Result<Outcome, StoreError> {
    let ints = array_of(reply)?
        .iter()
        .map(int_of)
        .collect::<Result<Vec<_>, _>>()?;
    let (first, per_entry) = match ints.as_slice() {
        [-1, bound, a, b] => return Err(full_of(*bound, *a, *b)?.into()),
        [first, rest @ ..] if rest.len() % 3 == 0 && *first >= 0 => (*first as u64, rest),
        other => return Err(StoreError::Engine(format!("enqueue answered {other:?}"))),
    };
    let mut seq = first;
    let mut placed = Vec::with_capacity(per_entry.len() / 3);
    for v in per_entry.chunks(3) {
        placed.push(match v {
            [0, _, _] => {
                seq += 1;
                Ok(seq - 1)
            }
            [bound, a, b] => Err(full_of(*bound, *a, *b)?),
            _ => unreachable!("chunks of three"),
        });
    }
    Ok(match mode {
        Mode::Fitting(_) => Outcome::Placed(placed),
        // Nothing is left out of a whole write that was not refused.
        Mode::Whole(_) | Mode::Unbounded => Outcome::Seqs(placed.into_iter().flatten().collect()),
    })
}
