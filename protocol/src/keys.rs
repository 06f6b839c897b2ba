//! Keys, their text forms, fingerprints and the alias rules.
//!
//! A user *is* an X25519 public key. On the wire a key travels as 32 raw bytes (msgpack `bin`)
//! inside `User.key`, and as 64 hexadecimal digits wherever a string is expected (`to`, `from`,
//! the AUTH payload). Hex is accepted in either case and always written in lower case.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Length of an X25519 key in bytes.
pub const KEY_LEN: usize = 32;

/// Longest alias a user may register, in bytes. Kept well below 64 so that an alias can never be
/// mistaken for a hex key.
pub const MAX_ALIAS_LEN: usize = 32;

/// An X25519 public key: the identity of a user or of a server.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; KEY_LEN]);

impl PublicKey {
    /// Parses 64 hex digits (either case). Anything else, including surrounding spaces, is `None`.
    pub fn from_hex(s: &str) -> Option<Self> {
        let bytes = s.as_bytes();
        if bytes.len() != KEY_LEN * 2 {
            return None;
        }
        // Every `to` and `from` of every message is parsed here: a table and one check at the
        // end instead of a branch per digit.
        let mut out = [0u8; KEY_LEN];
        let mut bad = 0u8;
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let (hi, lo) = (HEX[usize::from(pair[0])], HEX[usize::from(pair[1])]);
            bad |= (hi | lo) & 0x80;
            out[i] = (hi << 4) | (lo & 0x0f);
        }
        (bad == 0).then_some(PublicKey(out))
    }

    /// The key as 64 lower-case hex digits, the form used in `to`, `from` and AUTH.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// The key in groups of four hex digits, for people to compare out of band
    /// (`a1b2 c3d4 ...`, 16 groups). It is the whole key, not a hash of it, so two
    /// fingerprints that match really are the same key.
    pub fn fingerprint(&self) -> String {
        let h = self.to_hex();
        let groups: Vec<&str> = (0..h.len()).step_by(4).map(|i| &h[i..i + 4]).collect();
        groups.join(" ")
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Whether the key can be someone's identity: its encoding is canonical (bit 255 clear, the
    /// number below p = 2^255 - 19) and it is not a point of low order. A low-order key makes
    /// every X25519 result with it predictable; a non-canonical one is a second spelling of
    /// another key, which would give one user two names. Both are refused at login and as `to`.
    pub fn check(&self) -> Result<(), KeyError> {
        let b = &self.0;
        let top_bit = b[31] & 0x80 != 0;
        // u >= p: the top byte 0x7f, every middle byte 0xff, the lowest at least 0xed.
        let at_least_p = b[31] == 0x7f && b[1..31].iter().all(|&x| x == 0xff) && b[0] >= 0xed;
        if top_bit || at_least_p {
            return Err(KeyError::NonCanonical);
        }
        if LOW_ORDER.iter().any(|p| p == b) {
            return Err(KeyError::LowOrder);
        }
        Ok(())
    }
}

/// Why a public key cannot be an identity ([`PublicKey::check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Bit 255 is set or the number is at least 2^255 - 19.
    #[error("the key is not canonically encoded (bit 255 set or u >= 2^255 - 19)")]
    NonCanonical,
    /// The key is a point of order 1, 2, 4 or 8.
    #[error("the key is a low-order point")]
    LowOrder,
}

/// The canonical encodings of the Curve25519 points of low order (0, 1, the two of order 8 and
/// p - 1), the same list libsodium refuses; the non-canonical spellings are refused before.
const LOW_ORDER: [[u8; KEY_LEN]; 5] = [
    [0; 32],
    [
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0,
    ],
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
        0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
        0xb8, 0x00,
    ],
    [
        0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef,
        0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f,
        0x11, 0x57,
    ],
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
];

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Serialized as msgpack `bin` of exactly 32 bytes, the form `User.key` takes on the wire.
impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let buf = serde_bytes::ByteBuf::deserialize(d)?;
        let arr: [u8; KEY_LEN] = buf.as_slice().try_into().map_err(|_| {
            serde::de::Error::custom(format!("key must be 32 bytes, got {}", buf.len()))
        })?;
        Ok(PublicKey(arr))
    }
}

/// An X25519 secret key. It never leaves the process that made it; `Debug` does not print it.
#[derive(Clone)]
pub struct SecretKey {
    /// The scalar.
    secret: x25519_dalek::StaticSecret,
    /// Its public key, computed once: it is asked for on every handshake and message, and
    /// each computation is a full scalar multiplication.
    public: PublicKey,
}

impl SecretKey {
    /// Builds a secret key from 32 random bytes supplied by the caller (this crate draws no
    /// randomness itself). X25519 clamps the scalar, so any 32 bytes are a valid secret.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        let secret = x25519_dalek::StaticSecret::from(bytes);
        let public = PublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes());
        SecretKey { secret, public }
    }

    /// The 32 secret bytes, for writing a key file.
    pub fn to_bytes(&self) -> [u8; KEY_LEN] {
        self.secret.to_bytes()
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// X25519 with a peer's public key. Returns `None` when the result is all zeros, which
    /// happens only for low-order peer keys: such a key would let anyone predict the shared
    /// secret, so every caller treats it as a bad key.
    pub fn diffie_hellman(&self, peer: &PublicKey) -> Option<[u8; KEY_LEN]> {
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(peer.0));
        if shared.was_contributory() {
            Some(shared.to_bytes())
        } else {
            None
        }
    }

    /// Parses a secret key from 64 hex digits (the key-file format).
    pub fn from_hex(s: &str) -> Option<Self> {
        PublicKey::from_hex(s).map(|k| SecretKey::from_bytes(k.0))
    }

    /// The secret as 64 hex digits (the key-file format).
    pub fn to_hex(&self) -> String {
        hex(&self.secret.to_bytes())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {})", self.public_key().to_hex())
    }
}

