//! The byte form of a queued [`Entry`], shared by every engine so that a stored message means
//! the same bytes (and counts the same against the byte limit) whichever engine holds it.

use bytes::Bytes;
use flexim_protocol::PublicKey;

use super::{Entry, StoreError};

/// Bytes before the id: acceptance time (8), sender key (32), id length (1).
const FIXED: usize = 41;

/// A stored key as a [`PublicKey`]; anything but 32 bytes means the store is damaged.
pub(crate) fn key_of(bytes: &[u8]) -> Result<PublicKey, StoreError> {
    bytes
        .try_into()
        .map(PublicKey)
        .map_err(|_| StoreError::Engine("stored key is not 32 bytes".into()))
}

/// An entry as stored: acceptance time (8 bytes, big-endian Unix seconds), sender key (32
/// bytes), id length (1 byte, 0 for none), id, frame.
pub(crate) fn encode_entry(e: &Entry) -> Vec<u8> {
    let id = e.id.as_deref().unwrap_or("");
    let mut out = Vec::with_capacity(FIXED + id.len() + e.frame.len());
    out.extend_from_slice(&e.at.to_be_bytes());
    out.extend_from_slice(e.sender.as_bytes());
    // Ids are at most 64 bytes (the protocol's MAX_ID_LEN), so the length fits a byte.
    out.push(id.len() as u8);
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(&e.frame);
    out
}

/// The entry [`encode_entry`] wrote; an error if the bytes cannot be one.
pub(crate) fn decode_entry(bytes: &[u8]) -> Result<Entry, StoreError> {
    let bad = || StoreError::Engine("stored entry is damaged".into());
    let at = bytes.get(..8).ok_or_else(bad)?;
    let at = i64::from_be_bytes(at.try_into().map_err(|_| bad())?);
    let bytes = &bytes[8..];
    let sender = key_of(bytes.get(..32).ok_or_else(bad)?)?;
    let id_len = *bytes.get(32).ok_or_else(bad)? as usize;
    let id = bytes.get(33..33 + id_len).ok_or_else(bad)?;
    let id = (id_len > 0)
        .then(|| String::from_utf8(id.to_vec()).map_err(|_| bad()))
        .transpose()?;
    Ok(Entry {
        sender,
        id,
        frame: Bytes::copy_from_slice(&bytes[33 + id_len..]),
        at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_damage_is_an_error() {
        let e = Entry {
            sender: PublicKey([9; 32]),
            id: Some("m-1".into()),
            frame: Bytes::from_static(b"frame"),
            at: -5,
        };
        let bytes = encode_entry(&e);
        assert_eq!(bytes.len(), FIXED + 3 + 5);
        assert_eq!(decode_entry(&bytes).unwrap(), e);
        let plain = Entry { id: None, ..e };
        assert_eq!(decode_entry(&encode_entry(&plain)).unwrap(), plain);
        assert!(matches!(
            decode_entry(&bytes[..FIXED + 1]),
            Err(StoreError::Engine(_))
        ));
    }
}
