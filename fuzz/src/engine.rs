//! The check of the engine's fuzz target: the session [`Engine`] run by a program of operations
//! read from the fuzzer's bytes, against a pretend server played with the protocol crate
//! (fixed keys, real handshakes). Operations feed clear bytes (before the link) or inject them
//! (after it, as someone on the path would), feed bytes sealed by the server's end of the link,
//! feed well-formed datums built from the input (answers, notices, users, messages sealed by a
//! real peer or forged), call the application's API, log in for real, connect and disconnect.
//!
//! After every operation the driver's loop runs (every transmit taken, every event read) and
//! the engine's invariants are checked: it never panics; everything it sends is one whole
//! datum (sealed into a record that the server's end opens, once the link is up); bytes
//! injected past the link are never read as a datum from the server; no login succeeds but a
//! real one, and a real one always does; a message is reported only if its real sender sealed
//! it, from that sender, and never twice. `session/tests/engine/fuzz_corpus.rs` replays the
//! committed corpus through [`engine`] in the ordinary test suite.

use std::collections::HashSet;

use flexim_protocol::e2e::{self, ConversationKey, Envelope};
use flexim_protocol::frame::{self, PREFIX_LEN};
use flexim_protocol::handshake::ServerHandshake;
use flexim_protocol::{Datum, HEADER, Link, MAX_BODY, Message, PublicKey, Status, User};
use flexim_session::{Config, Engine, EngineError, Event, Framing, Lookup};

use super::fixture::{self, Input};

/// Real logins per input: each costs a handful of X25519 operations, and two are enough to
/// cover a reconnect (the outbox sent again, the alias claimed again).
const MAX_LOGINS: usize = 2;

/// Runs the engine on the program in `data`; the first byte sets the engine up.
pub fn engine(data: &[u8]) {
    let mut input = Input::new(data);
    let mut h = Harness::new(input.byte());
    while !input.is_empty() {
        let op = input.byte();
        h.run(op, &mut input);
    }
}

/// The engine, the pretend server's end of its link, and what the checks remember.
struct Harness {
    /// The engine under test.
    engine: Engine,
    /// The server's end of the link while the engine's is up.
    link: Option<Link>,
    /// Real logins done so far.
    logins: usize,
    /// Texts that a real peer sealed for the engine's user.
    genuine: HashSet<String>,
    /// The de-duplication keys of the messages reported.
    reported: HashSet<String>,
    /// Nonces for the peer's boxes, counted so that no two boxes are alike.
    boxes: u64,
}

/// What an operation allows the events after it to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Anything but a login (the ordinary case).
    Any,
    /// Bytes injected past the link: nothing but a broken link and notices.
    Injected,
    /// A new connection (which ends the one before): its end is reported while the next
    /// one is open.
    Connect,
    /// A real login (on a new connection): it must succeed.
    Login,
}

impl Harness {
    /// An engine set up by `setup`: its framing, its pin (none, the server's, another key) and
    /// whether it claims an alias at every login.
    fn new(setup: u8) -> Harness {
        let pinned = match (setup >> 1) % 3 {
            0 => None,
            1 => Some(fixture::server_key().public_key()),
            _ => Some(fixture::peer_key().public_key()),
        };
        let config = Config {
            pinned,
            alias: (setup & 8 != 0).then(|| "alice".to_string()),
            framing: match setup & 1 {
                0 => Framing::Messages,
                _ => Framing::Stream,
            },
            rooms: false,
            pairs: false,
        };
        let mut n = 0u64;
        let random = Box::new(move |buf: &mut [u8]| {
            n += 1;
            for (i, b) in buf.iter_mut().enumerate() {
                *b = n.to_le_bytes()[i % 8] ^ (i as u8);
            }
        });
        Harness {
            engine: Engine::new(fixture::client_key(), config, random),
            link: None,
            logins: 0,
            genuine: HashSet::new(),
            reported: HashSet::new(),
            boxes: 0,
        }
    }

    /// One operation, then the driver's loop and the checks.
    fn run(&mut self, op: u8, input: &mut Input<'_>) {
        let expect = match op % 10 {
            0 => {
                let injected = self.link.is_some();
                self.engine.handle_bytes(input.chunk());
                if injected {
                    Expect::Injected
                } else {
                    Expect::Any
                }
            }
            1 => {
                let bytes = input.chunk().to_vec();
                self.feed(&bytes);
                Expect::Any
            }
            2 => {
                self.status(input);
                Expect::Any
            }
            3 => {
                self.user(input);
                Expect::Any
            }
            4 => {
                self.message(input);
                Expect::Any
            }
            5 | 6 => {
                self.act(input);
                Expect::Any
            }
            7 if self.logins < MAX_LOGINS => {
                self.login();
                Expect::Login
            }
            8 => {
                self.link = None;
                match input.byte() % 2 {
                    0 => self.engine.disconnected(),
                    _ => self.engine.connect(),
                }
                Expect::Connect
            }
            _ => {
                // A stream cut anywhere: one datum frame delivered in two reads.
                let bytes = input.chunk().to_vec();
                let cut = usize::from(input.byte()).min(bytes.len());
                self.engine.handle_bytes(&bytes[..cut]);
                self.engine.handle_bytes(&bytes[cut..]);
                Expect::Any
            }
        };
        self.drive(expect);
    }

