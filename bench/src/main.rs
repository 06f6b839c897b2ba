//! `flexim-bench`: the load generator. It measures a flexim server with real clients (the
//! `flexim-client` library), real handshakes and real end-to-end encryption, and reports
//! figures anyone can rerun. It is bounded in counts and time and stops by itself; it exits
//! non-zero when a message was lost, duplicated or refused, so a short run doubles as a
//! correctness smoke test (never a speed test).

mod cross;
mod durable;
mod forwarder;
mod idle;
mod load;
mod mls;
mod relay;
mod rooms;
mod server;
mod soak;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Load generator for flexim servers.
#[derive(Parser, Debug)]
#[command(
    version,
    after_help = "Example:\n  cargo build --release -p flexim-server -p flexim-bench\n  target/release/flexim-bench durable --pairs 8 --messages 5000"
)]
struct Cli {
    /// What to measure.
    #[command(subcommand)]
    mode: Mode,
}

/// The measurements.
#[derive(Subcommand, Debug)]
enum Mode {
    /// Durable throughput: messages to offline recipients, answered "stored" only once on
    /// disk; then delivered, acknowledged (ACK) and receipted.
    Durable(DurableArgs),
    /// Several nodes: senders on node A, their online recipients on node B, one Redis
    /// (started by this tool, durable settings); throughput and send-to-receive latency.
    Cross(CrossArgs),
    /// Relay throughput: P sender/receiver pairs on one node over TCP or WebSocket, M messages
    /// with a bounded window per pair, against a plain byte forwarder measured in the same run.
    Relay(relay::Args),
    /// Idle connections: opens and authenticates N connections and reports the server's
    /// memory per connection.
    Idle(idle::IdleArgs),
    /// Handshake rate: authentications per second.
    Handshakes(idle::HandshakeArgs),
    /// Legitimate traffic under abuse and faults: the same legitimate load alone (phase A) and
    /// while others flood, stall, slowloris and reconnect-storm the server and it is killed
    /// (phase B); throughput and latency of both, and confirmed messages lost (must be 0).
    Soak(soak::Args),
    /// MLS group operations, in this process, no server: for groups of 10, 100 and 1000
    /// members, the CPU time of a commit that adds or removes one member (making it,
    /// processing it, joining from its Welcome), of sealing and opening one message, and the
    /// bytes on the wire against the server's datum limits.
    Mls(mls::Args),
    /// Room fan-out: one sender in rooms of 10, 100 and 1000 members formed through the
    /// protocol (real commits and Welcomes), each member a TCP connection that acknowledges
    /// its copies; copies per second and latency, against as many 1:1 deliveries through the
    /// same server.
    Rooms(rooms::Args),
}

/// Options of `cross`.
#[derive(Args, Debug)]
struct CrossArgs {
    /// Sender/recipient pairs.
    #[arg(long, default_value_t = 8)]
    pairs: usize,
    /// Messages per sender.
    #[arg(long, default_value_t = 2000)]
    messages: usize,
    /// Messages a sender may have on their way to its recipient.
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Plaintext bytes per message.
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Put the recipients on node A too, for comparison (the same Redis store).
    #[arg(long)]
    same_node: bool,
    /// The redis-server binary.
    #[arg(long, default_value = "redis-server")]
    redis_bin: PathBuf,
    /// The flexim-server binary to start (default: the one next to this tool).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Where Redis and the nodes keep their data (fresh directories, removed afterwards).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    data: PathBuf,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Print the figures as one JSON object instead of the summary.
    #[arg(long)]
    json: bool,
}

/// Which server to measure.
#[derive(Args, Debug)]
struct ServerArgs {
    /// Measure the server already running at this TCP address instead of starting one.
    #[arg(long)]
    server: Option<String>,
    /// With --server: its admin listener (HOST:PORT, the server's --admin), to read /metrics.
    #[arg(long, requires = "server")]
    admin: Option<String>,
    /// The flexim-server binary to start (default: the one next to this tool).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Where the started server keeps its data (a fresh directory is made inside and removed
    /// afterwards). It decides which disk the syncs hit.
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    data: PathBuf,
}

