//! Idle connections and the handshake rate: how much server memory one authenticated, idle
//! connection costs (TCP and WebSocket separately), whether one server process holds about
//! 19,000 of them with messages still flowing, and how many logins per second the server
//! completes.
//!
//! The connections here are lean on purpose: the kit's framed connection over a raw socket
//! (TCP, or WebSocket over a TCP socket this tool connects itself), logged in by the client
//! engine of `flexim-session` (the login both clients run), and nothing else: an idle
//! connection drops its engine after the login and only reads, so that 19,000 of them fit in a
//! load generator that shares two cores with the server. Each socket binds to one of several
//! 127.0.0.x source addresses before it connects, because one source address has only about
//! 28,000 ephemeral ports towards one server port. A process may hold only 20,000 open files on
//! this machine, so `--procs K` spreads the connections over K processes of this tool.
//!
//! `procfs.rs` reads the server's memory and CPU, `hold.rs` is what a held connection does
//! (the chatter pairs exchange messages through the engine), `workers.rs` spreads the
//! connections over tasks and processes, `report.rs` is the `idle` measurement and
//! `handshakes.rs` the `handshakes` one.

mod handshakes;
mod hold;
pub(crate) mod procfs;
mod report;
mod workers;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use flexim_protocol::{PublicKey, SecretKey};
use flexim_session::Engine;
use flexim_testkit::{Conn, SMALL_READS};
use serde::{Deserialize, Serialize};

pub use handshakes::run_handshakes;
pub use report::run_idle;

use crate::server::Target;
use crate::stats::Latency;
use procfs::Proc;

/// How long one connection may take to connect and authenticate before it counts as failed
/// (the server itself gives up on an unauthenticated connection after 30 seconds).
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(30);

/// Which server to measure (shared by `idle` and `handshakes`).
#[derive(clap::Args, Debug, Clone)]
pub struct TargetArgs {
    /// Measure the server already running at this TCP address instead of starting one.
    #[arg(long)]
    server: Option<String>,
    /// With --server: its WebSocket URL (ws://HOST:PORT/ws).
    #[arg(long, requires = "server")]
    ws_url: Option<String>,
    /// With --server: its process id, to read its memory, CPU time and open files in /proc.
    #[arg(long, requires = "server")]
    server_pid: Option<u32>,
    /// The flexim-server binary to start (default: the one next to this tool).
    #[arg(long)]
    server_bin: Option<std::path::PathBuf>,
    /// Where the started server keeps its data (a fresh directory inside, removed afterwards).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    data: std::path::PathBuf,
}

/// How connections are made (shared by `idle` and `handshakes`).
#[derive(clap::Args, Debug, Clone)]
pub struct NetArgs {
    /// Source addresses: client sockets bind to 127.0.0.2 .. 127.0.0.(1+N) in turn, each good
    /// for about 28,000 connections to one server port; 0 binds nothing (a remote server).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(0..=250))]
    sources: u8,
    /// Connections connecting and authenticating at once (per process).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

/// Options of `idle`.
#[derive(clap::Args, Debug)]
pub struct IdleArgs {
    /// Authenticated raw TCP connections to open (first phase).
    #[arg(long, default_value_t = 1000)]
    tcp: usize,
    /// Authenticated WebSocket connections to open (second phase, while the TCP ones stay).
    #[arg(long, default_value_t = 0)]
    ws: usize,
    /// How connections are made.
    #[command(flatten)]
    net: NetArgs,
    /// Seconds to keep every connection open (and the chatter flowing) after both phases.
    #[arg(long, default_value_t = 5)]
    hold: u64,
    /// Sender/receiver pairs among the connections that exchange messages during the hold
    /// (a TCP sender to a WebSocket receiver when both kinds are open).
    #[arg(long, default_value_t = 0)]
    chatter: usize,
    /// Messages per second each chatter pair sends.
    #[arg(long, default_value_t = 1.0)]
    chatter_rate: f64,
    /// Load generator processes sharing the connections; one process holds at most about
    /// 19,900 sockets here (20,000 open files per process).
    #[arg(long, default_value_t = 1)]
    procs: usize,
    /// The server.
    #[command(flatten)]
    target: TargetArgs,
    /// Give up on a phase after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Print the figures as one JSON object instead of the summary.
    #[arg(long)]
    json: bool,
    /// Internal: run as one of the `--procs` child processes with this share (JSON).
    #[arg(long, hide = true)]
    child: Option<String>,
}

/// Options of `handshakes`.
#[derive(clap::Args, Debug)]
pub struct HandshakeArgs {
    /// Handshakes to make, each on a fresh connection closed right after.
    #[arg(long, default_value_t = 20_000)]
    count: usize,
    /// Over WebSocket instead of raw TCP.
    #[arg(long)]
    ws: bool,
    /// How connections are made.
    #[command(flatten)]
    net: NetArgs,
    /// The server.
    #[command(flatten)]
    target: TargetArgs,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Print the figures as one JSON object instead of the summary.
    #[arg(long)]
    json: bool,
}

/// The two transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Transport {
    /// FLEX over raw TCP (docs/PROTOCOL.md section 2.2).
    Tcp,
    /// FLEX over WebSocket at `/ws` (section 2.3).
    Ws,
}

