//! The client's error type.

use std::io;

use crate::ioerr::describe_io;

use flexim_protocol::PublicKey;
use flexim_protocol::e2e::E2eError;
use flexim_protocol::frame::FrameError;
use flexim_protocol::handshake::HandshakeError;
use flexim_protocol::status;
use tokio_tungstenite::tungstenite;

use flexim_session::{EngineError, KeyChange};

use crate::endpoint::EndpointError;

/// Everything that can go wrong talking to a server.
///
/// Every message is complete on its own (it includes the underlying cause), so the variants
/// deliberately expose no `source()`: error reporters that walk the chain would otherwise print
/// each cause twice.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server address could not be parsed.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// The TCP connection could not be opened.
    #[error("cannot connect to {endpoint}: {}", describe_io(error))]
    Connect {
        /// The server address as given.
        endpoint: String,
        /// What the operating system reported.
        error: io::Error,
    },
    /// The TCP connection opened but the TLS handshake with a `wss://` server failed: most
    /// often a certificate this client does not trust (a private CA needs `--ca`), or a
    /// server that does not speak TLS on that port.
    #[error("TLS with {url} failed: {}", crate::tls::describe(error))]
    Tls {
        /// The `wss://` URL.
        url: String,
        /// What the handshake reported (a rustls error inside, for certificate problems).
        error: io::Error,
    },
    /// The TCP connection opened but the WebSocket upgrade failed (wrong path, not a flexim
    /// server, ...).
    #[error("WebSocket upgrade at {url} failed: {error}")]
    Upgrade {
        /// The `ws://` URL.
        url: String,
        /// What tungstenite reported. Boxed because the error type is large.
        error: Box<tungstenite::Error>,
    },
    /// The connection or the handshake took too long.
    #[error("{endpoint} did not complete the flexim handshake within {secs} seconds")]
    Timeout {
        /// The server address as given.
        endpoint: String,
        /// The time allowed.
        secs: u64,
    },
    /// Something answered, but not like a flexim server (for instance an HTTP server on the
    /// TCP port).
    #[error("{endpoint} does not answer like a flexim server ({reason})")]
    NotFlexim {
        /// The server address as given.
        endpoint: String,
        /// What arrived instead.
        reason: String,
    },
    /// The server's key is not the pinned one: another server, or someone in the middle.
    #[error(
        "the server at {endpoint} has key {}, not the expected {}; refusing to log in",
        .got.fingerprint(),
        .pinned.fingerprint()
    )]
    ServerKeyMismatch {
        /// The server address as given.
        endpoint: String,
        /// The key the caller expected.
        pinned: PublicKey,
        /// The key the server announced.
        got: PublicKey,
    },
    /// The server closed the connection before the handshake finished.
    #[error("the server closed the connection during the handshake")]
    ClosedDuringHandshake,
    /// The server closed the connection.
    #[error("the server closed the connection")]
    Closed,
    /// Reading from or writing to the connection failed.
    #[error("connection lost: {}", describe_io(.0))]
    Io(io::Error),
    /// The WebSocket layer failed after the upgrade.
    #[error("WebSocket error: {0}")]
    WebSocket(Box<tungstenite::Error>),
    /// A frame could not be built or split (a body over 65535 bytes, a WebSocket message that
    /// does not hold exactly one frame).
    #[error("framing error: {0}")]
    Frame(FrameError),
    /// The server answered a request with something this client cannot use (a datum of the
    /// wrong kind, or a frame that does not decode).
    #[error("the server's answer makes no sense: {0}")]
    BadAnswer(String),
    /// The server sent a WebSocket text message; flexim speaks binary only.
    #[error("the server sent a WebSocket text message; flexim uses binary messages only")]
    TextMessage,
    /// The handshake failed on this side (the challenge did not open, an unexpected datum, ...).
    #[error("handshake failed: {0}")]
    Handshake(HandshakeError),
    /// A record on the encrypted link did not authenticate: someone on the path altered,
    /// replayed or injected data. The connection is closed.
    #[error(
        "the encrypted link to the server broke ({0}); someone on the network path may be tampering with the connection"
    )]
    Link(flexim_protocol::LinkError),
    /// The server answered with an error Status.
    #[error("{} ({status}): {payload}", status::name(*status))]
    Server {
        /// The Status code (negative).
        status: i8,
        /// The server's explanation.
        payload: String,
    },
    /// The server answered with a datum of a kind the request does not expect.
    #[error("expected {expected} from the server, got {got}")]
    Unexpected {
        /// What the request expects.
        expected: &'static str,
        /// What arrived.
        got: String,
    },
    /// A message could not be sealed (empty or too long text, a weak peer key).
    #[error("cannot encrypt: {0}")]
    E2e(E2eError),
    /// The server names another key for a contact's alias than the one pinned for it: nothing
    /// was sealed to it (the user accepts the new key with `accept_contact_key`).
    #[error("refusing to encrypt: {0}")]
    ContactKeyChanged(KeyChange),
    /// An alias was to be sealed to before it was looked up.
    #[error("{0} has not been looked up yet")]
    UnknownContact(String),
    /// A room operation failed on this side (its MLS state, or a room this user is not in).
    #[error("room: {0}")]
    Room(String),
}

