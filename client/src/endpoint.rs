//! Server addresses: `HOST:PORT` for raw TCP, `ws://HOST:PORT/PATH` for WebSocket and
//! `wss://HOST:PORT/PATH` for WebSocket over TLS.

use std::fmt;

use crate::tls::Trust;

/// Where a flexim server listens and how to speak to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Raw TCP: the header and the frames go straight onto the socket.
    Tcp {
        /// `HOST:PORT`, as given (IPv6 hosts in brackets).
        addr: String,
    },
    /// WebSocket: one frame per binary message.
    WebSocket {
        /// The whole `ws://` or `wss://` URL, used for the HTTP upgrade request.
        url: String,
        /// `HOST:PORT` to open the TCP connection to (when the URL names no port, 80 for
        /// `ws://` and 443 for `wss://`).
        addr: String,
        /// For `wss://`, whose certificates are trusted (the public roots unless
        /// [`Endpoint::trusting`] said otherwise); `None` for `ws://`.
        tls: Option<Trust>,
    },
}

/// Why a server address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bad server address {input:?}: {reason}; expected HOST:PORT (TCP, e.g. 127.0.0.1:4321) \
     or a ws:// or wss:// URL (WebSocket, e.g. ws://127.0.0.1:8080/ws)"
)]
pub struct EndpointError {
    /// The address as given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Why a CA was refused for an endpoint: it uses no TLS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{endpoint} uses no TLS: a CA certificate only applies to wss:// servers")]
pub struct NotTls {
    /// The endpoint as given.
    pub endpoint: String,
}

impl Endpoint {
    /// Parses a server address. Anything with `://` must be a `ws://` or `wss://` URL (the
    /// latter trusting the public roots); everything else must be `HOST:PORT`.
    pub fn parse(input: &str) -> Result<Endpoint, EndpointError> {
        let err = |reason| EndpointError {
            input: input.to_string(),
            reason,
        };
        if input.is_empty() {
            return Err(err("it is empty"));
        }
        if input.chars().any(char::is_whitespace) {
            return Err(err("it contains whitespace"));
        }
        if let Some((scheme, rest)) = input.split_once("://") {
            let (tls, default_port) = match scheme.to_ascii_lowercase().as_str() {
                "ws" => (None, 80),
                "wss" => (Some(Trust::default()), 443),
                _ => return Err(err("the only supported URL schemes are ws:// and wss://")),
            };
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            if authority.is_empty() {
                return Err(err("the URL names no host"));
            }
            if authority.contains('@') {
                return Err(err("user names in the URL are not supported"));
            }
            let addr = if has_port(authority) {
                split_host_port(authority).map_err(err)?;
                authority.to_string()
            } else {
                format!("{authority}:{default_port}")
            };
            return Ok(Endpoint::WebSocket {
                url: input.to_string(),
                addr,
                tls,
            });
        }
        split_host_port(input).map_err(err)?;
        Ok(Endpoint::Tcp {
            addr: input.to_string(),
        })
    }

    /// The address in the form its key is pinned under (`known_servers`): `host:port` for TCP
    /// and `ws://host:port/path` (or `wss://`) for WebSocket, the scheme and host in lower case
    /// (they are case-insensitive), the port written out and the path kept as given. Two
    /// spellings of one address get one pin; `ws://` and `wss://` to one host get one each.
    pub fn pin_name(&self) -> String {
        match self {
            Endpoint::Tcp { addr } => addr.to_ascii_lowercase(),
            Endpoint::WebSocket { url, addr, tls } => {
                let scheme = if tls.is_some() { "wss" } else { "ws" };
                let rest = url.split_once("://").map_or("", |(_, rest)| rest);
                let path = rest.find(['/', '?', '#']).map_or("", |at| &rest[at..]);
                // An empty path is `/`, also before a query (`ws://h:1?q` asks for `/?q`).
                let slash = if path.starts_with('/') { "" } else { "/" };
                format!("{scheme}://{}{slash}{path}", addr.to_ascii_lowercase())
            }
        }
    }

    /// The `HOST:PORT` the TCP connection goes to.
    pub fn socket_addr(&self) -> &str {
        match self {
            Endpoint::Tcp { addr } | Endpoint::WebSocket { addr, .. } => addr,
        }
    }

    /// The host part of [`Endpoint::socket_addr`] (IPv6 in brackets): the name a `wss://`
    /// server's certificate must carry.
    pub fn host(&self) -> &str {
        let addr = self.socket_addr();
        addr.rsplit_once(':').map_or(addr, |(host, _)| host)
    }

    /// This `wss://` endpoint trusting `trust` instead of the public roots (a private CA).
    /// Refused for `HOST:PORT` and `ws://`, which use no TLS, so that a CA given for them is
    /// not mistaken for protection.
    pub fn trusting(self, trust: Trust) -> Result<Endpoint, NotTls> {
        match self {
            Endpoint::WebSocket {
                url,
                addr,
                tls: Some(_),
            } => Ok(Endpoint::WebSocket {
                url,
                addr,
                tls: Some(trust),
            }),
            other => Err(NotTls {
                endpoint: other.to_string(),
            }),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp { addr } => f.write_str(addr),
            Endpoint::WebSocket { url, .. } => f.write_str(url),
        }
    }
}

impl std::str::FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Endpoint::parse(s)
    }
}

/// Whether an authority (`host`, `host:port`, `[v6]`, `[v6]:port`) carries a port.
fn has_port(authority: &str) -> bool {
    match authority.rfind(']') {
        Some(close) => authority[close + 1..].starts_with(':'),
        None => authority.contains(':'),
    }
}

