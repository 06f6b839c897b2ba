//! The server under test: a `flexim-server` process this tool starts (or one already running).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context as _, anyhow, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A server to measure.
pub struct Target {
    /// `HOST:PORT` of its FLEX-over-TCP listener.
    pub tcp: String,
    /// `HOST:PORT` of its HTTP listener, for `/metrics`; `None` if unknown.
    pub http: Option<String>,
    /// Its WebSocket URL (`ws://HOST:PORT/ws`), when this tool started it.
    pub ws: Option<String>,
    /// The process, when this tool started it; killed on drop.
    child: Option<Child>,
    /// The data directory this tool made for it; removed on drop.
    data: Option<PathBuf>,
}

impl Target {
    /// A server already running at `tcp` (and `http`, if given).
    pub fn existing(tcp: String, http: Option<String>) -> Target {
        Target {
            tcp,
            http,
            ws: None,
            child: None,
            data: None,
        }
    }

    /// Starts `flexim-server` (by default the one built next to this tool) on free ports with
    /// a fresh data directory under `data_parent`, passing `extra` flags, and waits until it
    /// says "ready".
    pub fn spawn(bin: Option<&Path>, data_parent: &Path, extra: &[&str]) -> anyhow::Result<Target> {
        let bin = match bin {
            Some(b) => b.to_path_buf(),
            None => std::env::current_exe()?.with_file_name("flexim-server"),
        };
        if !bin.exists() {
            bail!(
                "{} not found: build it first (cargo build --release -p flexim-server) or pass --server-bin",
                bin.display()
            );
        }
        // Several servers may run at once (a cluster): each gets its own directory.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let data = data_parent.join(format!("flexim-bench-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        let mut child = Command::new(&bin)
            .args([
                "--tcp",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
                "--log",
                "warn",
            ])
            .arg("--data")
            .arg(&data)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let (mut tcp, mut http, mut ws) = (None, None, None);
        for line in lines.by_ref() {
            let line = line?;
            if let Some(v) = line.strip_prefix("tcp: ") {
                tcp = Some(v.to_string());
            }
            if let Some(v) = line.strip_prefix("ws: ") {
                ws = Some(v.to_string());
            }
            if let Some(v) = line.strip_prefix("http: ") {
                http = Some(
                    v.trim_start_matches("http://")
                        .trim_end_matches('/')
                        .to_string(),
                );
            }
            if line == "ready" {
                break;
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let tcp = tcp.ok_or_else(|| anyhow!("the server did not print its TCP address"))?;
        Ok(Target {
            tcp,
            http,
            ws,
            child: Some(child),
            data: Some(data),
        })
    }

    /// The server process's id, when this tool started it (for reading its memory).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's counters from `/metrics`, by name; empty when there is no HTTP address.
    pub async fn metrics(&self) -> anyhow::Result<std::collections::HashMap<String, u64>> {
        let Some(http) = &self.http else {
            return Ok(Default::default());
        };
        let mut stream = tokio::net::TcpStream::connect(http).await?;
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or_default();
        Ok(body
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, value) = l.split_once(' ')?;
                Some((name.to_string(), value.trim().parse().ok()?))
            })
            .collect())
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(data) = self.data.take() {
            let _ = std::fs::remove_dir_all(data);
        }
    }
}

/// A `redis-server` this tool starts for a cluster measurement, durable as flexim asks
/// (append-only file synced on every write); killed and its directory removed on drop.
pub struct Redis {
    /// `redis://127.0.0.1:PORT`.
    pub url: String,
    /// The process.
    child: Child,
    /// Its directory.
    dir: PathBuf,
}

impl Redis {
    /// Starts `bin` on a free loopback port with a fresh directory under `parent`.
    pub fn spawn(bin: &Path, parent: &Path) -> anyhow::Result<Redis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = parent.join(format!("flexim-bench-redis-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let child = Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (install it: apt-get install redis-server)",
                    bin.display()
                )
            })?;
        let redis = Redis {
            url: format!("redis://127.0.0.1:{port}"),
            child,
            dir,
        };
        for _ in 0..250 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(redis);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        bail!("redis-server did not start listening on port {port}")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
