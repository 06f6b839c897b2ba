//! Users as the commands see them: aliases (REGISTER, and `to` fields that
//! name one), GETUSER, ROSTER and SEARCH, and the `from` rule. All of it reads or writes the
//! store; presence comes from the relay.

use flexim_protocol::datum::{Roster, Status, User};
use flexim_protocol::keys::validate_alias;
use flexim_protocol::{Datum, PublicKey, status};

use crate::relay::Relay;
use crate::store::{Claim, StoreError, UserRecord};

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
        if let Err(e) = validate_alias(alias) {
            return Status::new(
                status::BAD_ARGUMENT,
                format!("invalid alias {alias:?}: {e}"),
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

    /// GETUSER: one user by key or alias.
    pub(crate) async fn get_user(&self, who: &str) -> Result<Datum, Status> {
        let not_found = || Status::new(status::NO_SUCH_USER, format!("no user {who:?}"));
        let key = self
            .resolve(who)
            .await
            .map_err(|_| Status::new(status::INTERNAL, "storage failure"))?
            .ok_or_else(not_found)?;
        match self.store.user(key).await {
            Ok(Some(record)) => {
                let online = self.online(&[key]).await[0];
                Ok(Datum::User(user_datum(key, record, online)))
            }
            Ok(None) => Err(not_found()),
            Err(_) => Err(Status::new(status::INTERNAL, "storage failure")),
        }
    }

    /// ROSTER (all known users) or SEARCH (users whose alias contains `needle`): online users
    /// first, then the most recently seen, trimmed to fit in one datum.
    pub(crate) async fn roster(&self, needle: Option<&str>) -> Result<Datum, Status> {
        let found = match needle {
            None => self.store.users(self.limits.roster_limit).await,
            Some(n) => {
                self.store
                    .search(n.to_string(), self.limits.search_limit)
                    .await
            }
        }
        .map_err(|_| Status::new(status::INTERNAL, "storage failure"))?;
        let keys: Vec<PublicKey> = found.iter().map(|(k, _)| *k).collect();
        let online = self.online(&keys).await;
        let mut users: Vec<User> = found
            .into_iter()
            .zip(online)
            .map(|((k, r), on)| user_datum(k, r, on))
            .collect();
        users.sort_by_key(|u| std::cmp::Reverse((u.online, u.last_seen)));
        let mut roster = Roster { users };
        while Datum::Roster(roster.clone()).encode_body().len() > flexim_protocol::MAX_BODY {
            let keep = roster.users.len() * 9 / 10;
            roster.users.truncate(keep);
        }
        Ok(Datum::Roster(roster))
    }
}

/// A User datum for an answer.
fn user_datum(key: PublicKey, record: UserRecord, online: bool) -> User {
    User {
        aliases: record.aliases,
        online: Some(online),
        key,
        last_seen: record.last_seen,
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