/// Checks `HOST:PORT` (IPv6 hosts in brackets) and returns the two parts.
fn split_host_port(s: &str) -> Result<(&str, u16), &'static str> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or("it has no port (write HOST:PORT)")?;
    if host.is_empty() {
        return Err("it has no host");
    }
    if host.starts_with('[') != host.ends_with(']') {
        return Err("unbalanced brackets around the host");
    }
    if !host.starts_with('[') && host.contains(':') {
        return Err("IPv6 hosts must be written in brackets, e.g. [::1]:4321");
    }
    if host.contains(['/', '@', '?', '#']) {
        return Err("the host contains characters a host name cannot have");
    }
    let port: u16 = port
        .parse()
        .map_err(|_| "the port must be a number from 1 to 65535")?;
    if port == 0 {
        return Err("the port must be a number from 1 to 65535");
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_addresses() {
        assert_eq!(
            Endpoint::parse("127.0.0.1:4321"),
            Ok(Endpoint::Tcp {
                addr: "127.0.0.1:4321".into()
            })
        );
        assert_eq!(
            Endpoint::parse("localhost:1").unwrap().socket_addr(),
            "localhost:1"
        );
        assert_eq!(
            Endpoint::parse("[::1]:4321").unwrap().socket_addr(),
            "[::1]:4321"
        );
    }

    #[test]
    fn websocket_urls() {
        let ep = Endpoint::parse("ws://127.0.0.1:8080/ws").unwrap();
        assert_eq!(
            ep,
            Endpoint::WebSocket {
                url: "ws://127.0.0.1:8080/ws".into(),
                addr: "127.0.0.1:8080".into(),
                tls: None,
            }
        );
        assert_eq!(ep.to_string(), "ws://127.0.0.1:8080/ws");
        assert_eq!(
            Endpoint::parse("ws://example.org/chat")
                .unwrap()
                .socket_addr(),
            "example.org:80"
        );
        assert_eq!(
            Endpoint::parse("WS://[::1]:9/ws").unwrap().socket_addr(),
            "[::1]:9"
        );
        assert_eq!(
            Endpoint::parse("ws://[::1]/ws").unwrap().socket_addr(),
            "[::1]:80"
        );
    }

    #[test]
    fn secure_websocket_urls() {
        let ep = Endpoint::parse("wss://chat.example.org/ws").unwrap();
        assert_eq!(
            ep,
            Endpoint::WebSocket {
                url: "wss://chat.example.org/ws".into(),
                addr: "chat.example.org:443".into(),
                tls: Some(Trust::PublicRoots),
            }
        );
        assert_eq!(ep.host(), "chat.example.org");
        let private = Trust::Ca(Vec::new());
        let ep = ep.trusting(private.clone()).unwrap();
        assert!(matches!(ep, Endpoint::WebSocket { tls: Some(t), .. } if t == private));
        let ep = Endpoint::parse("WSS://[::1]:8443/ws").unwrap();
        assert_eq!((ep.socket_addr(), ep.host()), ("[::1]:8443", "[::1]"));
        for plain in ["127.0.0.1:4321", "ws://127.0.0.1:8080/ws"] {
            let err = Endpoint::parse(plain)
                .unwrap()
                .trusting(Trust::PublicRoots)
                .unwrap_err();
            assert!(err.to_string().contains("only applies to wss://"), "{err}");
        }
    }

    #[test]
    fn spellings_of_one_address_share_a_pin_name() {
        for (a, b) in [
            ("LocalHost:4321", "localhost:4321"),
            ("WS://Example.ORG/ws", "ws://example.org:80/ws"),
            ("ws://example.org:80", "ws://example.org:80/"),
            ("ws://[::1]:9?x=1", "ws://[::1]:9/?x=1"),
        ] {
            let (a, b) = (Endpoint::parse(a).unwrap(), Endpoint::parse(b).unwrap());
            assert_eq!(a.pin_name(), b.pin_name(), "{a} and {b}");
        }
        assert_eq!(
            Endpoint::parse("ws://Example.org/Chat").unwrap().pin_name(),
            "ws://example.org:80/Chat",
            "the path is case-sensitive"
        );
        assert_ne!(
            Endpoint::parse("127.0.0.1:1").unwrap().pin_name(),
            Endpoint::parse("127.0.0.1:2").unwrap().pin_name()
        );
        assert_eq!(
            Endpoint::parse("WSS://Chat.Example.org/ws")
                .unwrap()
                .pin_name(),
            "wss://chat.example.org:443/ws"
        );
    }

    #[test]
    fn bad_addresses_are_refused_with_a_reason() {
        for (input, reason_part) in [
            ("", "empty"),
            ("127.0.0.1", "no port"),
            ("127.0.0.1:http", "port"),
            ("127.0.0.1:0", "port"),
            ("127.0.0.1:70000", "port"),
            (":4321", "no host"),
            ("::1:4321", "brackets"),
            ("http://example.org/ws", "ws://"),
            ("wss://:443/ws", "no host"),
            ("ws:///ws", "no host"),
            ("ws://host:port/ws", "port"),
            ("host :1", "whitespace"),
        ] {
            let err = Endpoint::parse(input).unwrap_err();
            assert!(err.reason.contains(reason_part), "{input}: {err}");
            let text = err.to_string();
            assert!(
                text.contains("HOST:PORT") && text.contains("ws://"),
                "{text}"
            );
        }
    }
}