/// Where the server listens, resolved.
#[derive(Debug, Clone)]
struct Endpoints {
    /// The FLEX-over-TCP listener.
    tcp: SocketAddr,
    /// The HTTP listener's address and the WebSocket URL on it, if known.
    ws: Option<(SocketAddr, String)>,
}

impl Endpoints {
    async fn resolve(tcp: &str, ws: Option<&str>) -> anyhow::Result<Endpoints> {
        async fn v4(hostport: &str) -> anyhow::Result<SocketAddr> {
            tokio::net::lookup_host(hostport)
                .await
                .with_context(|| format!("resolving {hostport}"))?
                .find(SocketAddr::is_ipv4)
                .ok_or_else(|| anyhow!("{hostport} has no IPv4 address"))
        }
        let ws = match ws {
            Some(url) => {
                let rest = url
                    .strip_prefix("ws://")
                    .ok_or_else(|| anyhow!("only ws:// URLs are supported, not {url}"))?;
                let hostport = rest.split('/').next().unwrap_or(rest);
                Some((v4(hostport).await?, url.to_string()))
            }
            None => None,
        };
        Ok(Endpoints {
            tcp: v4(tcp).await?,
            ws,
        })
    }
}

/// A client key with its public half computed once, outside any timed part.
#[derive(Clone)]
struct Key {
    /// The secret key.
    secret: SecretKey,
    /// Its public key.
    public: PublicKey,
}

impl Key {
    fn generate() -> Key {
        let mut bytes = [0u8; 32];
        flexim_testkit::random(&mut bytes);
        let secret = SecretKey::from_bytes(bytes);
        let public = secret.public_key();
        Key { secret, public }
    }
}

/// The source address for the `n`-th connection, or none with `sources == 0`.
fn source(n: usize, sources: u8) -> Option<Ipv4Addr> {
    (sources > 0).then(|| Ipv4Addr::new(127, 0, 0, 2 + (n % sources as usize) as u8))
}

/// Connects from `source` (if any), with small buffers, and sends nothing yet.
async fn open(
    transport: Transport,
    ep: &Endpoints,
    source: Option<Ipv4Addr>,
) -> anyhow::Result<Conn> {
    let source = source.map(IpAddr::V4);
    match transport {
        Transport::Tcp => Conn::open_tcp(ep.tcp, source, SMALL_READS).await,
        Transport::Ws => {
            let (addr, url) = ep
                .ws
                .as_ref()
                .ok_or_else(|| anyhow!("the server's WebSocket URL is unknown"))?;
            Conn::open_ws_at(*addr, url, source, true).await
        }
    }
}

/// Connects and logs in one connection within [`HANDSHAKE_DEADLINE`], with the client engine;
/// the engine comes back too, for a connection that goes on with the protocol.
async fn connect_authenticated(
    transport: Transport,
    ep: &Endpoints,
    source: Option<Ipv4Addr>,
    key: &Key,
) -> anyhow::Result<(Conn, Engine)> {
    let attempt = async {
        let mut conn = open(transport, ep, source).await?;
        let mut engine = conn.engine(&key.secret);
        conn.login_with(&mut engine).await?;
        Ok((conn, engine))
    };
    tokio::time::timeout(HANDSHAKE_DEADLINE, attempt)
        .await
        .map_err(|_| anyhow!("no handshake within {HANDSHAKE_DEADLINE:?}"))?
}

/// Starts the server (or takes the one given) and says which process to read in `/proc`.
fn target(args: &TargetArgs) -> anyhow::Result<(Target, Option<Proc>)> {
    match &args.server {
        Some(tcp) => {
            let mut t = Target::existing(tcp.clone(), None);
            t.ws = args.ws_url.clone();
            Ok((t, args.server_pid.map(|p| Proc(Some(p)))))
        }
        None => {
            // As many connections as one process can hold here (20,000 open files), not the
            // server's default of 10,000: this mode measures how many it can hold.
            let max = ["--max-connections", "19900"];
            let t = Target::spawn(args.server_bin.as_deref(), &args.data, &max)?;
            let pid = t.pid().map(|p| Proc(Some(p)));
            Ok((t, pid))
        }
    }
}

/// Splits `n` into `k` near-equal parts.
fn split(n: usize, k: usize, i: usize) -> usize {
    n / k + usize::from(i < n % k)
}

/// Percentiles of samples in milliseconds.
fn latency_of(ms: &[f32]) -> Latency {
    let mut d: Vec<Duration> = ms
        .iter()
        .map(|m| Duration::from_secs_f64(f64::from(m.max(0.0)) / 1000.0))
        .collect();
    Latency::of(&mut d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_sources_rotate() {
        assert_eq!(
            (0..3).map(|i| split(10, 3, i)).collect::<Vec<_>>(),
            [4, 3, 3]
        );
        assert_eq!(source(0, 4), Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(source(5, 4), Some(Ipv4Addr::new(127, 0, 0, 3)));
        assert_eq!(source(5, 0), None);
    }
}
