//! The AUTH challenge-response, for both sides.
//!
//! 1. After the header the server sends its own User datum (its X25519 key).
//! 2. The client sends `Command {cmd: "AUTH", payload: [hex(client key), optional alias]}`.
//! 3. The server answers `Auth {date, challenge, last_seen}` where `challenge` is
//!    `base64(nonce(24) || XChaCha20-Poly1305(k_s2c, nonce, secret(32), aad))`.
//! 4. The client opens it and answers `AuthResponse {challenge}` with the same secret sealed
//!    under `k_c2s` and a fresh nonce.
//! 5. The server opens that, compares the secret in constant time, and succeeds once.
//!
//! Both keys come from HKDF-SHA256 over X25519(server, client) with both public keys and a
//! direction label in `info`, so a challenge reflected back to the server does not open under
//! `k_c2s`. `date` is bound as associated data. Only the holders of the two secret keys can
//! derive the keys, so a right answer proves the client's key, and a challenge that opens proves
//! the server's key to a client that pinned it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::datum::{Auth, AuthResponse, Command, Datum, User};
use crate::keys::{PublicKey, SecretKey};
use crate::status::cmd;

/// Length of the challenge secret in bytes.
pub const SECRET_LEN: usize = 32;
/// Length of an XChaCha20-Poly1305 nonce in bytes.
pub const NONCE_LEN: usize = 24;
/// HKDF salt and associated-data prefix of the handshake; changing it is a new protocol version.
pub const AUTH_LABEL: &[u8] = b"FLEX-AUTH-v1";

/// Why a handshake step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The AUTH payload does not start with 64 hex digits.
    #[error("AUTH needs the client's public key as 64 hex digits")]
    BadKeyFormat,
    /// The peer's key is a low-order point: the shared secret would be predictable.
    #[error("the public key is not usable for X25519 (low-order point)")]
    WeakKey,
    /// The challenge or response is not valid base64 of the right length.
    #[error("the challenge is not valid base64 of {expected} bytes")]
    BadEncoding {
        /// The expected decoded length.
        expected: usize,
    },
    /// The sealed secret did not open: wrong key, wrong direction, tampered, or another date.
    #[error("the challenge does not open under this key")]
    Sealed,
    /// The response opened but holds a different secret (a response to another challenge).
    #[error("the response does not match the challenge")]
    Mismatch,
    /// The challenge is older than the allowed lifetime.
    #[error("the challenge expired")]
    Expired,
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

/// The two handshake keys for one (server, client) pair.
pub struct AuthKeys {
    /// Seals the server's challenge to the client.
    pub s2c: [u8; 32],
    /// Seals the client's answer to the server.
    pub c2s: [u8; 32],
}

/// Derives the handshake keys from the X25519 shared secret and both public keys.
pub fn auth_keys(shared: &[u8; 32], server: &PublicKey, client: &PublicKey) -> AuthKeys {
    let hk = Hkdf::<Sha256>::new(Some(AUTH_LABEL), shared);
    let mut keys = AuthKeys {
        s2c: [0; 32],
        c2s: [0; 32],
    };
    for (label, out) in [(b"s2c", &mut keys.s2c), (b"c2s", &mut keys.c2s)] {
        let mut info = Vec::with_capacity(3 + 64);
        info.extend_from_slice(label);
        info.extend_from_slice(server.as_bytes());
        info.extend_from_slice(client.as_bytes());
        hk.expand(&info, out)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
    }
    keys
}

fn aad(date: i64) -> Vec<u8> {
    let mut a = AUTH_LABEL.to_vec();
    a.extend_from_slice(&date.to_be_bytes());
    a
}

