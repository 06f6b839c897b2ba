//! What the HTTP side adds to every answer and checks before an upgrade: the page's security
//! headers (a strict Content-Security-Policy among them) and the `Origin` rule of `/ws`.

use axum::extract::{Request, State};
use axum::http::header::{
    CONTENT_SECURITY_POLICY, HOST, ORIGIN, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::origin::WebOrigin;
use std::sync::Arc;

/// The HTTP side's settings as the handlers need them.
#[derive(Debug)]
pub(crate) struct Edge {
    /// Whether the HTTP listener speaks TLS, which makes the server's own origin `https://`.
    pub(crate) tls: bool,
    /// Whether `/metrics` is on the admin listener (and so not on the HTTP listener).
    pub(crate) admin: bool,
    /// The origins besides the server's own whose pages may open `/ws`.
    allowed_origins: Vec<WebOrigin>,
    /// The WebSocket forms of `allowed_origins`, each with a leading space, for `connect-src`:
    /// a page served from an allowed origin (behind a proxy, say) opens `/ws` there.
    connect_extra: String,
}

/// The policy's directives before and after `connect-src`. The page loads its module script,
/// its style sheet and its WebAssembly from the server itself ('wasm-unsafe-eval' lets it
/// compile the module, and nothing else); it has no inline script or style, no frames, no
/// forms that submit anywhere, and its only image is the data: favicon.
const CSP_HEAD: &str = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'";
/// See [`CSP_HEAD`].
const CSP_TAIL: &str = "; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

impl Edge {
    /// The settings for a listener with TLS or without, with or without an admin listener.
    pub(crate) fn new(tls: bool, admin: bool, allowed_origins: Vec<WebOrigin>) -> Edge {
        let connect_extra = allowed_origins
            .iter()
            .map(|o| format!(" {}", o.websocket()))
            .collect();
        Edge {
            tls,
            admin,
            allowed_origins,
            connect_extra,
        }
    }

    /// The server's own origin as the browser sees it for a request with these headers.
    fn own_origin(&self, headers: &HeaderMap) -> Option<WebOrigin> {
        let host = headers.get(HOST)?.to_str().ok()?;
        WebOrigin::from_authority(self.tls, host)
    }

    /// The Content-Security-Policy for a request with these headers. `connect-src` names the
    /// server's own WebSocket origin besides 'self', because browsers that implement CSP
    /// level 2 only do not count `ws:`/`wss:` as 'self'.
    fn policy(&self, headers: &HeaderMap) -> HeaderValue {
        let own = self
            .own_origin(headers)
            .map(|o| format!(" {}", o.websocket()))
            .unwrap_or_default();
        let text = format!("{CSP_HEAD}{own}{}{CSP_TAIL}", self.connect_extra);
        // Every part is either constant or an origin made of host-name characters only.
        HeaderValue::from_str(&text).expect("a policy of header-safe characters")
    }

    /// Whether a `/ws` upgrade with these headers may go ahead: no `Origin` (not a browser,
    /// or a browser that does not say), the server's own origin, or an allowed one.
    fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(ORIGIN) else {
            return true;
        };
        // `null` (a sandboxed or file: page) and anything unparsable are foreign origins.
        let Some(origin) = origin.to_str().ok().and_then(|o| WebOrigin::parse(o).ok()) else {
            return false;
        };
        self.own_origin(headers).as_ref() == Some(&origin) || self.allowed_origins.contains(&origin)
    }
}

/// Adds the security headers to every answer: the Content-Security-Policy, `nosniff` (a
/// file is only ever what its Content-Type says) and `no-referrer` (the page's address is
/// nobody else's business).
pub(crate) async fn security_headers(
    State(edge): State<Arc<Edge>>,
    request: Request,
    next: Next,
) -> Response {
    let policy = edge.policy(request.headers());
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, policy);
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// Refuses a `/ws` upgrade from another site's page (see [`crate::config::EdgeConfig`]) with
/// 403 before anything of the upgrade is done.
pub(crate) async fn check_origin(
    State(edge): State<Arc<Edge>>,
    request: Request,
    next: Next,
) -> Response {
    if edge.admits(request.headers()) {
        return next.run(request).await;
    }
    tracing::debug!(origin = ?request.headers().get(ORIGIN), "refused a /ws upgrade from a foreign origin");
    (
        StatusCode::FORBIDDEN,
        "this page's origin may not open /ws on this server (see --allowed-origin)\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn the_policy_names_the_websocket_origins_of_the_page() {
        let allowed = vec![WebOrigin::parse("https://chat.example.org").unwrap()];
        let edge = Edge::new(true, false, allowed);
        let policy = edge.policy(&headers(&[("host", "localhost:8443")]));
        assert_eq!(
            policy.to_str().unwrap(),
            "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; \
             img-src 'self' data:; connect-src 'self' wss://localhost:8443 \
             wss://chat.example.org; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
        );
        // A Host that is no host name adds nothing to the policy.
        let policy = edge.policy(&headers(&[("host", "x; script-src *")]));
        assert!(
            policy
                .to_str()
                .unwrap()
                .contains("connect-src 'self' wss://chat.example.org;"),
            "{policy:?}"
        );
    }

    #[test]
    fn the_own_origin_is_the_listener_scheme_and_the_host() {
        let plain = Edge::new(false, false, vec![]);
        let host = ("host", "127.0.0.1:8080");
        assert!(plain.admits(&headers(&[host])));
        assert!(plain.admits(&headers(&[host, ("origin", "http://127.0.0.1:8080")])));
        assert!(!plain.admits(&headers(&[host, ("origin", "https://127.0.0.1:8080")])));
        assert!(!plain.admits(&headers(&[host, ("origin", "http://127.0.0.1:8081")])));
        assert!(!plain.admits(&headers(&[host, ("origin", "null")])));
        assert!(!plain.admits(&headers(&[("origin", "http://127.0.0.1:8080")])));
        let tls = Edge::new(true, false, vec![]);
        let host = ("host", "localhost");
        assert!(tls.admits(&headers(&[host, ("origin", "https://localhost:443")])));
        assert!(!tls.admits(&headers(&[host, ("origin", "http://localhost")])));
    }
}
