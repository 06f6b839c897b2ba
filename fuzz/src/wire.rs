//! The checks of the protocol crate's fuzz targets: the framing, the datum decoders, the
//! handshake and the link. Each takes the fuzzer's bytes, drives the code under test and
//! panics when an invariant does not hold (libFuzzer reports a panic as a crash). The same
//! functions replay the committed corpus in `protocol/tests/fuzz_corpus.rs`, so the ordinary
//! test suite checks every input that ever found a bug.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use flexim_protocol::datum::MessageRef;
use flexim_protocol::e2e::{self, ConversationKey, Envelope};
use flexim_protocol::frame::{self, FrameError, PREFIX_LEN};
use flexim_protocol::handshake::{ClientHandshake, ClientStep, ServerHandshake};
use flexim_protocol::link::{MAX_LINKED_BODY, TAG_LEN};
use flexim_protocol::{AuthResponse, Command, Datum, Link, LinkError, MAX_BODY, PublicKey, status};

use super::fixture::{self, Input};

/// The framing: the first three bytes choose the receiver's body limit (0 to 70,000, so limits
/// above the framing's own maximum are covered too), the rest is what arrived. `check` never
/// reports more than arrived, `split_exact` agrees with it, a stream cut frame by frame
/// consumes exactly what `check` says, and a frame built by `encode_into` is read back.
pub fn frame(data: &[u8]) {
    let mut input = Input::new(data);
    let limit = input.bytes(3);
    let max = limit
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
        % 70_001;
    let bytes = input.rest();
    check_one(bytes, max);
    // A stream: frames back to back, as the engine's reader and the server cut them.
    let mut at = 0;
    while let Ok(Some(info)) = frame::check(&bytes[at..], max) {
        assert!(info.total() >= PREFIX_LEN && at + info.total() <= bytes.len());
        at += info.total();
    }
    if bytes.len() >= PREFIX_LEN {
        let body = &bytes[PREFIX_LEN..];
        let mut framed = Vec::new();
        frame::encode_into(bytes[0], body, &mut framed).expect("fuzz inputs are short");
        assert_eq!(framed.len(), PREFIX_LEN + body.len());
        match frame::split_exact(&framed, max) {
            Ok((kind, b)) => assert_eq!((kind, b), (bytes[0], body)),
            Err(FrameError::TooLarge { len, .. }) => assert!(len == body.len() && len > max),
            Err(e) => panic!("a frame from encode_into does not split: {e}"),
        }
    }
}

/// One buffer through `check` and `split_exact`: they agree on what is a whole frame.
fn check_one(bytes: &[u8], max: usize) {
    let split = frame::split_exact(bytes, max);
    match frame::check(bytes, max) {
        Ok(Some(info)) => {
            assert!(info.total() <= bytes.len() && info.len <= max);
            assert_eq!(info.kind, bytes[0]);
            let whole = &bytes[..info.total()];
            assert_eq!(
                frame::split_exact(whole, max),
                Ok((info.kind, &whole[PREFIX_LEN..]))
            );
            match bytes.len() - info.total() {
                0 => assert_eq!(split, Ok((info.kind, &bytes[PREFIX_LEN..]))),
                extra => assert_eq!(split, Err(FrameError::TrailingBytes { extra })),
            }
        }
        Ok(None) => assert_eq!(split, Err(frame::truncated(bytes))),
        Err(FrameError::TooLarge { kind, len, max: m }) => {
            assert!(bytes.len() >= PREFIX_LEN && len > max && m == max && kind == bytes[0]);
            assert_eq!(split, Err(FrameError::TooLarge { kind, len, max }));
        }
        Err(e) => panic!("check returned {e}, which only split_exact may"),
    }
}