/// Seals `plaintext` under `key` and returns `nonce || ciphertext`.
pub(crate) fn seal_raw(
    key: &[u8; 32],
    nonce: [u8; NONCE_LEN],
    plaintext: &[u8],
    aad: &[u8],
) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let ct = cipher
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("XChaCha20-Poly1305 encrypts any length we produce");
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// Opens `nonce || ciphertext`; `None` if it does not authenticate.
pub(crate) fn open_raw(key: &[u8; 32], sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN + 16 {
        return None;
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
    XChaCha20Poly1305::new(key.into())
        .decrypt(&XNonce::from(nonce), Payload { msg: ct, aad })
        .ok()
}

/// The sealed length of a challenge: nonce, secret, Poly1305 tag.
const SEALED_LEN: usize = NONCE_LEN + SECRET_LEN + 16;

fn seal_secret(
    key: &[u8; 32],
    secret: &[u8; SECRET_LEN],
    date: i64,
    nonce: [u8; NONCE_LEN],
) -> String {
    B64.encode(seal_raw(key, nonce, secret, &aad(date)))
}

fn open_secret(key: &[u8; 32], text: &str, date: i64) -> Result<[u8; SECRET_LEN], HandshakeError> {
    let raw = B64
        .decode(text)
        .ok()
        .filter(|r| r.len() == SEALED_LEN)
        .ok_or(HandshakeError::BadEncoding {
            expected: SEALED_LEN,
        })?;
    let secret = open_raw(key, &raw, &aad(date)).ok_or(HandshakeError::Sealed)?;
    secret.try_into().map_err(|_| HandshakeError::Sealed)
}

/// Parses the AUTH command's payload: the client's key and an optional alias.
pub fn parse_auth(command: &Command) -> Result<(PublicKey, Option<&str>), HandshakeError> {
    let key = command
        .payload
        .first()
        .and_then(|k| PublicKey::from_hex(k))
        .ok_or(HandshakeError::BadKeyFormat)?;
    Ok((key, command.payload.get(1).map(String::as_str)))
}

/// The server's record of a challenge it sent. Verifying consumes it, so it is single-use.
pub struct PendingChallenge {
    /// The client the challenge was issued to.
    pub client: PublicKey,
    /// When it was issued; bound into both seals and used for expiry.
    date: i64,
    /// The random secret the client must return.
    secret: [u8; SECRET_LEN],
    /// The key the answer must be sealed under.
    c2s: [u8; 32],
}

impl PendingChallenge {
    /// Builds a challenge for `client`. `random` fills buffers with secure random bytes.
    pub fn issue(
        server: &SecretKey,
        client: PublicKey,
        date: i64,
        last_seen: i64,
        random: &mut impl FnMut(&mut [u8]),
    ) -> Result<(PendingChallenge, Auth), HandshakeError> {
        let shared = server
            .diffie_hellman(&client)
            .ok_or(HandshakeError::WeakKey)?;
        let keys = auth_keys(&shared, &server.public_key(), &client);
        let mut secret = [0u8; SECRET_LEN];
        random(&mut secret);
        let mut nonce = [0u8; NONCE_LEN];
        random(&mut nonce);
        let challenge = seal_secret(&keys.s2c, &secret, date, nonce);
        Ok((
            PendingChallenge {
                client,
                date,
                secret,
                c2s: keys.c2s,
            },
            Auth {
                date,
                challenge,
                last_seen,
            },
        ))
    }

    /// Checks the client's answer at time `now`; a challenge older than `ttl_secs` has expired.
    pub fn verify(
        self,
        response: &AuthResponse,
        now: i64,
        ttl_secs: i64,
    ) -> Result<PublicKey, HandshakeError> {
        if now.saturating_sub(self.date) > ttl_secs || now < self.date.saturating_sub(ttl_secs) {
            return Err(HandshakeError::Expired);
        }
        let got = open_secret(&self.c2s, &response.challenge, self.date)?;
        if bool::from(got.ct_eq(&self.secret)) {
            Ok(self.client)
        } else {
            Err(HandshakeError::Mismatch)
        }
    }
}

/// The client's answer to a challenge.
pub fn answer(
    client: &SecretKey,
    server: &PublicKey,
    auth: &Auth,
    nonce: [u8; NONCE_LEN],
) -> Result<AuthResponse, HandshakeError> {
    let shared = client
        .diffie_hellman(server)
        .ok_or(HandshakeError::WeakKey)?;
    let keys = auth_keys(&shared, server, &client.public_key());
    let secret = open_secret(&keys.s2c, &auth.challenge, auth.date)?;
    Ok(AuthResponse {
        challenge: seal_secret(&keys.c2s, &secret, auth.date, nonce),
    })
}

/// What the client should do after a datum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientStep {
    /// Send this datum to the server.
    Send(Datum),
    /// The handshake is over: the server is `server`, and `me` is this client as the server
    /// knows it.
    Done {
        /// The server's User datum (its key is proven: its challenge opened).
        server: User,
        /// This client's User datum.
        me: User,
    },
}

enum ClientState {
    AwaitServer,
    AwaitChallenge { server: User },
    AwaitUser { server: User },
    Done,
}

/// The client side of the handshake as a state machine: feed it each datum the server sends
/// (after writing the header) and do what it says.
pub struct ClientHandshake {
    secret: SecretKey,
    alias: Option<String>,
    state: ClientState,
}

impl ClientHandshake {
    /// A handshake for the key `secret`, optionally asking to claim `alias` on the way.
    pub fn new(secret: SecretKey, alias: Option<String>) -> Self {
        ClientHandshake {
            secret,
            alias,
            state: ClientState::AwaitServer,
        }
    }

    /// The server's User datum, once it has arrived.
    pub fn server(&self) -> Option<&User> {
        match &self.state {
            ClientState::AwaitChallenge { server } | ClientState::AwaitUser { server } => {
                Some(server)
            }
            _ => None,
        }
    }

