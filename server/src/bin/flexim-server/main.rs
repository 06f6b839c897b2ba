//! `flexim-server`: parses flags (over the configuration file, `config_file.rs`), binds, prints
//! where it listens, runs until SIGINT/SIGTERM.

mod config_file;
mod operator;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser};
use flexim_server::rates::Rate;
use flexim_server::{
    Config, EdgeConfig, Limits, Reloader, Server, StoreChoice, TlsFiles, WebOrigin,
};

/// The flexim relay: FLEX over TCP and WebSocket, end-to-end encrypted, with offline delivery.
///
/// Every flag can also be set by the environment variable shown. The server prints the
/// addresses it bound and its key fingerprint; clients compare that fingerprint to pin the
/// server. Stop it with Ctrl-C (SIGINT) or SIGTERM. SIGHUP reads the settings again and
/// applies the limits that can change while it runs (--max-offline-*, --max-store-bytes,
/// --request-messages, --max-requests, --max-room-members, --max-rooms and --key-packages),
/// and reads the TLS certificate and key files again (a renewal).
#[derive(Parser, Debug)]
#[command(
    version,
    after_help = "Examples:\n  flexim-server --tcp 0.0.0.0:4321 --http 0.0.0.0:8080 --data /var/lib/flexim\n  \
        flexim-server --http 0.0.0.0:443 --tls-cert fullchain.pem --tls-key privkey.pem --admin 127.0.0.1:9321"
)]
struct Cli {
    /// A configuration file (TOML) whose keys are these flags' names, e.g. `max-rooms = 50`
    /// (`--print-config` writes one with every setting). The environment variables, and then
    /// the flags, override what it says.
    #[arg(long, env = "FLEXIM_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Write a configuration file with every setting, its help and its default (commented
    /// out) to stdout, and exit.
    #[arg(long)]
    print_config: bool,
    /// What to do instead of serving: back up or restore the store.
    #[command(subcommand)]
    action: Option<Action>,
    /// Address for raw FLEX over TCP (port 0 picks a free port).
    #[arg(long, env = "FLEXIM_TCP", default_value = "127.0.0.1:4321")]
    tcp: SocketAddr,
    /// Address for HTTP: the browser client at /, WebSocket at /ws, /healthz, /metrics.
    #[arg(long, env = "FLEXIM_HTTP", default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Directory for the server key and the message store (created if missing).
    #[arg(long, env = "FLEXIM_DATA", default_value = "./data")]
    data: PathBuf,
    /// Where users, aliases and message queues live: `embedded` (a file in --data; one node) or
    /// `redis://HOST:PORT[/DB]` (Redis; run as many nodes on it as you like). With Redis, run it
    /// with `--appendonly yes --appendfsync always`, or "stored" is not durable (checked at start).
    #[arg(long, env = "FLEXIM_STORE", default_value = "embedded", value_parser = parse_store)]
    store: StoreChoice,
    /// Directory with the browser client's files, served at /.
    #[arg(long = "static", env = "FLEXIM_STATIC", default_value = "static")]
    static_dir: PathBuf,
    /// The server's name, sent to clients as its alias.
    #[arg(long, env = "FLEXIM_NAME", default_value = "flexim")]
    name: String,
    /// Log level: error, warn, info, debug or trace. Message bodies are never logged.
    #[arg(long, env = "FLEXIM_LOG", default_value = "info")]
    log: tracing::Level,
    /// Log lines as `text` (for people) or `json` (one JSON object a line, for a log
    /// collector), on stderr either way.
    #[arg(long, env = "FLEXIM_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Most messages stored for one recipient (waiting for it, or delivered and not yet
    /// acknowledged). Beyond it senders get Status -13 queue-full and nothing is stored.
    #[arg(long, env = "FLEXIM_MAX_OFFLINE", default_value_t = Limits::default().max_offline_messages)]
    max_offline_messages: u64,
    /// Most bytes stored for one recipient, as for --max-offline-messages.
    #[arg(long, env = "FLEXIM_MAX_OFFLINE_BYTES", default_value_t = Limits::default().max_offline_bytes)]
    max_offline_bytes: u64,
    /// Most messages one sender may have stored for one recipient: its share of the queue.
    /// Beyond it that sender gets Status -21 share-full; others still have room.
    /// [default: a quarter of --max-offline-messages, rounded up]
    #[arg(long, env = "FLEXIM_MAX_OFFLINE_PER_SENDER")]
    max_offline_per_sender: Option<u64>,
    /// Most bytes one sender may have stored for one recipient, as for
    /// --max-offline-per-sender. [default: a quarter of --max-offline-bytes, rounded up]
    #[arg(long, env = "FLEXIM_MAX_OFFLINE_PER_SENDER_BYTES")]
    max_offline_per_sender_bytes: Option<u64>,
    /// Most bytes of stored messages in every queue together (the store's budget). Beyond it
    /// senders to offline users get Status -22 store-full; messages to online users still go
    /// through. 0: no budget.
    #[arg(long, env = "FLEXIM_MAX_STORE_BYTES", default_value_t = Limits::default().max_store_bytes.unwrap_or(0))]
    max_store_bytes: u64,
    /// How long a stored message waits for its recipient before it is deleted unread (its
    /// sender and recipient are told, Status 9): a number with s, m, h or d, e.g. 30d or 12h;
    /// 0 keeps messages until delivered.
    #[arg(long, env = "FLEXIM_RETENTION", default_value = "30d", value_parser = parse_retention)]
    retention: Retention,
    /// Messages with an id one session may hold unacknowledged before it counts as a slow
    /// reader (its messages are stored and it is disconnected).
    #[arg(long, env = "FLEXIM_MAX_UNACKED", default_value_t = Limits::default().max_unacked)]
    max_unacked: usize,
    /// Bytes of those messages one session may hold, as for --max-unacked.
    #[arg(long, env = "FLEXIM_MAX_UNACKED_BYTES", default_value_t = Limits::default().max_unacked_bytes)]
    max_unacked_bytes: usize,
    /// Bytes waiting for one session's writer; a session whose queue is full is a slow
    /// reader (its messages are stored, it gets Status -18 and is disconnected).
    #[arg(long, env = "FLEXIM_OUTBOUND_BYTES", default_value_t = Limits::default().outbound_bytes)]
    outbound_bytes: usize,
    /// Bytes waiting for all sessions' writers together; when reached, the sessions with the
    /// most waiting are handled as slow readers, and those that keep up are not affected.
    #[arg(long, env = "FLEXIM_QUEUED_BYTES_BUDGET", default_value_t = Limits::default().queued_bytes_budget)]
    queued_bytes_budget: usize,
    /// Connections (TCP and WebSocket together) open at once; one more is told Status -19
    /// server-full after its header and closed.
    #[arg(long, env = "FLEXIM_MAX_CONNECTIONS", default_value_t = Limits::default().max_connections)]
    max_connections: usize,
    /// Connections one address (IPv4, or an IPv6 /64) may have open at once; one more is told
    /// Status -23 address-full and closed. 0: no limit (behind a proxy, limit there).
    #[arg(long, env = "FLEXIM_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = Limits::default().max_connections_per_address)]
    max_connections_per_address: usize,
    /// New connections per address, as PER_SECOND/BURST (0: no limit); over it, Status -23.
    /// One handshake per connection, so this also bounds an address's handshakes.
    #[arg(long, env = "FLEXIM_CONNECTION_RATE", default_value_t = Limits::default().connection_rate)]
    connection_rate: Rate,
    /// Keys logging in for the first time per address, as PER_SECOND/BURST (0: no limit);
    /// over it the login gets Status -20 rate-limited.
    #[arg(long, env = "FLEXIM_NEW_KEY_RATE", default_value_t = Limits::default().new_key_rate)]
    new_key_rate: Rate,
    /// Messages per key, as PER_SECOND/BURST (0: no limit); over it the sender is slowed
    /// (its next datum is read later), never refused.
    #[arg(long, env = "FLEXIM_MESSAGE_RATE", default_value_t = Limits::default().message_rate)]
    message_rate: Rate,
    /// Commands per key except ACK, as PER_SECOND/BURST (0: no limit); over it, Status -20.
    #[arg(long, env = "FLEXIM_COMMAND_RATE", default_value_t = Limits::default().command_rate)]
    command_rate: Rate,
    /// ROSTER and SEARCH per key, as PER_SECOND/BURST (0: no limit); over it, Status -20.
    #[arg(long, env = "FLEXIM_LOOKUP_RATE", default_value_t = Limits::default().lookup_rate)]
    lookup_rate: Rate,
    /// Messages a stranger may put into one user's requests box before that user accepts it;
    /// past it, Status -25 (docs/PROTOCOL.md §14).
    #[arg(long, env = "FLEXIM_REQUEST_MESSAGES", default_value_t = Limits::default().request_messages)]
    request_messages: u32,
    /// Strangers one user's requests box holds at once; a new one beyond it gets Status -25.
    #[arg(long, env = "FLEXIM_MAX_REQUESTS", default_value_t = Limits::default().max_requests)]
    max_requests: u32,
    /// Members one room may have; a commit adding beyond it gets Status -28 (docs/PROTOCOL.md §16).
    #[arg(long, env = "FLEXIM_MAX_ROOM_MEMBERS", default_value_t = Limits::default().max_room_members)]
    max_room_members: u32,
    /// Rooms one user may be a member of; beyond it CREATEROOM or an add gets Status -28.
    #[arg(long, env = "FLEXIM_MAX_ROOMS", default_value_t = Limits::default().max_rooms)]
    max_rooms: u32,
    /// KeyPackages kept per user (the oldest; later ones are ignored).
    #[arg(long, env = "FLEXIM_KEY_PACKAGES", default_value_t = Limits::default().key_packages)]
    key_packages: u32,
    /// Largest datum body accepted, in bytes (a record of the link holds at most 65516).
    #[arg(long, env = "FLEXIM_MAX_BODY", default_value_t = Limits::default().max_body as u16)]
    max_body: u16,
    /// TLS certificate chain (PEM, leaf first): with --tls-key, the HTTP listener serves the
    /// page over https and the WebSocket over wss.
    #[arg(
        long,
        env = "FLEXIM_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The TLS certificate's private key (PEM).
    #[arg(
        long,
        env = "FLEXIM_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Seconds an HTTP client has for the TLS handshake, and then for each request's head,
    /// before it is disconnected (fractions allowed).
    #[arg(long, env = "FLEXIM_HTTP_TIMEOUT", value_name = "SECS", value_parser = parse_secs,
          default_value_t = Limits::default().http_timeout.as_secs_f64())]
    http_timeout: f64,
    /// Seconds a FLEX client (TCP or WebSocket) has to send the 5-byte header once connected
    /// (once upgraded, on WebSocket) before the connection is reset.
    #[arg(long, env = "FLEXIM_HEADER_TIMEOUT", value_name = "SECS", value_parser = parse_secs,
          default_value_t = Limits::default().header_timeout.as_secs_f64())]
    header_timeout: f64,
    /// Seconds a FLEX connection may stay unauthenticated after its header: past it, Status -6
    /// and the connection is closed.
    #[arg(long, env = "FLEXIM_AUTH_TIMEOUT", value_name = "SECS", value_parser = parse_secs,
          default_value_t = Limits::default().auth_timeout.as_secs_f64())]
    auth_timeout: f64,
    /// Seconds one write to a client may take: a client that stops reading is disconnected
    /// this long after its buffers filled (its unacknowledged messages are stored).
    #[arg(long, env = "FLEXIM_WRITE_TIMEOUT", value_name = "SECS", value_parser = parse_secs,
          default_value_t = Limits::default().write_timeout.as_secs_f64())]
    write_timeout: f64,
    /// Seconds a shutdown (SIGTERM, Ctrl-C, `admin stop`) waits for the connections, each told
    /// -17, to finish their writes and close, before it drops those left.
    #[arg(long, env = "FLEXIM_SHUTDOWN_GRACE", value_name = "SECS", value_parser = parse_secs,
          default_value_t = Limits::default().shutdown_grace.as_secs_f64())]
    shutdown_grace: f64,
    /// Seconds a FLEX connection may be idle before TCP keepalive probes it (and between
    /// probes), so that a peer that vanished is found.
    #[arg(long, env = "FLEXIM_TCP_KEEPALIVE", value_name = "SECS", value_parser = parse_secs,
          default_value_t = Limits::default().tcp_keepalive.as_secs_f64())]
    tcp_keepalive: f64,
    /// Seconds data sent on a FLEX connection may stay unacknowledged by the peer's TCP before
    /// the connection is dropped (TCP_USER_TIMEOUT, Linux).
    #[arg(long, env = "FLEXIM_TCP_USER_TIMEOUT", value_name = "SECS", value_parser = parse_secs,
          default_value_t = Limits::default().tcp_user_timeout.as_secs_f64())]
    tcp_user_timeout: f64,
    /// The admin listener, a plain HTTP listener for operators: /metrics, /healthz, /readyz
    /// for anyone reaching it, and `flexim-server admin ...` and `backup` (with the token in
    /// DATA/admin.token). Keep it on loopback or an internal address. `off` for none: then
    /// /metrics is on the HTTP listener, for loopback peers only.
    #[arg(long, env = "FLEXIM_ADMIN", value_name = "ADDR|off", default_value = "127.0.0.1:9321",
          value_parser = parse_admin)]
    admin: AdminAddr,
    /// Another origin whose pages may open /ws, e.g. https://chat.example.org behind a proxy
    /// that terminates TLS (repeatable; the environment variable takes a comma-separated
    /// list). The server's own origin is always allowed, and so are clients that send no
    /// Origin (the CLI); any other Origin is refused with 403.
    #[arg(
        long = "allowed-origin",
        env = "FLEXIM_ALLOWED_ORIGINS",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    allowed_origins: Vec<WebOrigin>,
}

