//! How the command line shows things: times, Status datums, users, messages.

use std::io::{self, Write as _};

use anyhow::Context as _;
use flexim_client::protocol::status;
use flexim_client::protocol::{PublicKey, Status, User};
use flexim_client::{Delivery, Received};
use serde::Serialize;

/// A Status as `name` or `name: payload`.
pub(crate) fn describe(s: &Status) -> String {
    if s.payload.is_empty() {
        status::name(s.status).to_string()
    } else {
        format!("{}: {}", status::name(s.status), s.payload)
    }
}

/// A Status as `name (code): payload`, for notices and errors.
pub(crate) fn describe_with_code(s: &Status) -> String {
    format!("{} ({}): {}", status::name(s.status), s.status, s.payload)
}

/// Writes one line to stdout and flushes it, so that a reader on a pipe sees it at once.
pub(crate) fn print_line(line: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

/// The plain listen format: `[date] FROM: text`, FROM as the sender wrote it when that is its
/// key or an alias pinned to its key, else its key: an alias in `from` that is pinned to
/// another key is a claim nobody vouches for, and is not shown.
pub(crate) fn plain_line(m: &Received) -> String {
    let vouched = PublicKey::from_hex(&m.from_text).is_some()
        || m.name.as_deref() == Some(m.from_text.as_str());
    let from = if vouched {
        m.from_text.clone()
    } else {
        m.from.to_hex()
    };
    // A stranger's message (from the requests box, docs/PROTOCOL.md §14) says so.
    let request = if m.request { " (request)" } else { "" };
    // A message sealed with the static-key box rather than in the pair room (docs/PROTOCOL.md
    // §16.9) says so: whoever later steals either key can read it.
    let weak = if m.forward_secret {
        ""
    } else {
        " (not forward secret)"
    };
    format!("[{}] {from}{request}{weak}: {}", format_utc(m.date), m.text)
}

/// The JSON form of a received message, one object per line (see [`json_line`]).
#[derive(Serialize)]
struct JsonLine<'a> {
    /// The sender's key hex.
    from: String,
    /// The `to` field as sent.
    to: &'a str,
    /// Unix seconds.
    date: i64,
    /// The flags.
    flags: &'a [String],
    /// The decrypted text.
    msg: &'a str,
    /// The message id, left out when the sender set none.
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    /// True when the sender is a stranger who asked to talk (the requests box), left out
    /// otherwise.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    request: bool,
    /// True when it came through the pair room of the two (MLS, forward secret); false for
    /// the static-key box (docs/PROTOCOL.md §16.9), and then left out.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    forward_secret: bool,
}

/// The message as one line of JSON, without the newline:
/// `{"from":"<key hex>","to":"...","date":N,"flags":[...],"msg":"<plaintext>","id":"...",
/// "forward_secret":true}`, where `id` is present only when the sender set one and
/// `forward_secret` only when the message came on MLS.
pub(crate) fn json_line(m: &Received) -> String {
    let line = JsonLine {
        from: m.from.to_hex(),
        to: &m.to,
        date: m.date,
        flags: &m.flags,
        msg: &m.text,
        id: m.id.as_deref(),
        request: m.request,
        forward_secret: m.forward_secret,
    };
    // A struct of strings and integers always serializes; there is no map with non-string
    // keys and no custom Serialize impl that could fail.
    serde_json::to_string(&line).expect("a JSON line of strings and numbers serializes")
}

/// Splits Unix seconds into UTC civil time: (year, month, day, hour, minute, second).
/// Howard Hinnant's `civil_from_days`, valid for every `i64` day count we can meet.
fn civil_utc(secs: i64) -> (i64, i64, i64, i64, i64, i64) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rem / 3_600, rem % 3_600 / 60, rem % 60)
}

