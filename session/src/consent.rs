//! Consent from the client's side (docs/PROTOCOL.md §14): asking to talk, answering the
//! requests of strangers, blocking, and being found. The server keeps who accepted whom; the
//! engine remembers only which strangers asked on this connection, so that their messages are
//! reported apart ([`crate::Incoming::request`]).

use flexim_protocol::datum::{Acknowledge, Connection, Request as RequestDatum};
use flexim_protocol::status::cmd;
use flexim_protocol::{Command, Datum, PublicKey};

use crate::engine::{Engine, EngineError};
use crate::events::{Conversation, Event};
use crate::requests::{Consent, Request, RequestId};

impl Engine {
    /// Asks to talk to `who` (a key or an alias): a Request ([`crate::Answer::Consent`], then
    /// [`Event::Conversation`]). Writing to someone accepts their answers too.
    pub fn ask_to_talk(&mut self, who: &str) -> Result<RequestId, EngineError> {
        let datum = Datum::Request(RequestDatum {
            to: vec![who.to_string()],
            from: self.me.to_hex(),
            options: Vec::new(),
            id: None,
            ..Default::default()
        });
        self.consent_datum(datum, Consent::Ask, who)
    }

    /// Accepts the request of `who`: a key in hex, or the conversation id its Request
    /// carried (an Acknowledge). Its messages are no longer requests.
    pub fn accept_request(&mut self, who: &str) -> Result<RequestId, EngineError> {
        if let Some(k) = PublicKey::from_hex(who) {
            self.strangers.remove(&k);
        }
        let datum = Datum::Acknowledge(Acknowledge {
            id: who.to_string(),
        });
        self.consent_datum(datum, Consent::Accept, who)
    }

    /// Declines the request of `who` (a key or an alias).
    pub fn decline(&mut self, who: &str) -> Result<RequestId, EngineError> {
        self.consent_command(cmd::DECLINE, Consent::Decline, who)
    }

    /// Blocks `who` (a key or an alias): nothing from it reaches this user.
    pub fn block(&mut self, who: &str) -> Result<RequestId, EngineError> {
        self.consent_command(cmd::BLOCK, Consent::Block, who)
    }

    /// Undoes [`Engine::block`] (or [`Engine::decline`]).
    pub fn unblock(&mut self, who: &str) -> Result<RequestId, EngineError> {
        self.consent_command(cmd::UNBLOCK, Consent::Unblock, who)
    }

    /// Whether SEARCH finds this user.
    pub fn set_discoverable(&mut self, on: bool) -> Result<RequestId, EngineError> {
        let arg = if on { "on" } else { "off" };
        self.consent_command(cmd::DISCOVERABLE, Consent::Discoverable, arg)
    }

    /// REQUESTS: the strangers waiting for an answer ([`crate::Answer::Requests`]).
    pub fn requests(&mut self) -> Result<RequestId, EngineError> {
        self.request(Command::new(cmd::REQUESTS, &[]), Request::Requests)
    }

    /// Whether `key` asked to talk and has not been answered on this connection.
    pub fn is_stranger(&self, key: &PublicKey) -> bool {
        self.strangers.contains(key)
    }

    fn consent_command(
        &mut self,
        name: &str,
        action: Consent,
        who: &str,
    ) -> Result<RequestId, EngineError> {
        if matches!(action, Consent::Decline | Consent::Block)
            && let Some(k) = PublicKey::from_hex(who)
        {
            self.strangers.remove(&k);
        }
        let request = Request::Consent {
            action,
            who: who.to_string(),
        };
        self.request(Command::new(name, &[who]), request)
    }

    fn consent_datum(
        &mut self,
        datum: Datum,
        action: Consent,
        who: &str,
    ) -> Result<RequestId, EngineError> {
        let request = Request::Consent {
            action,
            who: who.to_string(),
        };
        self.request_datum(&datum, request)
    }

    /// A Request from the server: a stranger asks to talk.
    pub(crate) fn on_request(&mut self, r: RequestDatum) {
        let Some(from) = PublicKey::from_hex(&r.from) else {
            return self.notice(format!("ignored a Request from {:?}", r.from));
        };
        self.strangers.insert(from);
        let conversation =
            r.id.unwrap_or_else(|| flexim_protocol::conversation::pair_id(&self.me, &from));
        self.emit(Event::Requested { from, conversation });
    }

    /// A Connection from the server: a conversation began or changed.
    pub(crate) fn on_connection(&mut self, c: Connection) {
        let keys = |list: &[String]| -> Vec<PublicKey> {
            list.iter().filter_map(|k| PublicKey::from_hex(k)).collect()
        };
        let conversation = Conversation {
            id: c.id,
            members: keys(&c.users),
            pending: keys(&c.pending),
        };
        self.emit(Event::Conversation(conversation));
    }
}
