//! What of the rooms a driver saves: the MLS state (which holds the groups' secrets, so it is
//! kept like the identity's secret key) and the invitations not yet answered.

use flexim_mls::Member;
use flexim_protocol::PublicKey;
use flexim_protocol::conversation::RoomId;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::engine::{Engine, EngineError};
use crate::events::RoomIncoming;

/// The rooms' saved form (msgpack).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedRooms {
    /// [`Member::snapshot`], or empty before the first use.
    member: ByteBuf,
    /// Invitations not yet answered: room id and inviter, both in hex.
    invited: Vec<(String, String)>,
    /// Room messages opened and not acknowledged yet ([`crate::rooms::MAX_OPENED`]).
    #[serde(default)]
    opened: Vec<SavedOpened>,
    /// 1:1 messages held until their pair group exists (§16.9), oldest first.
    #[serde(default)]
    held: Vec<super::Held>,
    /// When each pair room's next update of this member's leaf is due.
    #[serde(default)]
    fresh: Vec<(String, super::Freshness)>,
}

/// An opened room message kept until acknowledged, as saved.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedOpened {
    /// The room, in hex.
    room: String,
    /// The sender MLS authenticated, in hex.
    from: String,
    /// The sender's date.
    date: i64,
    /// The plaintext.
    text: String,
    /// The id it came with.
    id: Option<String>,
    /// The MLS message (base64).
    sealed: String,
    /// The de-duplication key.
    key: String,
    /// The flags (a pair room's).
    #[serde(default)]
    flags: Vec<String>,
}

impl SavedRooms {
    /// The saved form as bytes, to write to a file or storage.
    pub fn to_bytes(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).unwrap_or_default()
    }

    /// The MLS member's state in it ([`Member::snapshot`]; empty before the first use).
    pub fn member_state(&self) -> &[u8] {
        &self.member
    }

    /// Reads [`SavedRooms::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<SavedRooms, EngineError> {
        rmp_serde::from_slice(bytes).map_err(|e| EngineError::Mls(format!("saved rooms: {e}")))
    }
}

impl Engine {
    /// The rooms' state to save (after [`Engine::take_rooms_changed`] says it changed).
    pub fn saved_rooms(&self) -> Result<SavedRooms, EngineError> {
        let member = match &self.rooms.member {
            Some(m) => m.snapshot()?,
            None => Vec::new(),
        };
        Ok(SavedRooms {
            member: ByteBuf::from(member),
            invited: self
                .rooms
                .invited
                .iter()
                .map(|(r, k)| (r.to_hex(), k.to_hex()))
                .collect(),
            opened: (self.rooms.opened.iter())
                .map(|m| SavedOpened {
                    room: m.room.to_hex(),
                    from: m.from.to_hex(),
                    date: m.date,
                    text: m.text.clone(),
                    id: m.id.clone(),
                    sealed: m.sealed.clone(),
                    key: m.key.clone(),
                    flags: m.flags.clone(),
                })
                .collect(),
            held: self.pairs.held.clone(),
            fresh: (self.pairs.fresh.iter())
                .map(|(r, f)| (r.to_hex(), *f))
                .collect(),
        })
    }

    /// The application processed the message `id`: its kept plaintext goes.
    pub(crate) fn forget_opened(&mut self, id: &str) {
        let before = self.rooms.opened.len();
        (self.rooms.opened).retain(|m| m.id.as_deref() != Some(id));
        if self.rooms.opened.len() != before {
            self.rooms.changed = true;
        }
    }

    /// Restores what [`Engine::saved_rooms`] gave, before the first login. The state must be
    /// this identity's.
    pub fn restore_rooms(&mut self, saved: &SavedRooms) -> Result<(), EngineError> {
        if saved.member.is_empty() {
            return Ok(());
        }
        let member = Member::restore(&saved.member)?;
        if member.identity() != self.me.0 {
            return Err(EngineError::Mls(
                "the saved rooms are another identity's".into(),
            ));
        }
        self.rooms.member = Some(member);
        self.rooms.invited = saved
            .invited
            .iter()
            .filter_map(|(r, k)| Some((RoomId::parse(r)?, PublicKey::from_hex(k)?)))
            .collect();
        self.rooms.opened = (saved.opened.iter())
            .filter_map(|m| {
                Some(RoomIncoming {
                    room: RoomId::parse(&m.room)?,
                    from: PublicKey::from_hex(&m.from)?,
                    date: m.date,
                    text: m.text.clone(),
                    id: m.id.clone(),
                    invited: false,
                    sealed: m.sealed.clone(),
                    key: m.key.clone(),
                    flags: m.flags.clone(),
                })
            })
            .collect();
        self.pairs.held = saved.held.clone();
        self.pairs.fresh = (saved.fresh.iter())
            .filter_map(|(r, f)| Some((RoomId::parse(r)?, *f)))
            .collect();
        Ok(())
    }
}
