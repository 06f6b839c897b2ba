//! End-to-end sealing of message bodies.
//!
//! `msg = base64(version(1) || nonce(24) || XChaCha20-Poly1305(k, nonce, padded, aad))`
//!
//! - `k = HKDF-SHA256(salt = "FLEX-E2E-v1", ikm = X25519(me, peer), info = lo || hi)` where `lo`
//!   and `hi` are the two public keys in byte order, so both ends derive the same key.
//! - `aad = "FLEX-E2E-v1" || version || sender key || recipient key || date (i64 BE) ||
//!   flag count (u16 BE) || for each flag: length (u16 BE) || bytes`. A relay that re-routes,
//!   re-dates, reflects or re-flags a message makes it fail to open.
//! - `padded = length (u16 BE) || plaintext || zeros`, padded to the size buckets of Nostr's
//!   NIP-44, so the ciphertext length reveals only a rough size.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hkdf::Hkdf;
use sha2::Sha256;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::keys::{PublicKey, SecretKey};

/// Length of an XChaCha20-Poly1305 nonce in bytes.
pub const NONCE_LEN: usize = 24;
/// The scheme's version byte, first in every box.
pub const VERSION: u8 = 1;
/// HKDF salt and associated-data prefix of the scheme.
pub const E2E_LABEL: &[u8] = b"FLEX-E2E-v1";
/// The longest plaintext, in bytes of UTF-8. A sealed maximum fits well inside a 48 KiB datum.
pub const MAX_PLAINTEXT: usize = 32 * 1024;

/// Why a body could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum E2eError {
    /// The peer's key is a low-order point.
    #[error("the peer's public key is not usable for X25519")]
    WeakKey,
    /// The plaintext is empty or longer than [`MAX_PLAINTEXT`].
    #[error("a message must be 1 to {MAX_PLAINTEXT} bytes long, this one is {0}")]
    Length(usize),
    /// The body is not base64, or too short to be a box.
    #[error("the message body is not a sealed box")]
    Encoding,
    /// The version byte is not one this code knows.
    #[error("unknown box version {0}")]
    Version(u8),
    /// The box does not open: another key, or the relay changed who, when or which flags.
    #[error("the message does not open: wrong key or altered in transit")]
    Forged,
    /// The box opened but its padding or text is malformed.
    #[error("the message opened but its padding or text is malformed")]
    Padding,
}

/// The symmetric key two users share. Derive it once per contact and keep it.
#[derive(Clone)]
pub struct ConversationKey([u8; 32]);

impl ConversationKey {
    /// Derives the key between `me` and `peer`; both sides get the same key.
    pub fn derive(me: &SecretKey, peer: &PublicKey) -> Result<Self, E2eError> {
        let shared = me.diffie_hellman(peer).ok_or(E2eError::WeakKey)?;
        let mine = me.public_key();
        let (lo, hi) = if mine <= *peer {
            (mine, *peer)
        } else {
            (*peer, mine)
        };
        let mut info = [0u8; 64];
        info[..32].copy_from_slice(lo.as_bytes());
        info[32..].copy_from_slice(hi.as_bytes());
        let mut key = [0u8; 32];
        Hkdf::<Sha256>::new(Some(E2E_LABEL), &shared)
            .expand(&info, &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Ok(ConversationKey(key))
    }
}

/// Who sent a message to whom, when, with which flags: everything the box is bound to.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// The sender's key.
    pub sender: &'a PublicKey,
    /// The recipient's key.
    pub recipient: &'a PublicKey,
    /// The Message's `date`.
    pub date: i64,
    /// The Message's `flags`.
    pub flags: &'a [String],
}

impl Envelope<'_> {
    fn aad(&self) -> Vec<u8> {
        let mut a = Vec::with_capacity(E2E_LABEL.len() + 1 + 64 + 8 + 2);
        a.extend_from_slice(E2E_LABEL);
        a.push(VERSION);
        a.extend_from_slice(self.sender.as_bytes());
        a.extend_from_slice(self.recipient.as_bytes());
        a.extend_from_slice(&self.date.to_be_bytes());
        a.extend_from_slice(&(self.flags.len().min(u16::MAX as usize) as u16).to_be_bytes());
        for f in self.flags.iter().take(u16::MAX as usize) {
            let b = f.as_bytes();
            a.extend_from_slice(&(b.len().min(u16::MAX as usize) as u16).to_be_bytes());
            a.extend_from_slice(&b[..b.len().min(u16::MAX as usize)]);
        }
        a
    }
}

/// The padded size of a plaintext of `len` bytes (NIP-44's buckets), not counting the 2-byte
/// length prefix: 32 bytes minimum, then steps of 32 up to 256 and of 1/8 of the next power of
/// two above that.
pub fn padded_len(len: usize) -> usize {
    if len <= 32 {
        return 32;
    }
    // 1 << (floor(log2(len - 1)) + 1), i.e. one bit above the highest set bit of len - 1.
    let next_power = 1usize << (usize::BITS - (len - 1).leading_zeros());
    let chunk = if next_power <= 256 {
        32
    } else {
        next_power / 8
    };
    chunk * ((len - 1) / chunk + 1)
}

