//! The HTTP edge, as browsers and operators meet it: the page's security headers on every
//! answer (and a page that needs nothing the policy forbids), the `Origin` rule of `/ws`, and
//! `/metrics` for loopback peers or on the admin listener only.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;

use flexim_tests::certs::TestCerts;
use flexim_tests::{Conn, HttpResponse, Options, TestServer, http_request, new_key, tls_connect};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// The policy the page is served with, for a page reached at `ws_origin`'s host, with the
/// extra WebSocket origins of the allowed origins.
fn policy(ws_origin: &str, extra: &str) -> String {
    format!(
        "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; \
         img-src 'self' data:; connect-src 'self' {ws_origin}{extra}; frame-ancestors 'none'; \
         base-uri 'none'; form-action 'none'"
    )
}

/// The upgrade request's header fields, with `origin` when given.
fn upgrade_headers(origin: Option<&str>) -> Vec<(&str, &str)> {
    let mut headers = vec![
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    headers.extend(origin.map(|o| ("Origin", o)));
    headers
}

fn assert_secured(what: &str, response: &HttpResponse, policy: &str) {
    assert_eq!(
        response.header("content-security-policy"),
        Some(policy),
        "{what}"
    );
    assert_eq!(
        response.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(
        response.header("referrer-policy"),
        Some("no-referrer"),
        "{what}"
    );
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let certs = TestCerts::new();
    let tls = TestServer::launch(Options {
        tls: Some(certs.tls.clone()),
        args: vec!["--allowed-origin".into(), "https://chat.example.org".into()],
        ..Options::default()
    })
    .unwrap();
    let plain = TestServer::start();
    let tls_policy = policy(
        &format!("wss://{}", tls.http_addr()),
        " wss://chat.example.org",
    );
    let plain_policy = policy(&format!("ws://{}", plain.http_addr()), "");
    for (server, policy) in [(&tls, &tls_policy), (&plain, &plain_policy)] {
        let get = |path: &'static str, headers: Vec<(&'static str, &'static str)>| async move {
            http_request(&server.http, path, &headers, server.ca().map(Path::new)).await
        };
        let page = get("/", vec![]).await.unwrap();
        assert_eq!(page.status, 200, "{page:?}");
        assert!(page.body.contains("<title>flexim</title>"), "{}", page.body);
        assert_secured("the page", &page, policy);
        for (path, status) in [
            ("/style.css", 200),
            ("/app.js", 200),
            ("/healthz", 200),
            ("/nothing", 404),
        ] {
            let answer = get(path, vec![]).await.unwrap();
            assert_eq!(answer.status, status, "{path}: {answer:?}");
            assert_secured(path, &answer, policy);
        }
        let refused = get("/ws", upgrade_headers(Some("https://evil.example")))
            .await
            .unwrap();
        assert_eq!(refused.status, 403, "{refused:?}");
        assert_secured("a refused upgrade", &refused, policy);
    }
}

/// The policy allows no inline script or style: the page must have none, nor inline event
/// handlers or `javascript:` links.
#[test]
fn the_page_has_no_inline_script_or_style() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../static");
    let page = std::fs::read_to_string(dir.join("index.html"))
        .unwrap()
        .to_lowercase();
    for (at, _) in page.match_indices("<script") {
        let tag = &page[at..at + page[at..].find('>').unwrap()];
        assert!(tag.contains(" src="), "an inline script: {tag}");
    }
    assert!(!page.contains("<style"), "an inline style sheet");
    assert!(!page.contains(" style="), "an inline style attribute");
    assert!(!page.contains("javascript:"), "a javascript: URL");
    let handler = page
        .split(|c: char| c.is_whitespace())
        .find(|word| word.starts_with("on") && word.contains('='));
    assert_eq!(handler, None, "an inline event handler");
}

/// Opens `/ws` at `url` sending `origin`; on a plain `ws://` URL the connection is returned
/// for a login, and a refusal as its HTTP status and body.
async fn ws_with_origin(url: &str, origin: &str) -> Result<Conn, (u16, String)> {
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Origin", origin.parse().unwrap());
    let authority = request.uri().authority().unwrap().to_string();
    let tcp = TcpStream::connect(authority).await.unwrap();
    match tokio_tungstenite::client_async(request, tcp).await {
        Ok((ws, _)) => Ok(Conn::from_ws(ws)),
        Err(WsError::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            Err((
                response.status().as_u16(),
                String::from_utf8_lossy(&body).into_owned(),
            ))
        }
        Err(e) => panic!("the upgrade failed otherwise: {e}"),
    }
}