/// Every datum decoder: the first byte is the type, the rest the body. What decodes encodes
/// and decodes to itself, its encoding is canonical, and the relay's in-place Message reader
/// accepts exactly the bodies the full decoder accepts, with the same fields.
pub fn datums(data: &[u8]) {
    let (kind, body) = data.split_first().map_or((0, &[][..]), |(k, b)| (*k, b));
    let decoded = Datum::decode(kind, body);
    if let Ok(datum) = &decoded {
        let again = datum.encode_body();
        let reread = Datum::decode(kind, &again).expect("an encoded datum decodes");
        assert_eq!(&reread, datum);
        assert_eq!(reread.encode_body(), again, "the encoding is canonical");
        if again.len() <= MAX_BODY {
            let framed = datum.to_frame().expect("a body under the limit frames");
            assert_eq!(
                frame::split_exact(&framed, MAX_BODY),
                Ok((kind, &again[..]))
            );
        }
    }
    if let Ok(Datum::Message(m)) = &decoded {
        check_message_fields(m);
    }
    // Whatever the type byte, the body is read as a Message too: the relay reads every
    // Message with MessageRef, and it must refuse exactly what a recipient's decoder refuses.
    let full = Datum::decode(3, body);
    match (MessageRef::decode(body), &full) {
        (Ok(r), Ok(Datum::Message(m))) => {
            assert_eq!(
                (r.to, r.from, r.date, r.msg),
                (m.to.as_str(), m.from.as_str(), m.date, m.msg.as_str())
            );
            assert_eq!(r.id, m.id.as_deref());
            assert!(r.flags.iter().eq(m.flags.iter()));
        }
        (Err(_), Err(_)) => {}
        (r, m) => panic!("MessageRef and Message disagree: {r:?} / {m:?}"),
    }
}

/// The fields of a decoded Message through the parsers the relay and the engine apply to them.
fn check_message_fields(m: &flexim_protocol::Message) {
    for who in [&m.to, &m.from] {
        if let Some(key) = PublicKey::from_hex(who) {
            assert_eq!(key.to_hex(), who.to_ascii_lowercase());
        }
    }
    if let Some(id) = &m.id {
        let _ = status::validate_id(id);
    }
    // Nobody but the two ends can seal a box: one from the fuzzer never opens.
    let (me, peer) = (fixture::client_key(), fixture::peer_key());
    let key = ConversationKey::derive(&me, &peer.public_key()).expect("fixed keys are strong");
    let env = Envelope {
        sender: &peer.public_key(),
        recipient: &me.public_key(),
        date: m.date,
        flags: &m.flags,
    };
    assert!(e2e::open(&key, &env, &m.msg).is_err());
}

/// The handshake on hostile messages. The first byte picks the step: the server reading
/// message 1 (as AUTH's payload strings, or as raw bytes in base64), the server reading
/// message 3 after a real message 1 (text or raw), the client reading message 2 after the real
/// introduction, or the client fed any datums from the start. Nothing forged completes a
/// handshake: without the keys, every step is refused, and never with a panic.
pub fn handshake(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.byte() % 6;
    let rest = input.rest();
    let server = fixture::server_key();
    let hello = fixture::hello_frame(&server);
    match mode {
        0 | 1 => {
            let payload = match mode {
                0 => rest
                    .split(|b| *b == b'\n')
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect(),
                _ => vec![B64.encode(rest)],
            };
            let auth = Command {
                cmd: "AUTH".into(),
                payload,
            };
            assert!(ServerHandshake::start(&server, &hello, &auth, [9; 32], 0).is_err());
        }
        2 | 3 => {
            let challenge = match mode {
                2 => String::from_utf8_lossy(rest).into_owned(),
                _ => B64.encode(rest),
            };
            let pending = fixture::server_after_message1();
            assert!(pending.finish(&AuthResponse { challenge }).is_err());
        }
        4 => {
            let (mut hs, _) = fixture::client_after_hello();
            let auth = Datum::Auth(flexim_protocol::Auth {
                date: 0,
                challenge: B64.encode(rest),
                last_seen: 0,
            });
            assert!(hs.handle(auth, &[], &mut |b| b.fill(7)).is_err());
        }
        _ => client_reads_datums(rest),
    }
}

