//! The test vectors of `docs/PROTOCOL.md`.
//!
//! Every vector is recomputed here in two ways where the crate allows it: through the crate's
//! public API, and independently from the primitives (HKDF-SHA256, XChaCha20-Poly1305, base64)
//! following the byte layouts the document gives. Both must equal the literals below, and every
//! literal must appear in `docs/PROTOCOL.md`, so the document and the code cannot drift apart.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use flexim_protocol::datum::{AuthResponse, Command, Datum, Message, Roster, Status, User};
use flexim_protocol::e2e::{self, ConversationKey, Envelope};
use flexim_protocol::frame;
use flexim_protocol::handshake::{self, ClientHandshake, ClientStep, ServerHandshake};
use flexim_protocol::keys::{PublicKey, SecretKey, hex};
use hkdf::Hkdf;
use sha2::Sha256;

/// The document the vectors must appear in.
const DOC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md");

/// The fixed date of every vector (the RFC's example date).
const DATE: i64 = 1_539_890_190;
/// The date of Bob's reply.
const REPLY_DATE: i64 = DATE + 1;
/// Alice's message to Bob.
const TEXT_1: &str = "HEY, LISTEN!";
/// Bob's reply to Alice.
const TEXT_2: &str = "The quick brown fox jumps over the lazy dog";

/// The deterministic fill function of the vectors: a byte counter starting at 0x00 that keeps
/// counting across calls (the challenge takes 0x00..=0x1f as its secret and 0x20..=0x37 as its
/// nonce, the client's answer 0x38..=0x4f as its nonce).
fn counter() -> impl FnMut(&mut [u8]) {
    let mut n = 0u8;
    move |buf: &mut [u8]| {
        for b in buf {
            *b = n;
            n = n.wrapping_add(1);
        }
    }
}

/// `N` bytes counting up from `start`.
fn run<const N: usize>(start: u8) -> [u8; N] {
    std::array::from_fn(|i| start.wrapping_add(i as u8))
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2));
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hkdf(salt: &[u8], ikm: &[u8], info: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, &mut out)
        .unwrap();
    out
}

fn xchacha_seal(key: &[u8; 32], nonce: &[u8; 24], msg: &[u8], aad: &[u8]) -> Vec<u8> {
    let ct = XChaCha20Poly1305::new(key.into())
        .encrypt(&XNonce::from(*nonce), Payload { msg, aad })
        .unwrap();
    [&nonce[..], &ct].concat()
}

/// The E2E associated data, built from the document's layout.
fn e2e_aad(sender: &PublicKey, recipient: &PublicKey, date: i64, flags: &[&str]) -> Vec<u8> {
    let mut a = b"FLEX-E2E-v1".to_vec();
    a.push(1);
    a.extend_from_slice(sender.as_bytes());
    a.extend_from_slice(recipient.as_bytes());
    a.extend_from_slice(&date.to_be_bytes());
    a.extend_from_slice(&(flags.len() as u16).to_be_bytes());
    for f in flags {
        a.extend_from_slice(&(f.len() as u16).to_be_bytes());
        a.extend_from_slice(f.as_bytes());
    }
    a
}

/// The padded plaintext, built from the document's layout.
fn padded(text: &str, bucket: usize) -> Vec<u8> {
    let mut p = (text.len() as u16).to_be_bytes().to_vec();
    p.extend_from_slice(text.as_bytes());
    p.resize(2 + bucket, 0);
    p
}

/// Noise's symmetric state for one handshake, written from the Noise specification (rev. 34,
/// section 5.2) with the primitives directly: the independent check of snow's transcript.
struct Sym {
    /// The chaining key.
    ck: [u8; 32],
    /// The handshake hash.
    h: [u8; 32],
    /// The cipher key, once one is mixed in.
    k: Option<[u8; 32]>,
    /// The cipher's nonce.
    n: u64,
}

impl Sym {
    fn new(prologue: &[u8]) -> Sym {
        // The protocol name is exactly 32 bytes, so it is h as it stands.
        let name: [u8; 32] = handshake::NOISE_PARAMS.as_bytes().try_into().unwrap();
        let mut sym = Sym {
            ck: name,
            h: name,
            k: None,
            n: 0,
        };
        sym.mix_hash(prologue);
        sym
    }

