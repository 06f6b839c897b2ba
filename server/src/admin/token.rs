//! The admin token: 32 random bytes in `admin.token` in the data directory, made at the first
//! start with an admin listener (mode 0600), so that only who can read the data directory
//! acts on the server.

use axum::http::{HeaderMap, header::AUTHORIZATION};
use subtle::ConstantTimeEq;

/// The admin token's file in the data directory.
pub const TOKEN_FILE: &str = "admin.token";

/// The token an admin action must carry as `Authorization: Bearer HEX`.
#[derive(Clone, Copy)]
pub(crate) struct Token(pub(crate) [u8; 32]);

impl Token {
    /// Whether `headers` carry this token (compared in constant time).
    pub(crate) fn admits(&self, headers: &HeaderMap) -> bool {
        let given = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(|hex| flexim_protocol::SecretKey::from_hex(hex.trim()))
            .map(|k| k.to_bytes());
        given.is_some_and(|g| bool::from(g.ct_eq(&self.0)))
    }
}
