//! Users as the commands see them: aliases (REGISTER, and `to` fields that
//! name one), GETUSER, ROSTER, REQUESTS and SEARCH, and the `from` rule. All of it reads or
//! writes the store; presence comes from the relay. A user's presence and `last_seen` are
//! shown only to users it accepted (docs/PROTOCOL.md §14.4).

use flexim_protocol::datum::{Roster, Status, User};
use flexim_protocol::keys::validate_alias;
use flexim_protocol::{Datum, PublicKey, status};

use crate::relay::Relay;
use crate::store::{Claim, StoreError, Tie, UserRecord};

/// Whether `alias` may be given to a user (REGISTER, or the operator's reassign), or why
/// not: the alias rules (docs/PROTOCOL.md §7.3), and no 32 hex digits, since a `to` of that
/// shape names a room (§16.1).
pub(crate) fn alias_to_give(alias: &str) -> Result<(), String> {
    validate_alias(alias).map_err(|e| e.to_string())?;
    if flexim_protocol::conversation::is_conversation_id(alias) {
        return Err("32 hex digits name a room".into());
    }
    Ok(())
}

impl Relay {
    /// Resolves a `to` field: a hex key, or a registered alias.
    pub(crate) async fn resolve(&self, who: &str) -> Result<Option<PublicKey>, StoreError> {
        if let Some(k) = PublicKey::from_hex(who) {
            return Ok(Some(k));
        }
        if validate_alias(who).is_err() {
            return Ok(None);
        }
        self.store.resolve_alias(who.to_string()).await
    }

    /// Claims an alias for `key`.
    pub(crate) async fn register(&self, key: PublicKey, alias: &str) -> Status {
        if let Err(why) = alias_to_give(alias) {
            return Status::new(
                status::BAD_ARGUMENT,
                format!("invalid alias {alias:?}: {why}"),
            );
        }
        match self
            .store
            .claim_alias(key, alias.to_string(), self.limits.max_aliases)
            .await
        {
            Ok(Claim::Registered) | Ok(Claim::AlreadyYours) => {
                Status::new(status::OK, format!("registered {alias}"))
            }
            Ok(Claim::Taken) => Status::new(
                status::ALIAS_TAKEN,
                format!("the alias {alias} belongs to someone else"),
            ),
            Ok(Claim::TooMany) => Status::new(
                status::BAD_ARGUMENT,
                format!("a key may have at most {} aliases", self.limits.max_aliases),
            ),
            Err(e) => {
                tracing::error!(error = %e, "could not register an alias");
                Status::new(status::INTERNAL, "storage failure: alias not registered")
            }
        }
    }

    /// The stored aliases of `key`.
    pub(crate) async fn aliases(&self, key: PublicKey) -> Vec<String> {
        match self.store.user(key).await {
            Ok(Some(u)) => u.aliases,
            _ => Vec::new(),
        }
    }

    /// GETUSER: one user by key or alias, as `viewer` may see it.
    pub(crate) async fn get_user(&self, viewer: PublicKey, who: &str) -> Result<Datum, Status> {
        let not_found = || Status::new(status::NO_SUCH_USER, format!("no user {who:?}"));
        let key = self
            .resolve(who)
            .await
            .map_err(|_| Status::new(status::INTERNAL, "storage failure"))?
            .ok_or_else(not_found)?;
        match self.store.user(key).await {
            Ok(Some(record)) => {
                let online = if self.has_accepted(key, viewer).await {
                    Some(self.online(&[key]).await[0])
                } else {
                    None
                };
                Ok(Datum::User(user_datum(key, record, online)))
            }
            Ok(None) => Err(not_found()),
            Err(_) => Err(Status::new(status::INTERNAL, "storage failure")),
        }
    }

    /// The users among `keys` with their records (unknown ones left out), at most `limit`.
    async fn records(
        &self,
        keys: Vec<PublicKey>,
        limit: usize,
    ) -> Result<Vec<(PublicKey, UserRecord)>, Status> {
        let mut found = Vec::new();
        for k in keys.into_iter().take(limit) {
            match self.store.user(k).await {
                Ok(Some(r)) => found.push((k, r)),
                Ok(None) => {}
                Err(_) => return Err(Status::new(status::INTERNAL, "storage failure")),
            }
        }
        Ok(found)
    }

