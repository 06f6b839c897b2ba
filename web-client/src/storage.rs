//! What the page keeps in `localStorage`, and under which keys.
//!
//! `localStorage` may be missing or refuse writes (a privacy mode, a full quota). The page
//! still works then, only without memory across reloads, so every failure here is reported
//! as a value for the page to show rather than as a crash.

use web_sys::Storage;

/// The user's X25519 secret key, 64 hex digits. Whoever reads it can be the user.
pub(crate) const IDENTITY: &str = "flexim.identity";
/// The pinned server key, 64 hex digits.
pub(crate) const SERVER_KEY: &str = "flexim.serverKey";
/// The alias to register again at each login.
pub(crate) const ALIAS: &str = "flexim.alias";
/// The contacts and their conversations, as JSON (see [`crate::state::Contacts::to_json`]).
pub(crate) const CONTACTS: &str = "flexim.contacts";
/// The messages sent but not yet confirmed, and the recently seen message ids, as JSON (see
/// [`crate::outbox::SavedDelivery::to_json`]).
pub(crate) const DELIVERY: &str = "flexim.delivery";
/// The contacts' keys pinned on first use, in the engine's saved form (see
/// [`flexim_session::ContactPins::to_text`]).
pub(crate) const CONTACT_PINS: &str = "flexim.contactPins";
/// Where unreadable contact pins are moved, so that the pins can still be recovered by hand
/// instead of being overwritten by the ones learnt again.
pub(crate) const CONTACT_PINS_BACKUP: &str = "flexim.contactPins.unreadable";
/// The rooms' MLS state (the engine's [`flexim_session::SavedRooms`], base64): the group
/// secrets of every room this user is in. Whoever reads it can read those rooms.
pub(crate) const ROOMS_STATE: &str = "flexim.roomsState";
/// Where unreadable rooms' state is moved, so that it is not overwritten.
pub(crate) const ROOMS_STATE_BACKUP: &str = "flexim.roomsState.unreadable";
/// The rooms' lines and invitations, as JSON (see [`crate::rooms::Rooms::to_json`]).
pub(crate) const ROOMS: &str = "flexim.rooms";
/// Where an unreadable identity is moved before a new one is made, so that a damaged value
/// can still be recovered by hand instead of being overwritten.
pub(crate) const IDENTITY_BACKUP: &str = "flexim.identity.unreadable";

/// The page's `localStorage`, if the browser provides one.
pub(crate) struct Store {
    /// The storage area; `None` when the browser refuses access.
    storage: Option<Storage>,
}

impl Store {
    /// Opens `localStorage`.
    pub(crate) fn open() -> Store {
        let storage = crate::dom::window().and_then(|w| w.local_storage().ok().flatten());
        Store { storage }
    }

    /// Whether there is a storage area at all.
    pub(crate) fn available(&self) -> bool {
        self.storage.is_some()
    }

    /// The value under `key`.
    pub(crate) fn get(&self, key: &str) -> Option<String> {
        self.storage.as_ref()?.get_item(key).ok().flatten()
    }

    /// Stores `value` under `key`.
    pub(crate) fn set(&self, key: &str, value: &str) -> Result<(), String> {
        let storage = self
            .storage
            .as_ref()
            .ok_or("this browser does not let the page store anything")?;
        storage
            .set_item(key, value)
            .map_err(|_| "the browser refused to store it (storage full or disabled)".to_string())
    }

    /// Removes `key`.
    pub(crate) fn remove(&self, key: &str) {
        if let Some(storage) = &self.storage {
            let _ = storage.remove_item(key);
        }
    }
}
