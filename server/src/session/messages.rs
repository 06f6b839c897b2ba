//! The Message path of a session and the queue of answers: a Message is read as
//! [`MessageRef`] (its body never copied), checked, routed, and answered in order, the
//! answers of messages waiting for the store's commit queued behind each other.

use std::collections::VecDeque;
use std::io;

use bytes::Bytes;
use flexim_protocol::PublicKey;
use flexim_protocol::conversation::RoomId;
use flexim_protocol::datum::{MessageRef, Status};
use flexim_protocol::frame::PREFIX_LEN;
use flexim_protocol::status;
use futures_util::Sink;

use super::{Flow, Phase, Session, io_flow};
use crate::directory::names_sender;
use crate::frames::{Id, frame};
use crate::relay::{Admitted, Answer};

/// The oldest answer, once it is known (pending while there is none).
pub(super) async fn next_answer(answers: &mut VecDeque<Answer>) -> Bytes {
    match answers.front_mut() {
        None => std::future::pending().await,
        Some(Answer::Frame(f)) => f.clone(),
        Some(Answer::Later(rx)) => match rx.await {
            Ok(f) => f,
            // The relay always answers; should its task have died, the sender is told to
            // send again rather than left waiting.
            Err(_) => frame(Status::new(
                status::INTERNAL,
                "the message's fate is unknown; send it again",
            )),
        },
    }
}

impl<Si: Sink<Bytes, Error = io::Error> + Unpin> Session<Si> {
    /// A Message frame from the authenticated client: read as [`MessageRef`] (its body not
    /// copied), checked, routed, answered in order.
    pub(super) async fn message_frame(&mut self, frame: Bytes, key: PublicKey) -> Flow {
        self.charge_message(key);
        let answer = match MessageRef::decode(&frame[PREFIX_LEN..]) {
            Ok(m) => self.message(m, &frame, key).await,
            Err(e) => Err(Status::new(status::MALFORMED, e.to_string())),
        };
        match answer {
            Ok(answer) => self.answer(answer).await,
            Err(refusal) => self.reply(refusal).await,
        }
    }

    /// Counts a message against its key's `Limits::message_rate`: over it, the client's
    /// next datum is read only after the pause the rate asks for.
    fn charge_message(&mut self, key: PublicKey) {
        // With the rate off (`0`), nothing to count: the hot path does not read the clock.
        if !self.relay.rates.messages.rate().is_on() {
            return;
        }
        let now = tokio::time::Instant::now();
        if let Some(pause) = self.relay.rates.messages.charge(key, now.into_std()) {
            if self.pause.is_none() {
                self.relay.metrics.hit(crate::metrics::Limit::MessageRate);
            }
            self.pause = Some(now + pause);
        }
    }

    /// Checks a Message and hands it to the relay; `Err` is the refusal to answer with.
    async fn message(
        &mut self,
        m: MessageRef<'_>,
        frame: &Bytes,
        key: PublicKey,
    ) -> Result<Answer, Status> {
        let Phase::Authed(a) = &self.phase else {
            return Err(Status::new(status::UNAUTHENTICATED, "authenticate first"));
        };
        if let Some(id) = m.id
            && let Err(why) = status::validate_id(id)
        {
            // A malformed id cannot name the answer: it is answered without one.
            let text = format!("bad message id: {why}; the message was not sent");
            return Err(Status::new(status::BAD_ARGUMENT, text));
        }
        let id = m.id.map(|id| Id::in_frame(frame, id));
        let named = || id.as_ref().map(|i| i.as_str().to_string());
        if !names_sender(m.from, &key, &a.aliases) {
            let text = format!(
                "spoof: from {:?} is not you; use your key or one of your aliases",
                m.from
            );
            return Err(Status::new(status::SPOOF, text).with_id(named()));
        }
        if let Some(room) = RoomId::parse(m.to) {
            return self
                .room_message(key, room, &m, id.clone(), frame)
                .await
                .map_err(|s| s.with_id(named()));
        }
        let to = self.recipient(m.to).await.map_err(|s| s.with_id(named()))?;
        if let Err(refusal) = self.consent(key, to).await {
            return Err(refusal.with_id(named()));
        }
        Ok(self.relay.route(key, to, id, frame.clone()))
    }

    /// The key a `to` field names (a key, or an alias), if it may be written to: only keys
    /// that have logged in get anything, so that nobody fills the store for a key that will
    /// never read it. `Err` is the refusal (without an id).
    pub(super) async fn recipient(&self, to: &str) -> Result<PublicKey, Status> {
        let failure = || Status::new(status::INTERNAL, "storage failure: message not sent");
        let key = match PublicKey::from_hex(to) {
            // A key that cannot be anyone's identity: nobody can ever log in to read it.
            Some(k) if let Err(e) = k.check() => {
                let text = format!("to {to:?} is refused: {e}; the message was not sent");
                return Err(Status::new(status::BAD_ARGUMENT, text));
            }
            Some(k) => k,
            None => match self.relay.resolve(to).await {
                Ok(Some(k)) => k,
                Ok(None) => {
                    let text =
                        format!("no user {to:?}: use a 64-digit hex key or a registered alias");
                    return Err(Status::new(status::NO_SUCH_USER, text));
                }
                Err(_) => return Err(failure()),
            },
        };
        match self.relay.has_logged_in(key).await {
            Ok(true) => Ok(key),
            Ok(false) => {
                let text = format!(
                    "no user {to:?} has ever logged in; messages go only to users who have"
                );
                Err(Status::new(status::NO_SUCH_USER, text))
            }
            Err(_) => Err(failure()),
        }
    }

    /// Consent for a Message from `key` to `to` (docs/PROTOCOL.md §14.3): writing to `to`
    /// accepts its answers, and `to` must have accepted `key`, or have room in its requests
    /// box (whose first message is preceded by a Request notice). `Err` is the refusal.
    pub(super) async fn consent(&self, key: PublicKey, to: PublicKey) -> Result<(), Status> {
        self.relay.accept(key, to).await?;
        if let Admitted::Request { first: true } = self.relay.admit(key, to, true).await? {
            self.relay.request_notice(key, to).await;
        }
        Ok(())
    }

    /// Sends an answer now if nothing older waits, or queues it behind the older ones. With
    /// too many answers waiting, waits for the oldest before reading on.
    pub(super) async fn answer(&mut self, answer: Answer) -> Flow {
        match answer {
            Answer::Frame(f) if self.answers.is_empty() => return io_flow(self.out.feed(f).await),
            other => self.answers.push_back(other),
        }
        while self.answers.len() > self.relay.limits.max_pipelined {
            let f = next_answer(&mut self.answers).await;
            self.answers.pop_front();
            if let Err(e) = self.out.feed(f).await {
                return Flow::Stop(super::End::Io(e));
            }
        }
        Flow::Continue
    }

    /// Sends every queued answer, waiting for the store where needed.
    pub(super) async fn flush_answers(&mut self) -> Flow {
        while !self.answers.is_empty() {
            let f = next_answer(&mut self.answers).await;
            self.answers.pop_front();
            if let Err(e) = self.out.feed(f).await {
                return Flow::Stop(super::End::Io(e));
            }
        }
        Flow::Continue
    }
}