    /// Feeds what the server sends: sealed into one record once the link is up, clear before.
    fn feed(&mut self, frame: &[u8]) {
        match &mut self.link {
            Some(link) => {
                // A frame too long for a record is one the server could not send.
                if let Ok(record) = link.seal(frame) {
                    self.engine.handle_bytes(&record);
                }
            }
            None => self.engine.handle_bytes(frame),
        }
    }

    /// Feeds one datum.
    fn feed_datum(&mut self, datum: Datum) {
        if let Ok(frame) = datum.to_frame() {
            self.feed(&frame);
        }
    }

    /// A Status: any code, a payload, and perhaps the id of a message in the outbox (so that
    /// answers and receipts meet the messages they are about) or an id from the input.
    fn status(&mut self, input: &mut Input<'_>) {
        let code = input.byte() as i8;
        let payload = String::from_utf8_lossy(input.chunk()).into_owned();
        let pick = input.byte();
        let id = match pick % 4 {
            0 => None,
            1 => Some(String::from_utf8_lossy(input.chunk()).into_owned()),
            _ => {
                let ids: Vec<&str> = self.engine.outbox().ids().collect();
                (!ids.is_empty()).then(|| ids[usize::from(pick) % ids.len()].to_string())
            }
        };
        self.feed_datum(Datum::Status(Status::new(code, payload).with_id(id)));
    }

    /// A User datum about the peer, this user, the server or a key from the input, with
    /// aliases from the input (so that aliases get keys, and keys change under them).
    fn user(&mut self, input: &mut Input<'_>) {
        let pick = input.byte();
        let key = match pick % 4 {
            0 => fixture::peer_key().public_key(),
            1 => fixture::client_key().public_key(),
            2 => fixture::server_key().public_key(),
            _ => PublicKey(input.bytes(32).try_into().unwrap_or([0x42; 32])),
        };
        let aliases = String::from_utf8_lossy(input.chunk())
            .split(',')
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        let online = match pick >> 2 & 3 {
            0 => None,
            n => Some(n == 1),
        };
        let user = User {
            aliases,
            key,
            last_seen: i64::from(input.byte()),
            online,
        };
        let datum = match pick & 0x10 {
            0 => Datum::User(user),
            _ => Datum::Roster(flexim_protocol::Roster { users: vec![user] }),
        };
        self.feed_datum(datum);
    }

    /// A Message for this user: sealed by the real peer (whose text may then be reported),
    /// or carrying a box from the input (which must never open). The sender is named by key
    /// or by an alias, which the engine looks up.
    fn message(&mut self, input: &mut Input<'_>) {
        let pick = input.byte();
        let text = String::from_utf8_lossy(input.chunk()).into_owned();
        let peer = fixture::peer_key();
        let me = fixture::client_key().public_key();
        let date = i64::from(input.byte());
        let flags = match pick & 4 {
            0 => vec![],
            _ => vec!["NOTIFY".to_string()],
        };
        let msg = match pick & 1 {
            0 => {
                self.boxes += 1;
                let mut nonce = [0u8; 24];
                nonce[..8].copy_from_slice(&self.boxes.to_le_bytes());
                let key = ConversationKey::derive(&peer, &me).expect("fixed keys are strong");
                let env = Envelope {
                    sender: &peer.public_key(),
                    recipient: &me,
                    date,
                    flags: &flags,
                };
                match e2e::seal(&key, &env, &text, nonce) {
                    Ok(sealed) => {
                        self.genuine.insert(text);
                        sealed
                    }
                    Err(_) => return,
                }
            }
            _ => text,
        };
        let id = match pick >> 1 & 1 {
            0 => None,
            _ => Some(format!("m{}", input.byte())),
        };
        let from = match pick & 8 {
            0 => peer.public_key().to_hex(),
            _ => "bob".to_string(),
        };
        let to = me.to_hex();
        self.feed_datum(Datum::Message(Message {
            to,
            from,
            flags,
            date,
            msg,
            id,
            ..Default::default()
        }));
    }

