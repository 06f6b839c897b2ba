//! A real `flexim-server` process on free ports, with its own data directory: what the
//! end-to-end tests and the load generator run against.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use flexim_protocol::status::cmd;
use flexim_protocol::{Command as FlexCommand, Datum, PublicKey, SecretKey};

use crate::ports::free_port;
use crate::{Conn, TempDir, bin_dir, http_request};

/// How to start a server.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `flexim-server` binary: the workspace's by default.
    pub bin: Option<PathBuf>,
    /// Where its data directory is made (the system's temp directory by default).
    pub data_parent: Option<PathBuf>,
    /// The log level (`--log`).
    pub log: String,
    /// Whether the log goes to `server.log` in its directory (tests read it) rather than to
    /// this process's stderr (the load generator shows warnings).
    pub log_to_file: bool,
    /// The directory of the browser client's files (`--static`), if served.
    pub static_dir: Option<PathBuf>,
    /// The address the HTTP listener binds (on a port the OS picks): loopback by default.
    pub http_ip: IpAddr,
    /// TLS for the HTTP listener (`--tls-cert`, `--tls-key`), and the CA the kit's own
    /// requests to it trust.
    pub tls: Option<Tls>,
    /// More flags.
    pub args: Vec<String>,
    /// Environment variables for the server (settings given as `FLEXIM_*` instead of flags).
    pub env: Vec<(String, String)>,
}

/// The certificate files a server with TLS gets, and the CA certificate its clients trust.
#[derive(Debug, Clone)]
pub struct Tls {
    /// The server's certificate chain (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
    /// The CA certificate that signed `cert` (PEM).
    pub ca: PathBuf,
}

impl Default for Options {
    /// What the tests run: the workspace's server, every log line kept, the browser client
    /// served.
    fn default() -> Self {
        Options {
            bin: None,
            data_parent: None,
            log: "trace".into(),
            log_to_file: true,
            static_dir: Some(PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../static"
            ))),
            http_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            tls: None,
            args: Vec::new(),
            env: Vec::new(),
        }
    }
}

/// A running `flexim-server` process, killed when dropped.
pub struct TestServer {
    /// The child process.
    child: Option<Child>,
    /// How it was started, to start it again.
    options: Options,
    /// Its directory: `data/` (kept across restarts) and `server.log`.
    pub dir: TempDir,
    /// The bound TCP address.
    pub tcp: SocketAddr,
    /// The WebSocket URL.
    pub ws: String,
    /// The HTTP base URL.
    pub http: String,
    /// The server key as printed.
    pub key: String,
    /// The admin listener's `/metrics` URL, when the server has one (`--admin`).
    pub admin: Option<String>,
    /// Every stdout line it printed at start.
    pub banner: Vec<String>,
}

/// The key the kit watches presence with ([`TestServer::until_offline`]): the same for every
/// test server, so that it survives restarts.
pub fn watcher() -> SecretKey {
    SecretKey::from_bytes([0x5a; 32])
}

impl TestServer {
    /// Starts a server on 127.0.0.1 port 0 with a new data directory.
    pub fn start() -> TestServer {
        Self::start_with(&[])
    }

    /// Starts a server with extra flags.
    pub fn start_with(extra: &[&str]) -> TestServer {
        let options = Options {
            args: extra.iter().map(|a| a.to_string()).collect(),
            ..Options::default()
        };
        Self::launch(options).expect("server starts")
    }

    /// Starts a server as `options` say, on free ports, with a new data directory. The TCP
    /// and HTTP ports come from below the ephemeral range (`ports.rs`), so that a restart on
    /// the same ports finds them free; if another test took one meanwhile, it tries others.
    pub fn launch(options: Options) -> Result<TestServer> {
        let parent = options
            .data_parent
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        let mut attempt = 0;
        loop {
            let dir = TempDir::new_in(&parent, "server");
            let tcp = SocketAddr::new(
                Ipv4Addr::LOCALHOST.into(),
                free_port(Ipv4Addr::LOCALHOST.into()),
            );
            let http = SocketAddr::new(options.http_ip, free_port(options.http_ip));
            match Self::spawn(dir, &tcp.to_string(), &http.to_string(), options.clone()) {
                Err(e) if attempt < 4 && format!("{e:#}").contains("cannot listen on") => {
                    attempt += 1;
                }
                started => {
                    return started.map_err(|e| e.context(format!("tcp {tcp}, http {http}")));
                }
            }
        }
    }

