//! The native flexim client library: key files, server addresses, the TCP and WebSocket
//! transports, and a [`Client`] that logs in, sends end-to-end encrypted messages and turns
//! what the server sends into [`Event`]s.
//!
//! Everything protocol-related (datums, framing, the handshake, the encryption) comes from
//! `flexim-protocol`; this crate adds only the I/O, the clock and the randomness around it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use flexim_client::{Client, Event, Identity};
//!
//! let me = Identity::load("alice.key")?;
//! let mut client = Client::connect("127.0.0.1:4321", &me, Some("alice")).await?;
//! client.send_text("bob", "hello", &[]).await?;
//! while let Event::Message(m) = client.next_event().await? {
//!     println!("{}: {}", m.from_text, m.text);
//! }
//! # Ok(())
//! # }
//! ```

mod client;
mod endpoint;
mod error;
mod identity;
mod transport;

pub use client::{CONNECT_TIMEOUT, Client, Event, Received};
pub use endpoint::{Endpoint, EndpointError};
pub use error::ClientError;
pub use identity::{Identity, KeyFileError};
pub use transport::Transport;

/// The protocol crate, re-exported so that users of this crate name the same types.
pub use flexim_protocol as protocol;
