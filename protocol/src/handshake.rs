//! The login: a Noise XK handshake carried in the draft's AUTH datums (docs/PROTOCOL.md §4).
//!
//! 1. After the header the server sends its own User datum (its X25519 static key), in clear.
//! 2. The client sends `Command {cmd: "AUTH", payload: [base64(message 1)]}`: `-> e, es`.
//! 3. The server answers `Auth {date, challenge: base64(message 2), last_seen: 0}`: `<- e, ee`.
//! 4. The client answers `AuthResponse {challenge: base64(message 3)}`: `-> s, se`.
//!
//! The responder's static key is the server key it announced; the initiator's static key is the
//! user's identity key, so completing the handshake is the login, and the server learns who
//! logs in only from message 3, after message 2 has proved the server's own key. The prologue
//! binds the header, the link version and the announced User frame byte for byte, so a
//! middlebox that rewrites the introduction breaks the handshake. From then on both sides hold a
//! [`Link`](crate::link::Link): every datum travels as one Noise transport message.
//!
//! Randomness is the caller's: each side's ephemeral key is 32 bytes it passes in (the crate
//! draws nothing itself), which also makes the transcript of docs/PROTOCOL.md reproducible.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use zeroize::Zeroizing;

use crate::datum::{Auth, AuthResponse, Command, Datum, User};
use crate::frame::HEADER;
use crate::keys::{KeyError, PublicKey, SecretKey};
use crate::link::Link;
use crate::status::cmd;

/// The Noise protocol name: pattern XK, X25519, ChaCha20-Poly1305, SHA-256.
pub const NOISE_PARAMS: &str = "Noise_XK_25519_ChaChaPoly_SHA256";
/// The link's version label, first in the prologue; another label is another protocol version.
pub const LINK_LABEL: &[u8] = b"FLEX-LINK-1";
/// Bytes of each handshake message with empty payloads: 48, 48 and 64.
pub const MESSAGE_LENS: [usize; 3] = [48, 48, 64];

/// Why a handshake step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// A handshake message is not base64 of the length its step has.
    #[error("handshake message {step} is not base64 of {expected} bytes")]
    BadEncoding {
        /// Which message (1, 2 or 3).
        step: u8,
        /// Its length in bytes.
        expected: usize,
    },
    /// A handshake message does not authenticate: another key, another prologue, or altered.
    #[error("handshake message {0} does not authenticate")]
    Noise(u8),
    /// The peer's static key cannot be an identity (non-canonical or of low order).
    #[error("the peer's key is refused: {0}")]
    BadKey(#[from] KeyError),
    /// The server refused the client (its Status is attached).
    #[error("the server refused: {payload} (status {status})")]
    Rejected {
        /// The Status code.
        status: i8,
        /// The Status text.
        payload: String,
    },
    /// A datum arrived that the handshake did not expect at this point.
    #[error("unexpected {0} datum during the handshake")]
    Unexpected(&'static str),
}

/// The prologue both sides mix in before message 1: the link label, the TCP header (also on
/// WebSocket, where it is not sent) and the server's User frame exactly as it was sent.
pub fn prologue(hello_frame: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(LINK_LABEL.len() + HEADER.len() + hello_frame.len());
    p.extend_from_slice(LINK_LABEL);
    p.extend_from_slice(&HEADER);
    p.extend_from_slice(hello_frame);
    p
}

/// Hands snow the 32 ephemeral bytes the caller drew, once; snow asks for nothing else in XK.
struct GivenRandom(Option<[u8; 32]>);

impl Random for GivenRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        match self.0.take() {
            Some(bytes) if dest.len() <= bytes.len() => {
                dest.copy_from_slice(&bytes[..dest.len()]);
                Ok(())
            }
            _ => Err(snow::Error::Rng),
        }
    }
}

/// X25519 for snow from the crate's own `x25519-dalek` (one copy of the curve in the build),
/// told the static key pair up front: snow derives the public half of every private key it is
/// given, and for the static key that would be one base-point multiplication per handshake
/// spent on a value the caller already has.
struct X25519 {
    /// The private key snow set or generated.
    secret: Zeroizing<[u8; 32]>,
    /// Its public key.
    public: [u8; 32],
    /// The static key pair of this side, if the caller knows its public half.
    known: Option<(Zeroizing<[u8; 32]>, [u8; 32])>,
}

impl X25519 {
    /// The public key of `secret`, from `known` when it is that key.
    fn public_of(&self, secret: &[u8; 32]) -> [u8; 32] {
        match &self.known {
            Some((s, p)) if **s == *secret => *p,
            _ => x25519_dalek::x25519(*secret, x25519_dalek::X25519_BASEPOINT_BYTES),
        }
    }
}

