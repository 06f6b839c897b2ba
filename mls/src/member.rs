//! A room member's side of MLS (docs/PROTOCOL.md §16): its signing key, its KeyPackages and its
//! groups, one per room, with the operations the client engine drives. Every operation checks
//! what it is given (a KeyPackage's identity, a message's group) before it uses it.

use std::collections::BTreeMap;

use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::{
    BasicCredential, Credential, CredentialWithKey, GroupId, KeyPackage, KeyPackageIn,
    LeafNodeIndex, MlsGroup, MlsGroupCreateConfig, MlsGroupJoinConfig, MlsMessageBodyIn,
    MlsMessageIn, ProcessedMessageContent, ProtocolVersion, StagedWelcome,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::OpenMlsProvider as _;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::{CIPHERSUITE, Identity, MlsError, PAST_EPOCHS};

/// A room's group id: the room id's 16 bytes (§16.1).
pub type Room = [u8; 16];

/// One user's MLS state: its signing key and its groups, with the provider that holds their
/// secrets. Not `Clone`: two copies of a group's state would reuse its secrets.
pub struct Member {
    /// The crypto and the storage of every secret of every group (OpenMLS keeps each group's
    /// state there as it changes; [`Member::snapshot`] writes it all out).
    provider: OpenMlsRustCrypto,
    /// This user's MLS signing key (Ed25519), one for all its groups and KeyPackages; the
    /// safety number (§16.6) covers it, since the FLEX key cannot sign.
    signer: SignatureKeyPair,
    /// This user's FLEX key, the identity of its BasicCredential.
    identity: Identity,
    /// The groups, by room, loaded from the provider's storage.
    groups: BTreeMap<Room, MlsGroup>,
}

/// A commit this member made, to send to the room; the group moves on only once the server
/// has accepted it ([`Member::confirm`]) and stays where it was if it refused ([`Member::abandon`]).
#[derive(Debug, Clone)]
pub struct Commit {
    /// The commit, an `MLSMessage`.
    pub message: Vec<u8>,
    /// The Welcome for the added members, an `MLSMessage`, when it adds any.
    pub welcome: Option<Vec<u8>>,
    /// Whom it adds.
    pub added: Vec<Identity>,
    /// Whom it removes.
    pub removed: Vec<Identity>,
    /// The epoch it was made in, which the server checks (§16.4).
    pub epoch: u64,
}

/// What a message of a room turned out to be once opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A member's message.
    Application {
        /// Who sealed it (authenticated by MLS: its signature and its leaf).
        sender: Identity,
        /// The plaintext.
        plaintext: Vec<u8>,
        /// The authenticated data it was sealed with ([`Member::seal_with`]); empty for most.
        aad: Vec<u8>,
    },
    /// A commit by a member, now merged.
    Commit {
        /// Who committed.
        by: Identity,
        /// Whom it added.
        added: Vec<Identity>,
        /// Whom it removed.
        removed: Vec<Identity>,
        /// Whether this member is one of them: the group is then over for it.
        removed_me: bool,
        /// The group's epoch now.
        epoch: u64,
    },
}

/// How a member's state is saved: the provider's storage as key-value pairs, and what is not in
/// it (the identity, the signer, the rooms' ids).
#[derive(Serialize, Deserialize)]
struct Saved {
    /// The format's version, so a later one can read this one.
    version: u8,
    /// [`Member::identity`].
    identity: ByteBuf,
    /// [`Member::signer`].
    signer: SignatureKeyPair,
    /// The rooms whose groups are in `values`.
    rooms: Vec<ByteBuf>,
    /// The provider's storage.
    values: Vec<(ByteBuf, ByteBuf)>,
}

/// The configuration of the groups this member creates: the tree travels in the Welcome (so a
/// joiner needs nothing else), and past epochs stay readable for a few commits.
fn create_config() -> MlsGroupCreateConfig {
    MlsGroupCreateConfig::builder()
        .ciphersuite(CIPHERSUITE)
        .use_ratchet_tree_extension(true)
        .max_past_epochs(PAST_EPOCHS)
        .build()
}

/// The configuration of the groups this member joins, matching [`create_config`].
fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .max_past_epochs(PAST_EPOCHS)
        .build()
}

