//! The book of legitimate messages: what each sender wrote, what the server confirmed, what
//! each recipient got, so that at the end "confirmed but never received" can be counted.
//!
//! A message is known by its pair and a sequence number, not by its id: the text says both
//! ("soak pair 3 seq 41 xxx..."), so a recipient can check what it got against what was
//! written even before the sender has learnt the id the engine gave it (the sender's task
//! hears the id only after the frame is on its way, and the recipient may be faster). Ids
//! are bound to their sequence number as the sender learns them; one sequence number may get
//! several ids, because a message the server refused is written again as a new message.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

/// The legitimate messages of every pair (see the module documentation).
pub struct Ledger {
    /// Plaintext bytes per message (the text is padded to this).
    size: usize,
    /// The books, one per pair.
    inner: Mutex<Vec<Book>>,
}

/// One pair's messages.
#[derive(Default)]
struct Book {
    /// Every message the sender began, by sequence number.
    entries: Vec<Entry>,
    /// Which message each id the sender got belongs to.
    ids: HashMap<String, u64>,
    /// Messages received (first copies).
    received: u64,
}

/// One legitimate message.
struct Entry {
    /// When the sender first wrote it: latency is measured from here, across refusals,
    /// resends and reconnects, as its user would see it.
    first_sent: Instant,
    /// The ids it was sent under (more than one after a refusal).
    ids: Vec<String>,
    /// The ids the server refused with an error Status.
    refused: Vec<String>,
    /// The Status codes the sender was told about it (answers and receipts, in order), to
    /// describe a message that went wrong.
    told: Vec<i8>,
    /// Whether the server confirmed one of its ids (`2`, `7` or `8`).
    confirmed: bool,
    /// When and under which id the recipient got it first.
    received: Option<(Instant, String)>,
    /// Copies the recipient's application was given after the first (the engine drops
    /// copies of one box, so any here is a bug or a refused message that was delivered after
    /// all; see [`Totals::refused_then_delivered`]).
    copies: u32,
}

/// What a recipient got, as the ledger sees it.
#[derive(Debug, PartialEq, Eq)]
pub enum Got {
    /// A legitimate message, the first time.
    Fresh,
    /// A legitimate message received before.
    Copy,
    /// A message from the pair's sender that is not what it wrote (text or pair wrong).
    Garbled,
}

/// The whole run's delivery figures.
#[derive(Debug, Default, Serialize)]
pub struct Totals {
    /// Messages the senders wrote (sequence numbers; a retried message counts once).
    pub written: u64,
    /// Messages the server confirmed (`2` stored, `7` delivered or `8` stored later).
    pub confirmed: u64,
    /// Messages the recipients got (first copies).
    pub received: u64,
    /// Confirmed and never received: must be 0.
    pub lost: u64,
    /// Received, but the server never confirmed them to their sender before the end (a
    /// receipt still on its way when the drain stopped waiting).
    pub received_unconfirmed: u64,
    /// Neither confirmed nor received when the drain stopped waiting.
    pub missing_unconfirmed: u64,
    /// Copies the recipients' applications were given again.
    pub copies: u64,
    /// Messages from a pair's sender that were not what it wrote.
    pub garbled: u64,
    /// Messages received under an id the server had refused (it said nothing was stored).
    pub refused_then_delivered: u64,
    /// Messages received under an id their sender never had for them.
    pub wrong_id: u64,
    /// Refusals of legitimate messages (each retried later).
    pub refusals: u64,
    /// A few messages that were not both received and confirmed, described, to start
    /// looking for why.
    pub unsettled_examples: Vec<String>,
}

/// How many unsettled messages [`Totals::unsettled_examples`] describes at most.
const EXAMPLES: usize = 5;

/// One received message, for the phase figures.
#[derive(Debug, Clone, Copy)]
pub struct Reception {
    /// When its sender first wrote it.
    pub sent: Instant,
    /// When the recipient got it.
    pub received: Instant,
}

impl Ledger {
    /// A ledger for `pairs` pairs of `size`-byte texts.
    pub fn new(pairs: usize, size: usize) -> Ledger {
        Ledger {
            size,
            inner: Mutex::new((0..pairs).map(|_| Book::default()).collect()),
        }
    }