impl Dh for X25519 {
    fn name(&self) -> &'static str {
        "25519"
    }

    fn pub_len(&self) -> usize {
        32
    }

    fn priv_len(&self) -> usize {
        32
    }

    fn set(&mut self, privkey: &[u8]) {
        let mut secret = Zeroizing::new([0u8; 32]);
        secret.copy_from_slice(&privkey[..32]);
        self.public = self.public_of(&secret);
        self.secret = secret;
    }

    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        let mut secret = Zeroizing::new([0u8; 32]);
        rng.try_fill_bytes(&mut secret[..])?;
        self.public =
            x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*secret)).to_bytes();
        self.secret = secret;
        Ok(())
    }

    fn pubkey(&self) -> &[u8] {
        &self.public
    }

    fn privkey(&self) -> &[u8] {
        &self.secret[..]
    }

    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        // snow hands over its key buffer, which may be longer than the key.
        let peer: [u8; 32] = pubkey
            .get(..32)
            .and_then(|k| k.try_into().ok())
            .ok_or(snow::Error::Dh)?;
        out[..32].copy_from_slice(&x25519_dalek::x25519(*self.secret, peer));
        Ok(())
    }
}

/// snow's primitives with the caller's randomness: ring's cipher and hash natively (several
/// times faster per record), the pure-Rust ones in the browser, and X25519 from
/// `x25519-dalek` both ways ([`X25519`]).
struct Resolver {
    /// The 32 bytes of the ephemeral key.
    ephemeral: Option<[u8; 32]>,
    /// This side's static key pair, so that its public half is not derived again.
    known: Option<(Zeroizing<[u8; 32]>, [u8; 32])>,
}

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(GivenRandom(self.ephemeral)))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::new(X25519 {
                secret: Zeroizing::new([0; 32]),
                public: [0; 32],
                known: self.known.clone(),
            })),
            _ => None,
        }
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(h) = snow::resolvers::RingResolver.resolve_hash(choice) {
            return Some(h);
        }
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(c) = snow::resolvers::RingResolver.resolve_cipher(choice) {
            return Some(c);
        }
        DefaultResolver.resolve_cipher(choice)
    }
}

/// A snow builder for our parameters with `ephemeral` as the only randomness, for the holder of
/// `me` (whose public half is known already).
fn builder(ephemeral: [u8; 32], me: &SecretKey) -> snow::Builder<'static> {
    let params = NOISE_PARAMS
        .parse()
        .expect("the Noise parameters are a constant snow knows");
    let resolver = Resolver {
        ephemeral: Some(ephemeral),
        known: Some((Zeroizing::new(me.to_bytes()), *me.public_key().as_bytes())),
    };
    snow::Builder::with_resolver(params, Box::new(resolver))
}

/// Decodes a base64 handshake message of the length step `step` has.
fn decode(step: u8, text: &str) -> Result<Vec<u8>, HandshakeError> {
    let expected = MESSAGE_LENS[usize::from(step - 1)];
    B64.decode(text)
        .ok()
        .filter(|m| m.len() == expected)
        .ok_or(HandshakeError::BadEncoding { step, expected })
}

/// Writes one handshake message with an empty payload.
fn write(hs: &mut snow::HandshakeState, step: u8) -> String {
    let mut out = [0u8; 64];
    let n = hs
        .write_message(&[], &mut out)
        .unwrap_or_else(|e| panic!("writing handshake message {step} cannot fail: {e}"));
    B64.encode(&out[..n])
}

/// Reads one handshake message; its payload must be empty.
fn read(hs: &mut snow::HandshakeState, step: u8, text: &str) -> Result<(), HandshakeError> {
    let msg = decode(step, text)?;
    let mut payload = [0u8; 64];
    match hs.read_message(&msg, &mut payload) {
        Ok(0) => Ok(()),
        _ => Err(HandshakeError::Noise(step)),
    }
}

/// The server's side after message 1: it waits for message 3.
pub struct ServerHandshake {
    /// snow's state, consumed by [`ServerHandshake::finish`].
    state: snow::HandshakeState,
}

impl ServerHandshake {
    /// Reads message 1 from the AUTH command and answers with message 2 in an Auth datum.
    /// `hello_frame` is the User frame this connection was sent, `ephemeral` 32 fresh random
    /// bytes, `date` the server's clock (Unix seconds, for the client's information).
    pub fn start(
        server: &SecretKey,
        hello_frame: &[u8],
        auth: &Command,
        ephemeral: [u8; 32],
        date: i64,
    ) -> Result<(ServerHandshake, Auth), HandshakeError> {
        let message1 = auth.payload.first().map(String::as_str).unwrap_or("");
        let secret = Zeroizing::new(server.to_bytes());
        let prologue = prologue(hello_frame);
        let mut state = builder(ephemeral, server)
            .local_private_key(&secret[..])
            .and_then(|b| b.prologue(&prologue))
            .and_then(|b| b.build_responder())
            .expect("a responder with a 32-byte key and a prologue builds");
        read(&mut state, 1, message1)?;
        let challenge = write(&mut state, 2);
        let auth = Auth {
            date,
            challenge,
            // Nothing about a user goes to a peer that has not proved who it is.
            last_seen: 0,
        };
        Ok((ServerHandshake { state }, auth))
    }

