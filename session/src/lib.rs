//! The client side of the FLEX protocol, once, as a deterministic state machine.
//!
//! Both flexim clients drive this crate: the native one (`flexim-client`, on tokio) and the
//! browser one (`flexim-web`, on web-sys). Neither of them knows the protocol; each only moves
//! bytes between a socket and an [`Engine`], shows the [`Event`]s it reports and stores what
//! it asks to be stored. This is the shape of quinn-proto under quinn: no I/O, no clock, no
//! randomness of its own (time and a random source are passed in), so the whole protocol is
//! tested here with bytes in and frames and events out. The one exception is MLS (rooms,
//! `rooms/`): OpenMLS's provider draws its keys from the operating system's (or the browser's)
//! random source itself and takes none from outside, so room operations are not replayable
//! from a seed; everything else is.
//!
//! # The loop a driver runs
//!
//! ```text
//! engine.connect()                         // the header is the first transmit
//! loop {
//!     while let Some(bytes) = engine.poll_transmit() { socket.write(bytes) }
//!     while let Some(event) = engine.poll_event()   { show(event) }
//!     match socket.read() {
//!         bytes => engine.handle_bytes(&bytes),     // a TCP read, or one WebSocket message
//!         closed => engine.disconnected(),          // then connect again later
//!     }
//!     // and whenever the user acts: engine.send_text(..), engine.register(..), ...
//! }
//! ```
//!
//! # What the engine does
//!
//! - **Login** ([`login`]): the server's key against the pin (trust on first use, or hold the
//!   login until the user accepts a changed key), the AUTH handshake of the protocol crate,
//!   then the alias to claim, if any, with an ordinary REGISTER.
//! - **Requests and answers** ([`requests`]): every datum sent after login gets exactly one
//!   answer, in order; notices have codes of their own. A FIFO of what each request was for
//!   turns each answer into a typed [`Answer`] carrying its [`RequestId`].
//! - **The outbox** ([`outbox`]): every message gets a random id and its frame is kept until
//!   the server confirms it (`2`, `7`, `8`, `9`) or refuses it; at every login the unconfirmed
//!   frames go out again, byte for byte and in order, before anything new.
//! - **Receiving** (`inbox.rs`): senders named by alias are looked up in order, boxes are
//!   opened, copies are dropped ([`dedupe`]), and what was processed is acknowledged.
//! - **Contacts' keys** ([`contacts`]): the key of every alias the server names is pinned on
//!   first use; an alias whose key changed is reported, not shown for the new key and not
//!   sealed to until the user accepts it. [`pinfile`] is the text form pins are saved in.
//!
//! The rules where the two clients used to differ are decided once here and written down in
//! docs/PROTOCOL.md §8.2.

mod commands;
pub mod consent;
pub mod contacts;
pub mod dedupe;
pub mod delivery;
mod engine;
pub mod events;
mod inbox;
pub mod login;
mod notices;
pub mod outbox;
pub mod pinfile;
mod pinning;
pub mod requests;
pub mod rooms;
mod saved;
mod stream;
pub mod text;

pub use commands::Sending;
pub use contacts::{ContactPins, KeyChange};
pub use dedupe::{DEDUP_WINDOW, Dedupe, Seen};
pub use delivery::{Delivery, is_final};
pub use engine::{ACK_BATCH, Config, Engine, EngineError, Framing, Random};
pub use events::Conversation;
pub use events::{Answer, Event, Incoming, Refusal, RoomIncoming};
pub use login::{LoginError, PinCheck};
pub use outbox::{Addressee, Outbox, Outgoing, SavedDelivery};
pub use requests::Consent;
pub use requests::{Lookup, RequestId};
pub use rooms::{RoomAction, SavedRooms, UPDATE_AFTER_MESSAGES, UPDATE_AFTER_SECS};

/// The protocol crate, re-exported so that drivers name the same types.
pub use flexim_protocol as protocol;