    /// The text of message `seq` of `pair`: what the recipient must get.
    pub fn text(&self, pair: usize, seq: u64) -> String {
        let mut t = format!("soak pair {pair} seq {seq} ");
        if t.len() < self.size {
            t.extend(std::iter::repeat_n('x', self.size - t.len()));
        }
        t
    }

    fn books(&self) -> std::sync::MutexGuard<'_, Vec<Book>> {
        self.inner.lock().expect("ledger lock")
    }

    /// A sender begins a new message: its sequence number.
    pub fn begin(&self, pair: usize) -> u64 {
        let mut books = self.books();
        let book = &mut books[pair];
        book.entries.push(Entry {
            first_sent: Instant::now(),
            ids: Vec::new(),
            refused: Vec::new(),
            told: Vec::new(),
            confirmed: false,
            received: None,
            copies: 0,
        });
        book.entries.len() as u64 - 1
    }

    /// The message `seq` went out under `id`.
    pub fn bind(&self, pair: usize, seq: u64, id: &str) {
        let mut books = self.books();
        let book = &mut books[pair];
        book.ids.insert(id.to_string(), seq);
        book.entries[seq as usize].ids.push(id.to_string());
    }

    /// Whether `id` is bound to a message of `pair` already.
    pub fn knows(&self, pair: usize, id: &str) -> bool {
        self.books()[pair].ids.contains_key(id)
    }

    /// The sender was told `code` about `id` (an answer or a receipt); `confirms` says
    /// whether that confirms the message (`2`, `7`, `8`).
    pub fn told(&self, pair: usize, id: &str, code: i8, confirms: bool) {
        let mut books = self.books();
        let book = &mut books[pair];
        if let Some(&seq) = book.ids.get(id) {
            let entry = &mut book.entries[seq as usize];
            entry.told.push(code);
            entry.confirmed |= confirms;
        }
    }

    /// The server refused `id`: the message it belongs to, to be written again, unless it
    /// was confirmed or received under another id already (then it needs nothing more).
    pub fn refuse(&self, pair: usize, id: &str) -> Option<u64> {
        let mut books = self.books();
        let book = &mut books[pair];
        let seq = *book.ids.get(id)?;
        let entry = &mut book.entries[seq as usize];
        entry.refused.push(id.to_string());
        (!entry.confirmed && entry.received.is_none()).then_some(seq)
    }

    /// Whether message `seq` of `pair` still needs to be written again (a retry that finds
    /// it received or confirmed meanwhile is dropped).
    pub fn needs_retry(&self, pair: usize, seq: u64) -> bool {
        let books = self.books();
        let entry = &books[pair].entries[seq as usize];
        !entry.confirmed && entry.received.is_none()
    }

    /// Messages of `pair` written and not received yet: the sender's end-to-end window.
    pub fn outstanding(&self, pair: usize) -> u64 {
        let books = self.books();
        books[pair].entries.len() as u64 - books[pair].received
    }

    /// The recipient of `pair` got `text` from the pair's sender under `id`.
    pub fn receive(&self, pair: usize, text: &str, id: &str) -> Got {
        let Some(seq) = parse(text, pair) else {
            return Got::Garbled;
        };
        if self.text(pair, seq) != text {
            return Got::Garbled;
        }
        let mut books = self.books();
        let book = &mut books[pair];
        let Some(entry) = book.entries.get_mut(seq as usize) else {
            return Got::Garbled;
        };
        if entry.received.is_some() {
            entry.copies += 1;
            return Got::Copy;
        }
        entry.received = Some((Instant::now(), id.to_string()));
        book.received += 1;
        Got::Fresh
    }

    /// Whether every message was received and confirmed: nothing more will come.
    pub fn settled(&self) -> bool {
        self.books()
            .iter()
            .all(|b| b.received == b.entries.len() as u64 && b.entries.iter().all(|e| e.confirmed))
    }

    /// Every message received, for the phase figures.
    pub fn receptions(&self) -> Vec<Reception> {
        let books = self.books();
        let all = books.iter().flat_map(|b| &b.entries);
        all.filter_map(|e| {
            e.received.as_ref().map(|(at, _)| Reception {
                sent: e.first_sent,
                received: *at,
            })
        })
        .collect()
    }

    /// The delivery figures so far.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        let books = self.books();
        let all = books.iter().enumerate().flat_map(|(p, b)| {
            b.entries
                .iter()
                .enumerate()
                .map(move |(seq, e)| (p, seq, e))
        });
        for (pair, seq, e) in all {
            if (e.received.is_none() || !e.confirmed) && t.unsettled_examples.len() < EXAMPLES {
                t.unsettled_examples.push(describe(pair, seq, e));
            }
            t.written += 1;
            t.confirmed += u64::from(e.confirmed);
            t.copies += u64::from(e.copies);
            t.refusals += e.refused.len() as u64;
            match (&e.received, e.confirmed) {
                (Some((_, id)), confirmed) => {
                    t.received += 1;
                    t.received_unconfirmed += u64::from(!confirmed);
                    t.refused_then_delivered += u64::from(e.refused.contains(id));
                    t.wrong_id += u64::from(!e.ids.contains(id));
                }
                (None, true) => t.lost += 1,
                (None, false) => t.missing_unconfirmed += 1,
            }
        }
        t
    }
}

