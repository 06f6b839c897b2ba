//! The native flexim client library: key files, server addresses, the TCP and WebSocket
//! (`ws://` and `wss://`) transports, and a [`Client`] that drives the protocol engine of `flexim-session` over them.
//!
//! The protocol itself (the login, requests and answers, the outbox, receipts, opening and
//! de-duplicating messages, acknowledgements) is the engine's, shared with the browser client;
//! this crate adds only the I/O, the clock and the randomness around it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use flexim_client::{Client, Event, Identity};
//!
//! let me = Identity::load("alice.key")?;
//! let mut client = Client::connect("127.0.0.1:4321", &me, Some("alice")).await?;
//! client.send_text("bob", "hello", &[]).await?;
//! loop {
//!     match client.next_event().await {
//!         Ok(Event::Message(m)) => {
//!             // Named by an alias pinned to the sender's key, else by the key itself.
//!             let from = m.name.clone().unwrap_or_else(|| m.from.to_hex());
//!             println!("{from}: {}", m.text);
//!             // Processed: the server may forget it now (else it comes again at next login).
//!             if let Some(id) = m.id {
//!                 client.ack(&[id]).await?;
//!             }
//!         }
//!         Ok(Event::Receipt { id, status, .. }) => println!("{id}: {}", status.payload),
//!         Ok(Event::Closed) => break,
//!         Ok(_) => {}
//!         Err(e) if e.is_connection_lost() => break,
//!         Err(e) => return Err(e.into()),
//!     }
//! }
//! // Messages not confirmed yet are sent again, in order, before anything new.
//! let client = client.reconnect().await?;
//! # Ok(())
//! # }
//! ```

mod client;
mod endpoint;
mod error;
mod identity;
mod ioerr;
mod os;
pub mod pins;
#[cfg(test)]
mod testdir;
mod tls;
mod transport;

pub use client::{CONNECT_TIMEOUT, Client, ConnectOptions};
pub use endpoint::{Endpoint, EndpointError, NotTls};
pub use error::ClientError;
pub use identity::{Identity, KeyFileError};
pub use tls::{CaFileError, Trust};
pub use transport::Transport;

pub use flexim_session::{
    Answer, ContactPins, Delivery, Event, Incoming as Received, KeyChange, Outbox, Outgoing,
    Refusal, RoomIncoming, SavedRooms, Seen,
};

/// The protocol crate, re-exported so that users of this crate name the same types.
pub use flexim_protocol as protocol;
/// The engine crate, re-exported for the same reason.
pub use flexim_session as session;
