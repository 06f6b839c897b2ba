//! The login: the server's key against the pin, then the handshake of the protocol crate.
//!
//! The server introduces itself with a User datum right after the header. Its key is compared
//! with the key pinned for this server (trust on first use, as ssh does): nothing pinned means
//! this key is pinned once the handshake proves it; a different key holds the login before
//! anything about this user is sent, until the application decides ([`PinCheck::Mismatch`]).
//! Then the protocol crate's [`ClientHandshake`] runs (Noise XK: this user's key is sent only in
//! message 3, encrypted to the key just checked); its third message brings up the link, and the
//! first datum over the link is this user's own User datum, after which the connection is
//! logged in.

use flexim_protocol::handshake::{ClientHandshake, ClientStep, HandshakeError};
use flexim_protocol::status;
use flexim_protocol::{Datum, Link, PublicKey, SecretKey, User};

/// What the server key presented on a connection means against the pinned one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinCheck {
    /// Nothing was pinned yet: trust on first use, pin this key once the handshake proves it.
    FirstUse,
    /// The key is the pinned one.
    Match,
    /// The server presents another key than the pinned one. This is either a server that was
    /// re-installed or someone in the middle; only the user can tell, so the client must not
    /// log in until the user accepts the new key.
    Mismatch {
        /// The key pinned earlier.
        pinned: PublicKey,
    },
}

/// Compares the presented server key with the pinned one (if any).
pub fn check_pin(pinned: Option<&PublicKey>, presented: &PublicKey) -> PinCheck {
    match pinned {
        None => PinCheck::FirstUse,
        Some(p) if p == presented => PinCheck::Match,
        Some(p) => PinCheck::Mismatch { pinned: *p },
    }
}

/// Why a login failed. The connection cannot go on; the driver closes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// The peer does not talk like a flexim server (its first bytes are no FLEX datum, or not
    /// its introduction).
    #[error("the server does not answer like a flexim server ({0})")]
    NotFlexim(String),
    /// The server refused the login with this Status.
    #[error("the server refused: {payload} ({})", flexim_protocol::status::name(*status))]
    Refused {
        /// The Status code.
        status: i8,
        /// The server's explanation.
        payload: String,
    },
    /// The handshake failed on this side: the server's challenge did not open under the key
    /// it announced (not the server it says it is), or it sent something out of turn.
    #[error("handshake failed: {0}")]
    Handshake(HandshakeError),
    /// A record over the new link did not authenticate before the login finished.
    #[error("the encrypted link broke during the login: {0}")]
    Link(flexim_protocol::LinkError),
}

/// What the login wants done after a datum.
#[derive(Debug)]
pub(crate) enum Step {
    /// Nothing yet (a datum the login ignores while it holds).
    Wait,
    /// The server introduced itself: report the key and how it compares with the pin, then
    /// go on with the datums (the AUTH command, unless the login holds).
    Introduced {
        /// The server's key.
        key: PublicKey,
        /// How it compares with the pin.
        check: PinCheck,
        /// The datum to send next, unless the login holds for a mismatch.
        send: Option<Datum>,
    },
    /// Send this datum.
    Send(Datum),
    /// Send this datum (Noise message 3) in clear, then seal everything with `link`.
    Linked {
        /// The AuthResponse.
        send: Datum,
        /// The connection's link.
        link: Link,
    },
    /// Logged in.
    Done {
        /// The server's User datum, its key proven.
        server: User,
        /// This user as the server knows it.
        me: User,
    },
    /// The login cannot go on.
    Failed(LoginError),
}

/// One connection's login in progress.
pub(crate) struct Login {
    /// The handshake of the protocol crate.
    handshake: ClientHandshake,
    /// The server's introduction and its frame as it arrived (the handshake binds the bytes),
    /// held back while the application decides about a key that does not match the pin.
    held: Option<(User, Vec<u8>)>,
    /// Whether any datum arrived yet: garbage in place of the first one means another kind of
    /// server (an HTTP server, say) is listening there, which is worth saying so.
    heard: bool,
}

impl Login {
    /// A login as the holder of `secret`. The alias is never sent with AUTH: its outcome
    /// would be an answer that answers no request (docs/PROTOCOL.md §8.2); the engine claims
    /// it with REGISTER once logged in.
    pub(crate) fn new(secret: SecretKey) -> Login {
        Login {
            handshake: ClientHandshake::new(secret),
            held: None,
            heard: false,
        }
    }

    /// Whether the login holds for the application to accept a changed server key.
    pub(crate) fn is_holding(&self) -> bool {
        self.held.is_some()
    }

    /// Whether any datum (or garbled frame) arrived on this connection yet.
    pub(crate) fn heard(&self) -> bool {
        self.heard
    }

    /// A frame arrived that does not decode.
    pub(crate) fn garbled(&mut self, reason: String) -> Step {
        let first = !std::mem::replace(&mut self.heard, true);
        Step::Failed(if first {
            LoginError::NotFlexim(reason)
        } else {
            LoginError::Handshake(HandshakeError::Unexpected("garbled"))
        })
    }

    /// Advances on one datum from the server (`frame` as it arrived); `random` fills the
    /// handshake's ephemeral key.
    pub(crate) fn handle(
        &mut self,
        datum: Datum,
        frame: &[u8],
        pinned: Option<&PublicKey>,
        random: &mut dyn FnMut(&mut [u8]),
    ) -> Step {
        let first = !std::mem::replace(&mut self.heard, true);
        if first && !matches!(datum, Datum::User(_) | Datum::Status(_)) {
            let got = datum.kind().name();
            return Step::Failed(LoginError::NotFlexim(format!(
                "its first datum is a {got}, not its User datum"
            )));
        }
        if self.held.is_some() {
            // Waiting for the application: only a refusal (the server's deadline) matters; the
            // server sends nothing else before AUTH.
            return match datum {
                Datum::Status(s) if status::is_error(s.status) => {
                    Step::Failed(LoginError::Refused {
                        status: s.status,
                        payload: s.payload,
                    })
                }
                _ => Step::Wait,
            };
        }
        if self.handshake.server().is_none()
            && let Datum::User(server) = &datum
        {
            let check = check_pin(pinned, &server.key);
            let key = server.key;
            if let PinCheck::Mismatch { .. } = check {
                self.held = Some((server.clone(), frame.to_vec()));
                return Step::Introduced {
                    key,
                    check,
                    send: None,
                };
            }
            return match self.advance(datum, frame, random) {
                Step::Send(d) => Step::Introduced {
                    key,
                    check,
                    send: Some(d),
                },
                other => other,
            };
        }
        self.advance(datum, frame, random)
    }

    /// The application accepts the server key that did not match the pin: the login goes on.
    pub(crate) fn accept(&mut self, random: &mut dyn FnMut(&mut [u8])) -> Option<Step> {
        let (server, frame) = self.held.take()?;
        Some(self.advance(Datum::User(server), &frame, random))
    }

    /// One step of the protocol crate's handshake.
    fn advance(&mut self, datum: Datum, frame: &[u8], random: &mut dyn FnMut(&mut [u8])) -> Step {
        match self.handshake.handle(datum, frame, random) {
            Ok(ClientStep::Send(d)) => Step::Send(d),
            Ok(ClientStep::Linked { send, link }) => Step::Linked { send, link },
            Ok(ClientStep::Done { server, me }) => Step::Done { server, me },
            Err(HandshakeError::Rejected { status, payload }) => {
                Step::Failed(LoginError::Refused { status, payload })
            }
            Err(e) => Step::Failed(LoginError::Handshake(e)),
        }
    }
}
