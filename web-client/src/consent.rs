//! The requests box in the page's model (docs/PROTOCOL.md §14): strangers who asked to talk are
//! listed apart from the conversations until the user accepts, declines or blocks them.

use flexim_protocol::status;
use flexim_protocol::{PublicKey, User};
use flexim_session::{Consent, Conversation, Lookup, Refusal};

use crate::model::{Effect, Model};
use crate::state::{Waiting, short_fingerprint};

impl Model {
    /// Whether `key` waits in the requests box.
    pub fn is_request(&self, key: &PublicKey) -> bool {
        self.requests.iter().any(|w| w.key == *key)
    }

    /// The name to show for `key`: the contact's, the alias the server named, or the start
    /// of the fingerprint.
    pub fn name_of(&self, key: &PublicKey) -> String {
        if let Some(name) = self.contacts.get(key).and_then(|c| c.name.clone()) {
            return name;
        }
        self.requests
            .iter()
            .find(|w| w.key == *key)
            .and_then(|w| w.name.clone())
            .unwrap_or_else(|| short_fingerprint(key))
    }

    /// Learns the alias of a waiting stranger from a lookup; the box is shown again then.
    pub(crate) fn learn_request_name(&mut self, user: &User) -> Vec<Effect> {
        match self.requests.iter_mut().find(|w| w.key == user.key) {
            Some(w) => {
                w.name = user.aliases.first().cloned();
                vec![Effect::ShowRequests]
            }
            None => Vec::new(),
        }
    }

    /// Puts `key` in the requests box (once), asking for its aliases.
    pub(crate) fn add_request(&mut self, key: PublicKey) -> Vec<Effect> {
        if key == self.me || self.is_request(&key) {
            return Vec::new();
        }
        self.requests.push(Waiting { key, name: None });
        let mut effects = vec![Effect::ShowRequests];
        if self.contacts.get(&key).is_none_or(|c| c.name.is_none()) {
            effects.push(Effect::AskUser {
                query: key.to_hex(),
                purpose: Lookup::Refresh,
            });
        }
        effects
    }

    /// A stranger asks to talk.
    pub(crate) fn on_requested(&mut self, from: PublicKey) -> Vec<Effect> {
        let mut effects = self.add_request(from);
        if !effects.is_empty() {
            let name = self.name_of(&from);
            effects.insert(0, Effect::Log(format!("{name} asks to talk")));
        }
        effects
    }

    /// The server described a conversation: this user asked, accepted, or was accepted.
    pub(crate) fn on_conversation(&mut self, c: Conversation) -> Vec<Effect> {
        let others: Vec<String> = c
            .members
            .iter()
            .filter(|k| **k != self.me)
            .map(|k| self.name_of(k))
            .collect();
        let mine = c.pending.contains(&self.me);
        let text = match (c.pending.is_empty(), mine) {
            (true, _) => format!("{} and you are in a conversation", others.join(", ")),
            (false, true) => format!("{} asked you to talk", others.join(", ")),
            (false, false) => format!("waiting for {} to accept", others.join(", ")),
        };
        vec![Effect::Log(text)]
    }

    /// REQUESTS answered: the box as the server keeps it.
    pub(crate) fn on_requests(&mut self, result: Result<Vec<User>, Refusal>) -> Vec<Effect> {
        match result {
            Ok(users) => {
                self.requests = users
                    .iter()
                    .filter(|u| u.key != self.me)
                    .map(|u| Waiting {
                        key: u.key,
                        name: u.aliases.first().cloned(),
                    })
                    .collect();
                vec![Effect::ShowRequests]
            }
            Err(r) => vec![Effect::Log(format!(
                "the requests could not be loaded: {r}"
            ))],
        }
    }

    /// The user answered a request (accept, decline or block): it leaves the box at once.
    pub fn answer_request(&mut self, key: &PublicKey) -> Vec<Effect> {
        self.requests.retain(|w| w.key != *key);
        vec![Effect::ShowRequests]
    }

    /// The server's answer to a consent action.
    pub(crate) fn on_consent(
        &mut self,
        action: Consent,
        who: &str,
        result: Result<flexim_protocol::Status, Refusal>,
    ) -> Vec<Effect> {
        let name = PublicKey::from_hex(who)
            .map(|k| self.name_of(&k))
            .unwrap_or_else(|| who.to_string());
        let text = match result {
            Ok(_) => match action {
                Consent::Ask => format!("asked {name} to talk"),
                Consent::Accept => format!("accepted {name}"),
                Consent::Decline => format!("declined {name}'s request"),
                Consent::Block => format!("blocked {name}"),
                Consent::Unblock => format!("unblocked {name}"),
                Consent::Discoverable => "your discoverability is changed".to_string(),
            },
            Err(r) if r.status == status::BLOCKED => format!("{name} has blocked you"),
            Err(r) => format!("{} {name} failed: {r}", action.name()),
        };
        vec![Effect::Log(text)]
    }
}