    fn mix_hash(&mut self, data: &[u8]) {
        use sha2::Digest as _;
        let mut d = Sha256::new();
        d.update(self.h);
        d.update(data);
        self.h = d.finalize().into();
    }

    /// HKDF with the chaining key as salt and no info gives Noise's two outputs.
    fn hkdf2(&self, ikm: &[u8]) -> ([u8; 32], [u8; 32]) {
        let mut out = [0u8; 64];
        Hkdf::<Sha256>::new(Some(&self.ck), ikm)
            .expand(&[], &mut out)
            .unwrap();
        (out[..32].try_into().unwrap(), out[32..].try_into().unwrap())
    }

    fn mix_key(&mut self, ikm: &[u8]) {
        let (ck, k) = self.hkdf2(ikm);
        self.ck = ck;
        self.k = Some(k);
        self.n = 0;
    }

    fn encrypt_and_hash(&mut self, plaintext: &[u8]) -> Vec<u8> {
        let ct = chacha_seal(&self.k.unwrap(), self.n, &self.h, plaintext);
        self.n += 1;
        self.mix_hash(&ct);
        ct
    }

    /// The transport keys: the initiator's sending key first.
    fn split(&self) -> ([u8; 32], [u8; 32]) {
        self.hkdf2(&[])
    }
}

/// ChaCha20-Poly1305 with Noise's nonce: four zero bytes, then the counter in little endian.
fn chacha_seal(key: &[u8; 32], n: u64, ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    use chacha20poly1305::{ChaCha20Poly1305, Nonce};
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&n.to_le_bytes());
    ChaCha20Poly1305::new(key.into())
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: ad,
            },
        )
        .unwrap()
}

/// A link record: `0x80 | length | ChaCha20-Poly1305(k, n, "", frame)`.
fn record_by_hand(key: &[u8; 32], n: u64, datum_frame: &[u8]) -> Vec<u8> {
    let ct = chacha_seal(key, n, &[], datum_frame);
    let mut out = Vec::new();
    frame::encode_into(flexim_protocol::link::RECORD, &ct, &mut out).unwrap();
    out
}

