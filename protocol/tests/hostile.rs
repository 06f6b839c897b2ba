//! Hostile input, generated (issue 12, part 6): whatever bytes arrive, the framing, the datum
//! decoders, the handshake and the link answer with an error, never a panic, and what decodes
//! agrees with itself. proptest shrinks a failing input to a small one, which then belongs in
//! a regression test here.

use flexim_protocol::datum::{Command, Message, MessageRef};
use flexim_protocol::frame::{self, PREFIX_LEN};
use flexim_protocol::handshake::ServerHandshake;
use flexim_protocol::{Datum, SecretKey};
use proptest::prelude::*;

// The linked pair from a real handshake with fixed keys is the fuzz targets' fixture, shared
// rather than written twice.
#[allow(unreachable_pub, dead_code)]
#[path = "../../fuzz/src/fixture.rs"]
mod fixture;
use fixture::linked;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// The framing: `check` never reads past what it says is a frame, and `split_exact`
    /// agrees with it.
    #[test]
    fn framing_never_panics_and_never_overreads(bytes in proptest::collection::vec(any::<u8>(), 0..600), max in 0usize..70_000) {
        match frame::check(&bytes, max) {
            Ok(Some(info)) => {
                prop_assert!(info.total() <= bytes.len());
                prop_assert!(info.len <= max);
                let whole = &bytes[..info.total()];
                prop_assert_eq!(frame::split_exact(whole, max).map(|(k, _)| k), Ok(info.kind));
            }
            Ok(None) => prop_assert!(bytes.len() < PREFIX_LEN || frame::split_exact(&bytes, max).is_err()),
            Err(_) => prop_assert!(bytes.len() >= PREFIX_LEN),
        }
    }

    /// Every datum decoder on arbitrary bodies: an error or a datum that encodes and decodes
    /// to itself.
    #[test]
    fn datum_decoding_never_panics_and_round_trips(kind in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(datum) = Datum::decode(kind, &body) {
            let again = datum.to_frame().unwrap();
            let (k, b) = frame::split_exact(&again, frame::MAX_BODY).unwrap();
            prop_assert_eq!(Datum::decode(k, b).unwrap(), datum);
        }
        // The relay's in-place reader of Messages agrees with the full decoder.
        if let (Ok(r), Ok(Datum::Message(m))) = (MessageRef::decode(&body), Datum::decode(3, &body)) {
            prop_assert_eq!((r.to, r.from, r.date), (m.to.as_str(), m.from.as_str(), m.date));
        }
    }

    /// A well-formed Message with arbitrary strings survives the round trip, and the in-place
    /// reader sees the same fields.
    #[test]
    fn messages_round_trip(to in ".{0,80}", from in ".{0,80}", msg in ".{0,200}", date in any::<i64>(), id in proptest::option::of("[a-zA-Z0-9_-]{1,64}")) {
        let m = Message { to, from, flags: vec![], date, msg, id, ..Default::default() };
        let f = Datum::Message(m.clone()).to_frame().unwrap();
        let r = MessageRef::decode(&f[PREFIX_LEN..]).unwrap();
        prop_assert_eq!((r.to, r.from, r.date, r.id), (m.to.as_str(), m.from.as_str(), m.date, m.id.as_deref()));
        prop_assert_eq!(Datum::decode(f[0], &f[PREFIX_LEN..]).unwrap(), Datum::Message(m));
    }

    /// The handshake's first step on arbitrary AUTH payloads: refused, never a panic.
    #[test]
    fn the_handshake_refuses_any_payload(payload in proptest::collection::vec(".{0,100}", 0..3)) {
        let server = SecretKey::from_bytes([1; 32]);
        let auth = Command { cmd: "AUTH".into(), payload };
        prop_assert!(ServerHandshake::start(&server, b"hello", &auth, [9; 32], 0).is_err());
    }

    /// The link on arbitrary records: refused, and the real next record still opens (a
    /// forged one does not move the receiving nonce).
    #[test]
    fn the_link_refuses_forged_records(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let (mut client, mut server) = linked();
        prop_assert!(server.open(&bytes).is_err());
        let frame = [6u8, 0, 1, 0x80];
        let record = client.seal(&frame).unwrap();
        prop_assert_eq!(server.open(&record).unwrap(), frame.to_vec());
    }
}

/// The links are built once per case above; this checks the fixture itself.
#[test]
fn the_fixture_links() {
    let (mut c, mut s) = linked();
    let r = s.seal(&[6, 0, 1, 0x80]).unwrap();
    assert_eq!(c.open(&r).unwrap(), vec![6, 0, 1, 0x80]);
}

/// `body` (a small fixmap) with one more key, holding `levels` nested arrays: a body
/// `levels + 1` deep.
fn nested(mut body: Vec<u8>, levels: usize) -> Vec<u8> {
    assert!(matches!(body[0], 0x80..=0x8e), "a small fixmap");
    body[0] += 1;
    body.extend_from_slice(&[0xa1, b'x']);
    body.extend(std::iter::repeat_n(0x91, levels));
    body.push(0xc0);
    body
}

/// Deep nesting is refused before it can exhaust the stack: the `datums` fuzz target made a
/// 1 KB body of a thousand nested arrays, on which the decoder's recursion overflowed a test
/// thread's stack (a debug build). The limit is 32 levels, the datum's own map counted, in an
/// ignored extension field too, and the relay's Message reader keeps the same limit.
#[test]
fn nesting_deeper_than_the_limit_is_refused() {
    use flexim_protocol::datum::MAX_DEPTH;
    let user = Datum::User(fixture::hello(&SecretKey::from_bytes([1; 32]))).encode_body();
    let message = Datum::Message(Message {
        to: "a".into(),
        from: "b".into(),
        flags: vec![],
        date: 0,
        msg: "m".into(),
        id: None,
        ..Default::default()
    })
    .encode_body();
    for (levels, ok) in [
        (MAX_DEPTH - 1, true),
        (MAX_DEPTH, false),
        (1000, false),
        (60_000, false),
    ] {
        assert_eq!(
            Datum::decode(5, &nested(user.clone(), levels)).is_ok(),
            ok,
            "{levels} levels"
        );
        let body = nested(message.clone(), levels);
        assert_eq!(Datum::decode(3, &body).is_ok(), ok, "{levels} levels");
        assert_eq!(MessageRef::decode(&body).is_ok(), ok, "{levels} levels");
    }
}
