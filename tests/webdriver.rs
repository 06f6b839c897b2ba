//! A small W3C WebDriver client for driving real headless Chromium through `chromedriver`.
//!
//! WebDriver is JSON over HTTP on loopback, so a few requests on a plain socket do the job; a
//! full client library (and its TLS stack) would only slow the build on this 2-core machine.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::TempDir;

/// The element reference key the W3C protocol uses.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A running `chromedriver`, killed on drop.
pub struct Driver {
    /// The chromedriver process.
    child: Child,
    /// Where it listens.
    addr: SocketAddr,
}

impl Driver {
    /// Starts chromedriver on a free loopback port and waits until it answers.
    pub async fn start() -> Result<Driver> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver (apt-get install chromium chromium-driver; `just setup` does it)")?;
        let driver = Driver {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(v) = http(driver.addr, "GET", "/status", None).await
                && v["value"]["ready"] == json!(true)
            {
                return Ok(driver);
            }
            if Instant::now() > deadline {
                bail!("chromedriver did not become ready on port {port}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Opens a new headless Chromium with its own empty profile (so its own localStorage).
    pub async fn browser(&self, width: u32, height: u32) -> Result<Browser> {
        self.browser_with_args(width, height, &[]).await
    }

    /// [`Driver::browser`] with more command-line flags for Chromium, and its console kept
    /// for [`Browser::console`].
    pub async fn browser_with_args(
        &self,
        width: u32,
        height: u32,
        extra: &[String],
    ) -> Result<Browser> {
        let profile = TempDir::new("chromium-profile");
        let mut args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.0.display()),
        ];
        args.extend_from_slice(extra);
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"args": args, "binary": chromium()},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let v = http(self.addr, "POST", "/session", Some(caps)).await?;
        let id = v["value"]["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no session id in {v}"))?
            .to_string();
        Ok(Browser {
            addr: self.addr,
            id,
            _profile: profile,
        })
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> PathBuf {
    std::env::var_os("CHROMEDRIVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| "chromedriver".into())
}

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// One browser window (a WebDriver session).
pub struct Browser {
    /// chromedriver's address.
    addr: SocketAddr,
    /// The session id.
    id: String,
    /// The browser profile directory, removed when the browser goes.
    _profile: TempDir,
}

impl Browser {
    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let v = http(
            self.addr,
            method,
            &format!("/session/{}{path}", self.id),
            body,
        )
        .await?;
        if let Some(err) = v["value"]["error"].as_str() {
            bail!(
                "webdriver {method} {path}: {err}: {}",
                v["value"]["message"]
            );
        }
        Ok(v["value"].clone())
    }

    /// Navigates to `url`.
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.cmd("POST", "/url", Some(json!({ "url": url })))
            .await?;
        Ok(())
    }

    /// Runs a script in the page and returns its value.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Finds the first element matching a CSS selector now, if any.
    pub async fn find(&self, css: &str) -> Result<Option<String>> {
        let v = self
            .cmd(
                "POST",
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await?;
        Ok(v.as_array()
            .and_then(|a| a.first())
            .and_then(|e| e[ELEMENT].as_str())
            .map(str::to_string))
    }

    /// Waits up to `timeout` for an element matching `css`.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.find(css).await? {
                return Ok(e);
            }
            if Instant::now() > deadline {
                let body = self.text_of("body").await.unwrap_or_default();
                bail!("no element {css:?} within {timeout:?}; page text:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the text of the element matching `css` satisfies `pred`; returns it.
    pub async fn wait_text(
        &self,
        css: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            if let Some(e) = self.find(css).await? {
                last = self.text(&e).await.unwrap_or_default();
                if pred(&last) {
                    return Ok(last);
                }
            }
            if Instant::now() > deadline {
                bail!("{css:?} never had the expected text; last was {last:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The visible text of an element.
    pub async fn text(&self, element: &str) -> Result<String> {
        let v = self
            .cmd("GET", &format!("/element/{element}/text"), None)
            .await?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// The text of the first element matching `css`.
    pub async fn text_of(&self, css: &str) -> Result<String> {
        let e = self
            .find(css)
            .await?
            .ok_or_else(|| anyhow!("no element {css:?}"))?;
        self.text(&e).await
    }

    /// An attribute of the first element matching `css`.
    pub async fn attr(&self, css: &str, name: &str) -> Result<Option<String>> {
        let Some(e) = self.find(css).await? else {
            return Ok(None);
        };
        let v = self
            .cmd("GET", &format!("/element/{e}/attribute/{name}"), None)
            .await?;
        Ok(v.as_str().map(str::to_string))
    }

    /// Clicks the first element matching `css`.
    pub async fn click(&self, css: &str) -> Result<()> {
        let e = self.wait_for(css, Duration::from_secs(10)).await?;
        self.cmd("POST", &format!("/element/{e}/click"), Some(json!({})))
            .await?;
        Ok(())
    }

    /// Types `text` into the first element matching `css` (WebDriver key codes allowed, e.g.
    /// "\u{E007}" for Enter).
    pub async fn type_into(&self, css: &str, text: &str) -> Result<()> {
        let e = self.wait_for(css, Duration::from_secs(10)).await?;
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        )
        .await?;
        Ok(())
    }

    /// Resizes the window (outer size, in CSS pixels).
    pub async fn resize(&self, width: u32, height: u32) -> Result<()> {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .await?;
        Ok(())
    }

    /// A PNG screenshot of the window.
    pub async fn screenshot(&self) -> Result<Vec<u8>> {
        let v = self.cmd("GET", "/screenshot", None).await?;
        let b64 = v.as_str().ok_or_else(|| anyhow!("no screenshot data"))?;
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| anyhow!("screenshot is not base64: {e}"))
    }

    /// The messages of the page's console since the last call (errors the browser reports
    /// itself, such as a Content-Security-Policy violation, among them), one per line.
    pub async fn console(&self) -> Result<Vec<String>> {
        let v = self
            .cmd("POST", "/se/log", Some(json!({"type": "browser"})))
            .await?;
        Ok(v.as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| format!("{} {}", e["level"], e["message"]))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Closes the window and ends the session.
    pub async fn quit(self) -> Result<()> {
        http(self.addr, "DELETE", &format!("/session/{}", self.id), None).await?;
        Ok(())
    }
}

/// One HTTP/1.1 request, JSON in and out. The answer is read up to its Content-Length (or the
/// end of its chunked body): chromedriver may keep the connection open whatever we ask.
async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = TcpStream::connect(addr).await?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let read = async {
        let mut raw = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some(body) = complete_body(&raw) {
                return Ok::<_, anyhow::Error>(body);
            }
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return complete_body(&raw).ok_or_else(|| anyhow!("webdriver closed mid-answer"));
            }
            raw.extend_from_slice(&chunk[..n]);
        }
    };
    let body = tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .context("webdriver did not answer within 60 s")??;
    serde_json::from_str(&body).with_context(|| format!("webdriver answer is not JSON: {body}"))
}

/// The body of a complete HTTP answer in `raw`, or `None` if more bytes are needed.
fn complete_body(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let (head, rest) = text.split_once("\r\n\r\n")?;
    let head = head.to_ascii_lowercase();
    if head.contains("transfer-encoding: chunked") {
        return rest.contains("\r\n0\r\n").then(|| dechunk(rest));
    }
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())?;
    (rest.len() >= len).then(|| rest[..len].to_string())
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
