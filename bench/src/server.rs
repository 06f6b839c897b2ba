//! The server under test: a `flexim-server` process this tool starts (the kit's, which the
//! end-to-end tests run too), or one already running.

use std::collections::HashMap;
use std::path::Path;

use flexim_testkit::{Options, TestServer, metrics_at};

/// The limits a load generator would hit by construction, turned off in the servers the
/// throughput modes start: it runs thousands of clients from four addresses (past the
/// per-address connection limits and the rate of new keys), and each sender writes as fast as
/// it can (past the message rate). Those limits are measured by `soak` and tested in
/// tests/e2e/rates.rs; the other limits (queues, memory) stay as deployed.
pub const CAPACITY: &[&str] = &[
    "--max-connections-per-address",
    "0",
    "--connection-rate",
    "0",
    "--new-key-rate",
    "0",
    "--message-rate",
    "0",
];

/// How this tool starts `flexim-server`: the binary `bin` (by default the one built next to
/// this tool), a fresh data directory under `data_parent`, `extra` flags, warnings and errors
/// only, to this tool's stderr, no browser client. `soak` starts its server with these too,
/// but keeps the [`TestServer`] itself, because it kills and restarts it.
pub fn options(bin: Option<&Path>, data_parent: &Path, extra: &[&str]) -> Options {
    Options {
        bin: bin.map(Path::to_path_buf),
        data_parent: Some(data_parent.to_path_buf()),
        log: "warn".into(),
        log_to_file: false,
        static_dir: None,
        args: extra.iter().map(|a| a.to_string()).collect(),
        ..Options::default()
    }
}

/// A server to measure.
pub struct Target {
    /// `HOST:PORT` of its FLEX-over-TCP listener.
    pub tcp: String,
    /// `HOST:PORT` of its admin listener, for `/metrics`; `None` if unknown.
    pub admin: Option<String>,
    /// Its WebSocket URL (`ws://HOST:PORT/ws`), when this tool started it.
    pub ws: Option<String>,
    /// The process, when this tool started it; killed (and its data removed) on drop.
    process: Option<TestServer>,
}

impl Target {
    /// A server already running at `tcp` (with its admin listener at `admin`, if given).
    pub fn existing(tcp: String, admin: Option<String>) -> Target {
        Target {
            tcp,
            admin,
            ws: None,
            process: None,
        }
    }

    /// Starts `flexim-server` (by default the one built next to this tool) on free ports with
    /// a fresh data directory under `data_parent`, passing [`CAPACITY`] and `extra` flags,
    /// and waits until it says "ready". Its warnings go to this tool's stderr.
    pub fn spawn(bin: Option<&Path>, data_parent: &Path, extra: &[&str]) -> anyhow::Result<Target> {
        let flags: Vec<&str> = CAPACITY.iter().chain(extra).copied().collect();
        let process = TestServer::launch(options(bin, data_parent, &flags))?;
        Ok(Target {
            tcp: process.tcp.to_string(),
            admin: process.admin_addr(),
            ws: Some(process.ws.clone()),
            process: Some(process),
        })
    }

    /// The server process's id, when this tool started it (for reading its memory).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(TestServer::pid)
    }

    /// The server's counters from `/metrics`, by name; empty when there is no admin address.
    pub async fn metrics(&self) -> anyhow::Result<HashMap<String, u64>> {
        match &self.admin {
            Some(admin) => metrics_at(admin).await,
            None => Ok(HashMap::new()),
        }
    }
}