    /// The application's side: requests, sending, acknowledging, accepting keys. A request
    /// made while not logged in is refused as such.
    fn act(&mut self, input: &mut Input<'_>) {
        let what = input.byte();
        let arg = String::from_utf8_lossy(input.chunk()).into_owned();
        let peer = fixture::peer_key().public_key();
        let ready = self.engine.is_ready();
        let e = &mut self.engine;
        let refused = match what % 13 {
            0 => e.send_text(&peer, &arg, &[], 1).err(),
            1 => e.send_text_to("bob", &arg, &[], 2).err(),
            2 => e.register(&arg).err(),
            3 => e.roster().err(),
            4 => e.search(&arg).err(),
            5 => e.get_user(&arg, Lookup::Contact).err(),
            6 => e.get_user("bob", Lookup::Refresh).err(),
            7 => e.ghost().err(),
            8 => e.offlines().err(),
            9 => {
                e.acknowledge(&arg);
                None
            }
            10 => {
                e.flush_acks();
                None
            }
            11 => {
                e.accept_server_key();
                None
            }
            _ => {
                e.accept_contact_key("bob");
                None
            }
        };
        if !ready && (2..=8).contains(&(what % 13)) {
            assert_eq!(refused, Some(EngineError::NotConnected));
        }
    }
}

impl Harness {
    /// A real login to the pretend server, from wherever the engine stands: a new connection,
    /// the server's introduction (a changed key accepted, as a user would), Noise messages 1
    /// to 3, and this user's User datum over the link. It must succeed.
    fn login(&mut self) {
        self.logins += 1;
        self.link = None;
        self.engine.connect();
        assert_eq!(
            self.engine.poll_transmit().as_deref(),
            Some(&HEADER[..]),
            "the header goes first"
        );
        assert!(self.engine.poll_transmit().is_none());
        let server = fixture::server_key();
        let hello = fixture::hello_frame(&server);
        self.engine.handle_bytes(&hello);
        if self.engine.is_holding_server_key() {
            self.engine.accept_server_key();
        }
        let Datum::Command(auth) = self.next_clear_datum() else {
            panic!("the engine answers the introduction with AUTH");
        };
        let (pending, challenge) = ServerHandshake::start(&server, &hello, &auth, [9; 32], 0)
            .expect("the engine's message 1 reads");
        self.engine
            .handle_bytes(&Datum::Auth(challenge).to_frame().expect("it frames"));
        let Datum::AuthResponse(response) = self.next_clear_datum() else {
            panic!("the engine answers message 2 with message 3");
        };
        let (client, link) = pending
            .finish(&response)
            .expect("the engine's message 3 reads");
        assert_eq!(client, *self.engine.me());
        self.link = Some(link);
        let me = User {
            aliases: vec![],
            key: client,
            last_seen: 0,
            online: Some(true),
        };
        self.feed_datum(Datum::User(me));
        assert!(self.engine.is_ready(), "a real login succeeds");
    }

    /// The next transmit, a clear datum frame (during the handshake).
    fn next_clear_datum(&mut self) -> Datum {
        let bytes = self
            .engine
            .poll_transmit()
            .expect("the engine answers the handshake");
        whole_datum(&bytes)
    }

    /// The driver's loop after an operation: every transmit taken and checked, then every
    /// event read and checked against what the operation allows.
    fn drive(&mut self, expect: Expect) {
        while let Some(bytes) = self.engine.poll_transmit() {
            match &mut self.link {
                Some(link) => {
                    let inner = link
                        .open(&bytes)
                        .expect("the engine's records are authentic");
                    whole_datum(&inner);
                }
                None if bytes[..] == HEADER[..] => {}
                None => {
                    whole_datum(&bytes);
                }
            }
        }
        let mut logged_in = false;
        while let Some(event) = self.engine.poll_event() {
            if expect == Expect::Injected {
                assert!(
                    matches!(event, Event::LinkBroken(_) | Event::Notice(_)),
                    "injected bytes read as {event:?}"
                );
            }
            match event {
                Event::LoggedIn { .. } => {
                    assert_eq!(expect, Expect::Login, "a login without the handshake");
                    logged_in = true;
                }
                Event::Message(m) => {
                    assert!(
                        self.genuine.contains(&m.text),
                        "a message nobody sealed: {m:?}"
                    );
                    assert_eq!(
                        m.from,
                        fixture::peer_key().public_key(),
                        "a message from the wrong sender"
                    );
                    assert!(
                        self.reported.insert(m.key.clone()),
                        "a message reported twice: {m:?}"
                    );
                }
                Event::LinkBroken(_) | Event::LoginFailed(_) | Event::Closed => {
                    // The connection is over, unless a new one was opened after it ended.
                    let reopened = matches!(expect, Expect::Connect | Expect::Login);
                    assert!(
                        !self.engine.is_connected() || reopened,
                        "{event:?} while connected"
                    );
                }
                _ => {}
            }
        }
        if expect == Expect::Login {
            assert!(logged_in, "a real login is reported");
        }
        if !self.engine.is_connected() {
            self.link = None;
        }
    }
}

/// The datum in `bytes`, which must be exactly one whole frame of a datum that decodes: the
/// engine never sends anything else.
fn whole_datum(bytes: &[u8]) -> Datum {
    let (kind, body) = frame::split_exact(bytes, MAX_BODY).expect("one whole frame");
    assert!(bytes.len() >= PREFIX_LEN);
    Datum::decode(kind, body).expect("a datum the engine built decodes")
}
