//! Consent from the client's side (docs/PROTOCOL.md §14): the Request and Acknowledge datums,
//! and the commands of the requests box (REQUESTS, DECLINE, BLOCK, UNBLOCK) and of being found
//! (DISCOVERABLE). Each is answered once, like a command.

use std::io;

use bytes::Bytes;
use flexim_protocol::conversation::pair_id;
use flexim_protocol::datum::{Acknowledge, Connection, Request, Status};
use flexim_protocol::status::{self, cmd};
use flexim_protocol::{Datum, PublicKey};
use futures_util::Sink;

use super::{Flow, Phase, Session, io_flow};
use crate::directory::{Listing, names_sender};
use crate::frames::frame;
use crate::relay::Admitted;
use crate::store::{Tie, TieChange};

impl<Si: Sink<Bytes, Error = io::Error> + Unpin> Session<Si> {
    /// A Request or an Acknowledge: answered after every Message before it, counted against
    /// the command rate, answered with a Status; a success is followed by the conversation's
    /// Connection datum (a notice: Connection datums are never answers, since they also come
    /// unasked when someone accepts).
    pub(super) async fn consent_datum(&mut self, datum: Datum) -> Flow {
        if let Flow::Stop(end) = self.flush_answers().await {
            return Flow::Stop(end);
        }
        let Some((key, _)) = self.authed() else {
            return Flow::Continue;
        };
        let name = datum.kind().name();
        if let Some(refusal) = self.command_refusal(key, name) {
            return self.reply(refusal).await;
        }
        if let Datum::Acknowledge(a) = &datum
            && let Some(joined) = self.relay.acknowledge_room(key, &a.id).await
        {
            return self.reply(joined).await;
        }
        let answer = match datum {
            Datum::Request(r) => self.request(key, r).await,
            Datum::Acknowledge(a) => self.acknowledge(key, a).await,
            _ => Err(Status::new(status::UNSUPPORTED, "not a consent datum")),
        };
        match answer {
            Ok((status, connection)) => {
                if let Flow::Stop(end) = self.reply(status).await {
                    return Flow::Stop(end);
                }
                io_flow(self.out.feed(frame(connection)).await)
            }
            Err(s) => self.reply(s).await,
        }
    }

    /// A Request: `key` asks to talk to the one user in `to`. It accepts that user, and the
    /// user is asked (a Request notice) unless it accepted `key` already.
    async fn request(&self, key: PublicKey, r: Request) -> Result<(Status, Connection), Status> {
        let Phase::Authed(a) = &self.phase else {
            return Err(Status::new(status::UNAUTHENTICATED, "authenticate first"));
        };
        if !names_sender(&r.from, &key, &a.aliases) {
            let text = format!(
                "spoof: from {:?} is not you; use your key or one of your aliases",
                r.from
            );
            return Err(Status::new(status::SPOOF, text));
        }
        let who = match r.to.as_slice() {
            [one] => one,
            [] => {
                return Err(Status::new(
                    status::BAD_ARGUMENT,
                    "a Request names whom it is for in `to`",
                ));
            }
            _ => {
                return Err(Status::new(
                    status::UNSUPPORTED,
                    "a Request names one user: conversations of more are not offered yet",
                ));
            }
        };
        let to = self.recipient(who).await?;
        if to == key {
            return Err(Status::new(
                status::BAD_ARGUMENT,
                "a Request is for someone else",
            ));
        }
        self.relay.accept(key, to).await?;
        let (text, pending) = match self.relay.admit(key, to, false).await? {
            Admitted::Contact => (format!("you and {who} are in a conversation"), Vec::new()),
            Admitted::Request { first } => {
                if first {
                    self.relay.request_notice(key, to).await;
                }
                (format!("asked {who}; they have not accepted yet"), vec![to])
            }
        };
        let c = self.relay.connection(key, to, pending);
        Ok((Status::new(status::OK, text), c))
    }