/// Every named vector, computed through the crate and cross-checked against an independent
/// computation from the primitives.
fn compute() -> Vec<(&'static str, String)> {
    let mut v: Vec<(&'static str, String)> = Vec::new();
    let server = SecretKey::from_bytes([0x01; 32]);
    let alice = SecretKey::from_bytes([0x02; 32]);
    let bob = SecretKey::from_bytes([0x03; 32]);
    let (s, a, b) = (server.public_key(), alice.public_key(), bob.public_key());
    v.push(("server public key", s.to_hex()));
    v.push(("alice public key", a.to_hex()));
    v.push(("bob public key", b.to_hex()));
    v.push(("alice fingerprint", a.fingerprint()));
    v.push(("bob fingerprint", b.fingerprint()));

    // The server's greeting.
    let server_user = User {
        aliases: vec!["flexim".into()],
        key: s,
        last_seen: 0,
        online: None,
    };
    let frame_server_user = Datum::User(server_user.clone()).to_frame().unwrap();
    v.push(("frame: server User", hex(&frame_server_user)));

    // The Noise XK handshake, through both state machines and by hand from the primitives.
    // Alice's ephemeral key is the first 32 bytes of the counter (0x00..=0x1f), the server's
    // is 0x20..=0x3f.
    let prologue = handshake::prologue(&frame_server_user);
    v.push(("Noise prologue", hex(&prologue)));
    let mut rng = counter();
    let mut hs = ClientHandshake::new(alice.clone());
    let ClientStep::Send(auth_cmd) = hs
        .handle(Datum::User(server_user), &frame_server_user, &mut rng)
        .unwrap()
    else {
        panic!("the client must answer the server's User with AUTH");
    };
    let e_i = SecretKey::from_bytes(run(0x00));
    let e_r = SecretKey::from_bytes(run(0x20));
    let mut sym = Sym::new(&prologue);
    sym.mix_hash(s.as_bytes());
    // -> e, es
    let mut message1 = e_i.public_key().as_bytes().to_vec();
    sym.mix_hash(e_i.public_key().as_bytes());
    sym.mix_key(&e_i.diffie_hellman(&s).unwrap());
    message1.extend(sym.encrypt_and_hash(&[]));
    let by_hand = Datum::Command(Command::new("AUTH", &[&B64.encode(&message1)]));
    assert_eq!(auth_cmd, by_hand);
    v.push(("Noise message 1", hex(&message1)));
    v.push(("frame: Command AUTH", hex(&auth_cmd.to_frame().unwrap())));
    let Datum::Command(auth_cmd) = auth_cmd else {
        unreachable!()
    };

    // <- e, ee
    let (pending, auth) =
        ServerHandshake::start(&server, &frame_server_user, &auth_cmd, run(0x20), DATE).unwrap();
    let mut message2 = e_r.public_key().as_bytes().to_vec();
    sym.mix_hash(e_r.public_key().as_bytes());
    sym.mix_key(&e_i.diffie_hellman(&e_r.public_key()).unwrap());
    message2.extend(sym.encrypt_and_hash(&[]));
    assert_eq!(auth.challenge, B64.encode(&message2));
    assert_eq!(auth.last_seen, 0);
    v.push(("Noise message 2", hex(&message2)));
    v.push((
        "frame: Auth",
        hex(&Datum::Auth(auth.clone()).to_frame().unwrap()),
    ));

    // -> s, se
    let ClientStep::Linked {
        send,
        link: mut alice_link,
    } = hs.handle(Datum::Auth(auth), &[], &mut rng).unwrap()
    else {
        panic!("the client must answer message 2 with message 3");
    };
    let mut message3 = sym.encrypt_and_hash(a.as_bytes());
    sym.mix_key(&alice.diffie_hellman(&e_r.public_key()).unwrap());
    message3.extend(sym.encrypt_and_hash(&[]));
    let Datum::AuthResponse(response) = &send else {
        panic!("message 3 rides in an AuthResponse");
    };
    assert_eq!(response.challenge, B64.encode(&message3));
    v.push(("Noise message 3", hex(&message3)));
    v.push(("frame: AuthResponse", hex(&send.to_frame().unwrap())));
    v.push(("handshake hash", hex(&sym.h)));
    let (got, mut server_link) = pending.finish(response).unwrap();
    assert_eq!(got, a);
    let (k_c2s, k_s2c) = sym.split();
    v.push(("link key c2s", hex(&k_c2s)));
    v.push(("link key s2c", hex(&k_s2c)));

    // The first record each way: the server's welcome, Alice's first request.
    let me = User {
        aliases: vec!["alice".into()],
        key: a,
        last_seen: 0,
        online: Some(true),
    };
    let me_frame = Datum::User(me.clone()).to_frame().unwrap();
    let record = server_link.seal(&me_frame).unwrap();
    assert_eq!(record, record_by_hand(&k_s2c, 0, &me_frame));
    v.push(("record: alice User", hex(&record)));
    let inner = alice_link.open(&record).unwrap();
    let (kind, body) = frame::split_exact(&inner, frame::MAX_BODY).unwrap();
    let ClientStep::Done { me: got, .. } = hs
        .handle(Datum::decode(kind, body).unwrap(), &inner, &mut rng)
        .unwrap()
    else {
        panic!("the handshake must end on the client's User");
    };
    assert_eq!(got, me);
    v.push(("frame: alice User", hex(&me_frame)));
    let roster = Datum::Command(Command::new("ROSTER", &[]))
        .to_frame()
        .unwrap();
    let record = alice_link.seal(&roster).unwrap();
    assert_eq!(record, record_by_hand(&k_c2s, 0, &roster));
    assert_eq!(server_link.open(&record).unwrap(), roster);
    v.push(("record: Command ROSTER", hex(&record)));

    // Status datums.
    v.push((
        "frame: Status relayed",
        hex(&Datum::Status(Status::new(3, "relayed")).to_frame().unwrap()),
    ));
    v.push((
        "frame: Status spoof",
        hex(&Datum::Status(Status::new(-7, "spoof")).to_frame().unwrap()),
    ));
    v.push((
        "frame: Status receipt with ids",
        hex(
            &Datum::Status(Status::new(7, "delivered").with_ids(vec!["m-1".into(), "m-2".into()]))
                .to_frame()
                .unwrap(),
        ),
    ));
    v.push((
        "frame: Command ROSTER",
        hex(&Datum::Command(Command::new("ROSTER", &[]))
            .to_frame()
            .unwrap()),
    ));
    v.push((
        "frame: empty Roster",
        hex(&Datum::Roster(Roster { users: vec![] }).to_frame().unwrap()),
    ));

    // E2E: the conversation key, from both ends.
    let ka = ConversationKey::derive(&alice, &b).unwrap();
    let kb = ConversationKey::derive(&bob, &a).unwrap();
    let ab_shared = alice.diffie_hellman(&b).unwrap();
    v.push(("X25519 alice-bob", hex(&ab_shared)));
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let conv_info = [lo.as_bytes().as_slice(), hi.as_bytes()].concat();
    let conv = hkdf(b"FLEX-E2E-v1", &ab_shared, &conv_info);
    v.push(("conversation info", hex(&conv_info)));
    v.push(("conversation key", hex(&conv)));

    // Alice to Bob, flags [NOTIFY], nonce 0x50..
    let flags_1 = vec!["NOTIFY".to_string()];
    let env_1 = Envelope {
        sender: &a,
        recipient: &b,
        date: DATE,
        flags: &flags_1,
    };
    let msg_1 = e2e::seal(&ka, &env_1, TEXT_1, run(0x50)).unwrap();
    let aad_1 = e2e_aad(&a, &b, DATE, &["NOTIFY"]);
    let pad_1 = padded(TEXT_1, 32);
    let want = [&[1u8][..], &xchacha_seal(&conv, &run(0x50), &pad_1, &aad_1)].concat();
    assert_eq!(msg_1, B64.encode(&want));
    assert_eq!(e2e::open(&kb, &env_1, &msg_1).unwrap(), TEXT_1);
    v.push(("msg 1 AAD", hex(&aad_1)));
    v.push(("msg 1 padded", hex(&pad_1)));
    v.push(("msg 1 bytes", hex(&want)));
    v.push(("msg 1", msg_1.clone()));
    let message = Message {
        to: b.to_hex(),
        from: a.to_hex(),
        flags: flags_1.clone(),
        date: DATE,
        msg: msg_1,
        id: None,
        ..Default::default()
    };
    v.push((
        "frame: Message 1",
        hex(&Datum::Message(message).to_frame().unwrap()),
    ));

    // Bob to Alice, no flags, nonce 0x68..
    let env_2 = Envelope {
        sender: &b,
        recipient: &a,
        date: REPLY_DATE,
        flags: &[],
    };
    let msg_2 = e2e::seal(&kb, &env_2, TEXT_2, run(0x68)).unwrap();
    let aad_2 = e2e_aad(&b, &a, REPLY_DATE, &[]);
    let pad_2 = padded(TEXT_2, 64);
    let want = [&[1u8][..], &xchacha_seal(&conv, &run(0x68), &pad_2, &aad_2)].concat();
    assert_eq!(msg_2, B64.encode(&want));
    assert_eq!(e2e::open(&ka, &env_2, &msg_2).unwrap(), TEXT_2);
    // Re-dating, reflecting or re-flagging makes it fail.
    let redated = Envelope {
        date: DATE,
        ..env_2
    };
    assert!(e2e::open(&ka, &redated, &msg_2).is_err());
    let reflected = Envelope {
        sender: &a,
        recipient: &b,
        ..env_2
    };
    assert!(e2e::open(&kb, &reflected, &msg_2).is_err());
    v.push(("msg 2 AAD", hex(&aad_2)));
    v.push(("msg 2", msg_2));

    // The largest message: 32 KiB of text, hex keys in `to` and `from`, no flags.
    let env_max = Envelope {
        flags: &[],
        ..env_1
    };
    let text_max = "x".repeat(e2e::MAX_PLAINTEXT);
    let msg_max = e2e::seal(&ka, &env_max, &text_max, run(0)).unwrap();
    let largest = Message {
        to: b.to_hex(),
        from: a.to_hex(),
        flags: vec![],
        date: DATE,
        msg: msg_max,
        id: None,
        ..Default::default()
    };
    let body = Datum::Message(largest).encode_body().len();
    assert!(body <= 48 * 1024);
    v.push(("largest Message body", body.to_string()));

    // Conversations (section 14.1): the id of Alice and Bob's, by hand (SHA-256 of the domain
    // and the two keys, smaller first) and by the crate, and the Request the server sends Bob.
    let (low, high) = if a.0 <= b.0 { (a, b) } else { (b, a) };
    let by_hand = {
        use sha2::Digest;
        let mut h = Sha256::new();
        h.update(b"FLEX conversation of two v1");
        h.update(low.0);
        h.update(high.0);
        hex(&h.finalize()[..16])
    };
    let id = flexim_protocol::conversation::pair_id(&a, &b);
    assert_eq!(id, by_hand);
    assert_eq!(id, flexim_protocol::conversation::pair_id(&b, &a));
    v.push(("conversation of alice and bob", id.clone()));
    // Their pair room (section 16.9): the same bytes with the top bit of the first set.
    let room = flexim_protocol::conversation::pair_room(&a, &b);
    let mut by_hand_room = room.0;
    by_hand_room[0] &= 0x7f;
    assert_eq!(hex(&by_hand_room), id);
    assert!(room.is_pair());
    v.push(("pair room of alice and bob", room.to_hex()));
    let notice = flexim_protocol::datum::Request {
        to: vec![b.to_hex()],
        from: a.to_hex(),
        options: vec![],
        id: Some(id),
        ..Default::default()
    };
    v.push((
        "frame: Request notice",
        hex(&Datum::Request(notice).to_frame().unwrap()),
    ));

    v
}

/// `(plaintext length, padded length, box bytes, base64 characters)`: the padding table.
const PADDING: &[(usize, usize, usize, usize)] = &[
    (1, 32, 75, 100),
    (32, 32, 75, 100),
    (33, 64, 107, 144),
    (64, 64, 107, 144),
    (65, 96, 139, 188),
    (100, 128, 171, 228),
    (256, 256, 299, 400),
    (257, 320, 363, 484),
    (320, 320, 363, 484),
    (321, 384, 427, 572),
    (400, 448, 491, 656),
    (1000, 1024, 1067, 1424),
    (1025, 1280, 1323, 1764),
    (5000, 5120, 5163, 6884),
    (32768, 32768, 32811, 43748),
];

/// The low-order X25519 public keys the document lists: each must be refused.
const LOW_ORDER: &[&str] = &[
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
];

/// The expected value of every named vector.
const EXPECTED: &[(&str, &str)] = &[
    (
        "server public key",
        "a4e09292b651c278b9772c569f5fa9bb13d906b46ab68c9df9dc2b4409f8a209",
    ),
    (
        "alice public key",
        "ce8d3ad1ccb633ec7b70c17814a5c76ecd029685050d344745ba05870e587d59",
    ),
    (
        "bob public key",
        "5dfedd3b6bd47f6fa28ee15d969d5bb0ea53774d488bdaf9df1c6e0124b3ef22",
    ),
    (
        "alice fingerprint",
        concat!(
            "ce8d 3ad1 ccb6 33ec 7b70 c178 14a5 c76e cd02 9685 050d 3447 45ba",
            " 0587 0e58 7d59",
        ),
    ),
    (
        "bob fingerprint",
        concat!(
            "5dfe dd3b 6bd4 7f6f a28e e15d 969d 5bb0 ea53 774d 488b daf9 df1c",
            " 6e01 24b3 ef22",
        ),
    ),
    (
        "frame: server User",
        concat!(
            "05004283a7616c696173657391a6666c6578696da36b6579c420a4e09292b651",
            "c278b9772c569f5fa9bb13d906b46ab68c9df9dc2b4409f8a209a96c6173745f",
            "7365656e00",
        ),
    ),
    (
        "frame: alice User",
        concat!(
            "05004984a7616c696173657391a5616c696365a36b6579c420ce8d3ad1ccb633",
            "ec7b70c17814a5c76ecd029685050d344745ba05870e587d59a96c6173745f73",
            "65656e00a66f6e6c696e65c3",
        ),
    ),
    (
        "frame: Status relayed",
        "06001982a673746174757303a77061796c6f6164a772656c61796564",
    ),
    (
        "frame: Status spoof",
        "06001782a6737461747573f9a77061796c6f6164a573706f6f66",
    ),
    (
        "frame: Status receipt with ids",
        "06002883a673746174757307a77061796c6f6164a964656c697665726564a369647392a36d2d31a36d2d32",
    ),
    (
        "frame: Command ROSTER",
        "02001582a3636d64a6524f53544552a77061796c6f616490",
    ),
    ("frame: empty Roster", "04000881a5757365727390"),
    (
        "X25519 alice-bob",
        "7c425a51f6a7f2e60012b0a34dd6511017807708b502ee66a2a247f171fda96c",
    ),
    (
        "conversation info",
        concat!(
            "5dfedd3b6bd47f6fa28ee15d969d5bb0ea53774d488bdaf9df1c6e0124b3ef22",
            "ce8d3ad1ccb633ec7b70c17814a5c76ecd029685050d344745ba05870e587d59",
        ),
    ),
    (
        "conversation key",
        "a6e6627092327fdd4ce4bf28b7b1158530abe9ab7d5845aa103d4c3b99c0d6b0",
    ),
    (
        "msg 1 AAD",
        concat!(
            "464c45582d4532452d763101ce8d3ad1ccb633ec7b70c17814a5c76ecd029685",
            "050d344745ba05870e587d595dfedd3b6bd47f6fa28ee15d969d5bb0ea53774d",
            "488bdaf9df1c6e0124b3ef22000000005bc8dc0e000100064e4f54494659",
        ),
    ),
    (
        "msg 1 padded",
        concat!(
            "000c4845592c204c495354454e21000000000000000000000000000000000000",
            "0000",
        ),
    ),
    (
        "msg 1 bytes",
        concat!(
            "01505152535455565758595a5b5c5d5e5f60616263646566676a28b124747373",
            "a6d1573557fe5463e95d88b5b337f438c9c4acc118e020dc1029b17df6f9f6b5",
            "56374528c8ae9004c23548",
        ),
    ),
    (
        "msg 1",
        concat!(
            "AVBRUlNUVVZXWFlaW1xdXl9gYWJjZGVmZ2oosSR0c3Om0Vc1V/5UY+ldiLWzN/Q4",
            "ycSswRjgINwQKbF99vn2tVY3RSjIrpAEwjVI",
        ),
    ),
    (
        "frame: Message 1",
        concat!(
            "03010f85a2746fd9403564666564643362366264343766366661323865653135",
            "6439363964356262306561353337373464343838626461663964663163366530",
            "313234623365663232a466726f6dd94063653864336164316363623633336563",
            "3762373063313738313461356337366563643032393638353035306433343437",
            "34356261303538373065353837643539a5666c61677391a64e4f54494659a464",
            "617465ce5bc8dc0ea36d7367d96441564252556c4e5556565a5857466c615731",
            "7864586c396759574a6a5a47566d5a326f6f7353523063334f6d30566331562f",
            "3555592b6c64694c577a4e2f51347963537377526a67494e77514b6246393976",
            "6e327456593352536a4972704145776a5649",
        ),
    ),
    (
        "msg 2 AAD",
        concat!(
            "464c45582d4532452d7631015dfedd3b6bd47f6fa28ee15d969d5bb0ea53774d",
            "488bdaf9df1c6e0124b3ef22ce8d3ad1ccb633ec7b70c17814a5c76ecd029685",
            "050d344745ba05870e587d59000000005bc8dc0f0000",
        ),
    ),
    (
        "msg 2",
        concat!(
            "AWhpamtsbW5vcHFyc3R1dnd4eXp7fH1+fx8H9Ul9wUmAV0VSpaVQBTqI4EePFJej",
            "4xi0L8H3nAAwa8qU6H8i6mc8RSFhFbSJqv5+bD+xS6T+Cl/sn9ej3wUglhDKOTDs",
            "y0nkuro+o8Z9KIw=",
        ),
    ),
    ("largest Message body", "43913"),
    (
        "Noise prologue",
        concat!(
            "464c45582d4c494e4b2d31a4464c455805004283a7616c696173657391a6666c",
            "6578696da36b6579c420a4e09292b651c278b9772c569f5fa9bb13d906b46ab6",
            "8c9df9dc2b4409f8a209a96c6173745f7365656e00",
        ),
    ),
    (
        "Noise message 1",
        concat!(
            "8f40c5adb68f25624ae5b214ea767a6ec94d829d3d7b5e1ad1ba6f3e2138285f",
            "5aa963431e129ae91f1f8594a3fe7fa0",
        ),
    ),
    (
        "frame: Command AUTH",
        concat!(
            "02005582a3636d64a441555448a77061796c6f616491d9406a30444672626150",
            "4a574a4b35624955366e5a3662736c4e67703039653134613062707650694534",
            "4b46396171574e4448684b6136523866685a536a2f6e2b67",
        ),
    ),
    (
        "Noise message 2",
        concat!(
            "358072d6365880d1aeea329adf9121383851ed21a28e3b75e965d0d2cd166254",
            "f99117dafcddc74f365e2109c6aefe50",
        ),
    ),
    (
        "frame: Auth",
        concat!(
            "00006283a464617465ce5bc8dc0ea96368616c6c656e6765d9404e594279316a",
            "5a59674e4775366a4b61333545684f446852375347696a6a7431365758513073",
            "3057596c54356b5266612f4e3348547a5a6549516e4772763551a96c6173745f",
            "7365656e00",
        ),
    ),
    (
        "Noise message 3",
        concat!(
            "a34bf6379bf033180ae5fd3d63c6ad8ccd10f7ddf644f374eb81b54b8412a357",
            "3d98e7b2c524313ecfbb1deafa83571fb30e4aa7a53519f05467fd5a9b626076",
        ),
    ),
    (
        "frame: AuthResponse",
        concat!(
            "01006581a96368616c6c656e6765d9586f3076324e3576774d78674b35663039",
            "593861746a4d30513939333252504e3036344731533451536f3163396d4f6579",
            "7853517850732b3748657236673163667377354b70365531476642555a2f3161",
            "6d324a6764673d3d",
        ),
    ),
    (
        "conversation of alice and bob",
        "182e7ed28370399e409f7170c254c109",
    ),
    (
        "pair room of alice and bob",
        "982e7ed28370399e409f7170c254c109",
    ),
    (
        "frame: Request notice",
        concat!(
            "0a00bc84a2746f91d94035646665646433623662643437663666613238656531",
            "3564393639643562623065613533373734643438386264616639646631633665",
            "30313234623365663232a466726f6dd940636538643361643163636236333365",
            "6337623730633137383134613563373665636430323936383530353064333434",
            "3734356261303538373065353837643539a76f7074696f6e7390a26964d92031",
            "38326537656432383337303339396534303966373137306332353463313039",
        ),
    ),
    (
        "handshake hash",
        "564ced4e450ed82cb216d3076d6b7c0417d418240f3376705ffb17fb9774acf8",
    ),
    (
        "link key c2s",
        "326cd39ffffef233dec7c162f200520cf996bb2db6425661b92c1e134686c1fb",
    ),
    (
        "link key s2c",
        "f509c3cd08dc336aecfad85aeb47e20e0275207b0744049a74e88d196e5207d9",
    ),
    (
        "record: alice User",
        concat!(
            "80005c9faf43886fd8b019ce58808bf179bab633fb48161b58ebf04a8fc82f8a",
            "95a67299d7c9a2590ff4c8651d00cda224b4e55203ebecc9c471133e2a633b39",
            "f49fb5a7055c03e5c59f2a671cf43896e0415b56884f7fd69d9a1c8d21e5e0",
        ),
    ),
    (
        "record: Command ROSTER",
        concat!(
            "800028ebb9cb8edc55714b841c4bdc4f8b803d074ea127cd8b59ff33cf4b0af2",
            "645c15a14b4988f242cbc3",
        ),
    ),
];

fn expected(name: &str) -> &'static str {
    EXPECTED
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no expected value for {name:?}"))
        .1
}