/// How log lines are written.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum LogFormat {
    /// One line of text an event.
    Text,
    /// One JSON object an event: `timestamp`, `level`, `target`, `fields`.
    Json,
}

/// What `flexim-server` does besides serving. Both take the settings as the server does
/// (the same `--config`, `--data`, `--admin`, given before the action's name).
#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Make a consistent copy of the embedded store while the server runs, through its admin
    /// listener (`--admin ADDR`, with the token in `--data`'s admin.token). Writes go on
    /// meanwhile; the file appears whole once done.
    #[command(
        after_help = "Example:\n  flexim-server --data /var/lib/flexim --admin 127.0.0.1:9321 \
        backup --to /var/backups/flexim-$(date +%F).redb"
    )]
    Backup {
        /// The backup file to write, on the server's machine (it must not exist).
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
    },
    /// Put a backup back as the store of `--data`. The server must be stopped: start it
    /// afterwards, and it delivers what the backup held.
    Restore {
        /// The backup file (from `backup --to`).
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
    },
    /// Look at and act on the running server through its admin listener (`--admin ADDR`,
    /// with the token in `--data`'s admin.token). Every action is in the server's log.
    Admin {
        /// What to do.
        #[command(subcommand)]
        action: operator::AdminAction,
    },
}

/// Parses a positive number of seconds, fractions allowed.
fn parse_secs(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(secs) if secs > 0.0 && Duration::try_from_secs_f64(secs).is_ok() => Ok(secs),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

/// A sender's share of a queue: as given, or a quarter of the queue's limit, rounded up (so
/// that a queue of one still takes one).
fn quarter(given: Option<u64>, of_queue: u64) -> u64 {
    given.unwrap_or(of_queue.div_ceil(4))
}

/// Where the admin listener is (`--admin`): an address, or none (`off`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AdminAddr(Option<SocketAddr>);

/// Parses `--admin`: `HOST:PORT` or `off`.
fn parse_admin(s: &str) -> Result<AdminAddr, String> {
    match s.trim() {
        "off" | "none" => Ok(AdminAddr(None)),
        addr => addr.parse().map(|a| AdminAddr(Some(a))).map_err(|_| {
            format!("{s:?} is not an address (HOST:PORT, e.g. 127.0.0.1:9321) or `off`")
        }),
    }
}

/// Parses `embedded` or a `redis://` URL.
fn parse_store(s: &str) -> Result<StoreChoice, String> {
    if s == "embedded" {
        Ok(StoreChoice::Embedded)
    } else if s.starts_with("redis://") {
        Ok(StoreChoice::Redis(s.to_string()))
    } else {
        Err(format!(
            "{s:?}: use `embedded` or a Redis URL such as redis://127.0.0.1:6379/0"
        ))
    }
}

/// A parsed --retention: `None` for "keep until delivered".
#[derive(Debug, Clone, Copy)]
struct Retention(Option<Duration>);

/// Parses `30d`, `12h`, `90m`, `45s` or `0`.
fn parse_retention(s: &str) -> Result<Retention, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Retention(None));
    }
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30d, 12h, 90m or 45s"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d (e.g. 30d)")),
    };
    if secs == 0 {
        return Ok(Retention(None));
    }
    Ok(Retention(Some(Duration::from_secs(secs))))
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