/// Seals `plaintext` for the envelope's recipient with a caller-chosen random nonce.
pub fn seal(
    key: &ConversationKey,
    env: &Envelope<'_>,
    plaintext: &str,
    nonce: [u8; NONCE_LEN],
) -> Result<String, E2eError> {
    let text = plaintext.as_bytes();
    if text.is_empty() || text.len() > MAX_PLAINTEXT {
        return Err(E2eError::Length(text.len()));
    }
    let mut padded = Vec::with_capacity(2 + padded_len(text.len()));
    padded.extend_from_slice(&(text.len() as u16).to_be_bytes());
    padded.extend_from_slice(text);
    padded.resize(2 + padded_len(text.len()), 0);
    let sealed = seal_raw(&key.0, nonce, &padded, &env.aad());
    let mut out = Vec::with_capacity(1 + sealed.len());
    out.push(VERSION);
    out.extend_from_slice(&sealed);
    Ok(B64.encode(out))
}

/// Opens a `msg` for the envelope it arrived in.
pub fn open(key: &ConversationKey, env: &Envelope<'_>, msg: &str) -> Result<String, E2eError> {
    let raw = B64.decode(msg).map_err(|_| E2eError::Encoding)?;
    let (&version, sealed) = raw.split_first().ok_or(E2eError::Encoding)?;
    if version != VERSION {
        return Err(E2eError::Version(version));
    }
    if sealed.len() < NONCE_LEN + 16 + 2 + 32 {
        return Err(E2eError::Encoding);
    }
    let padded = open_raw(&key.0, sealed, &env.aad()).ok_or(E2eError::Forged)?;
    let len = u16::from_be_bytes([padded[0], padded[1]]) as usize;
    if len == 0 || 2 + len > padded.len() || padded.len() != 2 + padded_len(len) {
        return Err(E2eError::Padding);
    }
    String::from_utf8(padded[2..2 + len].to_vec()).map_err(|_| E2eError::Padding)
}

/// Seals `plaintext` under `key` and returns `nonce || ciphertext`.
fn seal_raw(key: &[u8; 32], nonce: [u8; NONCE_LEN], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let ct = cipher
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("XChaCha20-Poly1305 encrypts any length we produce");
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// Opens `nonce || ciphertext`; `None` if it does not authenticate.
fn open_raw(key: &[u8; 32], sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN + 16 {
        return None;
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
    XChaCha20Poly1305::new(key.into())
        .decrypt(&XNonce::from(nonce), Payload { msg: ct, aad })
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_buckets_match_nip44() {
        // Values from NIP-44's padding test vectors.
        for (len, want) in [
            (1, 32),
            (32, 32),
            (33, 64),
            (37, 64),
            (45, 64),
            (49, 64),
            (64, 64),
            (65, 96),
            (100, 128),
            (111, 128),
            (200, 224),
            (250, 256),
            (320, 320),
            (383, 384),
            (384, 384),
            (400, 448),
            (500, 512),
            (1000, 1024),
            (1024, 1024),
            (65515, 65536),
        ] {
            assert_eq!(padded_len(len), want, "len {len}");
        }
    }

    #[test]
    fn seal_open_and_tampering() {
        let alice = SecretKey::from_bytes([1; 32]);
        let bob = SecretKey::from_bytes([2; 32]);
        let (a, b) = (alice.public_key(), bob.public_key());
        let ka = ConversationKey::derive(&alice, &b).unwrap();
        let kb = ConversationKey::derive(&bob, &a).unwrap();
        let flags = vec!["NOTIFY".to_string()];
        let env = Envelope {
            sender: &a,
            recipient: &b,
            date: 77,
            flags: &flags,
        };
        let msg = seal(&ka, &env, "hey, listen!", [4; 24]).unwrap();
        assert_eq!(open(&kb, &env, &msg).unwrap(), "hey, listen!");

        // Re-dated, reflected, re-flagged or re-routed: all fail.
        let redated = Envelope { date: 78, ..env };
        assert_eq!(open(&kb, &redated, &msg), Err(E2eError::Forged));
        let reflected = Envelope {
            sender: &b,
            recipient: &a,
            ..env
        };
        assert_eq!(open(&ka, &reflected, &msg), Err(E2eError::Forged));
        let reflagged = Envelope { flags: &[], ..env };
        assert_eq!(open(&kb, &reflagged, &msg), Err(E2eError::Forged));
        let carol = SecretKey::from_bytes([3; 32]);
        let kc = ConversationKey::derive(&carol, &a).unwrap();
        let c = carol.public_key();
        let rerouted = Envelope {
            recipient: &c,
            ..env
        };
        assert_eq!(open(&kc, &rerouted, &msg), Err(E2eError::Forged));
        assert_eq!(open(&kb, &env, "not base64!"), Err(E2eError::Encoding));
        assert_eq!(seal(&ka, &env, "", [0; 24]), Err(E2eError::Length(0)));
    }

    #[test]
    fn ciphertext_size_reveals_only_the_bucket() {
        let k = ConversationKey([7; 32]);
        let p = PublicKey([1; 32]);
        let env = Envelope {
            sender: &p,
            recipient: &p,
            date: 0,
            flags: &[],
        };
        let a = seal(&k, &env, "hi", [0; 24]).unwrap();
        let b = seal(&k, &env, &"x".repeat(30), [0; 24]).unwrap();
        assert_eq!(a.len(), b.len());
        let max = seal(&k, &env, &"x".repeat(MAX_PLAINTEXT), [0; 24]).unwrap();
        assert!(max.len() < 44_000, "{}", max.len());
    }
}