/// The FLEX key a credential names; anything but a BasicCredential of 32 bytes is refused.
fn identity_of(credential: &Credential) -> Result<Identity, MlsError> {
    let basic = BasicCredential::try_from(credential.clone())
        .map_err(|_| MlsError::KeyPackage("not a basic credential".into()))?;
    basic
        .identity()
        .try_into()
        .map_err(|_| MlsError::KeyPackage("an identity that is not a 32-byte key".into()))
}

impl Member {
    /// A new member for the FLEX key `identity`, with a new signing key.
    pub fn new(identity: Identity) -> Result<Member, MlsError> {
        let provider = OpenMlsRustCrypto::default();
        let signer = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm())
            .map_err(|e| MlsError::refused("signing key", format!("{e:?}")))?;
        signer
            .store(provider.storage())
            .map_err(|e| MlsError::refused("signing key", e))?;
        Ok(Member {
            provider,
            signer,
            identity,
            groups: BTreeMap::new(),
        })
    }

    /// This member's FLEX key.
    pub fn identity(&self) -> Identity {
        self.identity
    }

    /// This member's public signing key.
    pub fn signature_key(&self) -> &[u8] {
        self.signer.public()
    }

    /// The credential of this member's leaves.
    fn credential(&self) -> CredentialWithKey {
        CredentialWithKey {
            credential: BasicCredential::new(self.identity.to_vec()).into(),
            signature_key: self.signer.to_public_vec().into(),
        }
    }

    /// `n` new KeyPackages (each a `KeyPackage`'s bytes) to publish; their private keys stay in
    /// this member's storage until a Welcome uses one.
    pub fn key_packages(&mut self, n: usize) -> Result<Vec<Vec<u8>>, MlsError> {
        (0..n)
            .map(|_| {
                let bundle = KeyPackage::builder()
                    .build(CIPHERSUITE, &self.provider, &self.signer, self.credential())
                    .map_err(|e| MlsError::refused("key package", e))?;
                bundle
                    .key_package()
                    .tls_serialize_detached()
                    .map_err(|e| MlsError::refused("key package", e))
            })
            .collect()
    }

    /// Creates the group of a new room, with this member alone in it, at epoch 0.
    pub fn create(&mut self, room: Room) -> Result<(), MlsError> {
        if self.groups.contains_key(&room) {
            return Err(MlsError::Exists(hex(&room)));
        }
        let group = MlsGroup::new_with_group_id(
            &self.provider,
            &self.signer,
            &create_config(),
            GroupId::from_slice(&room),
            self.credential(),
        )
        .map_err(|e| MlsError::refused("create group", e))?;
        self.groups.insert(room, group);
        Ok(())
    }

    /// The group of `room` to change, with the provider and the signing key a change needs
    /// (borrowed apart, as the group is borrowed mutably).
    fn group_mut(
        &mut self,
        room: &Room,
    ) -> Result<(&mut MlsGroup, &OpenMlsRustCrypto, &SignatureKeyPair), MlsError> {
        let group = self
            .groups
            .get_mut(room)
            .ok_or_else(|| MlsError::NoGroup(hex(room)))?;
        Ok((group, &self.provider, &self.signer))
    }

    /// The group of `room`.
    fn group(&self, room: &Room) -> Result<&MlsGroup, MlsError> {
        self.groups
            .get(room)
            .ok_or_else(|| MlsError::NoGroup(hex(room)))
    }

    /// A commit adding the owners of `packages` (each the user it was claimed for, and the
    /// KeyPackage the server handed out). Each package must be valid and name that user: the
    /// server is not trusted to hand out the right one.
    pub fn add(
        &mut self,
        room: Room,
        packages: &[(Identity, Vec<u8>)],
    ) -> Result<Commit, MlsError> {
        let mut checked = Vec::with_capacity(packages.len());
        for (who, bytes) in packages {
            let package = KeyPackageIn::tls_deserialize_exact(bytes)
                .map_err(|e| MlsError::Malformed {
                    what: "KeyPackage",
                    why: e.to_string(),
                })?
                .validate(self.provider.crypto(), ProtocolVersion::Mls10)
                .map_err(|e| MlsError::KeyPackage(e.to_string()))?;
            if identity_of(package.leaf_node().credential())? != *who {
                return Err(MlsError::KeyPackage(
                    "it names another user than the one it was asked for".into(),
                ));
            }
            checked.push(package);
        }
        let (group, provider, signer) = self.group_mut(&room)?;
        let epoch = group.epoch().as_u64();
        let (commit, welcome, _) = group
            .add_members(provider, signer, &checked)
            .map_err(|e| MlsError::refused("add members", e))?;
        Ok(Commit {
            message: commit
                .to_bytes()
                .map_err(|e| MlsError::refused("add members", e))?,
            welcome: Some(
                welcome
                    .to_bytes()
                    .map_err(|e| MlsError::refused("welcome", e))?,
            ),
            added: packages.iter().map(|(who, _)| *who).collect(),
            removed: Vec::new(),
            epoch,
        })
    }

    /// A commit removing the members `who`.
    pub fn remove(&mut self, room: Room, who: &[Identity]) -> Result<Commit, MlsError> {
        let (group, provider, signer) = self.group_mut(&room)?;
        let leaves = who
            .iter()
            .map(|id| leaf_of(group, id))
            .collect::<Result<Vec<_>, _>>()?;
        let epoch = group.epoch().as_u64();
        let (commit, welcome, _) = group
            .remove_members(provider, signer, &leaves)
            .map_err(|e| MlsError::refused("remove members", e))?;
        let welcome = welcome
            .map(|w| w.to_bytes())
            .transpose()
            .map_err(|e| MlsError::refused("remove members", e))?;
        Ok(Commit {
            message: commit
                .to_bytes()
                .map_err(|e| MlsError::refused("remove members", e))?,
            welcome,
            added: Vec::new(),
            removed: who.to_vec(),
            epoch,
        })
    }

    /// A commit that changes nobody but renews this member's own leaf (an empty commit with an
    /// update path): once merged, what an attacker learned of this member's earlier keys opens
    /// nothing sent after it (post-compromise security, §16.9).
    pub fn update(&mut self, room: Room) -> Result<Commit, MlsError> {
        let (group, provider, signer) = self.group_mut(&room)?;
        let epoch = group.epoch().as_u64();
        let bundle = group
            .self_update(
                provider,
                signer,
                openmls::prelude::LeafNodeParameters::default(),
            )
            .map_err(|e| MlsError::refused("update", e))?;
        Ok(Commit {
            message: bundle
                .commit()
                .to_bytes()
                .map_err(|e| MlsError::refused("update", e))?,
            welcome: None,
            added: Vec::new(),
            removed: Vec::new(),
            epoch,
        })
    }

    /// The server accepted this member's commit: the group moves to the next epoch.
    pub fn confirm(&mut self, room: Room) -> Result<u64, MlsError> {
        let (group, provider, _) = self.group_mut(&room)?;
        group
            .merge_pending_commit(provider)
            .map_err(|e| MlsError::refused("merge commit", e))?;
        Ok(group.epoch().as_u64())
    }

    /// The server refused this member's commit (another came first): forget it.
    pub fn abandon(&mut self, room: Room) -> Result<(), MlsError> {
        let (group, provider, _) = self.group_mut(&room)?;
        let storage = provider.storage();
        group
            .clear_pending_commit(storage)
            .map_err(|e| MlsError::refused("clear commit", e))
    }

    /// Joins a group from a Welcome (an `MLSMessage`); returns its room. Every member's
    /// credential must be a FLEX key, and the group id a room id.
    pub fn join(&mut self, welcome: &[u8]) -> Result<Room, MlsError> {
        let malformed = |why: String| MlsError::Malformed {
            what: "Welcome",
            why,
        };
        let message =
            MlsMessageIn::tls_deserialize_exact(welcome).map_err(|e| malformed(e.to_string()))?;
        let MlsMessageBodyIn::Welcome(welcome) = message.extract() else {
            return Err(malformed("another kind of MLS message".into()));
        };
        let builder = StagedWelcome::build_from_welcome(&self.provider, &join_config(), welcome)
            .map_err(|e| MlsError::refused("welcome", e))?;
        // A group of this member alone under the Welcome's id (its half of a pair room, begun
        // while the other user made it first, §16.9) gives way; any other group of that id is
        // kept, and OpenMLS refuses the Welcome, so that no Welcome takes a room from under
        // its members.
        let named: Option<Room> = builder
            .processed_welcome()
            .unverified_group_info()
            .group_id()
            .as_slice()
            .try_into()
            .ok();
        let alone = named.is_some_and(|r| {
            self.groups
                .get(&r)
                .is_some_and(|g| g.members().count() == 1)
        });
        let builder = if alone {
            builder.replace_old_group()
        } else {
            builder
        };
        let staged = builder
            .build()
            .map_err(|e| MlsError::refused("welcome", e))?;
        let room: Room = staged
            .group_context()
            .group_id()
            .as_slice()
            .try_into()
            .map_err(|_| malformed("a group id that is not a room id".into()))?;
        for member in staged.members() {
            identity_of(&member.credential)?;
        }
        // The group this one replaces is deleted before the new one is stored, as both are
        // stored under the same group id.
        if let Some(mut old) = self.groups.remove(&room) {
            let _ = old.delete(self.provider.storage());
        }
        let group = staged
            .into_group(&self.provider)
            .map_err(|e| MlsError::refused("welcome", e))?;
        self.groups.insert(room, group);
        Ok(room)
    }

    /// Seals `plaintext` for the members of `room`, as an `MLSMessage`.
    pub fn seal(&mut self, room: Room, plaintext: &[u8]) -> Result<Vec<u8>, MlsError> {
        self.seal_with(room, plaintext, &[])
    }

    /// [`Member::seal`] with `aad` as the message's authenticated data (RFC 9420 §6.3.1): sent
    /// in the clear, and bound to the message by its signature and AEAD, so that what a
    /// client says next to the ciphertext (a pair room's flags) cannot be changed on the way.
    pub fn seal_with(
        &mut self,
        room: Room,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, MlsError> {
        let (group, provider, signer) = self.group_mut(&room)?;
        group.set_aad(aad.to_vec());
        group
            .create_message(provider, signer, plaintext)
            .map_err(|e| MlsError::refused("seal", e))?
            .to_bytes()
            .map_err(|e| MlsError::refused("seal", e))
    }

    /// Opens a message of `room` (an `MLSMessage`): a member's message, or a commit, which is
    /// merged. A commit of another member while this one's own waits means the server put the
    /// other first: this member's own commit is dropped (the server refuses it, `-27`).
    pub fn open(&mut self, room: Room, bytes: &[u8]) -> Result<Received, MlsError> {
        let malformed = |why: String| MlsError::Malformed {
            what: "message",
            why,
        };
        let message =
            MlsMessageIn::tls_deserialize_exact(bytes).map_err(|e| malformed(e.to_string()))?;
        let protocol = message
            .try_into_protocol_message()
            .map_err(|e| malformed(e.to_string()))?;
        if protocol.group_id().as_slice() != room {
            return Err(malformed("it belongs to another group".into()));
        }
        let (group, provider, _) = self.group_mut(&room)?;
        if protocol.is_handshake_message() && group.pending_commit().is_some() {
            group
                .clear_pending_commit(provider.storage())
                .map_err(|e| MlsError::refused("clear commit", e))?;
        }
        let processed = group
            .process_message(provider, protocol)
            .map_err(|e| MlsError::refused("open", e))?;
        let sender = identity_of(processed.credential())?;
        let aad = processed.aad().to_vec();
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(m) => Ok(Received::Application {
                sender,
                plaintext: m.into_bytes(),
                aad,
            }),
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                let added = staged
                    .add_proposals()
                    .map(|p| identity_of(p.add_proposal().key_package().leaf_node().credential()))
                    .collect::<Result<Vec<_>, _>>()?;
                let removed = staged
                    .remove_proposals()
                    .filter_map(|p| group.member(p.remove_proposal().removed()).cloned())
                    .map(|c| identity_of(&c))
                    .collect::<Result<Vec<_>, _>>()?;
                let removed_me = staged.self_removed();
                group
                    .merge_staged_commit(provider, *staged)
                    .map_err(|e| MlsError::refused("merge commit", e))?;
                Ok(Received::Commit {
                    by: sender,
                    added,
                    removed,
                    removed_me,
                    epoch: group.epoch().as_u64(),
                })
            }
            _ => Err(MlsError::refused(
                "open",
                "a proposal alone; flexim's members commit at once",
            )),
        }
    }

    /// The members of `room`: each FLEX key with its signing key.
    pub fn members(&self, room: Room) -> Result<Vec<(Identity, Vec<u8>)>, MlsError> {
        self.group(&room)?
            .members()
            .map(|m| Ok((identity_of(&m.credential)?, m.signature_key.clone())))
            .collect()
    }

    /// The safety number of `room` (§16.6).
    pub fn safety_number(&self, room: Room) -> Result<String, MlsError> {
        Ok(crate::safety_number(&self.members(room)?))
    }

    /// The epoch of `room`.
    pub fn epoch(&self, room: Room) -> Result<u64, MlsError> {
        Ok(self.group(&room)?.epoch().as_u64())
    }

    /// Whether this member is (still) in `room`'s group.
    pub fn is_in(&self, room: Room) -> bool {
        self.groups.get(&room).is_some_and(|g| g.is_active())
    }

    /// The rooms this member has a group for.
    pub fn rooms(&self) -> impl Iterator<Item = Room> + '_ {
        self.groups.keys().copied()
    }

    /// Forgets `room`'s group and its secrets.
    pub fn forget(&mut self, room: Room) -> Result<(), MlsError> {
        if let Some(mut group) = self.groups.remove(&room) {
            group
                .delete(self.provider.storage())
                .map_err(|e| MlsError::refused("forget group", e))?;
        }
        Ok(())
    }

    /// The whole state, to keep where the driver likes and give to [`Member::restore`].
    /// It holds secrets: the driver keeps it as it keeps the identity's secret key.
    pub fn snapshot(&self) -> Result<Vec<u8>, MlsError> {
        let values = self
            .provider
            .storage()
            .values
            .read()
            .map_err(|_| MlsError::State("storage lock poisoned".into()))?
            .iter()
            .map(|(k, v)| (ByteBuf::from(k.clone()), ByteBuf::from(v.clone())))
            .collect();
        let saved = Saved {
            version: 1,
            identity: ByteBuf::from(self.identity.to_vec()),
            signer: self.signer_copy()?,
            rooms: self
                .groups
                .keys()
                .map(|r| ByteBuf::from(r.to_vec()))
                .collect(),
            values,
        };
        rmp_serde::to_vec_named(&saved).map_err(|e| MlsError::State(e.to_string()))
    }

    /// A copy of the signer, read back from the storage it was stored in.
    fn signer_copy(&self) -> Result<SignatureKeyPair, MlsError> {
        SignatureKeyPair::read(
            self.provider.storage(),
            self.signer.public(),
            self.signer.signature_scheme(),
        )
        .ok_or_else(|| MlsError::State("the signing key is missing from storage".into()))
    }

    /// A member from a [`Member::snapshot`].
    pub fn restore(bytes: &[u8]) -> Result<Member, MlsError> {
        let state = |e: String| MlsError::State(e);
        let saved: Saved = rmp_serde::from_slice(bytes).map_err(|e| state(e.to_string()))?;
        if saved.version != 1 {
            return Err(state(format!("unknown format version {}", saved.version)));
        }
        let identity: Identity = saved
            .identity
            .as_slice()
            .try_into()
            .map_err(|_| state("an identity that is not 32 bytes".into()))?;
        let provider = OpenMlsRustCrypto::default();
        provider
            .storage()
            .values
            .write()
            .map_err(|_| state("storage lock poisoned".into()))?
            .extend(
                saved
                    .values
                    .into_iter()
                    .map(|(k, v)| (k.into_vec(), v.into_vec())),
            );
        let mut groups = BTreeMap::new();
        for room in saved.rooms {
            let room: Room = room
                .as_slice()
                .try_into()
                .map_err(|_| state("a room id that is not 16 bytes".into()))?;
            let group = MlsGroup::load(provider.storage(), &GroupId::from_slice(&room))
                .map_err(|e| state(e.to_string()))?
                .ok_or_else(|| state(format!("room {} is missing from storage", hex(&room))))?;
            groups.insert(room, group);
        }
        Ok(Member {
            provider,
            signer: saved.signer,
            identity,
            groups,
        })
    }
}

/// The leaf of the member `id` in `group`.
fn leaf_of(group: &MlsGroup, id: &Identity) -> Result<LeafNodeIndex, MlsError> {
    group
        .members()
        .find(|m| m.credential.serialized_content() == id.as_slice())
        .map(|m| m.index)
        .ok_or_else(|| MlsError::refused("remove members", format!("{} is not a member", hex(id))))
}

/// Lower-case hex, for error texts.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
