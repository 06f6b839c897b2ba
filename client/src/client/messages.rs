//! Messages as `async` calls: sealing and sending text, queueing it without waiting, sending
//! an outbox again after a reconnection, and the outbox of what is not confirmed yet. It is
//! apart from `client.rs`, which keeps the connection, the login and the events.

use flexim_protocol::{Message, PublicKey, Status};
use flexim_session::{Answer, Outbox};

use super::Client;
use crate::error::ClientError;
use crate::os;

impl Client {
    /// Builds the Message carrying `text` sealed for `to`, dated now, from this user's key,
    /// with a fresh random id. Sending it is up to the caller; [`Client::send_text`] does both.
    pub fn seal_message(
        &mut self,
        to: &PublicKey,
        text: &str,
        flags: &[String],
    ) -> Result<Message, ClientError> {
        let id = self.engine.new_message_id();
        Ok(self.engine.seal(to, text, flags, os::now(), Some(id))?)
    }

    /// Encrypts `text` for `to` (a key or an alias) and sends it. Returns the server's positive
    /// Status ([`status::STORED`](flexim_protocol::status::STORED) or [`status::RELAYED`](flexim_protocol::status::RELAYED)), carrying the message's id; an error
    /// Status becomes [`ClientError::Server`].
    ///
    /// The message is in the engine's outbox before it is sent and stays there until it is
    /// confirmed: at once by STORED, or later by a receipt ([`Event::Receipt`](flexim_session::Event::Receipt)) after RELAYED.
    /// If the connection is lost first, it is still there for [`Client::take_outbox`] or
    /// [`Client::reconnect`].
    pub async fn send_text(
        &mut self,
        to: &str,
        text: &str,
        flags: &[String],
    ) -> Result<Status, ClientError> {
        self.resolve(to).await?;
        let sending = self.engine.send_text_to(to, text, flags, os::now())?;
        let request = sending.request.ok_or(ClientError::Closed)?;
        self.sent_status(request).await
    }

    /// Seals `text` for the key `to` and queues it without waiting for the answer, which comes
    /// out of [`Client::next_event`] as [`Answer::Sent`]. For programs that pipeline many
    /// messages (the load generator). Returns the message's id.
    pub async fn queue_text(
        &mut self,
        to: &PublicKey,
        text: &str,
        flags: &[String],
    ) -> Result<String, ClientError> {
        let sending = self.engine.send_text(to, text, flags, os::now())?;
        self.flush().await?;
        Ok(sending.id)
    }

    /// Sends every message of `outbox` again, byte for byte (same id, same nonce) and in the
    /// original order. Call it right after connecting and before sending anything new, so that
    /// the recipient gets the messages in the order they were written. The messages join this
    /// client's outbox first, so a connection lost during the resend loses none of them.
    ///
    /// Returns the server's answers, one per message, in order; each carries its message's id,
    /// and an error answer (for instance [`status::QUEUE_FULL`](flexim_protocol::status::QUEUE_FULL)) is returned as a Status like
    /// the others, because the remaining messages are sent all the same. `Err` means the
    /// connection failed.
    pub async fn resend(&mut self, outbox: Outbox) -> Result<Vec<Status>, ClientError> {
        let sent = self.engine.resend(outbox);
        if !self.engine.is_ready() {
            return Err(ClientError::Closed);
        }
        let mut answers = Vec::with_capacity(sent.len());
        for (id, request) in sent {
            let status = match self.answer(request).await? {
                Answer::Sent { result: Ok(s), .. } => s,
                Answer::Sent {
                    result: Err(refusal),
                    ..
                } if refusal.status != 0 => Status::new(refusal.status, refusal.reason),
                other => return Err(ClientError::BadAnswer(format!("{other:?}"))),
            };
            answers.push(Status {
                id: status.id.clone().or(Some(id)),
                ..status
            });
        }
        Ok(answers)
    }

    /// The messages sent (or handed to [`Client::resend`]) that are not confirmed yet, oldest
    /// first.
    pub fn outbox(&self) -> &Outbox {
        self.engine.outbox()
    }

    /// Takes the unconfirmed messages out of this client, typically after its connection was
    /// lost, to pass them to [`Client::resend`] on a new connection.
    pub fn take_outbox(&mut self) -> Outbox {
        self.engine.take_outbox()
    }
}