impl ClientError {
    /// True when the connection is gone (or never came up), so that retrying on this `Client`
    /// is pointless. Server errors, bad datums and encryption errors leave it usable.
    pub fn is_connection_lost(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. }
                | ClientError::Tls { .. }
                | ClientError::Upgrade { .. }
                | ClientError::Timeout { .. }
                | ClientError::NotFlexim { .. }
                | ClientError::ServerKeyMismatch { .. }
                | ClientError::ClosedDuringHandshake
                | ClientError::Closed
                | ClientError::Io(_)
                | ClientError::WebSocket(_)
        )
    }

    /// True for input that cannot come from a flexim server at all: undecodable frames, text
    /// messages, a stream cut inside a frame.
    pub(crate) fn is_garbage(&self) -> bool {
        match self {
            ClientError::TextMessage => true,
            ClientError::Io(e) => e.kind() == io::ErrorKind::UnexpectedEof,
            _ => false,
        }
    }

    /// True when a `wss://` server's certificate was refused (not signed by a trusted CA, not
    /// for this host, expired): a private CA needs [`crate::Trust::Ca`].
    pub fn is_untrusted_certificate(&self) -> bool {
        match self {
            ClientError::Tls { error, .. } => crate::tls::is_certificate_error(error),
            _ => false,
        }
    }

    /// The Status code when the server refused the request.
    pub fn server_status(&self) -> Option<i8> {
        match self {
            ClientError::Server { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e)
    }
}

impl From<FrameError> for ClientError {
    fn from(e: FrameError) -> Self {
        ClientError::Frame(e)
    }
}

impl From<E2eError> for ClientError {
    fn from(e: E2eError) -> Self {
        ClientError::E2e(e)
    }
}

impl From<EngineError> for ClientError {
    /// A request without a connection is a closed connection to the caller.
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NotConnected => ClientError::Closed,
            EngineError::Seal(e) => ClientError::E2e(e),
            EngineError::Frame(e) => ClientError::Frame(e),
            EngineError::Link(e) => ClientError::Link(e),
            EngineError::ContactKeyChanged(change) => ClientError::ContactKeyChanged(change),
            EngineError::UnknownContact(alias) => ClientError::UnknownContact(alias),
            EngineError::Mls(why) => ClientError::Room(why),
            EngineError::NoRoom(room) => ClientError::Room(format!("not in room {room}")),
        }
    }
}

impl From<HandshakeError> for ClientError {
    /// A refusal by the server becomes [`ClientError::Server`], so that AUTH_FAILED looks like
    /// every other server error; anything else is a local handshake failure.
    fn from(e: HandshakeError) -> Self {
        match e {
            HandshakeError::Rejected { status, payload } => ClientError::Server { status, payload },
            other => ClientError::Handshake(other),
        }
    }
}

impl From<tungstenite::Error> for ClientError {
    /// Closing errors and I/O errors get the same variants as on TCP, so callers need not care
    /// which transport they use.
    fn from(e: tungstenite::Error) -> Self {
        match e {
            tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
                ClientError::Closed
            }
            tungstenite::Error::Io(io) => ClientError::Io(io),
            other => ClientError::WebSocket(Box::new(other)),
        }
    }
}
