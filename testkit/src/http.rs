//! A plain HTTP/1.1 GET over TCP or TLS, enough for `/healthz`, `/metrics`, the static files
//! and the answers to upgrade requests: one request per connection, read to its end.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, Result, anyhow, bail};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::WAIT;

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status line, e.g. `HTTP/1.1 200 OK`.
    pub status_line: String,
    /// The status code.
    pub status: u16,
    /// The header fields in order, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body, as text (lossily).
    pub body: String,
}

impl HttpResponse {
    /// The value of the header field `name` (any case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A plain HTTP/1.1 GET to the server's HTTP side: (status line, body).
pub async fn http_get(base: &str, path: &str) -> Result<(String, String)> {
    let response = http_request(base, path, &[], None).await?;
    Ok((response.status_line, response.body))
}

/// A GET of `path` at `base` (`http://HOST:PORT/` or `https://HOST:PORT/`) with extra header
/// fields (`Connection: close` unless they name `Connection`); over https, the server's
/// certificate must chain to the PEM CA certificate `ca`.
/// Answers that never end (a `101 Switching Protocols`) are read up to the end of their head.
pub async fn http_request(
    base: &str,
    path: &str,
    headers: &[(&str, &str)],
    ca: Option<&Path>,
) -> Result<HttpResponse> {
    let (secure, authority) = split_base(base)?;
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\n");
    // One request per connection, unless the caller speaks of the connection itself (an
    // upgrade).
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("connection"))
    {
        request.push_str("Connection: close\r\n");
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let tcp = TcpStream::connect(authority).await?;
    let raw = if secure {
        let ca = ca.ok_or_else(|| anyhow!("{base} is https: give the CA certificate"))?;
        exchange(tls_connect(tcp, authority, ca).await?, &request).await?
    } else {
        exchange(tcp, &request).await?
    };
    parse(&raw)
}

/// A TLS connection over `tcp` to `authority` (`HOST:PORT`, whose host the certificate must
/// name), trusting only the PEM CA certificate at `ca`.
pub async fn tls_connect(
    tcp: TcpStream,
    authority: &str,
    ca: &Path,
) -> Result<TlsStream<TcpStream>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).context("reading the CA certificate")? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    let name = ServerName::try_from(host.trim_matches(['[', ']']).to_string())?;
    let stream = tokio::time::timeout(
        WAIT,
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .map_err(|_| anyhow!("no TLS handshake with {authority} within {WAIT:?}"))??;
    Ok(stream)
}

/// Whether `base` is https, and its `HOST:PORT`.
fn split_base(base: &str) -> Result<(bool, &str)> {
    let (secure, rest) = if let Some(rest) = base.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = base.strip_prefix("http://") {
        (false, rest)
    } else {
        bail!("not an http:// or https:// URL: {base}");
    };
    Ok((secure, rest.split('/').next().unwrap_or(rest)))
}

/// Writes `request` and reads the answer: to the end of its head for one that switches
/// protocols, to the end of its body when it has a length, else until the connection ends.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, request: &str) -> Result<Vec<u8>> {
    s.write_all(request.as_bytes()).await?;
    let read = async {
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = s.read(&mut buf).await?;
            raw.extend_from_slice(&buf[..n]);
            if n == 0 || complete(&raw) {
                return Ok::<_, std::io::Error>(raw);
            }
        }
    };
    Ok(tokio::time::timeout(WAIT, read).await??)
}

/// Whether `raw` holds a whole answer (see [`exchange`]).
fn complete(raw: &[u8]) -> bool {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let Ok(head) = parse(&raw[..end]) else {
        return false;
    };
    if head.status == 101 {
        return true;
    }
    let length = head
        .header("content-length")
        .and_then(|l| l.parse::<usize>().ok());
    length.is_some_and(|length| raw.len() >= end + 4 + length)
}

/// Splits an answer into its status, header fields and body.
fn parse(raw: &[u8]) -> Result<HttpResponse> {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or("").to_string();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow!("no HTTP status in {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(HttpResponse {
        status_line,
        status,
        headers,
        body: body.to_string(),
    })
}
