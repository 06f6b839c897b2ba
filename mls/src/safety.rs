//! A room's safety number (docs/PROTOCOL.md §16.6): what two members compare out of band to
//! know that they are in the same group with the same members and the same signing keys.

use sha2::{Digest, Sha256};

use crate::Identity;

/// The domain of the hash, so that no other hash of a member list can pass for a safety number.
const DOMAIN: &[u8] = b"FLEX room safety number v1";

/// The safety number of a group whose members are (identity, signature key) pairs, in any
/// order: SHA-256 over the domain and the pairs sorted by identity, each as the 32 identity
/// bytes, a 2-byte big-endian length and the signature key. The first 20 bytes of the digest
/// are written as 8 groups of 5 decimal digits: each 5 bytes are two 20-bit numbers, each
/// taken modulo 100000 (about 133 bits in all, short enough to read aloud).
pub fn safety_number(members: &[(Identity, Vec<u8>)]) -> String {
    let mut sorted: Vec<&(Identity, Vec<u8>)> = members.iter().collect();
    sorted.sort_by_key(|m| m.0);
    let mut hash = Sha256::new().chain_update(DOMAIN);
    for (identity, signature_key) in sorted {
        let len = u16::try_from(signature_key.len()).unwrap_or(u16::MAX);
        hash.update(identity);
        hash.update(len.to_be_bytes());
        hash.update(signature_key);
    }
    let digest = hash.finalize();
    digest[..20]
        .chunks(5)
        .flat_map(|c| {
            // Each 5 bytes (40 bits) give two groups of 5 digits.
            let n = c.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            [(n >> 20) % 100_000, (n & 0xf_ffff) % 100_000]
        })
        .map(|g| format!("{g:05}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_does_not_matter_and_keys_do() {
        let a = ([1u8; 32], vec![7u8; 32]);
        let b = ([2u8; 32], vec![8u8; 32]);
        let one = safety_number(&[a.clone(), b.clone()]);
        assert_eq!(one, safety_number(&[b.clone(), a.clone()]));
        assert_eq!(one.len(), 8 * 5 + 7);
        let other = ([2u8; 32], vec![9u8; 32]);
        assert_ne!(one, safety_number(&[a, other]));
    }
}
