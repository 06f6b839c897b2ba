//! The commands of an authenticated session (docs/PROTOCOL.md §7), each answered once.

use std::io;

use bytes::Bytes;
use flexim_protocol::Datum;
use flexim_protocol::datum::{Command, Status};
use flexim_protocol::status::{self, cmd};
use futures_util::Sink;

use super::{Flow, Phase, Session, io_flow};
use crate::directory::Listing;
use crate::frames::frame;

impl<Si: Sink<Bytes, Error = io::Error> + Unpin> Session<Si> {
    /// Runs one command and answers it.
    pub(super) async fn command(&mut self, c: Command) -> Flow {
        let Some((key, id)) = self.authed() else {
            return Flow::Continue;
        };
        if let Some(refusal) = self.command_refusal(key, &c.cmd) {
            return self.reply(refusal).await;
        }
        let arg = c.payload.first().map(String::as_str);
        if let Some(answer) = self.consent_command(key, &c.cmd, arg).await {
            return match answer {
                Ok(datum) => io_flow(self.out.feed(frame(datum)).await),
                Err(s) => self.reply(s).await,
            };
        }
        if let Some(answer) = self.room_command(key, &c.cmd, &c.payload).await {
            return match answer {
                Ok(datum) => io_flow(self.out.feed(frame(datum)).await),
                Err(s) => self.reply(s).await,
            };
        }
        let answer: Result<Datum, Status> = match (c.cmd.as_str(), arg) {
            (cmd::ROSTER, _) => self.relay.roster(key, Listing::Contacts).await,
            (cmd::SEARCH, Some(needle)) if !needle.is_empty() => {
                self.relay.roster(key, Listing::Search(needle)).await
            }
            (cmd::GETUSER, Some(who)) => self.relay.get_user(key, who).await,
            (cmd::REGISTER, Some(alias)) => {
                let alias = alias.to_string();
                return self.register(&alias).await;
            }
            (cmd::OFFLINES, _) => return self.deliver_stored(true).await,
            (cmd::ACK, Some(_)) => {
                let ids: Vec<&str> = c.payload.iter().map(String::as_str).collect();
                Err(self.ack(&ids))
            }
            (cmd::GHOST, _) => {
                if self.relay.ghost(key, id).await {
                    let text = "this session now receives this key's messages";
                    if let Flow::Stop(end) = self.reply(Status::new(status::GHOSTED, text)).await {
                        return Flow::Stop(end);
                    }
                    return self.deliver_stored(false).await;
                }
                Err(Status::new(status::INTERNAL, "this session is closing"))
            }
            (cmd::AUTH, _) => Err(Status::new(status::BAD_ARGUMENT, "already authenticated")),
            (cmd::SEARCH | cmd::GETUSER | cmd::REGISTER | cmd::ACK, _) => Err(Status::new(
                status::BAD_ARGUMENT,
                format!("{} needs an argument", c.cmd),
            )),
            (other, _) => Err(Status::new(
                status::UNKNOWN_COMMAND,
                format!("unknown command {other:?}"),
            )),
        };
        match answer {
            Ok(datum) => io_flow(self.out.feed(frame(datum)).await),
            Err(s) => self.reply(s).await,
        }
    }

    /// The refusal for a command over its key's rates (`Limits::command_rate`, and
    /// `Limits::lookup_rate` for ROSTER and SEARCH); `None` lets it run. ACK is not counted:
    /// a receiver sends one for every batch it reads, and each costs about what a message does.
    pub(super) fn command_refusal(
        &self,
        key: flexim_protocol::PublicKey,
        name: &str,
    ) -> Option<Status> {
        use crate::metrics::Limit;
        if name == cmd::ACK {
            return None;
        }
        let rates = &self.relay.rates;
        let now = std::time::Instant::now();
        let (bucket, limit, what) = match rates.commands.take(key, now) {
            Err(wait) => (&rates.commands, Limit::CommandRate, ("commands", wait)),
            Ok(()) if matches!(name, cmd::ROSTER | cmd::SEARCH) => {
                match rates.lookups.take(key, now) {
                    Err(wait) => (
                        &rates.lookups,
                        Limit::LookupRate,
                        ("ROSTER and SEARCH", wait),
                    ),
                    Ok(()) => return None,
                }
            }
            Ok(()) => return None,
        };
        self.relay.metrics.hit(limit);
        let (what, wait) = what;
        let text = format!(
            "{name} refused: at most {} for {what}; try again in {}",
            bucket.rate().words(),
            crate::rates::wait_text(wait)
        );
        Some(Status::new(status::RATE_LIMITED, text))
    }

    /// ACK: the answer says how many of the distinct ids named a message this session held.
    pub(super) fn ack(&self, ids: &[&str]) -> Status {
        let Some((key, id)) = self.authed() else {
            return Status::new(status::UNAUTHENTICATED, "authenticate first");
        };
        if let Some(bad) = ids.iter().find(|i| status::validate_id(i).is_err()) {
            return Status::new(
                status::BAD_ARGUMENT,
                format!("ACK: {bad:?} is not a message id; nothing was acknowledged"),
            );
        }
        let n = self.relay.ack(key, id, ids);
        Status::new(status::OK, format!("acknowledged {n} of {}", ids.len()))
    }

    /// REGISTER (or the alias asked for with AUTH): claims it and keeps the `from` check
    /// current.
    pub(super) async fn register(&mut self, alias: &str) -> Flow {
        let Some((key, _)) = self.authed() else {
            return Flow::Continue;
        };
        let answer = self.relay.register(key, alias).await;
        if answer.status == status::OK
            && let Phase::Authed(a) = &mut self.phase
        {
            a.aliases = self.relay.aliases(key).await;
        }
        self.reply(answer).await
    }
}
