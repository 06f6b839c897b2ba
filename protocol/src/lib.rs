//! The FLEX protocol core shared by the server, the native client and the browser client.
//!
//! This crate is deliberately sans-I/O: it never touches a socket, a file or the clock, and it
//! never draws randomness by itself. Time arrives as a Unix timestamp argument and randomness as
//! caller-supplied bytes (or a fill function), so every operation is deterministic under test and
//! the same code runs natively and in `wasm32-unknown-unknown`.
//!
//! `docs/PROTOCOL.md` is the normative description; the modules map onto its sections:
//! - [`frame`]: the header and the `type | length | msgpack` framing.
//! - [`datum`]: the thirteen datum types and their msgpack maps.
//! - [`status`]: the Status codes and the command names.
//! - [`keys`]: key parsing, hex, fingerprints and alias rules.
//! - [`handshake`]: the Noise XK handshake in the AUTH datums, both sides.
//! - [`link`]: the records every datum travels in after the handshake.
//! - [`e2e`]: sealing and opening message bodies end to end.

pub mod conversation;
pub mod datum;
pub mod e2e;
pub mod frame;
pub mod handshake;
pub mod keys;
pub mod link;
pub mod status;

pub use datum::{
    Acknowledge, Auth, AuthResponse, Command, Connection, Datum, DatumError, DatumKind, Message,
    Request, RoomMemberJoin, RoomMemberList, RoomMemberPart, Roster, Status, User,
};
pub use frame::{FrameError, HEADER, MAX_BODY};
pub use keys::{PublicKey, SecretKey};
pub use link::{Link, LinkError};
