//! A pretend server for the engine's tests, played with the protocol crate itself: it runs the
//! responder's side of the Noise handshake with `ServerHandshake`, keeps its end of the link
//! (a [`Client`] seals what the test feeds and opens what the engine sends), and seals messages
//! with `e2e::seal` as another client would, so what passes here talks to the real server.

use flexim_protocol::e2e::{self, ConversationKey, Envelope};
use std::ops::{Deref, DerefMut};

use flexim_protocol::handshake::ServerHandshake;
use flexim_protocol::{
    Datum, HEADER, Link, MAX_BODY, Message, PublicKey, SecretKey, Status, User, frame,
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

/// An engine with the pretend server's end of its link: the test feeds clear frames and reads
/// clear frames, and the link in between is real.
pub(crate) struct Client {
    /// The engine under test.
    pub(crate) engine: Engine,
    /// The pretend server's end of the link, once a login brought it up.
    link: Option<Link>,
    /// What the engine sent during the login, opened, for the test to read: [`login`] answers
    /// the engine's KeyPackage count itself and keeps the rest here.
    held: std::collections::VecDeque<Vec<u8>>,
}

impl Deref for Client {
    type Target = Engine;
    fn deref(&self) -> &Engine {
        &self.engine
    }
}

impl DerefMut for Client {
    fn deref_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }
}

impl Client {
    /// Wraps an engine that has no connection yet.
    pub(crate) fn new(engine: Engine) -> Client {
        Client {
            engine,
            link: None,
            held: Default::default(),
        }
    }

    /// Feeds what the server sends: clear bytes before the link, and each whole frame in
    /// `bytes` sealed into a record after it.
    pub(crate) fn handle_bytes(&mut self, bytes: &[u8]) {
        let Some(link) = &mut self.link else {
            return self.engine.handle_bytes(bytes);
        };
        let mut at = 0;
        while let Ok(Some(info)) = frame::check(&bytes[at..], MAX_BODY) {
            let record = link.seal(&bytes[at..at + info.total()]).unwrap();
            self.engine.handle_bytes(&record);
            at += info.total();
        }
        // What is left is no whole frame: a garbled datum, sealed as the server would seal it.
        if at < bytes.len() {
            let record = link.seal(&bytes[at..]).unwrap();
            self.engine.handle_bytes(&record);
        }
    }

    /// Feeds bytes as they are, past the link: what an attacker on the path would inject.
    pub(crate) fn inject(&mut self, bytes: &[u8]) {
        self.engine.handle_bytes(bytes);
    }

    /// The next thing the engine sends, opened if the link is up.
    pub(crate) fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if let Some(held) = self.held.pop_front() {
            return Some(held);
        }
        let bytes = self.engine.poll_transmit()?;
        Some(match &mut self.link {
            Some(link) => link.open(&bytes).expect("the engine's records open"),
            None => bytes,
        })
    }

    /// Starts a connection (the link of the last one is gone).
    pub(crate) fn connect(&mut self) {
        self.link = None;
        self.engine.connect();
    }

    /// Ends the connection.
    pub(crate) fn disconnected(&mut self) {
        self.link = None;
        self.engine.disconnected();
    }
}

/// An engine for `me` over WebSocket-like messages, nothing pinned, no alias.
pub(crate) fn engine(me: &SecretKey) -> Client {
    engine_with(me, None, None)
}

/// An engine with a pin and an alias.
pub(crate) fn engine_with(
    me: &SecretKey,
    pinned: Option<PublicKey>,
    alias: Option<&str>,
) -> Client {
    let config = Config {
        pinned,
        alias: alias.map(str::to_string),
        framing: Framing::Messages,
        rooms: true,
        pairs: false,
    };
    Client::new(Engine::new(me.clone(), config, counter()))
}

/// Everything the engine wants to send, each transmit decoded as one datum.
pub(crate) fn sent(e: &mut Client) -> Vec<Datum> {
    std::iter::from_fn(|| e.poll_transmit())
        .map(|b| decode(&b))
        .collect()
}

/// Everything the engine reported.
pub(crate) fn events(e: &mut Engine) -> Vec<Event> {
    std::iter::from_fn(|| e.poll_event()).collect()
}

/// Plays the server's side of a login with `server`'s key and returns the events: the
/// introduction, Noise messages 1 to 3 (the client's key proved by the third), the client's
/// User datum as the link's first record.
pub(crate) fn login(e: &mut Client, server: &SecretKey) -> Vec<Event> {
    e.connect();
    assert_eq!(e.poll_transmit().as_deref(), Some(&HEADER[..]));
    let hello = frame_of(server_user(server));
    e.handle_bytes(&hello);
    let auth = match sent(e).as_slice() {
        [Datum::Command(c)] => c.clone(),
        other => panic!("expected AUTH, got {other:?}"),
    };
    assert_eq!(
        auth.payload.len(),
        1,
        "AUTH carries message 1 and nothing else"
    );
    let (pending, challenge) =
        ServerHandshake::start(server, &hello, &auth, [7; 32], 1_000).expect("message 1 reads");
    e.handle_bytes(&frame_of(challenge));
    let response = match sent(e).as_slice() {
        [Datum::AuthResponse(r)] => r.clone(),
        other => panic!("expected AuthResponse, got {other:?}"),
    };
    let (client, link) = pending.finish(&response).expect("message 3 reads");
    assert_eq!(client, *e.me());
    e.link = Some(link);
    e.handle_bytes(&frame_of(user(&client, &[], true)));
    // The engine counts its KeyPackages first at every login (docs/PROTOCOL.md §16.2): the
    // pretend server holds plenty, and the tests see everything else the engine sent.
    let mut counted = false;
    let out: Vec<Vec<u8>> = std::iter::from_fn(|| e.poll_transmit()).collect();
    for bytes in out {
        match decode(&bytes) {
            Datum::Command(c) if c.cmd == "KEYPACKAGES" && !counted => counted = true,
            _ => e.held.push_back(bytes),
        }
    }
    assert!(counted, "the engine counts its KeyPackages at login");
    e.handle_bytes(&st(12, "64"));
    events(e)
        .into_iter()
        .filter(|ev| {
            !matches!(
                ev,
                Event::Answer {
                    answer: flexim_session::Answer::KeyPackages(_),
                    ..
                }
            )
        })
        .collect()
}

/// An engine for `me`, logged in to `server`, its login events and transmits taken.
pub(crate) fn logged_in(me: &SecretKey, server: &SecretKey) -> Client {
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
        ..Default::default()
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