    /// The keys `viewer` has a tie of this kind with.
    async fn tied(
        &self,
        viewer: PublicKey,
        pick: fn(&Tie) -> bool,
    ) -> Result<Vec<PublicKey>, Status> {
        let ties = self
            .store
            .ties(viewer)
            .await
            .map_err(|_| Status::new(status::INTERNAL, "storage failure"))?;
        Ok(ties
            .into_iter()
            .filter(|(_, t)| pick(t))
            .map(|(k, _)| k)
            .collect())
    }

    /// ROSTER (the users `viewer` accepted: its contacts), REQUESTS (the strangers waiting in
    /// its requests box) or SEARCH (users who chose to be found whose alias contains
    /// `needle`): online users first, then the most recently seen, trimmed to fit in one
    /// datum. Presence and `last_seen` only of users who accepted `viewer`.
    pub(crate) async fn roster(
        &self,
        viewer: PublicKey,
        list: Listing<'_>,
    ) -> Result<Datum, Status> {
        let found = match list {
            Listing::Contacts => {
                let keys = self.tied(viewer, |t| *t == Tie::Accepted).await?;
                self.records(keys, self.limits.roster_limit).await?
            }
            Listing::Requests => {
                let keys = self
                    .tied(viewer, |t| matches!(t, Tie::Pending { .. }))
                    .await?;
                self.records(keys, self.limits.roster_limit).await?
            }
            Listing::Search(n) => self
                .store
                .search(n.to_string(), self.limits.search_limit)
                .await
                .map_err(|_| Status::new(status::INTERNAL, "storage failure"))?,
        };
        let mut users: Vec<User> = Vec::with_capacity(found.len());
        for (k, r) in found {
            let online = if self.has_accepted(k, viewer).await {
                Some(self.online(&[k]).await[0])
            } else {
                None
            };
            users.push(user_datum(k, r, online));
        }
        users.sort_by_key(|u| std::cmp::Reverse((u.online, u.last_seen)));
        let mut roster = Roster { users };
        while Datum::Roster(roster.clone()).encode_body().len() > flexim_protocol::MAX_BODY {
            let keep = roster.users.len() * 9 / 10;
            roster.users.truncate(keep);
        }
        Ok(Datum::Roster(roster))
    }
}

/// Which users a Roster lists.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Listing<'a> {
    /// ROSTER: the viewer's contacts.
    Contacts,
    /// REQUESTS: the strangers in the viewer's requests box.
    Requests,
    /// SEARCH: discoverable users whose alias contains the text.
    Search(&'a str),
}

/// A User datum for an answer: presence (`online`) and `last_seen` only when the viewer may
/// see them (`online` is `None` otherwise, and `last_seen` 0).
fn user_datum(key: PublicKey, record: UserRecord, online: Option<bool>) -> User {
    User {
        aliases: record.aliases,
        last_seen: if online.is_some() {
            record.last_seen
        } else {
            0
        },
        online,
        key,
    }
}

/// Whether `from` names the sender: its key in hex (any case) or one of its aliases (any case).
pub(crate) fn names_sender(from: &str, key: &PublicKey, aliases: &[String]) -> bool {
    PublicKey::from_hex(from).is_some_and(|k| k == *key)
        || aliases.iter().any(|a| a.eq_ignore_ascii_case(from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_must_name_the_sender() {
        let key = PublicKey([0xab; 32]);
        let aliases = vec!["Alice".to_string()];
        assert!(names_sender(&key.to_hex(), &key, &aliases));
        assert!(names_sender(&key.to_hex().to_uppercase(), &key, &aliases));
        assert!(names_sender("alice", &key, &aliases));
        assert!(!names_sender("bob", &key, &aliases));
        assert!(!names_sender(&PublicKey([1; 32]).to_hex(), &key, &aliases));
    }
}