/// The client's handshake fed every datum in `bytes` (frames back to back): it may send AUTH
/// to whatever key a User datum names, but no forged message 2 gives it a link.
fn client_reads_datums(bytes: &[u8]) {
    let mut hs = ClientHandshake::new(fixture::client_key());
    let mut at = 0;
    while let Ok(Some(info)) = frame::check(&bytes[at..], MAX_BODY) {
        let whole = &bytes[at..at + info.total()];
        at += info.total();
        let Ok(datum) = Datum::decode(info.kind, &whole[PREFIX_LEN..]) else {
            continue;
        };
        match hs.handle(datum, whole, &mut |b| b.fill(7)) {
            Ok(ClientStep::Send(Datum::Command(c))) => assert_eq!(c.cmd, "AUTH"),
            Ok(ClientStep::Send(other)) => panic!("the handshake sent {other:?}"),
            Ok(ClientStep::Linked { .. } | ClientStep::Done { .. }) => {
                panic!("a forged message 2 brought up the link")
            }
            Err(_) => {}
        }
    }
}

/// The link on hostile records: a linked pair from a real handshake, then a program of
/// operations read from the fuzzer's bytes (forged records, genuine ones, genuine ones with
/// bits flipped, replays, both directions, frames near the size limit). A record opens only
/// if it is exactly the one the peer sealed next, and a refused record leaves the nonces as
/// they were, so the genuine records after it still open.
pub fn link(data: &[u8]) {
    let (mut client, mut server) = fixture::linked();
    let mut input = Input::new(data);
    // The last genuine record each way, for replays: (record, towards the server).
    let mut last: Option<(Vec<u8>, bool)> = None;
    while !input.is_empty() {
        let op = input.byte();
        let to_server = op & 0x80 == 0;
        let (sender, receiver) = match to_server {
            true => (&mut client, &mut server),
            false => (&mut server, &mut client),
        };
        match op & 0x7f {
            0..=31 => forged(sender, receiver, input.chunk()),
            32..=63 => {
                let record = genuine(sender, receiver, input.chunk());
                last = Some((record, to_server));
            }
            64..=95 => tampered(sender, receiver, input.chunk(), input.chunk()),
            96..=111 => {
                if let Some((record, towards)) = &last {
                    let r = match *towards {
                        true => server.open(record),
                        false => client.open(record),
                    };
                    assert!(r.is_err(), "a replayed record opened");
                }
            }
            _ => oversized(sender, receiver, input.byte()),
        }
    }
}

/// Arbitrary bytes as a record: refused, unless they are exactly the record the peer would
/// seal next for what they open to (which the sender then seals, keeping the pair in step).
fn forged(sender: &mut Link, receiver: &mut Link, bytes: &[u8]) {
    if let Ok(plain) = receiver.open(bytes) {
        assert_eq!(
            sender.seal(&plain).expect("it fitted once"),
            bytes,
            "a forged record opened"
        );
    }
}

/// A genuine record of `frame` opens to it. Returns the record.
fn genuine(sender: &mut Link, receiver: &mut Link, frame: &[u8]) -> Vec<u8> {
    let record = sender.seal(frame).expect("short frames fit in a record");
    assert_eq!(record.len(), PREFIX_LEN + frame.len() + TAG_LEN);
    assert_eq!(
        receiver.open(&record).expect("a genuine record opens"),
        frame
    );
    record
}

/// A genuine record with bytes flipped by `mask` (from its start): refused if anything changed,
/// and the genuine record still opens afterwards.
fn tampered(sender: &mut Link, receiver: &mut Link, frame: &[u8], mask: &[u8]) {
    let record = sender.seal(frame).expect("short frames fit in a record");
    let mut altered = record.clone();
    for (b, m) in altered.iter_mut().zip(mask) {
        *b ^= m;
    }
    if altered != record {
        assert!(receiver.open(&altered).is_err(), "an altered record opened");
    }
    assert_eq!(
        receiver.open(&record).expect("the genuine record opens"),
        frame
    );
}

/// A frame around the largest a record holds: it seals and opens if it fits, else sealing
/// refuses it without using up a nonce.
fn oversized(sender: &mut Link, receiver: &mut Link, delta: u8) {
    let len = MAX_LINKED_BODY + PREFIX_LEN - 8 + usize::from(delta % 16);
    let frame = vec![0x5a; len];
    match sender.seal(&frame) {
        Ok(record) => {
            assert!(len + TAG_LEN <= MAX_BODY);
            assert_eq!(
                receiver.open(&record).expect("a genuine record opens"),
                frame
            );
        }
        Err(e) => {
            assert!(len + TAG_LEN > MAX_BODY);
            assert_eq!(e, LinkError::TooLong(len));
        }
    }
}
