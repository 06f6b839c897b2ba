//! Status datums in words, for the texts the engine puts in its events.

use flexim_protocol::Status;
use flexim_protocol::status;

/// A Status as people read it: `name (code): payload`, or `name (code)` without a payload.
pub fn describe(s: &Status) -> String {
    if s.payload.is_empty() {
        format!("{} ({})", status::name(s.status), s.status)
    } else {
        format!("{} ({}): {}", status::name(s.status), s.status, s.payload)
    }
}

/// Why the server refused a message, as the sender reads it next to the message: the common
/// refusals in words, with the code's name for reference; any other as [`describe`] has it.
pub fn refusal(s: &Status) -> String {
    let words = match s.status {
        status::QUEUE_FULL => "the recipient's queue is full",
        status::SHARE_FULL => {
            "you have as many messages waiting for this recipient as one sender may"
        }
        status::STORE_FULL => "the server's store is full",
        status::NOT_KEPT => {
            "not kept: the recipient went away before reading it, and the server had no room to store it"
        }
        status::RATE_LIMITED => "you are sending too fast; try again shortly",
        status::NO_SUCH_USER => "the server knows no such recipient",
        status::TOO_LARGE => "the message is too large",
        status::SPOOF => "the server does not accept this sender",
        status::INTERNAL => "the server could not store it",
        _ => return describe(s),
    };
    format!("{words} ({}, {})", status::name(s.status), s.status)
}