    fn spawn(dir: TempDir, tcp: &str, http: &str, options: Options) -> Result<TestServer> {
        let bin = options
            .bin
            .clone()
            .unwrap_or_else(|| bin_dir().join("flexim-server"));
        if !bin.exists() {
            bail!(
                "{} not found: build it first (cargo build --release -p flexim-server)",
                bin.display()
            );
        }
        let stderr = if options.log_to_file {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.0.join("server.log"))?;
            Stdio::from(log)
        } else {
            Stdio::inherit()
        };
        let mut command = Command::new(&bin);
        command
            .args(["--tcp", tcp, "--http", http, "--log", &options.log])
            .arg("--data")
            .arg(dir.0.join("data"));
        if let Some(s) = &options.static_dir {
            command.arg("--static").arg(s);
        }
        if let Some(tls) = &options.tls {
            command.arg("--tls-cert").arg(&tls.cert);
            command.arg("--tls-key").arg(&tls.key);
        }
        // Every test server has its admin listener (for /metrics and the admin actions) on a
        // free port, unless the test chooses its own.
        if !options.args.iter().any(|a| a.starts_with("--admin")) {
            command.args(["--admin", "127.0.0.1:0"]);
        }
        let mut child = command
            .args(&options.args)
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(stderr)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let banner = read_banner(&mut child).map_err(|e| {
            // What the server said is why it did not start: in the error, since the
            // directory (and its log) goes with the error.
            let log = std::fs::read_to_string(dir.0.join("server.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            e.context(tail.join("\n"))
        })?;
        let field = |name: &str| {
            banner
                .iter()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
                .ok_or_else(|| anyhow!("no {name} in banner {banner:?}"))
        };
        Ok(TestServer {
            tcp: field("tcp")?.parse()?,
            ws: field("ws")?,
            http: field("http")?,
            key: field("key")?,
            admin: field("admin").ok(),
            banner: banner.clone(),
            child: Some(child),
            options,
            dir,
        })
    }

    /// The admin listener's address (`HOST:PORT`), when the server has one (`--admin`).
    pub fn admin_addr(&self) -> Option<String> {
        let url = self.admin.as_deref()?;
        Some(
            url.trim_start_matches("http://")
                .trim_end_matches("/metrics")
                .to_string(),
        )
    }

    /// The server's process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends the server SIGHUP (read the settings and the TLS files again).
    pub fn hang_up(&self) {
        let pid = self.pid().expect("the server runs").to_string();
        let sent = Command::new("kill").args(["-HUP", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -HUP {pid}");
    }

    /// Waits (up to 5 s) until the server's log holds `needle`; panics with the log if not.
    pub async fn until_logged(&self, needle: &str) {
        for _ in 0..100 {
            if self.logs().contains(needle) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("never logged {needle:?}:\n{}", self.logs());
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.0.join("data")
    }

    /// Everything the server logged so far (when it logs to a file).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("server.log")).unwrap_or_default()
    }

    /// `HOST:PORT` of the HTTP listener.
    pub fn http_addr(&self) -> String {
        let rest = self.http.split_once("://").map_or(&*self.http, |(_, r)| r);
        rest.trim_end_matches('/').to_string()
    }

    /// The CA certificate a client of this server's https listener trusts (with TLS on).
    pub fn ca(&self) -> Option<&Path> {
        self.options.tls.as_ref().map(|t| t.ca.as_path())
    }

    /// The server's counters from `/metrics` on its admin listener, by name (or, with
    /// `--admin off`, on its HTTP listener, over https with TLS on).
    pub async fn metrics(&self) -> Result<HashMap<String, u64>> {
        if let Some(admin) = self.admin_addr() {
            return metrics_at(&admin).await;
        }
        let response = http_request(&self.http, "/metrics", &[], self.ca()).await?;
        Ok(counters(&response.body))
    }

    /// Logs each key in once and out again, so that the server knows them: messages go only to
    /// keys that have logged in at least once (docs/PROTOCOL.md §8).
    ///
    /// The keys are introduced to each other too: each accepts every other one (and the
    /// kit's watcher, which [`TestServer::until_offline`] asks), as users who know each other
    /// would (docs/PROTOCOL.md §14), so that their messages are relayed with no requests box.
    pub async fn introduce(&self, keys: &[&SecretKey]) {
        for key in keys {
            let mut conn = Conn::login_tcp(self.tcp, key).await.expect("a first login");
            let mut accept = vec![watcher().public_key()];
            accept.extend(
                keys.iter()
                    .map(|k| k.public_key())
                    .filter(|k| *k != key.public_key()),
            );
            for other in accept {
                conn.befriend(&other).await.expect("an acceptance");
            }
            drop(conn);
            self.until_offline(&key.public_key()).await;
        }
    }

    /// [`TestServer::introduce`] from a test that has no runtime (the CLI tests).
    pub fn introduce_blocking(&self, keys: &[&SecretKey]) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(self.introduce(keys));
    }

    /// Waits until the server has noticed that `key`'s connection was dropped (GETUSER says
    /// it is offline), so that what a test does next does not race the old session's logout.
    ///
    /// The answer shows presence only to a user the key accepted: the key must have been
    /// introduced ([`TestServer::introduce`]), which makes it accept the kit's watcher.
    pub async fn until_offline(&self, key: &PublicKey) {
        let mut observer = Conn::login_tcp(self.tcp, &watcher())
            .await
            .expect("an observer");
        for _ in 0..200 {
            let who = key.to_hex();
            let ask = FlexCommand::new(cmd::GETUSER, &[who.as_str()]);
            observer.send(&ask.into()).await.expect("GETUSER goes out");
            if let Ok(Datum::User(u)) = observer.datum().await
                && u.online == Some(false)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the server did not notice the dropped connection");
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited cleanly.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Kills the server with SIGKILL (no chance to flush or close anything) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server with SIGKILL and starts it again on the same data directory and
    /// ports: a crash and a restart.
    pub fn crash_and_restart(mut self) -> TestServer {
        self.kill();
        self.start_again_on_same_ports()
    }

    /// Stops the server and starts it again on the same data directory (new ports).
    pub fn restart(mut self) -> TestServer {
        assert!(self.stop(), "server exits cleanly on SIGTERM");
        let dir = TempDir(std::mem::take(&mut self.dir.0));
        let options = self.options.clone();
        let tcp = SocketAddr::new(
            Ipv4Addr::LOCALHOST.into(),
            free_port(Ipv4Addr::LOCALHOST.into()),
        );
        let http = SocketAddr::new(options.http_ip, free_port(options.http_ip));
        Self::spawn(dir, &tcp.to_string(), &http.to_string(), options).expect("server restarts")
    }

    /// Stops the server and starts it again on the same data directory and the same ports, so
    /// that clients (a browser page, whose origin is the HTTP address) can reconnect.
    pub fn restart_on_same_ports(mut self) -> TestServer {
        assert!(self.stop(), "server exits cleanly on SIGTERM");
        self.start_again_on_same_ports()
    }

    /// Stops the server and starts another on the same ports with a fresh data directory: what
    /// a client sees when the server was re-installed, or when another server took its
    /// address. With `keep_key` the new directory gets the old server key file and nothing
    /// else: the same server key, its users and aliases forgotten (so that an alias can go to
    /// another key). Without it, the server makes a new key.
    pub fn reinstall_on_same_ports(mut self, keep_key: bool) -> TestServer {
        assert!(self.stop(), "server exits cleanly on SIGTERM");
        let parent = self
            .options
            .data_parent
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        let dir = TempDir::new_in(&parent, "server");
        if keep_key {
            std::fs::create_dir_all(dir.0.join("data")).expect("a data directory");
            std::fs::copy(
                self.data_dir().join("server.key"),
                dir.0.join("data").join("server.key"),
            )
            .expect("the server key is copied");
        }
        let http = self.http_addr();
        let options = self.options.clone();
        Self::spawn(dir, &self.tcp.to_string(), &http, options).expect("server starts again")
    }

    /// Starts a stopped server again on its data directory and ports.
    fn start_again_on_same_ports(mut self) -> TestServer {
        let dir = TempDir(std::mem::take(&mut self.dir.0));
        let http = self.http_addr();
        let options = self.options.clone();
        Self::spawn(dir, &self.tcp.to_string(), &http, options).expect("server restarts")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads the server's stdout up to its "ready" line, then keeps draining it on a thread so
/// that the server never blocks on a full pipe.
fn read_banner(child: &mut Child) -> Result<Vec<String>> {
    let stdout = child.stdout.take().context("stdout is piped")?;
    let mut banner = Vec::new();
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line?;
        let done = line == "ready";
        banner.push(line);
        if done {
            break;
        }
    }
    if banner.last().map(String::as_str) != Some("ready") {
        bail!("the server exited before it was ready: {banner:?}");
    }
    std::thread::spawn(move || for _ in lines {});
    Ok(banner)
}

/// The counters of the server whose admin listener (or, with `--admin off`, plain HTTP
/// listener) is `http` (`HOST:PORT`), from `/metrics`.
pub async fn metrics_at(http: &str) -> Result<HashMap<String, u64>> {
    let response = http_request(&format!("http://{http}/"), "/metrics", &[], None).await?;
    Ok(counters(&response.body))
}

/// The counters in a `/metrics` text, by name.
fn counters(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}