/// Options of `durable`.
#[derive(Args, Debug)]
struct DurableArgs {
    /// The server.
    #[command(flatten)]
    server: ServerArgs,
    /// Sender/recipient pairs (each sender writes to its own recipient).
    #[arg(long, default_value_t = 8)]
    pairs: usize,
    /// Messages per sender.
    #[arg(long, default_value_t = 5000)]
    messages: usize,
    /// Unanswered messages each sender may have.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Plaintext bytes per message.
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Give up on a phase after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Print the figures as one JSON object instead of the summary.
    #[arg(long)]
    json: bool,
}

/// Prints a report (as one JSON object with `json`, else its human `summary`) and turns its
/// verdict into the exit status: every mode is a correctness check too, and says why it failed.
pub(crate) fn finish<R: serde::Serialize>(
    json: bool,
    report: &R,
    summary: impl FnOnce(&R) -> String,
    correct: bool,
    failure: &str,
) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        println!("{}", summary(report));
    }
    Ok(if correct {
        ExitCode::SUCCESS
    } else {
        eprintln!("error: {failure}");
        ExitCode::FAILURE
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.mode {
        Mode::Relay(args) => relay::run(args).await,
        Mode::Idle(args) => idle::run_idle(args).await,
        Mode::Handshakes(args) => idle::run_handshakes(args).await,
        Mode::Soak(args) => soak::run(args).await,
        // Synchronous and on this thread: nothing else runs while it measures.
        Mode::Mls(args) => mls::run(args),
        Mode::Rooms(args) => rooms::run(args).await,
        Mode::Cross(args) => {
            let redis = flexim_testkit::RedisServer::start_with(&args.redis_bin, &args.data);
            let store = ["--store", redis.url.as_str()];
            let a = server::Target::spawn(args.server_bin.as_deref(), &args.data, &store)?;
            let b = server::Target::spawn(args.server_bin.as_deref(), &args.data, &store)?;
            let load = cross::Load {
                pairs: args.pairs,
                messages: args.messages,
                window: args.window.max(1),
                size: args
                    .size
                    .clamp(1, flexim_client::protocol::e2e::MAX_PLAINTEXT),
                timeout: Duration::from_secs(args.timeout),
            };
            let to = if args.same_node { &a.tcp } else { &b.tcp };
            eprintln!(
                "cross: {} pairs x {} messages, node A {} -> node {} {} ...",
                load.pairs,
                load.messages,
                a.tcp,
                if args.same_node { "A" } else { "B" },
                to
            );
            let report = cross::run(&a.tcp, to, &load).await?;
            drop((a, b, redis));
            finish(
                args.json,
                &report,
                cross::Report::summary,
                report.correct(),
                "messages were lost or duplicated, or receipts are missing",
            )
        }
        Mode::Durable(args) => {
            let total = args.pairs as u64 * args.messages as u64;
            let target = match args.server.server.clone() {
                Some(tcp) => server::Target::existing(tcp, args.server.admin.clone()),
                None => {
                    let flags = room_for(total.max(10_000));
                    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
                    server::Target::spawn(
                        args.server.server_bin.as_deref(),
                        &args.server.data,
                        &flags,
                    )?
                }
            };
            let load = durable::Load {
                pairs: args.pairs,
                messages: args.messages,
                window: args.window.max(1),
                size: args
                    .size
                    .clamp(1, flexim_client::protocol::e2e::MAX_PLAINTEXT),
                timeout: Duration::from_secs(args.timeout),
            };
            eprintln!(
                "durable: {} pairs x {} messages against {} ...",
                load.pairs, load.messages, target.tcp
            );
            let report = durable::run(&target.tcp, &load, || target.metrics()).await?;
            finish(
                args.json,
                &report,
                durable::Report::summary,
                report.correct(),
                "messages were lost, duplicated or refused (see above)",
            )
        }
    }
}

/// The server flags for room for `messages` stored messages, from any one sender and in the
/// whole store: the durable run measures the store, not its limits.
fn room_for(messages: u64) -> Vec<String> {
    let room = messages.to_string();
    [
        "--max-offline-messages",
        &room,
        "--max-offline-per-sender",
        &room,
        "--max-offline-per-sender-bytes",
        &u64::MAX.to_string(),
        "--max-store-bytes",
        "0",
    ]
    .map(str::to_string)
    .to_vec()
}