fn squeeze(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Prints every vector: `cargo test -p flexim-protocol --test vectors -- --nocapture print`.
#[test]
fn print_vectors() {
    for (name, value) in compute() {
        println!("{name}: {value}");
    }
}

#[test]
fn vectors_match_the_literals() {
    let computed = compute();
    for (name, value) in &computed {
        assert_eq!(value, expected(name), "vector {name:?}");
    }
    assert_eq!(computed.len(), EXPECTED.len(), "every literal is computed");
}

#[test]
fn padding_table_matches() {
    let key = ConversationKey::derive(
        &SecretKey::from_bytes([0x02; 32]),
        &SecretKey::from_bytes([0x03; 32]).public_key(),
    )
    .unwrap();
    let p = PublicKey([9; 32]);
    let env = Envelope {
        sender: &p,
        recipient: &p,
        date: 0,
        flags: &[],
    };
    for &(len, pad, raw, b64) in PADDING {
        assert_eq!(e2e::padded_len(len), pad, "padded length of {len}");
        let msg = e2e::seal(&key, &env, &"x".repeat(len), [0; 24]).unwrap();
        assert_eq!(B64.decode(&msg).unwrap().len(), raw, "box bytes for {len}");
        assert_eq!(msg.len(), b64, "base64 length for {len}");
    }
    assert!(e2e::seal(&key, &env, &"x".repeat(e2e::MAX_PLAINTEXT + 1), [0; 24]).is_err());
    assert!(e2e::seal(&key, &env, "", [0; 24]).is_err());
}

#[test]
fn low_order_keys_are_refused() {
    let server = SecretKey::from_bytes([0x01; 32]);
    for k in LOW_ORDER {
        let key = PublicKey(unhex(k).try_into().unwrap());
        assert_eq!(server.diffie_hellman(&key), None, "{k}");
        assert!(key.check().is_err(), "{k}");
        assert!(ConversationKey::derive(&server, &key).is_err());
    }
}

/// An initiator written by hand that claims a low-order point as its identity: the `se` of
/// message 3 is then all zeros, which it can compute without any secret. The server must refuse
/// the key, or anyone could log in as that point.
#[test]
fn a_low_order_identity_cannot_log_in() {
    let server = SecretKey::from_bytes([0x01; 32]);
    let s = server.public_key();
    let hello = Datum::User(User {
        aliases: vec![],
        key: s,
        last_seen: 0,
        online: None,
    })
    .to_frame()
    .unwrap();
    for k in LOW_ORDER.iter().take(3) {
        let fake: [u8; 32] = unhex(k).try_into().unwrap();
        let e_i = SecretKey::from_bytes([0x44; 32]);
        let mut sym = Sym::new(&handshake::prologue(&hello));
        sym.mix_hash(s.as_bytes());
        let mut m1 = e_i.public_key().as_bytes().to_vec();
        sym.mix_hash(e_i.public_key().as_bytes());
        sym.mix_key(&e_i.diffie_hellman(&s).unwrap());
        m1.extend(sym.encrypt_and_hash(&[]));
        let auth = Command::new("AUTH", &[&B64.encode(&m1)]);
        let (pending, auth) =
            ServerHandshake::start(&server, &hello, &auth, [0x55; 32], DATE).unwrap();
        let m2 = B64.decode(&auth.challenge).unwrap();
        let e_r = PublicKey(m2[..32].try_into().unwrap());
        sym.mix_hash(e_r.as_bytes());
        sym.mix_key(&e_i.diffie_hellman(&e_r).unwrap());
        sym.encrypt_and_hash(&[]);
        let mut m3 = sym.encrypt_and_hash(&fake);
        sym.mix_key(&[0; 32]);
        m3.extend(sym.encrypt_and_hash(&[]));
        let resp = AuthResponse {
            challenge: B64.encode(&m3),
        };
        assert!(pending.finish(&resp).is_err(), "{k} logged in");
    }
}

#[test]
fn framing_limits() {
    assert_eq!(frame::HEADER, [0xa4, 0x46, 0x4c, 0x45, 0x58]);
    assert_eq!(frame::MAX_BODY, 65535);
    assert_eq!(frame::check(&[3, 0xc0, 0x00], 49152), Ok(None));
    assert!(frame::check(&[3, 0xc0, 0x01], 49152).is_err());
    // Every framed vector decodes and re-encodes to the same bytes.
    for (name, value) in EXPECTED.iter().filter(|(n, _)| n.starts_with("frame: ")) {
        let bytes = unhex(value);
        let (kind, body) = frame::split_exact(&bytes, frame::MAX_BODY).unwrap();
        let datum = Datum::decode(kind, body).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(datum.to_frame().unwrap(), bytes, "{name}");
    }
}

#[test]
fn the_document_holds_every_vector() {
    let raw = std::fs::read_to_string(DOC_PATH).expect("docs/PROTOCOL.md is readable");
    let doc = squeeze(&raw);
    for (name, value) in EXPECTED {
        // Values with spaces (fingerprints) must appear verbatim; long hex and base64 may be
        // wrapped or grouped with spaces in the document.
        let found = if value.contains(' ') {
            raw.contains(value)
        } else {
            doc.contains(value)
        };
        assert!(found, "PROTOCOL.md lacks {name:?}: {value}");
    }
    for (len, pad, raw, b64) in PADDING {
        let row = format!("|{len}|{pad}|{raw}|{b64}|");
        assert!(
            doc.contains(&row),
            "PROTOCOL.md lacks the padding row {row}"
        );
    }
    for k in LOW_ORDER {
        assert!(doc.contains(k), "PROTOCOL.md lacks the low-order key {k}");
    }
}