    /// An Acknowledge: `key` accepts the request whose conversation id is `a.id` (or the
    /// requester named by its key). The requester is told with a Connection.
    async fn acknowledge(
        &self,
        key: PublicKey,
        a: Acknowledge,
    ) -> Result<(Status, Connection), Status> {
        let failure = |_| Status::new(status::INTERNAL, "storage failure: nothing was accepted");
        let other = match PublicKey::from_hex(&a.id) {
            Some(k) => Some(k),
            None => {
                let ties = self.relay.store.ties(key).await.map_err(failure)?;
                ties.into_iter()
                    .map(|(k, _)| k)
                    .find(|k| pair_id(&key, k) == a.id.to_ascii_lowercase())
            }
        };
        let Some(other) = other.filter(|k| *k != key) else {
            let text = format!("no request with the id {:?}; REQUESTS lists them", a.id);
            return Err(Status::new(status::NO_SUCH_USER, text));
        };
        let before = self.relay.accept(key, other).await?;
        if matches!(before, Some(Tie::Pending { .. } | Tie::Declined)) {
            self.relay.accepted_notice(key, other);
        }
        let mutual = self.relay.has_accepted(other, key).await;
        let pending = if mutual { Vec::new() } else { vec![other] };
        let text = format!("accepted {other}");
        let c = self.relay.connection(key, other, pending);
        Ok((Status::new(status::OK, text), c))
    }

    /// REQUESTS, DECLINE, BLOCK, UNBLOCK and DISCOVERABLE, for `key`; `None` if `name` is
    /// none of them.
    pub(super) async fn consent_command(
        &self,
        key: PublicKey,
        name: &str,
        arg: Option<&str>,
    ) -> Option<Result<Datum, Status>> {
        let change = match name {
            cmd::REQUESTS => return Some(self.relay.roster(key, Listing::Requests).await),
            cmd::DISCOVERABLE => return Some(self.discoverable(key, arg).await),
            cmd::DECLINE => TieChange::Decline,
            cmd::BLOCK => TieChange::Block,
            cmd::UNBLOCK => TieChange::Clear,
            _ => return None,
        };
        let Some(who) = arg.filter(|w| !w.is_empty()) else {
            return Some(Err(Status::new(
                status::BAD_ARGUMENT,
                format!("{name} needs a key or an alias"),
            )));
        };
        Some(self.untie(key, who, change, name).await)
    }

    /// DECLINE, BLOCK or UNBLOCK of `who`.
    async fn untie(
        &self,
        key: PublicKey,
        who: &str,
        change: TieChange,
        name: &str,
    ) -> Result<Datum, Status> {
        let other = match self.relay.resolve(who).await {
            Ok(Some(k)) if k != key => k,
            Ok(Some(_)) => {
                return Err(Status::new(
                    status::BAD_ARGUMENT,
                    format!("{name} names someone else"),
                ));
            }
            Ok(None) => {
                return Err(Status::new(
                    status::NO_SUCH_USER,
                    format!("no user {who:?}"),
                ));
            }
            Err(_) => return Err(Status::new(status::INTERNAL, "storage failure")),
        };
        let (_, after) = self.relay.untie(key, other, change).await?;
        let text = match (change, after) {
            (TieChange::Block, _) => format!("blocked {who}: nothing from them reaches you"),
            (TieChange::Clear, _) => format!("unblocked {who}: they are a stranger again"),
            (_, Some(Tie::Declined)) => format!("declined {who}'s request"),
            _ => format!("{who} is not a stranger waiting for an answer: nothing declined"),
        };
        Ok(Datum::Status(Status::new(status::OK, text)))
    }

    /// DISCOVERABLE on|off.
    async fn discoverable(&self, key: PublicKey, arg: Option<&str>) -> Result<Datum, Status> {
        let on = match arg.map(str::to_ascii_lowercase).as_deref() {
            Some("on") => true,
            Some("off") => false,
            _ => {
                return Err(Status::new(
                    status::BAD_ARGUMENT,
                    "DISCOVERABLE takes on or off",
                ));
            }
        };
        if self.relay.store.set_discoverable(key, on).await.is_err() {
            return Err(Status::new(
                status::INTERNAL,
                "storage failure: nothing changed",
            ));
        }
        let text = if on {
            "SEARCH finds you by your aliases now"
        } else {
            "SEARCH does not find you"
        };
        Ok(Datum::Status(Status::new(status::OK, text)))
    }
}
