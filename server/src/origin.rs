//! Web origins (scheme, host, port): what a browser names in `Origin`, what the server's own
//! origin is for a request, and their WebSocket forms for the page's Content-Security-Policy.
//!
//! Everything here is parsed strictly, because an origin ends up in a response header: a
//! host with anything but the characters a host name or an IP address can have is refused.

use std::fmt;

/// A web origin: `http` or `https`, a host in lower case, and a port (the scheme's default
/// when none was written, so that `https://a` and `https://a:443` are one origin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebOrigin {
    /// Whether the scheme is `https` (else `http`).
    secure: bool,
    /// The host in lower case; an IPv6 address keeps its brackets.
    host: String,
    /// The port, explicit or the scheme's default.
    port: u16,
}

/// Why an origin was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bad origin {input:?}: {reason}; expected SCHEME://HOST[:PORT], e.g. https://chat.example.org"
)]
pub struct OriginError {
    /// The origin as given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl WebOrigin {
    /// Parses `http://HOST[:PORT]` or `https://HOST[:PORT]` (one trailing `/` is allowed, a
    /// path is not: an origin has none).
    pub fn parse(input: &str) -> Result<WebOrigin, OriginError> {
        let err = |reason| OriginError {
            input: input.to_string(),
            reason,
        };
        let (scheme, rest) = input.split_once("://").ok_or(err("it has no scheme"))?;
        let secure = match scheme.to_ascii_lowercase().as_str() {
            "https" => true,
            "http" => false,
            _ => return Err(err("the scheme must be http or https")),
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#', '@']) {
            return Err(err("an origin has no path, query or user name"));
        }
        WebOrigin::from_authority(secure, authority).ok_or(err("the host or port is not valid"))
    }

    /// The origin a page of this server has when the browser reached it as `host` (a `Host`
    /// header: `HOST[:PORT]`) over https (`secure`) or http; `None` for a `Host` that is not
    /// a valid authority.
    pub(crate) fn from_authority(secure: bool, host: &str) -> Option<WebOrigin> {
        let (name, port) = split_authority(host)?;
        if !valid_host(name) {
            return None;
        }
        let port = match port {
            Some(p) => p.parse().ok().filter(|&p: &u16| p != 0)?,
            None if secure => 443,
            None => 80,
        };
        Some(WebOrigin {
            secure,
            host: name.to_ascii_lowercase(),
            port,
        })
    }

    /// The WebSocket origin of the same host: `wss://` for https, `ws://` for http (what the
    /// page's `connect-src` must allow for it to open `/ws` there).
    pub(crate) fn websocket(&self) -> String {
        let scheme = if self.secure { "wss" } else { "ws" };
        format!("{scheme}://{}", self.authority())
    }

    /// `HOST` or `HOST:PORT`, the port left out when it is the scheme's default (as browsers
    /// write it).
    fn authority(&self) -> String {
        let default = if self.secure { 443 } else { 80 };
        if self.port == default {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for WebOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.secure { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.authority())
    }
}

impl std::str::FromStr for WebOrigin {
    type Err = OriginError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WebOrigin::parse(s)
    }
}

/// Splits `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_authority(s: &str) -> Option<(&str, Option<&str>)> {
    if s.starts_with('[') {
        let close = s.find(']')?;
        let (host, rest) = s.split_at(close + 1);
        return match rest {
            "" => Some((host, None)),
            _ => Some((host, Some(rest.strip_prefix(':')?))),
        };
    }
    Some(match s.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (s, None),
    })
}

/// Whether `host` is a host name or an IPv4 address (letters, digits, `-`, `.`) or an IPv6
/// address in brackets (hex digits, `:`, `.`): nothing that could end or extend a header.
fn valid_host(host: &str) -> bool {
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return !v6.is_empty()
            && v6
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
    }
    !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ports_and_case_do_not_make_another_origin() {
        let a = WebOrigin::parse("https://Chat.Example.org").unwrap();
        assert_eq!(
            a,
            WebOrigin::parse("https://chat.example.org:443/").unwrap()
        );
        assert_eq!(a.to_string(), "https://chat.example.org");
        assert_eq!(a.websocket(), "wss://chat.example.org");
        let b = WebOrigin::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(b.websocket(), "ws://127.0.0.1:8080");
        assert_ne!(b, WebOrigin::parse("https://127.0.0.1:8080").unwrap());
        assert_eq!(WebOrigin::from_authority(false, "127.0.0.1:8080"), Some(b));
        let v6 = WebOrigin::from_authority(true, "[::1]:8443").unwrap();
        assert_eq!(v6.to_string(), "https://[::1]:8443");
    }

    #[test]
    fn anything_but_an_origin_is_refused() {
        for (input, says) in [
            ("chat.example.org", "no scheme"),
            ("ftp://chat.example.org", "http or https"),
            ("https://chat.example.org/app", "no path"),
            ("https://user@chat.example.org", "no path"),
            ("https://", "not valid"),
            ("https://chat.example.org:0", "not valid"),
            ("https://chat.example.org:https", "not valid"),
            ("https://a b", "not valid"),
            ("https://a\r\nSet-Cookie: x", "not valid"),
            ("https://[::1", "not valid"),
            ("null", "no scheme"),
        ] {
            let err = WebOrigin::parse(input).unwrap_err();
            assert!(err.reason.contains(says), "{input}: {err}");
        }
        assert_eq!(
            WebOrigin::from_authority(true, "evil;'unsafe-inline'"),
            None
        );
    }
}
