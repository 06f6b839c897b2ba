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

/// The id of the pair room of `a` and `b` (docs/PROTOCOL.md §16.9): the MLS group that carries
/// their conversation of two. It is the bytes of [`pair_id`] with the top bit of the first
/// byte set. Ordinary rooms have that bit clear (CREATEROOM refuses an id with it set unless
/// it names the pair room of the sender and a peer), so no third user can create a room under
/// the id a pair will need: the two kinds of ids never meet.
pub fn pair_room(a: &PublicKey, b: &PublicKey) -> RoomId {
    let mut id = RoomId::parse(&pair_id(a, b)).expect("a pair id is 32 hex digits");
    id.0[0] |= PAIR_BIT;
    id
}

/// The bit of a room id's first byte that marks a pair room.
const PAIR_BIT: u8 = 0x80;

/// A room's id (docs/PROTOCOL.md §16.1): 16 bytes the creator chose at random (with the top
/// bit of the first byte clear, [`RoomId::is_pair`]), written as 32 lower-case hex digits. The
/// same bytes are the room's MLS group id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(pub [u8; 16]);

impl RoomId {
    /// Reads 32 hex digits (any case); `None` for anything else.
    pub fn parse(s: &str) -> Option<RoomId> {
        if s.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, pair) in s.as_bytes().chunks(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(RoomId(out))
    }

    /// Whether the id is of the kind pair rooms have ([`pair_room`]): the top bit of its first
    /// byte set.
    pub fn is_pair(&self) -> bool {
        self.0[0] & PAIR_BIT != 0
    }

    /// A random ordinary room id from 16 random bytes: the pair bit is cleared.
    pub fn ordinary(mut bytes: [u8; 16]) -> RoomId {
        bytes[0] &= !PAIR_BIT;
        RoomId(bytes)
    }

    /// The id as 32 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl std::fmt::Display for RoomId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Whether a `to` names a conversation rather than a user: exactly 32 hex digits. Aliases of
/// that form are refused by REGISTER (§7.3), so the two never meet.
pub fn is_conversation_id(to: &str) -> bool {
    RoomId::parse(to).is_some()
}

#[cfg(test)]
mod tests {
    #[test]
    fn room_ids_read_32_hex_digits_only() {
        let id = RoomId::parse("00112233445566778899AABBCCDDEEFF").unwrap();
        assert_eq!(id.to_hex(), "00112233445566778899aabbccddeeff");
        assert_eq!(RoomId::parse(&id.to_hex()), Some(id));
        assert!(RoomId::parse("00112233445566778899aabbccddeef").is_none());
        assert!(RoomId::parse("00112233445566778899aabbccddeefg").is_none());
        assert!(RoomId::parse("+0112233445566778899aabbccddeeff").is_none());
        assert!(is_conversation_id("abcdefabcdefabcdefabcdefabcdefab"));
        assert!(!is_conversation_id("alice"));
    }

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

    /// The vector of docs/PROTOCOL.md §16.9: the pair room is the conversation id with the
    /// top bit set, so it is never an ordinary room's id.
    #[test]
    fn pair_rooms_match_the_spec_and_are_apart_from_ordinary_rooms() {
        let a = PublicKey([0x11; 32]);
        let b = PublicKey([0x22; 32]);
        let room = pair_room(&a, &b);
        assert_eq!(room, pair_room(&b, &a));
        assert_eq!(room.to_hex(), "c4a6117da827d351823974b5d11a04e2");
        assert!(room.is_pair());
        let ordinary = RoomId::ordinary([0xff; 16]);
        assert!(!ordinary.is_pair());
        assert_eq!(ordinary.0[0], 0x7f);
        assert_eq!(ordinary.0[1..], [0xff; 15]);
    }
}