/// Why an alias cannot be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AliasError {
    /// The alias is empty or longer than [`MAX_ALIAS_LEN`].
    #[error("alias must be 1 to {MAX_ALIAS_LEN} characters long")]
    Length,
    /// The alias does not start with an ASCII letter.
    #[error("alias must start with a letter")]
    Start,
    /// The alias contains something other than ASCII letters, digits, `_`, `-` and `.`.
    #[error("alias may contain only letters, digits, '_', '-' and '.'")]
    Charset,
}

/// Checks the alias rules: 1 to 32 ASCII characters, a letter first, then letters, digits,
/// `_`, `-` or `.`. Aliases are unique without regard to case (see [`alias_key`]).
pub fn validate_alias(alias: &str) -> Result<(), AliasError> {
    if alias.is_empty() || alias.len() > MAX_ALIAS_LEN {
        return Err(AliasError::Length);
    }
    if !alias.as_bytes()[0].is_ascii_alphabetic() {
        return Err(AliasError::Start);
    }
    if !alias
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(AliasError::Charset);
    }
    Ok(())
}

/// The form in which aliases are compared and stored as unique: ASCII lower case, so that
/// `Alice` and `alice` cannot belong to two different people.
pub fn alias_key(alias: &str) -> String {
    alias.to_ascii_lowercase()
}

/// Lower-case hex of any bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// The value of each hex digit (either case), 0x80 for every other byte.
const HEX: [u8; 256] = {
    let mut t = [0x80u8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_that_is_not_a_hex_digit_is_refused_anywhere() {
        let good = PublicKey([0x5a; 32]).to_hex();
        for b in 0..=255u8 {
            for at in [0, 33, 63] {
                let mut s = good.clone().into_bytes();
                s[at] = b;
                let parsed = std::str::from_utf8(&s).ok().and_then(PublicKey::from_hex);
                assert_eq!(
                    parsed.is_some(),
                    b.is_ascii_hexdigit(),
                    "byte {b:#04x} at {at}"
                );
            }
        }
    }

    #[test]
    fn hex_round_trip_in_either_case() {
        let k = PublicKey([0xab; 32]);
        assert_eq!(k.to_hex(), "ab".repeat(32));
        assert_eq!(PublicKey::from_hex(&"AB".repeat(32)), Some(k));
        assert_eq!(PublicKey::from_hex(&"aB".repeat(32)), Some(k));
        assert_eq!(PublicKey::from_hex(&"ab".repeat(31)), None);
        assert_eq!(PublicKey::from_hex(&"zz".repeat(32)), None);
    }

    #[test]
    fn fingerprint_groups_the_whole_key() {
        let mut b = [0u8; 32];
        b[0] = 0x12;
        b[1] = 0x34;
        let fp = PublicKey(b).fingerprint();
        assert!(fp.starts_with("1234 0000 "));
        assert_eq!(fp.split(' ').count(), 16);
        assert_eq!(fp.replace(' ', ""), PublicKey(b).to_hex());
    }

    #[test]
    fn alias_rules() {
        assert!(validate_alias("alice").is_ok());
        assert!(validate_alias("Bob_2.x-y").is_ok());
        assert_eq!(validate_alias(""), Err(AliasError::Length));
        assert_eq!(validate_alias(&"a".repeat(33)), Err(AliasError::Length));
        assert_eq!(validate_alias("1abc"), Err(AliasError::Start));
        assert_eq!(validate_alias("al ice"), Err(AliasError::Charset));
        assert_eq!(validate_alias("alïce"), Err(AliasError::Charset));
        assert_eq!(alias_key("AlIce"), "alice");
    }

    #[test]
    fn non_canonical_and_low_order_keys_fail_the_check() {
        // Every listed point really is of low order: X25519 with it is not contributory.
        let me = SecretKey::from_bytes([7; 32]);
        for p in LOW_ORDER {
            assert_eq!(PublicKey(p).check(), Err(KeyError::LowOrder));
            assert_eq!(me.diffie_hellman(&PublicKey(p)), None, "{}", hex(&p));
        }
        let mut p = [0xff; 32];
        p[31] = 0x7f;
        p[0] = 0xed; // p itself, a second spelling of 0
        assert_eq!(PublicKey(p).check(), Err(KeyError::NonCanonical));
        p[0] = 0xec; // p - 1, canonical but of order 2
        assert_eq!(PublicKey(p).check(), Err(KeyError::LowOrder));
        let mut top = *me.public_key().as_bytes();
        assert_eq!(PublicKey(top).check(), Ok(()));
        top[31] |= 0x80;
        assert_eq!(PublicKey(top).check(), Err(KeyError::NonCanonical));
    }

    #[test]
    fn low_order_peer_key_is_refused() {
        let me = SecretKey::from_bytes([7; 32]);
        assert_eq!(me.diffie_hellman(&PublicKey([0; 32])), None);
        let peer = SecretKey::from_bytes([9; 32]).public_key();
        assert!(me.diffie_hellman(&peer).is_some());
    }
}