/// One message in words: who, which ids, what the sender was told, whether it arrived.
fn describe(pair: usize, seq: usize, e: &Entry) -> String {
    let told: Vec<String> = e.told.iter().map(|c| super::rules::code_name(*c)).collect();
    format!(
        "pair {pair} seq {seq}: ids {:?}, sender told [{}], refused {:?}, {}",
        e.ids,
        told.join(", "),
        e.refused,
        match &e.received {
            Some((at, id)) => format!(
                "received as {id} {:.3} s after it was first written",
                at.duration_since(e.first_sent).as_secs_f64()
            ),
            None => "never received".into(),
        }
    )
}

/// The sequence number a legitimate text names, if it is one of `pair`'s.
fn parse(text: &str, pair: usize) -> Option<u64> {
    let mut words = text.split(' ');
    let head: Vec<&str> = words.by_ref().take(4).collect();
    match head.as_slice() {
        ["soak", "pair", p, "seq"] if p.parse::<usize>().ok()? == pair => {
            words.next()?.parse().ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirmed_messages_never_received_are_lost_and_nothing_else_is() {
        let l = Ledger::new(2, 64);
        let (a, b, c) = (l.begin(0), l.begin(0), l.begin(1));
        assert_eq!(l.text(0, a).len(), 64);
        l.bind(0, a, "ida");
        l.bind(0, b, "idb");
        l.bind(1, c, "idc");
        l.told(0, "ida", 2, true);
        l.told(0, "idb", 7, true);
        assert_eq!(l.receive(0, &l.text(0, a), "ida"), Got::Fresh);
        assert_eq!(l.receive(0, &l.text(0, a), "ida"), Got::Copy);
        // Another pair's text, or a text that was altered, is not this pair's message.
        assert_eq!(l.receive(0, &l.text(1, c), "idc"), Got::Garbled);
        assert_eq!(
            l.receive(1, &l.text(1, c).replace('x', "y"), "idc"),
            Got::Garbled
        );
        assert_eq!(l.outstanding(0), 1);
        assert!(!l.settled());
        let t = l.totals();
        assert_eq!((t.written, t.confirmed, t.received), (3, 2, 1));
        assert_eq!((t.lost, t.missing_unconfirmed, t.copies), (1, 1, 1));
    }

    #[test]
    fn a_refused_message_is_retried_under_a_new_id_and_counted_once() {
        let l = Ledger::new(1, 10);
        let s = l.begin(0);
        l.bind(0, s, "first");
        assert_eq!(l.refuse(0, "first"), Some(s));
        assert!(l.needs_retry(0, s));
        l.bind(0, s, "second");
        assert!(l.knows(0, "second") && !l.knows(0, "third"));
        l.told(0, "second", 2, true);
        assert!(!l.needs_retry(0, s));
        assert_eq!(l.receive(0, &l.text(0, s), "second"), Got::Fresh);
        assert!(l.settled());
        let t = l.totals();
        assert_eq!(
            (t.written, t.lost, t.refusals, t.refused_then_delivered),
            (1, 0, 1, 0)
        );
        // Had the refused copy arrived, the ledger would say so.
        let l2 = Ledger::new(1, 10);
        let s = l2.begin(0);
        l2.bind(0, s, "first");
        l2.refuse(0, "first");
        l2.receive(0, &l2.text(0, s), "first");
        assert_eq!(l2.totals().refused_then_delivered, 1);
        assert_eq!(l2.refuse(0, "first"), None);
    }
}