/// Why the settings could not be read.
enum Unparsed {
    /// The command line (or `--help`, `--version`): clap says it, and exits as it does.
    Clap(clap::Error),
    /// The configuration file: one line.
    File(String),
}

/// The command line of this process, under the configuration file if it names one (and as
/// the file says now: SIGHUP reads it again).
fn parse_cli() -> Result<Cli, Unparsed> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let cmd = Cli::command();
    let matches = cmd
        .clone()
        .try_get_matches_from(&args)
        .map_err(Unparsed::Clap)?;
    let cli = Cli::from_arg_matches(&matches).map_err(Unparsed::Clap)?;
    let Some(path) = &cli.config else {
        return Ok(cli);
    };
    let args = config_file::layered(&cmd, &matches, path, args).map_err(|e| Unparsed::File(e.0))?;
    Cli::try_parse_from(args).map_err(Unparsed::Clap)
}

/// On every SIGHUP: the settings read again (the configuration file as it is now, the
/// environment and the flags), and the limits that can change while the server runs
/// ([`flexim_server::config::Live`]) replaced; the others need a restart. A file that no
/// longer parses changes nothing. Each reload is logged.
fn reload_on_hangup(reloader: Reloader) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let cli = match parse_cli() {
                Ok(cli) => cli,
                Err(Unparsed::File(line)) => {
                    tracing::error!("reload on SIGHUP failed, the limits are unchanged: {line}");
                    continue;
                }
                Err(Unparsed::Clap(e)) => {
                    let text = e.render().to_string();
                    let first = text.lines().next().unwrap_or_default().to_string();
                    tracing::error!("reload on SIGHUP failed, the limits are unchanged: {first}");
                    continue;
                }
            };
            let changes = reloader.reload(&limits_of(&cli));
            if changes.is_empty() {
                tracing::info!("reloaded on SIGHUP: no limit changed");
            } else {
                tracing::info!("reloaded on SIGHUP: {}", changes.join(", "));
            }
            // The certificate's files are read again (a renewal writes new ones in place);
            // which files is set at start.
            if let Some(tls) = reloader.tls() {
                match tls.reload() {
                    Ok(()) => tracing::info!(
                        cert = %tls.files().cert.display(),
                        "reloaded the TLS certificate on SIGHUP: new connections get it"
                    ),
                    Err(e) => tracing::error!(
                        "the TLS certificate was not reloaded, the one in use stays: {e}"
                    ),
                }
            }
        }
    });
    Ok(())
}

