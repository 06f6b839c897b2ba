//! flexim's MLS profile (RFC 9420, through OpenMLS with its pure-Rust crypto provider), used by
//! both sides of docs/PROTOCOL.md §16:
//!
//! - [`Member`]: what a room member's client does with its groups (create, add, remove, join
//!   from a Welcome, seal and open), for the one client engine of both clients;
//! - [`ds`]: what the server, as the MLS delivery service, checks without holding any group
//!   secret (a published KeyPackage is its publisher's and valid; a message's group and epoch).
//!
//! Everything here is synchronous and does no I/O: the state of a member's groups is a
//! [`Member::snapshot`] its driver keeps where it likes (a file for the CLI).

pub mod ds;
mod member;
mod safety;

pub use member::{Commit, Member, Received, Room};
pub use openmls::prelude::Ciphersuite;
pub use safety::safety_number;

/// The one ciphersuite of flexim's groups: X25519, ChaCha20-Poly1305, SHA-256 and Ed25519
/// (RFC 9420 §17.1, code 0x0003), the same primitives as the link and the static box, and the
/// suite the pure-Rust provider implements without C code (so the browser runs it too).
pub const CIPHERSUITE: Ciphersuite =
    Ciphersuite::MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519;

/// How many past epochs' secrets a member keeps, so that an application message sealed just
/// before a commit (by a member that had not seen the commit yet) still opens after it.
pub const PAST_EPOCHS: usize = 4;

/// A user's identity in a group: its FLEX key (32 bytes), the MLS BasicCredential's identity.
pub type Identity = [u8; 32];

/// Why an MLS operation failed. The texts name the step, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum MlsError {
    /// The bytes are not the MLS structure they should be.
    #[error("not a valid MLS {what}: {why}")]
    Malformed {
        /// What was expected (a KeyPackage, a message, a Welcome).
        what: &'static str,
        /// The decoder's complaint.
        why: String,
    },
    /// A KeyPackage that does not belong to whom it should, or fails its checks.
    #[error("key package refused: {0}")]
    KeyPackage(String),
    /// This member has no group of that id.
    #[error("no group for room {0}")]
    NoGroup(String),
    /// A group already exists with that id.
    #[error("a group for room {0} exists already")]
    Exists(String),
    /// OpenMLS refused the operation; the text is its reason.
    #[error("{step}: {why}")]
    Refused {
        /// The operation.
        step: &'static str,
        /// OpenMLS's error.
        why: String,
    },
    /// The saved state could not be read or written.
    #[error("MLS state: {0}")]
    State(String),
}

impl MlsError {
    /// Wraps an OpenMLS error of the operation `step`.
    pub(crate) fn refused(step: &'static str, e: impl std::fmt::Display) -> MlsError {
        MlsError::Refused {
            step,
            why: e.to_string(),
        }
    }
}
