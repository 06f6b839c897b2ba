//! A pretend server for the engine's tests, played with the protocol crate itself: it issues
//! real challenges with `PendingChallenge`, checks the client's answers, and seals messages
//! with `e2e::seal` as another client would, so what passes here talks to the real server.

use flexim_protocol::e2e::{self, ConversationKey, Envelope};
use flexim_protocol::handshake::{PendingChallenge, parse_auth};
use flexim_protocol::{
    Datum, HEADER, MAX_BODY, Message, PublicKey, SecretKey, Status, User, frame,
};
use flexim_session::{Config, Engine, Event, Framing, Random};

/// A deterministic random source that never repeats a nonce (a 64-bit counter per call).
pub(crate) fn counter() -> Random {
    counter_from(0)
}

/// A counter source starting elsewhere, for several engines of one identity (their ids and
/// nonces must differ, as the operating system's random bytes would).
pub(crate) fn counter_from(start: u64) -> Random {
    let mut n: u64 = start;
    Box::new(move |buf: &mut [u8]| {
        n += 1;
        for (i, b) in buf.iter_mut().enumerate() {
            *b = n.to_le_bytes()[i % 8] ^ (i as u8);
        }
    })
}

/// A key from one repeated byte.
pub(crate) fn key(seed: u8) -> SecretKey {
    SecretKey::from_bytes([seed; 32])
}

/// The framed datum.
pub(crate) fn frame_of(datum: impl Into<Datum>) -> Vec<u8> {
    datum.into().to_frame().expect("test datums fit in a frame")
}

/// The datum in one frame.
pub(crate) fn decode(bytes: &[u8]) -> Datum {
    let (kind, body) = frame::split_exact(bytes, MAX_BODY).expect("one whole frame");
    Datum::decode(kind, body).expect("a valid datum")
}

/// The server's introduction.
pub(crate) fn server_user(server: &SecretKey) -> User {
    User {
        aliases: vec!["flexim".into()],
        key: server.public_key(),
        last_seen: 0,
        online: None,
    }
}

/// A User datum.
pub(crate) fn user(key: &PublicKey, aliases: &[&str], online: bool) -> User {
    User {
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
        key: *key,
        last_seen: 0,
        online: Some(online),
    }
}

/// A Status frame.
pub(crate) fn st(code: i8, payload: &str) -> Vec<u8> {
    frame_of(Status::new(code, payload))
}

/// A Status frame about a message.
pub(crate) fn st_id(code: i8, payload: &str, id: &str) -> Vec<u8> {
    frame_of(Status::new(code, payload).with_id(Some(id.to_string())))
}

/// An engine for `me` over WebSocket-like messages, nothing pinned, no alias.
pub(crate) fn engine(me: &SecretKey) -> Engine {
    engine_with(me, None, None)
}

/// An engine with a pin and an alias.
pub(crate) fn engine_with(
    me: &SecretKey,
    pinned: Option<PublicKey>,
    alias: Option<&str>,
) -> Engine {
    let config = Config {
        pinned,
        alias: alias.map(str::to_string),
        framing: Framing::Messages,
    };
    Engine::new(me.clone(), config, counter())
}

/// Everything the engine wants to send, each transmit decoded as one datum.
pub(crate) fn sent(e: &mut Engine) -> Vec<Datum> {
    std::iter::from_fn(|| e.poll_transmit())
        .map(|b| decode(&b))
        .collect()
}

/// Everything the engine reported.
pub(crate) fn events(e: &mut Engine) -> Vec<Event> {
    std::iter::from_fn(|| e.poll_event()).collect()
}

/// Plays the server's side of a login with `server`'s key and returns the events: the
/// introduction, the challenge (checking the answer), the client's User datum.
pub(crate) fn login(e: &mut Engine, server: &SecretKey) -> Vec<Event> {
    e.connect();
    assert_eq!(e.poll_transmit().as_deref(), Some(&HEADER[..]));
    e.handle_bytes(&frame_of(server_user(server)));
    let auth = match sent(e).as_slice() {
        [Datum::Command(c)] => c.clone(),
        other => panic!("expected AUTH, got {other:?}"),
    };
    let (client, alias) = parse_auth(&auth).expect("AUTH names a key");
    assert_eq!(alias, None, "no alias travels with AUTH");
    let mut rng = counter();
    let (pending, challenge) = PendingChallenge::issue(server, client, 1_000, 0, &mut rng).unwrap();
    e.handle_bytes(&frame_of(challenge));
    let response = match sent(e).as_slice() {
        [Datum::AuthResponse(r)] => r.clone(),
        other => panic!("expected AuthResponse, got {other:?}"),
    };
    assert_eq!(pending.verify(&response, 1_001, 30), Ok(client));
    e.handle_bytes(&frame_of(user(&client, &[], true)));
    events(e)
}

/// An engine for `me`, logged in to `server`, its login events and transmits taken.
pub(crate) fn logged_in(me: &SecretKey, server: &SecretKey) -> Engine {
    let mut e = engine(me);
    let evs = login(&mut e, server);
    assert!(
        matches!(evs.last(), Some(Event::LoggedIn { .. })),
        "{evs:?}"
    );
    assert!(e.is_ready());
    e
}

/// A Message sealed by `from` for `to`, as another client would, with an optional id.
pub(crate) fn sealed(
    from: &SecretKey,
    to: &PublicKey,
    text: &str,
    date: i64,
    id: Option<&str>,
) -> Message {
    let key = ConversationKey::derive(from, to).unwrap();
    let env = Envelope {
        sender: &from.public_key(),
        recipient: to,
        date,
        flags: &[],
    };
    let mut nonce = [0u8; 24];
    nonce[..8].copy_from_slice(&date.to_le_bytes());
    nonce[8] = text.len() as u8;
    nonce[9..9 + text.len().min(15)].copy_from_slice(&text.as_bytes()[..text.len().min(15)]);
    Message {
        to: to.to_hex(),
        from: from.public_key().to_hex(),
        flags: vec![],
        date,
        msg: e2e::seal(&key, &env, text, nonce).unwrap(),
        id: id.map(str::to_string),
    }
}

/// The texts of the messages among `events`.
pub(crate) fn texts(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(m.text.clone()),
            _ => None,
        })
        .collect()
}

/// The id lists of the ACK commands among `out`.
pub(crate) fn acks(out: &[Datum]) -> Vec<Vec<String>> {
    out.iter()
        .filter_map(|d| match d {
            Datum::Command(c) if c.cmd == "ACK" => Some(c.payload.clone()),
            _ => None,
        })
        .collect()
}

/// The ids of the Messages among `out`, in order.
pub(crate) fn message_ids(out: &[Datum]) -> Vec<String> {
    out.iter()
        .filter_map(|d| match d {
            Datum::Message(m) => m.id.clone(),
            _ => None,
        })
        .collect()
}
