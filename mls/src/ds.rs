//! The delivery service's checks (docs/PROTOCOL.md §16.2 and §16.4): what the server reads of
//! MLS, which is only what RFC 9420 leaves in the clear. It holds no group secret and opens
//! nothing: a KeyPackage is public by design, and a message's group id, epoch and content type
//! are in its unencrypted header.

use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::{
    BasicCredential, ContentType, KeyPackageIn, MlsMessageIn, ProtocolMessage, ProtocolVersion,
};
use openmls_rust_crypto::RustCrypto;

use crate::{CIPHERSUITE, Identity, MlsError};

/// What an MLS message says of itself in the clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The group (a room id's 16 bytes, for flexim's groups).
    pub group: Vec<u8>,
    /// The epoch it was made in.
    pub epoch: u64,
    /// What it carries.
    pub kind: Kind,
}

/// An MLS message's content type (RFC 9420 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Sealed application data: a room message.
    Application,
    /// A proposal: flexim's clients commit their proposals at once and send none alone.
    Proposal,
    /// A commit: it moves the group to the next epoch, so the server orders it (§16.4).
    Commit,
}

/// Reads the clear header of a PublicMessage or PrivateMessage (the bytes of an `MLSMessage`).
/// Anything else (a Welcome, a KeyPackage, trailing bytes) is refused.
pub fn header(bytes: &[u8]) -> Result<Header, MlsError> {
    let malformed = |why: String| MlsError::Malformed {
        what: "message",
        why,
    };
    let message =
        MlsMessageIn::tls_deserialize_exact(bytes).map_err(|e| malformed(e.to_string()))?;
    let protocol: ProtocolMessage = message
        .try_into_protocol_message()
        .map_err(|e| malformed(e.to_string()))?;
    let kind = match protocol.content_type() {
        ContentType::Application => Kind::Application,
        ContentType::Proposal => Kind::Proposal,
        ContentType::Commit => Kind::Commit,
    };
    Ok(Header {
        group: protocol.group_id().as_slice().to_vec(),
        epoch: protocol.epoch().as_u64(),
        kind,
    })
}

/// Checks a KeyPackage a user publishes (the bytes of a `KeyPackage`): well formed, signed by
/// the key it names, within its lifetime, of flexim's ciphersuite, and with a BasicCredential
/// whose identity is `owner`, the key that logged in. So nobody can publish KeyPackages in
/// another user's name, and a client that claims one still checks the identity itself (§16.2).
pub fn check_key_package(bytes: &[u8], owner: &Identity) -> Result<(), MlsError> {
    let refused = |why: String| MlsError::KeyPackage(why);
    let package = KeyPackageIn::tls_deserialize_exact(bytes).map_err(|e| MlsError::Malformed {
        what: "KeyPackage",
        why: e.to_string(),
    })?;
    let package = package
        .validate(&RustCrypto::default(), ProtocolVersion::Mls10)
        .map_err(|e| refused(e.to_string()))?;
    if package.ciphersuite() != CIPHERSUITE {
        return Err(refused(format!(
            "ciphersuite {:?}; flexim uses {CIPHERSUITE:?}",
            package.ciphersuite()
        )));
    }
    let credential = BasicCredential::try_from(package.leaf_node().credential().clone())
        .map_err(|_| refused("not a basic credential".into()))?;
    if credential.identity() != owner.as_slice() {
        return Err(refused(
            "its identity is not the key that published it".into(),
        ));
    }
    Ok(())
}
