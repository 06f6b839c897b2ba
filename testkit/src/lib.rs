//! The kit the end-to-end tests and the load generator share: real `flexim-server` and
//! `redis-server` processes on ports the OS chose, with their own temporary directories, and
//! one framed connection type (raw TCP or WebSocket) that sends exactly the bytes a caller
//! wants and logs in with the client engine.

mod cli;
mod conn;
mod http;
mod onpath;
mod ports;
mod process;
mod redis;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use flexim_protocol::datum::Message;
use flexim_protocol::{Datum, PublicKey, SecretKey};

pub use cli::{Cli, flexim};
pub use conn::{Conn, Got, LARGE_READS, SMALL_READS};
pub use http::{HttpResponse, http_get, http_request, tls_connect};
pub use onpath::{Capture, OnPath};
pub use process::{Options, TestServer, Tls, metrics_at, watcher};
pub use redis::RedisServer;

/// How long a test waits for any single expected datum before failing.
pub const WAIT: Duration = Duration::from_secs(10);

/// The directory holding the workspace's binaries (`target/debug` or `target/release`), next to
/// the running executable (a test in `target/<profile>/deps/`, or the load generator itself).
/// For tests, which `cargo test` builds without the binaries they run, the binaries are built
/// if missing.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("the running executable's path");
        let mut dir = exe.parent().expect("a directory").to_path_buf();
        if dir.ends_with("deps") {
            dir.pop();
            if !dir.join("flexim-server").exists() || !dir.join("flexim").exists() {
                let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
                let status = Command::new(cargo)
                    .args([
                        "build",
                        "-p",
                        "flexim-server",
                        "-p",
                        "flexim-client",
                        "--bins",
                    ])
                    .status()
                    .expect("cargo runs");
                assert!(status.success(), "building the binaries failed");
            }
        }
        dir
    })
}

/// A fresh temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Makes a new empty directory under the system's temp directory.
    pub fn new(tag: &str) -> TempDir {
        TempDir::new_in(&std::env::temp_dir(), tag)
    }

    /// Makes a new empty directory under `parent` (which decides the disk that syncs hit).
    pub fn new_in(parent: &Path, tag: &str) -> TempDir {
        let mut rnd = [0u8; 8];
        random(&mut rnd);
        let dir = parent.join(format!("flexim-{tag}-{}", flexim_protocol::keys::hex(&rnd)));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Random bytes from the operating system: the one source of them in the kit, the tests and
/// the load generator.
pub fn random(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the operating system's random source");
}

/// The current Unix time in seconds: the one clock of the kit, the tests and the load
/// generator (the protocol crate and the engine have none).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A new random identity.
pub fn new_key() -> SecretKey {
    let mut b = [0u8; 32];
    random(&mut b);
    SecretKey::from_bytes(b)
}

/// A plain (unsealed) Message from `from` to `to`, for tests of routing rules where the body
/// does not matter; the server never reads it.
pub fn message(from: &PublicKey, to: &str, body: &str) -> Datum {
    Datum::Message(Message {
        to: to.to_string(),
        from: from.to_hex(),
        flags: vec![],
        date: 1_700_000_000,
        msg: body.to_string(),
        id: None,
        ..Default::default()
    })
}

/// Like [`message`], with a message `id`.
pub fn message_with_id(from: &PublicKey, to: &str, body: &str, id: &str) -> Datum {
    match message(from, to, body) {
        Datum::Message(mut m) => {
            m.id = Some(id.to_string());
            Datum::Message(m)
        }
        _ => unreachable!("message() builds a Message"),
    }
}