    /// Reads message 3: the client's identity key, proved, and the link.
    pub fn finish(mut self, resp: &AuthResponse) -> Result<(PublicKey, Link), HandshakeError> {
        read(&mut self.state, 3, &resp.challenge)?;
        let remote = self
            .state
            .get_remote_static()
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .map(PublicKey)
            .ok_or(HandshakeError::Noise(3))?;
        remote.check()?;
        let link = self
            .state
            .into_transport_mode()
            .map_err(|_| HandshakeError::Noise(3))?;
        Ok((remote, Link::new(link)))
    }
}

/// What the client should do after a datum.
pub enum ClientStep {
    /// Send this datum to the server, in clear.
    Send(Datum),
    /// Send this datum (message 3) in clear; every datum after it goes over `link`.
    Linked {
        /// The AuthResponse.
        send: Datum,
        /// The link, both directions keyed.
        link: Link,
    },
    /// Logged in: the server is `server`, and `me` is this client as the server knows it.
    Done {
        /// The server's User datum (its key proven by message 2).
        server: User,
        /// This client's User datum, the first datum over the link.
        me: User,
    },
}

/// Where the client's handshake stands.
enum ClientState {
    /// Waiting for the server's introduction.
    AwaitServer,
    /// Message 1 sent; waiting for message 2.
    AwaitChallenge {
        /// The server's User datum.
        server: User,
        /// snow's state.
        state: Box<snow::HandshakeState>,
    },
    /// Message 3 sent; waiting for this user's User datum over the link.
    AwaitUser {
        /// The server's User datum.
        server: User,
    },
    /// Over (or failed).
    Done,
}

/// The client side of the handshake as a state machine: feed it each datum the server sends
/// (after writing the header) and do what it says.
pub struct ClientHandshake {
    /// The identity key, the initiator's static key.
    secret: SecretKey,
    /// Where the handshake stands.
    state: ClientState,
}

impl ClientHandshake {
    /// A handshake for the identity `secret`.
    pub fn new(secret: SecretKey) -> Self {
        ClientHandshake {
            secret,
            state: ClientState::AwaitServer,
        }
    }

    /// The server's User datum, once it has arrived.
    pub fn server(&self) -> Option<&User> {
        match &self.state {
            ClientState::AwaitChallenge { server, .. } | ClientState::AwaitUser { server } => {
                Some(server)
            }
            _ => None,
        }
    }

    /// Advances on one datum from the server. `frame` is the datum's frame as it arrived (the
    /// introduction is bound into the prologue byte for byte); `random` fills the ephemeral key.
    pub fn handle(
        &mut self,
        datum: Datum,
        frame: &[u8],
        random: &mut dyn FnMut(&mut [u8]),
    ) -> Result<ClientStep, HandshakeError> {
        let state = std::mem::replace(&mut self.state, ClientState::Done);
        match (state, datum) {
            (_, Datum::Status(s)) if crate::status::is_error(s.status) => {
                Err(HandshakeError::Rejected {
                    status: s.status,
                    payload: s.payload,
                })
            }
            (ClientState::AwaitServer, Datum::User(server)) => {
                server.key.check()?;
                let mut ephemeral = [0u8; 32];
                random(&mut ephemeral);
                let secret = Zeroizing::new(self.secret.to_bytes());
                let prologue = prologue(frame);
                let mut state = builder(ephemeral, &self.secret)
                    .local_private_key(&secret[..])
                    .and_then(|b| b.remote_public_key(server.key.as_bytes()))
                    .and_then(|b| b.prologue(&prologue))
                    .and_then(|b| b.build_initiator())
                    .expect("an initiator with 32-byte keys and a prologue builds");
                let message1 = write(&mut state, 1);
                self.state = ClientState::AwaitChallenge {
                    server,
                    state: Box::new(state),
                };
                Ok(ClientStep::Send(Datum::Command(Command {
                    cmd: cmd::AUTH.into(),
                    payload: vec![message1],
                })))
            }
            (ClientState::AwaitChallenge { server, mut state }, Datum::Auth(auth)) => {
                read(&mut state, 2, &auth.challenge)?;
                let message3 = write(&mut state, 3);
                let link = state
                    .into_transport_mode()
                    .map_err(|_| HandshakeError::Noise(2))?;
                self.state = ClientState::AwaitUser { server };
                Ok(ClientStep::Linked {
                    send: Datum::AuthResponse(AuthResponse {
                        challenge: message3,
                    }),
                    link: Link::new(link),
                })
            }
            (ClientState::AwaitUser { server }, Datum::User(me)) => {
                if me.key != self.secret.public_key() {
                    return Err(HandshakeError::Unexpected("User (not ours)"));
                }
                Ok(ClientStep::Done { server, me })
            }
            (state, other) => {
                self.state = state;
                Err(HandshakeError::Unexpected(other.kind().name()))
            }
        }
    }
}

#[cfg(test)]
mod tests;
