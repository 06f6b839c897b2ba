//! The handshake and the link against themselves: what succeeds, and what an attacker on the
//! path or with the wrong key gets.

use super::*;
use crate::link::LinkError;

fn counter_rng() -> impl FnMut(&mut [u8]) {
    let mut n = 0u8;
    move |buf: &mut [u8]| {
        for b in buf {
            n = n.wrapping_add(1);
            *b = n;
        }
    }
}

fn server_user(key: PublicKey) -> User {
    User {
        aliases: vec!["flexim".into()],
        key,
        last_seen: 0,
        online: None,
    }
}

/// Runs a handshake between `client` and a server holding `server` that announces `announced`
/// (its own key, or another one): the client's links and the server's outcome.
fn run(
    server: &SecretKey,
    announced: PublicKey,
    client: &SecretKey,
    tamper_hello: bool,
) -> Result<(Link, PublicKey, Link), HandshakeError> {
    let mut rng = counter_rng();
    let hello = Datum::User(server_user(announced));
    let frame = hello.to_frame().unwrap();
    let mut seen = frame.clone();
    if tamper_hello {
        // A middlebox changes the introduction it passes on (an alias, say), not the key.
        let last = seen.len() - 1;
        seen[last] ^= 1;
    }
    let mut hs = ClientHandshake::new(client.clone());
    let ClientStep::Send(Datum::Command(auth)) = hs.handle(hello, &seen, &mut rng)? else {
        panic!("AUTH first");
    };
    let (pending, auth) = ServerHandshake::start(server, &frame, &auth, [9; 32], 1000)?;
    assert_eq!(auth.last_seen, 0, "nothing about a user before the proof");
    let ClientStep::Linked { send, link } = hs.handle(Datum::Auth(auth), &[], &mut rng)? else {
        panic!("message 3 next");
    };
    let Datum::AuthResponse(resp) = send else {
        panic!("an AuthResponse");
    };
    let (key, server_link) = pending.finish(&resp)?;
    Ok((link, key, server_link))
}

#[test]
fn the_handshake_proves_both_keys_and_links_both_ways() {
    let (server, client) = (
        SecretKey::from_bytes([1; 32]),
        SecretKey::from_bytes([2; 32]),
    );
    let (mut c, key, mut s) = run(&server, server.public_key(), &client, false).unwrap();
    assert_eq!(key, client.public_key());
    for i in 0..3u8 {
        let frame = [6, 0, 1, 0x80 + i];
        let record = c.seal(&frame).unwrap();
        assert_eq!(record[0], crate::link::RECORD);
        assert_eq!(record.len(), 3 + frame.len() + 16);
        assert_eq!(s.open(&record).unwrap(), frame);
        let back = s.seal(&frame).unwrap();
        assert_eq!(c.open(&back).unwrap(), frame);
    }
}

#[test]
fn a_server_without_the_announced_key_cannot_read_message_one() {
    let (server, client) = (
        SecretKey::from_bytes([1; 32]),
        SecretKey::from_bytes([2; 32]),
    );
    let other = SecretKey::from_bytes([3; 32]).public_key();
    assert_eq!(
        run(&server, other, &client, false).err(),
        Some(HandshakeError::Noise(1))
    );
}

#[test]
fn an_altered_introduction_breaks_the_handshake() {
    let (server, client) = (
        SecretKey::from_bytes([1; 32]),
        SecretKey::from_bytes([2; 32]),
    );
    assert_eq!(
        run(&server, server.public_key(), &client, true).err(),
        Some(HandshakeError::Noise(1))
    );
}

#[test]
fn replayed_reordered_altered_and_injected_records_fail() {
    let (server, client) = (
        SecretKey::from_bytes([1; 32]),
        SecretKey::from_bytes([2; 32]),
    );
    let (mut c, _, mut s) = run(&server, server.public_key(), &client, false).unwrap();
    let first = c.seal(&[6, 0, 1, 0x80]).unwrap();
    let second = c.seal(&[6, 0, 1, 0x81]).unwrap();
    // Reordered: the second record under the first nonce.
    assert_eq!(s.open(&second), Err(LinkError::Forged));

    let (mut c, _, mut s) = run(&server, server.public_key(), &client, false).unwrap();
    let first_again = c.seal(&[6, 0, 1, 0x80]).unwrap();
    assert_eq!(first_again, first, "same keys, same nonce, same record");
    assert!(s.open(&first_again).is_ok());
    // Replayed.
    assert_eq!(s.open(&first_again), Err(LinkError::Forged));

    let (mut c, _, mut s) = run(&server, server.public_key(), &client, false).unwrap();
    let mut altered = c.seal(&[6, 0, 1, 0x80]).unwrap();
    altered[5] ^= 0x40;
    assert_eq!(s.open(&altered), Err(LinkError::Forged));

    let (_, _, mut s) = run(&server, server.public_key(), &client, false).unwrap();
    // Injected in clear, and as a record under keys of the attacker's own.
    assert_eq!(s.open(&[6, 0, 1, 0x80]), Err(LinkError::NotARecord(6)));
    let mallory = SecretKey::from_bytes([4; 32]);
    let (mut m, _, _) = run(&server, server.public_key(), &mallory, false).unwrap();
    assert_eq!(
        s.open(&m.seal(&[6, 0, 1, 0x80]).unwrap()),
        Err(LinkError::Forged)
    );
}

#[test]
fn garbage_in_the_handshake_is_refused_clearly() {
    let server = SecretKey::from_bytes([1; 32]);
    let frame = Datum::User(server_user(server.public_key()))
        .to_frame()
        .unwrap();
    for payload in [vec![], vec!["!!".to_string()], vec!["AAAA".to_string()]] {
        let auth = Command {
            cmd: "AUTH".into(),
            payload,
        };
        assert_eq!(
            ServerHandshake::start(&server, &frame, &auth, [9; 32], 0).err(),
            Some(HandshakeError::BadEncoding {
                step: 1,
                expected: 48
            })
        );
    }
    // A server announcing a low-order key is refused before anything is sent.
    let mut hs = ClientHandshake::new(SecretKey::from_bytes([2; 32]));
    let hello = Datum::User(server_user(PublicKey([0; 32])));
    assert!(matches!(
        hs.handle(hello, &[], &mut counter_rng()),
        Err(HandshakeError::BadKey(KeyError::LowOrder))
    ));
}

#[test]
fn records_over_the_frame_limit_cannot_be_sealed() {
    let (server, client) = (
        SecretKey::from_bytes([1; 32]),
        SecretKey::from_bytes([2; 32]),
    );
    let (mut c, _, mut s) = run(&server, server.public_key(), &client, false).unwrap();
    let mut big = vec![3u8];
    big.extend_from_slice(&(crate::link::MAX_LINKED_BODY as u16).to_be_bytes());
    big.resize(3 + crate::link::MAX_LINKED_BODY, 0xc0);
    let record = c.seal(&big).unwrap();
    assert_eq!(record.len(), 3 + 65535);
    assert_eq!(s.open(&record).unwrap(), big);
    big.push(0);
    assert_eq!(c.seal(&big), Err(LinkError::TooLong(big.len())));
}