fn main() -> ExitCode {
    let cli = match parse_cli() {
        Ok(cli) => cli,
        Err(Unparsed::Clap(e)) => e.exit(),
        Err(Unparsed::File(line)) => {
            eprintln!("flexim-server: {line}");
            return ExitCode::from(2);
        }
    };
    if cli.print_config {
        print!("{}", config_file::print(&Cli::command()));
        return ExitCode::SUCCESS;
    }
    match &cli.action {
        Some(Action::Backup { to }) => return one_line(operator::backup(&cli, to)),
        Some(Action::Restore { from }) => return one_line(operator::restore(&cli, from)),
        Some(Action::Admin { action }) => return one_line(operator::admin(&cli, action)),
        None => {}
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("flexim-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line with every cause, so that a log shows the whole reason where it failed.
            eprintln!("flexim-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The limits `cli` sets.
fn limits_of(cli: &Cli) -> Limits {
    Limits {
        max_offline_messages: cli.max_offline_messages,
        max_offline_bytes: cli.max_offline_bytes,
        max_offline_per_sender: quarter(cli.max_offline_per_sender, cli.max_offline_messages),
        max_offline_per_sender_bytes: quarter(
            cli.max_offline_per_sender_bytes,
            cli.max_offline_bytes,
        ),
        max_store_bytes: (cli.max_store_bytes > 0).then_some(cli.max_store_bytes),
        max_unacked: cli.max_unacked,
        max_unacked_bytes: cli.max_unacked_bytes,
        outbound_bytes: cli.outbound_bytes,
        queued_bytes_budget: cli.queued_bytes_budget,
        max_connections_per_address: cli.max_connections_per_address,
        connection_rate: cli.connection_rate,
        new_key_rate: cli.new_key_rate,
        message_rate: cli.message_rate,
        command_rate: cli.command_rate,
        lookup_rate: cli.lookup_rate,
        request_messages: cli.request_messages,
        max_requests: cli.max_requests,
        max_room_members: cli.max_room_members,
        max_rooms: cli.max_rooms,
        key_packages: cli.key_packages,
        retention: cli.retention.0,
        max_body: cli.max_body.into(),
        max_connections: cli.max_connections,
        http_timeout: Duration::from_secs_f64(cli.http_timeout),
        header_timeout: Duration::from_secs_f64(cli.header_timeout),
        auth_timeout: Duration::from_secs_f64(cli.auth_timeout),
        write_timeout: Duration::from_secs_f64(cli.write_timeout),
        shutdown_grace: Duration::from_secs_f64(cli.shutdown_grace),
        tcp_keepalive: Duration::from_secs_f64(cli.tcp_keepalive),
        tcp_user_timeout: Duration::from_secs_f64(cli.tcp_user_timeout),
        ..Limits::default()
    }
}

/// An action's outcome: what it says on stdout, or one line on stderr and exit code 1.
fn one_line(done: anyhow::Result<String>) -> ExitCode {
    match done {
        Ok(said) => {
            println!("{said}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("flexim-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Starts the server as `cli` says and runs it until a signal.
async fn serve(cli: Cli) -> anyhow::Result<()> {
    let logs = tracing_subscriber::fmt()
        .with_max_level(cli.log)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let limits = limits_of(&cli);
    let tls = match (cli.tls_cert, cli.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        _ => None,
    };
    let config = Config {
        tcp: cli.tcp,
        http: cli.http,
        data: cli.data.clone(),
        static_dir: cli.static_dir,
        name: cli.name,
        store: cli.store.clone(),
        limits,
        edge: EdgeConfig {
            tls,
            admin: cli.admin.0,
            allowed_origins: cli.allowed_origins,
        },
    };
    let stop = shutdown_signal().context("cannot install the signal handlers")?;
    let server = Server::bind(config)
        .await
        .context("flexim-server cannot start")?;
    reload_on_hangup(server.reloader()).context("cannot install the SIGHUP handler")?;
    let key = server.public_key();
    // One "name: value" per line on stdout, so people and scripts (the tests) can read it.
    println!("flexim-server {}", env!("CARGO_PKG_VERSION"));
    println!("tcp: {}", server.tcp_addr());
    let (ws, http) = match server.is_tls() {
        true => ("wss", "https"),
        false => ("ws", "http"),
    };
    println!("ws: {ws}://{}/ws", server.http_addr());
    println!("http: {http}://{}/", server.http_addr());
    if let Some(admin) = server.admin_addr() {
        println!("admin: http://{admin}/metrics");
    }
    println!("data: {}", cli.data.display());
    match (&cli.store, &server.node) {
        (StoreChoice::Redis(url), Some(node)) => println!("store: {url} (node {node})"),
        _ => println!(
            "store: embedded ({})",
            cli.data.join("flexim.redb").display()
        ),
    }
    for w in &server.warnings {
        eprintln!("warning: {w}");
        tracing::warn!("{w}");
    }
    println!("key: {}", key.to_hex());
    println!("fingerprint: {}", key.fingerprint());
    if server.new_key {
        println!(
            "note: a new server key was created in {}",
            cli.data.display()
        );
    }
    println!("ready");
    let drained = server.run(stop).await?;
    println!(
        "stopped: {} connections closed, {} dropped after the grace period",
        drained.closed(),
        drained.left
    );
    Ok(())
}
