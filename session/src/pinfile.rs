//! The text form of pinned keys, in the style of ssh's `known_hosts`: one line per pin, the
//! names it is for and then the key.
//!
//! ```text
//! # Lines starting with '#' and blank lines are ignored.
//! 127.0.0.1:4321 ce8d3ad1ccb633ec7b70c17814a5c76ecd029685050d344745ba05870e587d59
//! ```
//!
//! Fields are separated by spaces or tabs; the last one is the key, 64 hex digits (either case
//! when read, lower-case when written). Every line of one file has the same number of names
//! before the key, and a name never contains whitespace (aliases and server addresses cannot),
//! so a line cannot be read two ways. The format is the same for the command line's known
//! servers and contacts and for the browser's saved contact pins, so that a person who reads
//! one can read them all, and so that it is parsed in one place.

use flexim_protocol::PublicKey;

/// One line: the names and the key pinned for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinLine {
    /// The names, in the order of the line (a server address; or a server key and an alias).
    pub names: Vec<String>,
    /// The pinned key.
    pub key: PublicKey,
}

/// Why a pin file could not be read. Such a file is not guessed at: a pin that is read wrongly
/// would either trust a key nobody pinned or refuse the right one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinFileError {
    /// A line does not have the expected shape.
    #[error("line {line}: {reason}")]
    Line {
        /// The line number, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}

impl PinFileError {
    /// The error for line `line` (from 1).
    pub fn at(line: usize, reason: impl Into<String>) -> PinFileError {
        PinFileError::Line {
            line,
            reason: reason.into(),
        }
    }
}

/// Reads pin lines with `names` names before the key each; comments and blank lines are
/// skipped. Returns the lines with their line numbers, so that a caller checking more (a name
/// given twice) can say where.
pub fn parse(text: &str, names: usize) -> Result<Vec<(usize, PinLine)>, PinFileError> {
    let mut lines = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() != names + 1 {
            return Err(PinFileError::at(
                number,
                format!(
                    "expected {} fields separated by spaces ({} then a key), found {}",
                    names + 1,
                    if names == 1 { "a name" } else { "the names" },
                    fields.len()
                ),
            ));
        }
        let key = PublicKey::from_hex(fields[names])
            .ok_or_else(|| PinFileError::at(number, "the key is not 64 hex digits"))?;
        lines.push((
            number,
            PinLine {
                names: fields[..names].iter().map(|n| n.to_string()).collect(),
                key,
            },
        ));
    }
    Ok(lines)
}

/// Writes pin lines after `header` (each of its lines becomes a `#` comment). Names must not
/// contain whitespace; the callers pin only addresses and aliases, which cannot.
pub fn render<'a>(header: &str, lines: impl IntoIterator<Item = &'a PinLine>) -> String {
    let mut out = String::new();
    for line in header.lines() {
        out.push_str("# ");
        out.push_str(line);
        out.push('\n');
    }
    for line in lines {
        for name in &line.names {
            out.push_str(name);
            out.push(' ');
        }
        out.push_str(&line.key.to_hex());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> PublicKey {
        PublicKey([seed; 32])
    }

    #[test]
    fn lines_round_trip_and_comments_are_skipped() {
        let lines = vec![
            PinLine {
                names: vec!["127.0.0.1:4321".into()],
                key: key(1),
            },
            PinLine {
                names: vec!["ws://example.org:80/ws".into()],
                key: key(2),
            },
        ];
        let text = render("known servers\nsecond line", &lines);
        assert!(
            text.starts_with("# known servers\n# second line\n"),
            "{text}"
        );
        let back: Vec<PinLine> = parse(&text, 1).unwrap().into_iter().map(|l| l.1).collect();
        assert_eq!(back, lines);
        // Either case, tabs, surrounding space and blank lines are fine when read.
        let hand = format!("\n  \t\n  a\t{}  \r\n", key(3).to_hex().to_uppercase());
        assert_eq!(parse(&hand, 1).unwrap()[0].0, 3);
        assert_eq!(parse(&hand, 1).unwrap()[0].1.key, key(3));
    }

    #[test]
    fn a_bad_line_is_refused_with_its_number() {
        let good = format!("a {}\n", key(1).to_hex());
        for (bad, reason) in [
            ("b\n".to_string(), "expected 2 fields"),
            (format!("b c {}\n", key(1).to_hex()), "expected 2 fields"),
            ("b 1234\n".to_string(), "64 hex digits"),
            (format!("b {}zz\n", &key(1).to_hex()[2..]), "64 hex digits"),
        ] {
            let err = parse(&format!("{good}{bad}"), 1).unwrap_err();
            assert!(err.to_string().starts_with("line 2: "), "{err}");
            assert!(err.to_string().contains(reason), "{err}");
        }
        assert_eq!(
            parse(&format!("s a {}", key(1).to_hex()), 2).unwrap().len(),
            1
        );
    }
}
