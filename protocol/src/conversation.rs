//! Conversation ids (docs/PROTOCOL.md §14.1).
//!
//! A conversation of two users has one id, whoever asked first, so that the two requests of
//! two users who write to each other at once name the same conversation, and either side can
//! compute it without asking the server.

use sha2::{Digest, Sha256};

use crate::keys::{PublicKey, hex};

/// The domain of the hash, so that no other hash of two keys can be taken for an id.
const DOMAIN: &[u8] = b"FLEX conversation of two v1";

/// The id of the conversation of `a` and `b` (in either order): the first 16 bytes of
/// SHA-256(domain, the smaller key, the larger key), as 32 lower-case hex digits.
pub fn pair_id(a: &PublicKey, b: &PublicKey) -> String {
    let (low, high) = if a.0 <= b.0 { (a, b) } else { (b, a) };
    let digest = Sha256::new()
        .chain_update(DOMAIN)
        .chain_update(low.0)
        .chain_update(high.0)
        .finalize();
    hex(&digest[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector of docs/PROTOCOL.md §14.1.
    #[test]
    fn pair_ids_match_the_spec_and_ignore_order() {
        let a = PublicKey([0x11; 32]);
        let b = PublicKey([0x22; 32]);
        let id = pair_id(&a, &b);
        assert_eq!(id, pair_id(&b, &a));
        assert_eq!(id.len(), 32);
        assert_eq!(id, "44a6117da827d351823974b5d11a04e2");
        assert_ne!(id, pair_id(&a, &PublicKey([0x33; 32])));
    }
}