#[tokio::test]
async fn ws_admits_its_own_origin_listed_origins_and_no_origin_only() {
    let server = TestServer::start_with(&[
        "--allowed-origin",
        "https://chat.example.org",
        "--allowed-origin",
        "http://localhost:3000",
    ]);
    let own = format!("http://{}", server.http_addr());
    for origin in [
        own.as_str(),
        "https://chat.example.org",
        "http://localhost:3000",
    ] {
        let mut conn = ws_with_origin(&server.ws, origin)
            .await
            .unwrap_or_else(|e| {
                panic!("{origin} is admitted: {e:?}");
            });
        conn.login(&new_key()).await.unwrap();
    }
    // Without Origin (the CLI, the kit): admitted.
    Conn::login_ws(&server.ws, &new_key()).await.unwrap();
    // Another site's page, another port or scheme of this host, and a sandboxed page: 403.
    let other_port = format!("http://127.0.0.1:{}", server.tcp.port());
    let other_scheme = format!("https://{}", server.http_addr());
    for origin in ["https://evil.example", &other_port, &other_scheme, "null"] {
        let Err((status, body)) = ws_with_origin(&server.ws, origin).await else {
            panic!("{origin} was admitted");
        };
        assert_eq!(status, 403, "{origin}");
        assert!(body.contains("may not open /ws"), "{origin}: {body}");
    }
}

#[tokio::test]
async fn with_tls_the_own_origin_is_https() {
    let certs = TestCerts::new();
    let server = TestServer::launch(Options {
        tls: Some(certs.tls.clone()),
        ..Options::default()
    })
    .unwrap();
    let addr = server.http_addr();
    let status = |origin: String| {
        let base = server.http.clone();
        let ca = certs.tls.ca.clone();
        async move {
            let headers = upgrade_headers(Some(&origin));
            http_request(&base, "/ws", &headers, Some(&ca))
                .await
                .unwrap()
                .status
        }
    };
    assert_eq!(status(format!("https://{addr}")).await, 101);
    assert_eq!(status(format!("http://{addr}")).await, 403);
    // The same through the certificate's other name: the own origin follows `Host`.
    let port = server.http_addr().rsplit_once(':').unwrap().1.to_string();
    let by_name = format!("https://localhost:{port}");
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let stream = tls_connect(tcp, &format!("localhost:{port}"), &certs.tls.ca)
        .await
        .unwrap();
    let mut request = format!("wss://localhost:{port}/ws")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Origin", by_name.parse().unwrap());
    tokio_tungstenite::client_async(request, stream)
        .await
        .expect("admitted by name");
}

/// An address of this machine that is not loopback, so that a connection to it comes from a
/// non-loopback peer. Connecting a UDP socket sends nothing; it only picks the route.
fn non_loopback_ip() -> IpAddr {
    let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
    for probe in ["192.0.2.1:9", "10.255.255.1:9", "198.51.100.1:9"] {
        if socket.connect(probe).is_ok()
            && let Ok(local) = socket.local_addr()
            && !local.ip().is_loopback()
            && !local.ip().is_unspecified()
        {
            return local.ip();
        }
    }
    panic!("this test needs a network interface with an IPv4 address besides loopback");
}

#[tokio::test]
async fn metrics_are_for_loopback_peers_or_the_admin_listener_only() {
    // With the admin listener off, /metrics is on the HTTP listener, for this machine only.
    let server = TestServer::launch(Options {
        http_ip: "0.0.0.0".parse().unwrap(),
        args: vec!["--admin".into(), "off".into()],
        ..Options::default()
    })
    .unwrap();
    assert_eq!(server.admin, None, "{:?}", server.banner);
    let port = server
        .http_addr()
        .rsplit_once(':')
        .unwrap()
        .1
        .parse::<u16>()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}/");
    let loopback = http_request(&base, "/metrics", &[], None).await.unwrap();
    assert_eq!(loopback.status, 200, "{loopback:?}");
    // Through a reverse proxy on the same machine (loopback too, but it says whom it forwards
    // for), /metrics is not served: the proxy's clients are not this machine.
    for header in ["X-Forwarded-For", "X-Real-IP", "Forwarded"] {
        let proxied = http_request(&base, "/metrics", &[(header, "203.0.113.7")], None)
            .await
            .unwrap();
        assert_eq!(proxied.status, 403, "{header}: {proxied:?}");
    }
    assert!(
        loopback.body.contains("flexim_connections_total"),
        "{}",
        loopback.body
    );
    let base = format!("http://{}/", SocketAddr::new(non_loopback_ip(), port));
    let outside = http_request(&base, "/metrics", &[], None).await.unwrap();
    assert_eq!(outside.status, 403, "{outside:?}");
    assert!(outside.body.contains("--admin"), "{}", outside.body);

    // With an admin listener (every server has one unless it is off), /metrics is served
    // there and nowhere else, even to loopback.
    let server = TestServer::start();
    let _alice = Conn::login_tcp(server.tcp, &new_key()).await.unwrap();
    let admin = server
        .admin
        .clone()
        .expect("the banner names the admin listener");
    let admin = admin.strip_suffix("metrics").unwrap();
    let metrics = http_request(admin, "/metrics", &[], None).await.unwrap();
    assert_eq!(metrics.status, 200, "{metrics:?}");
    assert!(
        metrics.body.contains("flexim_logins_total 1"),
        "{}",
        metrics.body
    );
    let health = http_request(admin, "/healthz", &[], None).await.unwrap();
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let public = http_request(&server.http, "/metrics", &[], None)
        .await
        .unwrap();
    assert_eq!(public.status, 404, "{public:?}");
    assert!(!public.body.contains("flexim_"), "{}", public.body);
}