    /// Advances on one datum from the server. `random` fills nonces.
    pub fn handle(
        &mut self,
        datum: Datum,
        random: &mut impl FnMut(&mut [u8]),
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
                let mut payload = vec![self.secret.public_key().to_hex()];
                payload.extend(self.alias.clone());
                self.state = ClientState::AwaitChallenge { server };
                Ok(ClientStep::Send(Datum::Command(Command {
                    cmd: cmd::AUTH.into(),
                    payload,
                })))
            }
            (ClientState::AwaitChallenge { server }, Datum::Auth(auth)) => {
                let mut nonce = [0u8; NONCE_LEN];
                random(&mut nonce);
                let response = answer(&self.secret, &server.key, &auth, nonce)?;
                self.state = ClientState::AwaitUser { server };
                Ok(ClientStep::Send(Datum::AuthResponse(response)))
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
mod tests {
    use super::*;

    fn counter_rng() -> impl FnMut(&mut [u8]) {
        let mut n = 0u8;
        move |buf: &mut [u8]| {
            for b in buf {
                n = n.wrapping_add(1);
                *b = n;
            }
        }
    }

    fn pair() -> (SecretKey, SecretKey) {
        (
            SecretKey::from_bytes([1; 32]),
            SecretKey::from_bytes([2; 32]),
        )
    }

    #[test]
    fn full_handshake_succeeds_once() {
        let (server, client) = pair();
        let mut rng = counter_rng();
        let mut hs = ClientHandshake::new(client.clone(), Some("alice".into()));
        let server_user = User {
            aliases: vec!["flexim".into()],
            key: server.public_key(),
            last_seen: 0,
            online: None,
        };
        let ClientStep::Send(Datum::Command(auth_cmd)) =
            hs.handle(Datum::User(server_user), &mut rng).unwrap()
        else {
            panic!("expected AUTH");
        };
        let (ckey, alias) = parse_auth(&auth_cmd).unwrap();
        assert_eq!(ckey, client.public_key());
        assert_eq!(alias, Some("alice"));
        let (pending, auth) = PendingChallenge::issue(&server, ckey, 1000, 0, &mut rng).unwrap();
        let ClientStep::Send(Datum::AuthResponse(resp)) =
            hs.handle(Datum::Auth(auth), &mut rng).unwrap()
        else {
            panic!("expected AuthResponse");
        };
        assert_eq!(pending.verify(&resp, 1001, 30), Ok(ckey));
    }

    #[test]
    fn wrong_key_reflection_expiry_and_replay_fail() {
        let (server, client) = pair();
        let mallory = SecretKey::from_bytes([3; 32]);
        let mut rng = counter_rng();
        let (pending, auth) =
            PendingChallenge::issue(&server, client.public_key(), 1000, 0, &mut rng).unwrap();
        // Someone without the client's secret cannot open the challenge.
        assert_eq!(
            answer(&mallory, &server.public_key(), &auth, [0; 24]),
            Err(HandshakeError::Sealed)
        );
        // Reflecting the server's own challenge back fails: it is sealed under s2c, not c2s.
        let reflected = AuthResponse {
            challenge: auth.challenge.clone(),
        };
        let (p2, _) =
            PendingChallenge::issue(&server, client.public_key(), 1000, 0, &mut rng).unwrap();
        assert_eq!(p2.verify(&reflected, 1000, 30), Err(HandshakeError::Sealed));
        // A correct answer given too late fails.
        let good = answer(&client, &server.public_key(), &auth, [5; 24]).unwrap();
        assert_eq!(
            pending.verify(&good, 1031, 30),
            Err(HandshakeError::Expired)
        );
        // A correct answer to an earlier challenge (a replay) fails against a new one.
        let (p3, _) =
            PendingChallenge::issue(&server, client.public_key(), 1000, 0, &mut rng).unwrap();
        assert_eq!(p3.verify(&good, 1000, 30), Err(HandshakeError::Mismatch));
    }

    #[test]
    fn weak_keys_and_garbage_are_refused() {
        let (server, _) = pair();
        let mut rng = counter_rng();
        assert!(matches!(
            PendingChallenge::issue(&server, PublicKey([0; 32]), 0, 0, &mut rng),
            Err(HandshakeError::WeakKey)
        ));
        let (p, _) = PendingChallenge::issue(&server, PublicKey([9; 32]), 0, 0, &mut rng).unwrap();
        assert_eq!(
            p.verify(
                &AuthResponse {
                    challenge: "!!".into()
                },
                0,
                30
            ),
            Err(HandshakeError::BadEncoding { expected: 72 })
        );
        assert_eq!(
            parse_auth(&Command::new("AUTH", &["nothex"])),
            Err(HandshakeError::BadKeyFormat)
        );
    }
}