/// `2024-01-31T12:00:00Z`.
pub(crate) fn format_utc(secs: i64) -> String {
    let (y, mo, d, h, mi, s) = civil_utc(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// `12:00:00` (UTC).
pub(crate) fn format_time(secs: i64) -> String {
    let (_, _, _, h, mi, s) = civil_utc(secs);
    format!("{h:02}:{mi:02}:{s:02}")
}

/// ` (alias1, alias2)` or nothing.
pub(crate) fn aliases_suffix(aliases: &[String]) -> String {
    if aliases.is_empty() {
        String::new()
    } else {
        format!(" ({})", aliases.join(", "))
    }
}

/// The first eight characters of a message id, enough to tell messages apart on screen.
pub(crate) fn short_id(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// A receipt as the chat shows it: what became of message `id`, sent to `about` (who, and the
/// start of its text) if this chat sent it.
pub(crate) fn receipt_line(
    id: &str,
    about: Option<&(String, String)>,
    delivery: &Delivery,
) -> String {
    let what = match delivery {
        Delivery::Delivered => "delivered to",
        Delivery::Stored => "stored for",
        Delivery::Expired => "expired unread, never delivered to",
        Delivery::Failed(_) => "not delivered to",
        // Receipts only confirm or fail a message; anything else is shown as its state.
        other => return format!("  (message {}: {})", short_id(id), other.label()),
    };
    let why = match delivery {
        Delivery::Failed(why) => format!(": {why}"),
        _ => String::new(),
    };
    match about {
        Some((to, text)) => format!("  ({what} {to}: {text}{why})"),
        // A message sent by another program with this key, or by an earlier chat.
        None => {
            let what = what.trim_end_matches(" to").trim_end_matches(" for");
            format!("  (message {} {what}{why})", short_id(id))
        }
    }
}

/// The start of a message's text, on one line, for receipts.
pub(crate) fn snippet(text: &str) -> String {
    const MAX: usize = 24;
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.chars().count() > MAX {
        let start: String = line.chars().take(MAX - 1).collect();
        format!("{start}…")
    } else {
        line
    }
}

/// The first eight hex digits of a key, enough to tell contacts apart on screen.
pub(crate) fn short_key(key: &PublicKey) -> String {
    key.to_hex()[..8].to_string()
}

/// Prints everything known about a user.
pub(crate) fn print_user_details(user: &User) {
    let online = match user.online {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    };
    println!("  key          {}", user.key.to_hex());
    println!("  fingerprint  {}", user.key.fingerprint());
    println!(
        "  aliases      {}",
        if user.aliases.is_empty() {
            "-".to_string()
        } else {
            user.aliases.join(", ")
        }
    );
    println!("  online       {online}");
    if user.last_seen > 0 {
        println!("  last seen    {}", format_utc(user.last_seen));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(text: &str, id: Option<&str>) -> Received {
        Received {
            from: PublicKey([0xab; 32]),
            from_text: "alice".into(),
            name: Some("alice".into()),
            to: "bob".into(),
            date: 1_700_000_000,
            flags: vec!["NOTIFY".into()],
            text: text.into(),
            id: id.map(str::to_string),
            key: "k".into(),
            request: false,
            forward_secret: true,
        }
    }

    #[test]
    fn receipts_say_what_became_of_the_message() {
        let about = ("bob".to_string(), "hello".to_string());
        let line = |d: Delivery, about| receipt_line("0123456789abcdef", about, &d);
        assert_eq!(
            line(Delivery::Delivered, Some(&about)),
            "  (delivered to bob: hello)"
        );
        assert_eq!(
            line(Delivery::Stored, Some(&about)),
            "  (stored for bob: hello)"
        );
        assert_eq!(line(Delivery::Stored, None), "  (message 01234567 stored)");
        let why = "not kept: no room (not-kept, -24)".to_string();
        assert_eq!(
            line(Delivery::Failed(why.clone()), Some(&about)),
            format!("  (not delivered to bob: hello: {why})")
        );
        assert_eq!(
            line(Delivery::Failed(why.clone()), None),
            format!("  (message 01234567 not delivered: {why})")
        );
        assert_eq!(
            line(Delivery::Expired, None),
            "  (message 01234567 expired unread, never delivered)"
        );
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(-1), "1969-12-31T23:59:59Z");
        assert_eq!(format_time(1_700_000_000), "22:13:20");
    }

    #[test]
    fn plain_line_format() {
        let m = Received {
            date: 0,
            ..received("hi", Some("x"))
        };
        assert_eq!(plain_line(&m), "[1970-01-01T00:00:00Z] alice: hi");
        // An alias the sender claims but that is pinned to another key: the key is shown.
        let claimed = Received {
            name: None,
            ..m.clone()
        };
        assert_eq!(
            plain_line(&claimed),
            format!("[1970-01-01T00:00:00Z] {}: hi", "ab".repeat(32))
        );
        // A stranger's message says it comes from the requests box, in both forms.
        let request = Received {
            request: true,
            ..m.clone()
        };
        assert_eq!(
            plain_line(&request),
            "[1970-01-01T00:00:00Z] alice (request): hi"
        );
        assert!(json_line(&request).ends_with(r#""request":true,"forward_secret":true}"#));
        // One sealed with the static-key box says it is not forward secret, in both forms.
        let boxed = Received {
            forward_secret: false,
            ..m
        };
        assert_eq!(
            plain_line(&boxed),
            "[1970-01-01T00:00:00Z] alice (not forward secret): hi"
        );
        assert!(!json_line(&boxed).contains("forward_secret"));
    }

    #[test]
    fn json_line_format() {
        let r = received("hi \"there\"\nline two ✓", None);
        let line = json_line(&r);
        assert!(!line.contains('\n'));
        assert_eq!(
            line,
            format!(
                r#"{{"from":"{}","to":"bob","date":1700000000,"flags":["NOTIFY"],"msg":"hi \"there\"\nline two ✓","forward_secret":true}}"#,
                "ab".repeat(32)
            )
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["msg"], "hi \"there\"\nline two ✓");
        // The id comes after the text, and only when the sender set one.
        let line = json_line(&received("x", Some("0123abcd")));
        assert!(
            line.ends_with(r#","id":"0123abcd","forward_secret":true}"#),
            "{line}"
        );
    }
}
