//! A real `redis-server`, for the Redis store's tests, the multi-node tests and the cluster
//! benchmark.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::{TempDir, WAIT};

/// How long a `redis-server` may take to answer PING after it starts (it loads its
/// append-only file first, which is quick for a test's data).
const REDIS_START: Duration = Duration::from_secs(20);

/// A real `redis-server` child process, for the Redis store and multi-node tests.
///
/// It listens on 127.0.0.1 on a port that was free when it started, keeps its append-only
/// file in its own temporary directory (`--appendonly yes --appendfsync always`, no RDB
/// snapshots), so every write it acknowledged survives [`RedisServer::restart`] (a SIGKILL, a
/// crash) as well as [`RedisServer::stop`]. Its log is `redis.log` in that directory
/// ([`RedisServer::logs`]). It is killed when dropped. Each test starts its own: nothing is
/// shared between tests, and a test never depends on a Redis already running.
///
/// ```no_run
/// let mut redis = flexim_tests::RedisServer::start();
/// let server = flexim_tests::TestServer::start_with(&["--store", &redis.url]);
/// redis.restart(); // same port, same data
/// ```
pub struct RedisServer {
    /// The process; `None` while it is stopped or killed.
    child: Option<Child>,
    /// The `redis-server` binary (`redis-server` on the PATH unless told otherwise).
    bin: PathBuf,
    /// The TCP port on 127.0.0.1, the same across restarts.
    pub port: u16,
    /// The URL to give a client: `redis://127.0.0.1:PORT`.
    pub url: String,
    /// Its working directory: the append-only file and `redis.log`. Kept across restarts.
    pub dir: TempDir,
}

impl RedisServer {
    /// Starts `redis-server` on a free port with a new directory and waits until it answers
    /// PING. Panics (with how to install it) if `redis-server` is not installed.
    pub fn start() -> RedisServer {
        Self::start_with(Path::new("redis-server"), &std::env::temp_dir())
    }

    /// Starts the Redis binary `bin` on a free port with a new directory under `parent`.
    pub fn start_with(bin: &Path, parent: &Path) -> RedisServer {
        let dir = TempDir::new_in(parent, "redis");
        // A port the OS says is free may be taken again before Redis binds it; then Redis
        // exits at once and another port is tried.
        let mut last = String::new();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            match Self::spawn(bin, &dir.0, port) {
                Ok(child) => {
                    return RedisServer {
                        child: Some(child),
                        bin: bin.to_path_buf(),
                        port,
                        url: format!("redis://127.0.0.1:{port}"),
                        dir,
                    };
                }
                Err(e) => last = format!("{e:#}"),
            }
        }
        panic!(
            "redis-server did not start: {last}\n{}",
            std::fs::read_to_string(dir.0.join("redis.log")).unwrap_or_default()
        );
    }

    /// Starts the process on `port` in `dir` and waits for PONG; an error if it exits first
    /// or does not answer within [`REDIS_START`].
    fn spawn(bin: &Path, dir: &Path, port: u16) -> Result<Child> {
        let mut child = match Command::new(bin)
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
            .arg(dir)
            .args(["--logfile", "redis.log", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server not found: install it (apt-get install redis-server, or `just setup`)"
            ),
            Err(e) => return Err(e).context("spawning redis-server"),
        };
        let deadline = std::time::Instant::now() + REDIS_START;
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("redis-server exited ({status}) before answering PING");
            }
            if ping(port) {
                return Ok(child);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("redis-server did not answer PING within {REDIS_START:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a stopped or killed Redis again on the same port and directory (so with the
    /// same data) and waits until it answers PING. Does nothing if it is running.
    pub fn start_again(&mut self) {
        if self.child.is_some() {
            return;
        }
        // The port was ours a moment ago, but a client's connection attempt or another
        // test's probe may hold it briefly: try a few times.
        let mut last = String::new();
        for _ in 0..10 {
            match Self::spawn(&self.bin, &self.dir.0, self.port) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(e) => last = format!("{e:#}"),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "redis-server did not start again on port {}: {last}\n{}",
            self.port,
            self.logs()
        );
    }

    /// Kills Redis with SIGKILL (a crash: no chance to do anything more) and starts it again
    /// on the same port and data, waiting until it answers PING. With `appendfsync always`
    /// every write it acknowledged is still there.
    pub fn restart(&mut self) {
        self.kill();
        self.start_again();
    }

    /// Kills Redis with SIGKILL and waits for it to exit; [`RedisServer::start_again`]
    /// brings it back.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops Redis with SIGTERM (it syncs and exits cleanly) and waits for it to exit, at
    /// most ten seconds before it is killed; [`RedisServer::start_again`] brings it back.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        for _ in 0..200 {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Whether the process is running (not stopped or killed by the test).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Everything Redis logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("redis.log")).unwrap_or_default()
    }

    /// Sends one command (plain RESP over a new TCP connection) and returns the reply as
    /// strings: a string or an integer is one item, an array its items in order (nested
    /// arrays flattened), nil nothing. An error reply is an `Err` with Redis's message.
    /// For looking at what a test left in Redis, e.g. `redis.command(&["KEYS", "*"])`.
    pub fn command(&self, args: &[&str]) -> Result<Vec<String>> {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(WAIT))?;
        let mut request = format!("*{}\r\n", args.len());
        for a in args {
            request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(request.as_bytes())?;
        let mut reader = BufReader::new(s);
        fn reply(r: &mut impl BufRead, out: &mut Vec<String>) -> Result<()> {
            let mut line = String::new();
            r.read_line(&mut line)?;
            let line = line.trim_end_matches("\r\n");
            let (kind, rest) = line.split_at_checked(1).context("empty reply")?;
            match kind {
                "+" | ":" => out.push(rest.to_string()),
                "-" => bail!("Redis: {rest}"),
                "$" => {
                    let len: i64 = rest.parse()?;
                    if len >= 0 {
                        let mut buf = vec![0u8; len as usize + 2];
                        r.read_exact(&mut buf)?;
                        buf.truncate(len as usize);
                        out.push(String::from_utf8_lossy(&buf).into_owned());
                    }
                }
                "*" => {
                    let n: i64 = rest.parse()?;
                    for _ in 0..n.max(0) {
                        reply(r, out)?;
                    }
                }
                other => bail!("unexpected RESP reply type {other:?}"),
            }
            Ok(())
        }
        let mut out = Vec::new();
        reply(&mut reader, &mut out)?;
        Ok(out)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a Redis on 127.0.0.1:`port` answers PING with PONG (not, say, LOADING while it
/// reads its append-only file). Plain RESP over TCP: the helper needs no Redis client.
fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut answer = [0u8; 5];
    s.write_all(b"*1\r\n$4\r\nPING\r\n").is_ok()
        && s.read_exact(&mut answer).is_ok()
        && &answer == b"+PONG"
}
