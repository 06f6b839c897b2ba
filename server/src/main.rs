//! `flexim-server`: parses flags, binds, prints where it listens, runs until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use flexim_server::{Config, Limits, Server};

/// The flexim relay: FLEX over TCP and WebSocket, end-to-end encrypted, with offline delivery.
///
/// Every flag can also be set by the environment variable shown. The server prints the
/// addresses it bound and its key fingerprint; clients compare that fingerprint to pin the
/// server. Stop it with Ctrl-C (SIGINT) or SIGTERM.
#[derive(Parser, Debug)]
#[command(
    version,
    after_help = "Example:\n  flexim-server --tcp 0.0.0.0:4321 --http 0.0.0.0:8080 --data /var/lib/flexim"
)]
struct Cli {
    /// Address for raw FLEX over TCP (port 0 picks a free port).
    #[arg(long, env = "FLEXIM_TCP", default_value = "127.0.0.1:4321")]
    tcp: SocketAddr,
    /// Address for HTTP: the browser client at /, WebSocket at /ws, /healthz, /metrics.
    #[arg(long, env = "FLEXIM_HTTP", default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Directory for the server key and the message store (created if missing).
    #[arg(long, env = "FLEXIM_DATA", default_value = "./data")]
    data: PathBuf,
    /// Directory with the browser client's files, served at /.
    #[arg(long = "static", env = "FLEXIM_STATIC", default_value = "static")]
    static_dir: PathBuf,
    /// The server's name, sent to clients as its alias.
    #[arg(long, env = "FLEXIM_NAME", default_value = "flexim")]
    name: String,
    /// Log level: error, warn, info, debug or trace. Message bodies are never logged.
    #[arg(long, env = "FLEXIM_LOG", default_value = "info")]
    log: tracing::Level,
    /// Most messages stored for one offline recipient.
    #[arg(long, env = "FLEXIM_MAX_OFFLINE", default_value_t = Limits::default().max_offline_messages)]
    max_offline_messages: u64,
    /// Largest datum body accepted, in bytes (at most 65535).
    #[arg(long, env = "FLEXIM_MAX_BODY", default_value_t = Limits::default().max_body as u16)]
    max_body: u16,
}

/// Installs the SIGINT and SIGTERM handlers now and returns a future that completes on either.
/// Installing before the banner says "ready" matters: a signal that arrives between "ready" and
/// the first poll of a lazily installed handler would kill the process uncleanly.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_max_level(cli.log)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let limits = Limits {
        max_offline_messages: cli.max_offline_messages,
        max_body: cli.max_body.into(),
        ..Limits::default()
    };
    let config = Config {
        tcp: cli.tcp,
        http: cli.http,
        data: cli.data.clone(),
        static_dir: cli.static_dir,
        name: cli.name,
        limits,
    };
    let stop = shutdown_signal().context("cannot install the signal handlers")?;
    let server = Server::bind(config)
        .await
        .context("flexim-server cannot start")?;
    let key = server.public_key();
    // One "name: value" per line on stdout, so people and scripts (the tests) can read it.
    println!("flexim-server {}", env!("CARGO_PKG_VERSION"));
    println!("tcp: {}", server.tcp_addr());
    println!("ws: ws://{}/ws", server.http_addr());
    println!("http: http://{}/", server.http_addr());
    println!("data: {}", cli.data.display());
    println!("key: {}", key.to_hex());
    println!("fingerprint: {}", key.fingerprint());
    if server.new_key {
        println!(
            "note: a new server key was created in {}",
            cli.data.display()
        );
    }
    println!("ready");
    server.run(stop).await?;
    println!("stopped");
    Ok(())
}
