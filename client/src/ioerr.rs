//! How I/O errors are put into words, for the errors of both the transport and TLS.

use std::io;

/// A short description of an I/O error: the well-known network failures by name (without the
/// "(os error 111)" noise), anything else as the operating system reported it.
pub(crate) fn describe_io(e: &io::Error) -> String {
    use io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset by the server".into(),
        ConnectionAborted => "connection aborted".into(),
        TimedOut => "timed out".into(),
        UnexpectedEof => e
            .get_ref()
            .map(|inner| inner.to_string())
            .unwrap_or_else(|| "unexpected end of stream".into()),
        _ => e.to_string(),
    }
}
