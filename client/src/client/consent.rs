//! Consent as `async` calls (docs/PROTOCOL.md §14): asking to talk, answering requests,
//! blocking, being found. Each waits for its answer; the engine does the rest.

use flexim_protocol::{Status, User};
use flexim_session::Answer;

use super::{Client, refusal_error};
use crate::error::ClientError;

impl Client {
    /// Asks to talk to `who` (a key or an alias): a Request. The server's Status says whether
    /// they accepted already; an [`flexim_session::Event::Conversation`] follows.
    pub async fn ask_to_talk(&mut self, who: &str) -> Result<Status, ClientError> {
        let request = self.engine.ask_to_talk(who)?;
        self.status(request).await
    }

    /// Accepts the request of `who` (its key in hex, or the conversation id of its Request).
    pub async fn accept_request(&mut self, who: &str) -> Result<Status, ClientError> {
        let request = self.engine.accept_request(who)?;
        self.status(request).await
    }

    /// Declines the request of `who` (a key or an alias).
    pub async fn decline(&mut self, who: &str) -> Result<Status, ClientError> {
        let request = self.engine.decline(who)?;
        self.status(request).await
    }

    /// Blocks `who` (a key or an alias): its messages are refused.
    pub async fn block(&mut self, who: &str) -> Result<Status, ClientError> {
        let request = self.engine.block(who)?;
        self.status(request).await
    }

    /// Undoes a block (or a decline) of `who`.
    pub async fn unblock(&mut self, who: &str) -> Result<Status, ClientError> {
        let request = self.engine.unblock(who)?;
        self.status(request).await
    }

    /// Whether SEARCH finds this user.
    pub async fn set_discoverable(&mut self, on: bool) -> Result<Status, ClientError> {
        let request = self.engine.set_discoverable(on)?;
        self.status(request).await
    }

    /// REQUESTS: the strangers waiting for an answer.
    pub async fn requests(&mut self) -> Result<Vec<User>, ClientError> {
        let request = self.engine.requests()?;
        match self.answer(request).await? {
            Answer::Requests(result) => result.map_err(refusal_error),
            other => Err(ClientError::BadAnswer(format!("{other:?}"))),
        }
    }
}
