//! `flexim`: the command-line client (key generation, one-shot send, listen, interactive chat).

use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead as _, Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use flexim_client::protocol::keys::validate_alias;
use flexim_client::protocol::status;
use flexim_client::protocol::{PublicKey, Status, User};
use flexim_client::{Client, ClientError, Event, Identity, KeyFileError, Received};

/// Exit code of `listen --count N --timeout SECS` when fewer than N messages arrived in time.
const EXIT_TIMEOUT: u8 = 3;

const MAIN_EXAMPLES: &str = "\
Examples:
  flexim keygen --out alice.key
  flexim send --key alice.key --to bob 'hello bob'
  flexim listen --key bob.key --json --count 1 --timeout 10
  flexim chat --key alice.key --alias alice --to bob
  FLEXIM_SERVER=ws://127.0.0.1:8080/ws FLEXIM_KEY=alice.key flexim chat";

const KEYGEN_EXAMPLES: &str = "\
Examples:
  flexim keygen --out alice.key
  KEY=$(flexim keygen --out bob.key)   # capture bob's public key";

const SEND_EXAMPLES: &str = "\
Examples:
  flexim send --key alice.key --to bob 'see you at eight'
  flexim send --key alice.key --to 3f9a...e1 --flag NOTIFY 'ping'
  echo 'from a pipe' | flexim send --key alice.key --to bob -
  flexim send --server ws://127.0.0.1:8080/ws --key alice.key --to bob hi
  flexim send --key alice.key --to bob --wait 0 'no need to wait for bob'

Waiting: when bob is offline the server stores the message durably and `send` is done
(\"stored\"). When bob is online the server hands it to bob's connection (\"relayed\") and
`send` waits up to --wait seconds for bob's client to acknowledge it (\"delivered\"), or for
the server to store it because bob left first (\"stored\"). If the connection is lost before
then, `send` logs in again once and sends the same message again; bob's client drops the
second copy if the first one had arrived. Receipts go to the key's active session only, so
when another session of this key is logged in, `send` does not wait for one.

Exit status: 0 once the message is safe (\"stored\" or \"delivered\" on stderr), and also
when bob's client has not acknowledged it within --wait seconds (\"relayed (the recipient has
not acknowledged yet)\": it is with bob's client, and the server keeps it until bob's client
acknowledges it); 1 otherwise, with the server's error on stderr.";

const LISTEN_EXAMPLES: &str = "\
Examples:
  flexim listen --key bob.key
  flexim listen --key bob.key --json --count 1 --timeout 10
  flexim listen --key bob.key --ghost        # take over from another session of bob

Output: one line per message, `[2024-01-31T12:00:00Z] FROM: text`, or with --json
{\"from\": KEY-HEX, \"to\": ..., \"date\": UNIX-SECONDS, \"flags\": [...], \"msg\": TEXT,
\"id\": ID} (\"id\" only when the sender gave the message one).

Each message is acknowledged to the server right after its line is printed, and only then
does the server forget it (and tell the sender \"delivered\"). Messages that are not printed,
such as those beyond --count, stay on the server for the next run. A second copy of a
message printed in this run (a sender may send it again after losing its connection) is
not printed again.

Exit status: 0 after --count messages, or when --timeout expires without --count;
3 when --timeout expires before --count messages arrived; 1 on errors.";

const CHAT_EXAMPLES: &str = "\
Examples:
  flexim chat --key alice.key --alias alice --to bob
  flexim chat --server ws://127.0.0.1:8080/ws --key alice.key

Type /help inside the chat for its commands. Times are shown in UTC.

After each line you send, the server's answer follows: (stored) when the contact is offline,
(relayed) when it was handed to the contact's connection. A later line
(delivered to WHO: TEXT) says the contact's client acknowledged it, and (stored for WHO: TEXT)
that the contact left before acknowledging it and the server stored it. Incoming messages are
acknowledged once shown.";

const CHAT_HELP: &str = "\
commands:
  /to WHO            talk to WHO (an alias or a key) from now on; shows its fingerprint
  /msg WHO TEXT      send TEXT to WHO once
  /roster            list the users the server knows
  /search TEXT       list the users whose alias contains TEXT
  /whois WHO         show WHO's key, fingerprint and presence
  /register ALIAS    claim ALIAS for your key
  /ghost             make this the active session of your key
  /help              this list
  /quit              leave (so does end of input)
any other line is sent to the current contact; start it with // to send a leading /";

/// The flexim command-line client.
#[derive(Parser, Debug)]
#[command(
    name = "flexim",
    version,
    about = "flexim: end-to-end encrypted instant messaging from the command line",
    long_about = "flexim: end-to-end encrypted instant messaging from the command line.\n\n\
        A user is an X25519 key pair kept in a key file (see `flexim keygen`). Messages are \
        encrypted for the recipient's key before they leave this machine; the server sees \
        only who talks to whom, and when.",
    after_help = MAIN_EXAMPLES
)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
enum Command {
    /// Create a new key file and print its public key.
    #[command(after_help = KEYGEN_EXAMPLES)]
    Keygen(KeygenArgs),
    /// Send one message and wait until it is stored or delivered.
    #[command(after_help = SEND_EXAMPLES)]
    Send(SendArgs),
    /// Print incoming messages, one per line.
    #[command(after_help = LISTEN_EXAMPLES)]
    Listen(ListenArgs),
    /// Chat interactively.
    #[command(after_help = CHAT_EXAMPLES)]
    Chat(ChatArgs),
}

/// Options of `keygen`.
#[derive(Args, Debug)]
struct KeygenArgs {
    /// Where to write the key file (created with mode 0600; an existing file is never
    /// overwritten). The public key is printed on stdout, its fingerprint on stderr.
    #[arg(long, short = 'o', value_name = "FILE")]
    out: PathBuf,
}

/// How to reach the server and who to be; shared by every command that connects.
#[derive(Args, Debug)]
struct ConnArgs {
    /// Server address: HOST:PORT for TCP, or a ws:// URL such as ws://127.0.0.1:8080/ws for
    /// WebSocket.
    #[arg(
        long,
        short = 's',
        env = "FLEXIM_SERVER",
        default_value = "127.0.0.1:4321",
        value_name = "S"
    )]
    server: String,
    /// Your key file (create one with `flexim keygen --out FILE`).
    #[arg(long, short = 'k', env = "FLEXIM_KEY", value_name = "FILE")]
    key: PathBuf,
    /// Claim this alias at login (letters, digits, '_', '-', '.'; a letter first). Failing to
    /// get it is reported but does not stop the command.
    #[arg(long, short = 'a', value_name = "NAME")]
    alias: Option<String>,
    /// Refuse to log in unless the server's key is this one (64 hex digits, as flexim-server
    /// prints it at start). Without it, any server that answers is trusted.
    #[arg(long, env = "FLEXIM_SERVER_KEY", value_name = "HEX", value_parser = parse_key)]
    server_key: Option<PublicKey>,
}

/// Parses a public key given as 64 hex digits.
fn parse_key(s: &str) -> Result<PublicKey, String> {
    PublicKey::from_hex(s.trim()).ok_or_else(|| "expected a key of 64 hex digits".to_string())
}

/// Options of `send`.
#[derive(Args, Debug)]
struct SendArgs {
    /// Server and key.
    #[command(flatten)]
    conn: ConnArgs,
    /// The recipient: an alias or a public key (64 hex digits).
    #[arg(long, short = 't', value_name = "WHO")]
    to: String,
    /// A flag to attach to the message (repeatable), e.g. NOTIFY. Flags are visible to the
    /// server but protected against changes.
    #[arg(long = "flag", short = 'f', value_name = "F")]
    flags: Vec<String>,
    /// How long to wait, after the server relayed the message to the online recipient, for
    /// the recipient's client to acknowledge it (fractions allowed; 0: do not wait).
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    wait: Duration,
    /// The message text; `-` reads it from stdin.
    #[arg(value_name = "TEXT")]
    text: String,
}

/// Options of `listen`.
#[derive(Args, Debug)]
struct ListenArgs {
    /// Server and key.
    #[command(flatten)]
    conn: ConnArgs,
    /// Take over from another session of the same key (GHOST) right after logging in, so that
    /// messages come here.
    #[arg(long)]
    ghost: bool,
    /// Print each message as one JSON object per line.
    #[arg(long)]
    json: bool,
    /// Exit successfully after N messages.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Stop listening SECS seconds after logging in (fractions allowed). With --count,
    /// running out of time is an error (exit status 3).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    timeout: Option<Duration>,
}

/// Options of `chat`.
#[derive(Args, Debug)]
struct ChatArgs {
    /// Server and key.
    #[command(flatten)]
    conn: ConnArgs,
    /// Start talking to this contact (an alias or a key).
    #[arg(long, short = 't', value_name = "WHO")]
    to: Option<String>,
}

/// Parses a non-negative number of seconds, fractions allowed.
fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if secs < 0.0 {
        return Err("the timeout cannot be negative".into());
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is not a usable timeout"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flexim: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // Nothing useful can still be running (chat's stdin reader is a plain thread), so there is
    // no reason to wait for the runtime's blocking threads.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("flexim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Keygen(args) => keygen(args),
        Command::Send(args) => send(args).await,
        Command::Listen(args) => listen(args).await,
        Command::Chat(args) => chat(args).await,
    }
}

fn keygen(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    let identity = Identity::generate()?;
    identity.save(&args.out)?;
    let key = identity.public_key();
    println!("{}", key.to_hex());
    eprintln!("wrote {}", args.out.display());
    eprintln!("fingerprint: {}", key.fingerprint());
    Ok(ExitCode::SUCCESS)
}

/// Loads the key and logs in, turning failures into messages that say what to do.
async fn connect(conn: &ConnArgs) -> anyhow::Result<Client> {
    let identity = load_identity(conn)?;
    log_in(conn, &identity)
        .await
        .map_err(|e| login_error(conn, e))
}

/// How long `send` keeps trying to log in again after losing its connection: long enough for
/// a server to restart.
const RECONNECT_FOR: Duration = Duration::from_secs(15);

/// Logs in again after a lost connection. A server that is restarting refuses connections
/// (or says it is shutting down) for a moment, so failures of that kind are retried, with
/// growing pauses, for up to [`RECONNECT_FOR`]; anything else (a wrong server key, say) fails
/// at once.
async fn reconnect(conn: &ConnArgs) -> anyhow::Result<Client> {
    let identity = load_identity(conn)?;
    let give_up = tokio::time::Instant::now() + RECONNECT_FOR;
    let mut pause = Duration::from_millis(100);
    loop {
        match log_in(conn, &identity).await {
            Ok(client) => return Ok(client),
            Err(e) if may_pass(&e) && tokio::time::Instant::now() + pause < give_up => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(login_error(conn, e)),
        }
    }
}

/// Whether a login failure may go away by itself: no server listening, a connection cut
/// or timing out, a server shutting down.
fn may_pass(e: &ClientError) -> bool {
    match e {
        ClientError::Connect { .. }
        | ClientError::Upgrade { .. }
        | ClientError::Timeout { .. }
        | ClientError::ClosedDuringHandshake
        | ClientError::Closed
        | ClientError::Io(_)
        | ClientError::WebSocket(_) => true,
        ClientError::Server { status, .. } => *status == status::SHUTTING_DOWN,
        _ => false,
    }
}

/// Loads the key file named on the command line.
fn load_identity(conn: &ConnArgs) -> anyhow::Result<Identity> {
    Identity::load(&conn.key).map_err(|e| match &e {
        KeyFileError::Read { error, .. } if error.kind() == io::ErrorKind::NotFound => anyhow!(
            "{e}; create one with `flexim keygen --out {}`",
            conn.key.display()
        ),
        _ => anyhow!(e),
    })
}

/// Connects and logs in as `identity`.
async fn log_in(conn: &ConnArgs, identity: &Identity) -> Result<Client, ClientError> {
    Client::connect_pinned(
        &conn.server,
        identity,
        conn.alias.as_deref(),
        conn.server_key.as_ref(),
    )
    .await
}

/// A login failure as a message that says what to do.
fn login_error(conn: &ConnArgs, e: ClientError) -> anyhow::Error {
    match &e {
        ClientError::Connect { error, .. } if error.kind() == io::ErrorKind::ConnectionRefused => {
            anyhow!("{e}; is `just serve` running?")
        }
        // These already name the server.
        ClientError::Connect { .. }
        | ClientError::Upgrade { .. }
        | ClientError::Timeout { .. }
        | ClientError::NotFlexim { .. }
        | ClientError::ServerKeyMismatch { .. }
        | ClientError::Endpoint(_) => anyhow!(e),
        _ => anyhow!("cannot log in to {}: {e}", conn.server),
    }
}

/// Explains a connection loss in the middle of a command.
fn lost(client: &Client, e: ClientError) -> anyhow::Error {
    anyhow!("connection to {} lost: {e}", client.endpoint())
}

/// How far a sent message got.
enum Outcome {
    /// The server confirmed it: stored durably (STORED or STORED_LATER) or acknowledged by
    /// the recipient (DELIVERED). The Status says which.
    Confirmed(Status),
    /// The server handed it to the online recipient, whose client has not acknowledged it
    /// within the time allowed. The server keeps it until the recipient's client does.
    Relayed,
}

async fn send(args: SendArgs) -> anyhow::Result<ExitCode> {
    let text = if args.text == "-" {
        let mut text = String::new();
        io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the message from stdin")?;
        // The newline `echo` adds ends the input; it is not part of the message.
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        text
    } else {
        args.text.clone()
    };
    let mut client = connect(&args.conn).await?;
    // The wait for a receipt starts with the first RELAYED and is not extended by a
    // reconnection, so that --wait bounds the whole wait.
    let mut deadline = None;
    let first = match client.send_text(&args.to, &text, &args.flags).await {
        Ok(answer) => settle(&mut client, answer, args.wait, &mut deadline).await,
        Err(e) => Err(e),
    };
    let outcome = match first {
        Ok(outcome) => outcome,
        Err(e) if e.is_connection_lost() => {
            // A message that was relayed but not confirmed lives only in the server's memory,
            // so it is sent again, with the same id: the recipient drops a second copy.
            eprintln!(
                "flexim: connection to {} lost before the message was confirmed ({e}); \
                 logging in again to send it again",
                client.endpoint()
            );
            let unconfirmed = client.take_outbox();
            client = reconnect(&args.conn).await.map_err(|e| {
                e.context("the message was not confirmed, and logging in again failed")
            })?;
            let again = if unconfirmed.is_empty() {
                // The message never left: the connection failed while looking up the
                // recipient.
                match client.send_text(&args.to, &text, &args.flags).await {
                    Ok(answer) => settle(&mut client, answer, args.wait, &mut deadline).await,
                    Err(e) => Err(e),
                }
            } else {
                resend_one(&mut client, unconfirmed, args.wait, &mut deadline).await
            };
            match again {
                Ok(outcome) => outcome,
                Err(e) => return Err(send_error(&client, &args.to, e)),
            }
        }
        Err(e) => return Err(send_error(&client, &args.to, e)),
    };
    // Login notices such as a refused --alias would otherwise go unseen.
    while client.has_queued_events() {
        if let Ok(Event::Status(s)) = client.next_event().await
            && status::is_error(s.status)
        {
            eprintln!("flexim: server: {}", describe_with_code(&s));
        }
    }
    match outcome {
        Outcome::Confirmed(s) if s.status == status::DELIVERED => eprintln!("delivered"),
        Outcome::Confirmed(s) if s.status == status::STORED_LATER => {
            eprintln!(
                "stored (the recipient's connection ended before it acknowledged the message; \
                 it is delivered at the next login)"
            )
        }
        Outcome::Confirmed(s) => eprintln!("{}", describe(&s)),
        Outcome::Relayed => eprintln!("relayed (the recipient has not acknowledged yet)"),
    }
    let _ = client.close().await;
    Ok(ExitCode::SUCCESS)
}

/// Sends the message of `unconfirmed` again on a new connection and waits for it to be
/// confirmed, as [`settle`] does.
async fn resend_one(
    client: &mut Client,
    unconfirmed: flexim_client::Outbox,
    wait: Duration,
    deadline: &mut Option<tokio::time::Instant>,
) -> Result<Outcome, ClientError> {
    let id = unconfirmed.unconfirmed().next().and_then(|m| m.id.clone());
    let answers = client.resend(unconfirmed).await?;
    match (answers.into_iter().next(), id) {
        (Some(answer), _) => settle(client, answer, wait, deadline).await,
        // Nothing was sent again: a receipt that came with the login confirmed it already.
        (None, Some(id)) => {
            let until = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + wait);
            wait_for_receipt(client, &id, until).await
        }
        (None, None) => Ok(Outcome::Relayed),
    }
}

/// Turns the server's answer to a message into an outcome: STORED is final, an error is
/// [`ClientError::Server`], and RELAYED means waiting (until `deadline`, set now if this is
/// the first RELAYED) for the receipt that says the recipient acknowledged it.
async fn settle(
    client: &mut Client,
    answer: Status,
    wait: Duration,
    deadline: &mut Option<tokio::time::Instant>,
) -> Result<Outcome, ClientError> {
    if status::is_error(answer.status) {
        return Err(ClientError::Server {
            status: answer.status,
            payload: answer.payload,
        });
    }
    if answer.status != status::RELAYED {
        return Ok(Outcome::Confirmed(answer));
    }
    match answer.id {
        Some(id) => {
            let until = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + wait);
            wait_for_receipt(client, &id, until).await
        }
        // A server that predates message ids sends no receipts; waiting would be in vain.
        None => Ok(Outcome::Relayed),
    }
}

/// Waits until `deadline` for the receipt (DELIVERED or STORED_LATER) about the message `id`.
/// The connection closing first is [`ClientError::Closed`], so that the caller reconnects.
async fn wait_for_receipt(
    client: &mut Client,
    id: &str,
    deadline: tokio::time::Instant,
) -> Result<Outcome, ClientError> {
    loop {
        let event = match tokio::time::timeout_at(deadline, client.next_event()).await {
            Ok(event) => event?,
            Err(_) => return Ok(Outcome::Relayed),
        };
        match event {
            Event::Receipt { id: about, status } if about == id => {
                return Ok(Outcome::Confirmed(status));
            }
            // The server sends receipts to the key's active session only, which is another
            // one; this one would wait in vain.
            Event::Status(s) if s.status == status::SESSION_EXISTS => {
                eprintln!(
                    "flexim: another session of this key is logged in and gets the receipts; \
                     not waiting for one"
                );
                return Ok(Outcome::Relayed);
            }
            // TAKEN_OVER, SHUTTING_DOWN and the like explain the close that follows.
            Event::Status(s) if status::is_error(s.status) => {
                eprintln!("flexim: server: {}", describe_with_code(&s));
            }
            Event::Closed => return Err(ClientError::Closed),
            // Messages for this user are not acknowledged here, so the server keeps them for
            // a client that shows them.
            _ => {}
        }
    }
}

/// The error `send` exits with.
fn send_error(client: &Client, to: &str, e: ClientError) -> anyhow::Error {
    match e {
        e if e.is_connection_lost() => anyhow!(
            "connection to {} lost before the server confirmed the message: {e}",
            client.endpoint()
        ),
        e @ ClientError::Server { .. } => anyhow!("the server refused the message: {e}"),
        e => anyhow!("cannot send to {to}: {e}"),
    }
}

/// A Status as `name` or `name: payload`.
fn describe(s: &Status) -> String {
    if s.payload.is_empty() {
        status::name(s.status).to_string()
    } else {
        format!("{}: {}", status::name(s.status), s.payload)
    }
}

/// A Status as `name (code): payload`, for notices and errors.
fn describe_with_code(s: &Status) -> String {
    format!("{} ({}): {}", status::name(s.status), s.status, s.payload)
}

const SESSION_EXISTS_HINT: &str = "another session is logged in with this key and receives its \
    messages; use --ghost to take over";

async fn listen(args: ListenArgs) -> anyhow::Result<ExitCode> {
    let mut client = connect(&args.conn).await?;
    if args.ghost {
        match client.ghost().await {
            Ok(answer) => eprintln!("{}", describe(&answer)),
            Err(e) if e.is_connection_lost() => return Err(lost(&client, e)),
            Err(e) => bail!("GHOST failed: {e}"),
        }
    }
    let deadline = args.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut received: u64 = 0;
    // A server that refuses ACK refuses every one; saying so once is enough.
    let mut ack_warned = false;
    loop {
        if args.count.is_some_and(|n| received >= n) {
            let _ = client.close().await;
            return Ok(ExitCode::SUCCESS);
        }
        let event = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, client.next_event()).await {
                Ok(event) => event,
                Err(_) => {
                    let _ = client.close().await;
                    return match args.count {
                        None => Ok(ExitCode::SUCCESS),
                        Some(n) => {
                            eprintln!(
                                "flexim: timed out: {received} of {n} messages arrived within {:?}",
                                args.timeout.unwrap_or_default()
                            );
                            Ok(ExitCode::from(EXIT_TIMEOUT))
                        }
                    };
                }
            },
            None => client.next_event().await,
        };
        match event {
            Ok(Event::Message(message)) => {
                print_line(&if args.json {
                    message.json_line()
                } else {
                    plain_line(&message)
                })?;
                received += 1;
                // Acknowledged only once printed: a message this run does not show stays on
                // the server for the next one.
                if let Some(id) = message.id {
                    match client.ack(&[id]).await {
                        Ok(_) => {}
                        Err(e) if e.is_connection_lost() => return Err(lost(&client, e)),
                        Err(e) => {
                            if !ack_warned {
                                eprintln!(
                                    "flexim: cannot acknowledge messages ({e}); the server \
                                     will deliver them again"
                                );
                                ack_warned = true;
                            }
                        }
                    }
                }
            }
            Ok(Event::Undecryptable { from, reason }) => {
                eprintln!("flexim: a message from {from} could not be decrypted: {reason}");
            }
            Ok(Event::Status(s)) if s.status == status::SESSION_EXISTS => {
                if !args.ghost {
                    eprintln!("flexim: {SESSION_EXISTS_HINT}");
                }
            }
            Ok(Event::Status(s)) => eprintln!("flexim: server: {}", describe_with_code(&s)),
            // Receipts concern messages this key sent, perhaps from another program.
            Ok(Event::Presence { .. } | Event::Receipt { .. } | Event::Other(_)) => {}
            Ok(Event::Closed) => match args.count {
                Some(n) => {
                    bail!("the server closed the connection after {received} of {n} messages")
                }
                None => bail!("the server closed the connection"),
            },
            Err(e) if e.is_connection_lost() => return Err(lost(&client, e)),
            Err(e) => eprintln!("flexim: {e}"),
        }
    }
}

/// Writes one line to stdout and flushes it, so that a reader on a pipe sees it at once.
fn print_line(line: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

/// The plain listen format: `[date] FROM: text`.
fn plain_line(m: &Received) -> String {
    format!("[{}] {}: {}", format_utc(m.date), m.from_text, m.text)
}

/// Splits Unix seconds into UTC civil time: (year, month, day, hour, minute, second).
/// Howard Hinnant's `civil_from_days`, valid for every `i64` day count we can meet.
fn civil_utc(secs: i64) -> (i64, i64, i64, i64, i64, i64) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rem / 3_600, rem % 3_600 / 60, rem % 60)
}

/// `2024-01-31T12:00:00Z`.
fn format_utc(secs: i64) -> String {
    let (y, mo, d, h, mi, s) = civil_utc(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// `12:00:00` (UTC).
fn format_time(secs: i64) -> String {
    let (_, _, _, h, mi, s) = civil_utc(secs);
    format!("{h:02}:{mi:02}:{s:02}")
}

/// What the chat loop does after a line.
#[derive(PartialEq, Eq)]
enum Flow {
    /// Keep going.
    Continue,
    /// Leave the chat.
    Quit,
}

/// The interactive chat's state.
struct Chat {
    /// The connection.
    client: Client,
    /// The current contact: how the user named it, and its key.
    current: Option<(String, PublicKey)>,
    /// Keys whose fingerprint has been shown already.
    seen: HashSet<PublicKey>,
    /// Messages sent in this chat, by id: to whom (as shown) and the start of the text, to
    /// say which message a receipt is about. An entry goes once the message is delivered.
    sent: HashMap<String, (String, String)>,
    /// Whether a failed ACK has been reported, so that a server refusing them is not reported
    /// for every message.
    ack_warned: bool,
}

async fn chat(args: ChatArgs) -> anyhow::Result<ExitCode> {
    let client = connect(&args.conn).await?;
    let me = client.me().clone();
    println!(
        "you are {}{}",
        me.key.fingerprint(),
        aliases_suffix(&me.aliases)
    );
    println!(
        "server  {} at {}",
        client.server().key.fingerprint(),
        client.endpoint()
    );
    let mut chat = Chat {
        client,
        current: None,
        seen: HashSet::from([me.key]),
        sent: HashMap::new(),
        ack_warned: false,
    };
    if let Some(to) = &args.to {
        let result = chat.switch(to).await;
        chat.run(result)?;
    }
    println!("type /help for commands");
    let ended = chat.converse(stdin_lines()).await;
    if ended.is_err() {
        chat.warn_unconfirmed();
    }
    ended?;
    let _ = chat.client.close().await;
    Ok(ExitCode::SUCCESS)
}

/// Lines of stdin, read on a plain thread. A blocking read cannot be cancelled, so it must not
/// live inside the runtime; the thread simply dies with the process. The channel closes at
/// end of input.
fn stdin_lines() -> tokio::sync::mpsc::Receiver<io::Result<String>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            let failed = line.is_err();
            if tx.blocking_send(line).is_err() || failed {
                break;
            }
        }
    });
    rx
}

/// ` (alias1, alias2)` or nothing.
fn aliases_suffix(aliases: &[String]) -> String {
    if aliases.is_empty() {
        String::new()
    } else {
        format!(" ({})", aliases.join(", "))
    }
}

/// The first eight characters of a message id, enough to tell messages apart on screen.
fn short_id(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// The start of a message's text, on one line, for receipts.
fn snippet(text: &str) -> String {
    const MAX: usize = 24;
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.chars().count() > MAX {
        let start: String = line.chars().take(MAX - 1).collect();
        format!("{start}…")
    } else {
        line
    }
}

/// The first eight hex digits of a key, enough to tell contacts apart on screen.
fn short_key(key: &PublicKey) -> String {
    key.to_hex()[..8].to_string()
}

impl Chat {
    /// Reads lines and events until the user leaves (`Ok`) or the connection is lost.
    async fn converse(
        &mut self,
        mut lines: tokio::sync::mpsc::Receiver<io::Result<String>>,
    ) -> anyhow::Result<()> {
        loop {
            // Both futures are cancel-safe (a channel receive, and `next_event`, which keeps
            // partial input in the client), so whichever loses the race loses nothing.
            tokio::select! {
                line = lines.recv() => match line {
                    Some(Ok(line)) => {
                        if self.line(&line).await? == Flow::Quit {
                            return Ok(());
                        }
                    }
                    None => return Ok(()),
                    Some(Err(e)) => return Err(anyhow!(e).context("cannot read stdin")),
                },
                event = self.client.next_event() => self.event(event).await?,
            }
        }
    }

    /// After the chat ended on an error, lists the messages sent here that the server had not
    /// confirmed: those may not have reached their recipients.
    fn warn_unconfirmed(&self) {
        let outbox = self.client.outbox();
        if outbox.is_empty() {
            return;
        }
        println!(
            "* {} sent message(s) not confirmed before the end; they may not have arrived:",
            outbox.len()
        );
        for message in outbox.unconfirmed() {
            let id = message.id.as_deref().unwrap_or_default();
            match self.sent.get(id) {
                Some((to, text)) => println!("*   to {to}: {text}"),
                None => println!("*   message {}", short_id(id)),
            }
        }
    }

    /// Prints a command's error unless the connection is gone, which ends the chat.
    fn run(&self, result: Result<(), ClientError>) -> anyhow::Result<()> {
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.is_connection_lost() => Err(lost(&self.client, e)),
            Err(e) => {
                println!("error: {e}");
                Ok(())
            }
        }
    }

    /// An alias if one is known, else the short key.
    fn name_of(&self, key: &PublicKey) -> String {
        self.client
            .cached_user(key)
            .and_then(|u| u.aliases.first().cloned())
            .unwrap_or_else(|| short_key(key))
    }

    /// Handles one line of input.
    async fn line(&mut self, line: &str) -> anyhow::Result<Flow> {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            return Ok(Flow::Continue);
        }
        if let Some(text) = line.strip_prefix("//") {
            let text = format!("/{text}");
            let result = self.say(&text).await;
            self.run(result)?;
            return Ok(Flow::Continue);
        }
        let Some(command) = line.strip_prefix('/') else {
            let result = self.say(line).await;
            self.run(result)?;
            return Ok(Flow::Continue);
        };
        let (name, rest) = command
            .split_once(char::is_whitespace)
            .map(|(n, r)| (n, r.trim()))
            .unwrap_or((command, ""));
        let result = match (name, rest) {
            ("quit" | "exit", _) => return Ok(Flow::Quit),
            ("help", _) => {
                println!("{CHAT_HELP}");
                Ok(())
            }
            ("to", who) if !who.is_empty() => self.switch(who).await,
            ("msg", args) if args.split_once(char::is_whitespace).is_some() => {
                let (who, text) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
                self.send_to(who, text.trim_start()).await
            }
            ("roster", _) => match self.client.roster().await {
                Ok(users) => {
                    self.print_users(&users);
                    Ok(())
                }
                Err(e) => Err(e),
            },
            ("search", text) if !text.is_empty() => match self.client.search(text).await {
                Ok(users) => {
                    self.print_users(&users);
                    Ok(())
                }
                Err(e) => Err(e),
            },
            ("whois", who) if !who.is_empty() => self.whois(who).await,
            ("register", alias) if !alias.is_empty() => {
                if let Err(e) = validate_alias(alias) {
                    println!("error: {e}");
                    Ok(())
                } else {
                    self.client
                        .register(alias)
                        .await
                        .map(|s| println!("* {}", describe(&s)))
                }
            }
            ("ghost", _) => self
                .client
                .ghost()
                .await
                .map(|s| println!("* {}", describe(&s))),
            ("to" | "msg" | "search" | "whois" | "register", _) => {
                println!("error: /{name} needs an argument; /help lists the commands");
                Ok(())
            }
            _ => {
                println!("error: unknown command /{name}; /help lists the commands");
                Ok(())
            }
        };
        self.run(result)?;
        Ok(Flow::Continue)
    }

    /// Sends a plain line to the current contact.
    async fn say(&mut self, text: &str) -> Result<(), ClientError> {
        let Some((_, key)) = self.current.clone() else {
            println!("error: no current contact; use /to WHO first, or /msg WHO TEXT");
            return Ok(());
        };
        let answer = self.client.send_text(&key.to_hex(), text, &[]).await?;
        let name = self.name_of(&key);
        self.note_sent(&answer, name, text);
        println!("  ({})", status::name(answer.status));
        Ok(())
    }

    /// `/msg WHO TEXT`.
    async fn send_to(&mut self, who: &str, text: &str) -> Result<(), ClientError> {
        let answer = self.client.send_text(who, text, &[]).await?;
        self.note_sent(&answer, who.to_string(), text);
        println!("  ({} to {who})", status::name(answer.status));
        Ok(())
    }

    /// Remembers a sent message so that its receipts can name it.
    fn note_sent(&mut self, answer: &Status, to: String, text: &str) {
        if let Some(id) = &answer.id {
            self.sent.insert(id.clone(), (to, snippet(text)));
        }
    }

    /// Shows a receipt: which message it is about, if it was sent here, and what happened.
    fn show_receipt(&mut self, id: &str, receipt: &Status) {
        let delivered = receipt.status == status::DELIVERED;
        // STORED_LATER may still be followed by DELIVERED, once the contact reads it.
        let about = if delivered {
            self.sent.remove(id)
        } else {
            self.sent.get(id).cloned()
        };
        match (about, delivered) {
            (Some((to, text)), true) => println!("  (delivered to {to}: {text})"),
            (Some((to, text)), false) => println!("  (stored for {to}: {text})"),
            // A message sent by another program with this key, or by an earlier chat.
            (None, true) => println!("  (message {} delivered)", short_id(id)),
            (None, false) => println!("  (message {} stored)", short_id(id)),
        }
    }

    /// `/to WHO`: makes WHO the current contact and shows its fingerprint.
    async fn switch(&mut self, who: &str) -> Result<(), ClientError> {
        let key = self.client.resolve(who).await?;
        // A bare key needs no lookup, but its alias and presence make the prompt friendlier;
        // a key the server does not know yet is fine (messages to it are stored).
        if self.client.cached_user(&key).is_none() {
            match self.client.get_user(&key.to_hex()).await {
                Ok(_) => {}
                Err(e) if e.server_status() == Some(status::NO_SUCH_USER) => {
                    println!("* {who} is not known to the server yet; messages will wait for it");
                }
                Err(e) => return Err(e),
            }
        }
        self.seen.insert(key);
        println!(
            "* talking to {} ({}), fingerprint {}",
            who,
            self.name_of(&key),
            key.fingerprint()
        );
        self.current = Some((who.to_string(), key));
        Ok(())
    }

    /// `/whois WHO`.
    async fn whois(&mut self, who: &str) -> Result<(), ClientError> {
        let user = self.client.get_user(who).await?;
        print_user_details(&user);
        Ok(())
    }

    /// Prints a roster or search result.
    fn print_users(&self, users: &[User]) {
        if users.is_empty() {
            println!("  (nobody)");
        }
        for user in users {
            let presence = match user.online {
                Some(true) => "online ",
                Some(false) => "offline",
                None => "       ",
            };
            let names = if user.aliases.is_empty() {
                "-".to_string()
            } else {
                user.aliases.join(", ")
            };
            println!("  {presence} {} {names}", short_key(&user.key));
        }
    }

    /// Handles one event from the server.
    async fn event(&mut self, event: Result<Event, ClientError>) -> anyhow::Result<()> {
        match event {
            Ok(Event::Message(m)) => self.show_message(m).await?,
            Ok(Event::Undecryptable { from, reason }) => {
                println!("* a message from {from} could not be decrypted: {reason}");
            }
            Ok(Event::Presence { key, online }) => {
                let state = if online { "online" } else { "offline" };
                println!("* {} is {state}", self.name_of(&key));
            }
            Ok(Event::Receipt { id, status }) => self.show_receipt(&id, &status),
            Ok(Event::Status(s)) => match s.status {
                status::SESSION_EXISTS => println!(
                    "* another session is logged in with this key and receives its messages; \
                     type /ghost to take over"
                ),
                status::TAKEN_OVER => {
                    println!("* this session was taken over by a newer login of the same key")
                }
                status::TOO_SLOW => println!(
                    "* the server dropped this session for reading too slowly; \
                     reconnect to get the rest of your messages"
                ),
                _ if status::is_error(s.status) => {
                    println!("* server error: {}", describe_with_code(&s))
                }
                _ => println!("* {}", describe(&s)),
            },
            // Answers to requests nobody waits for any more; nothing worth showing.
            Ok(Event::Other(_)) => {}
            Ok(Event::Closed) => {
                bail!(
                    "connection to {} lost: the server closed the connection",
                    self.client.endpoint()
                )
            }
            Err(e) => self.run(Err(e))?,
        }
        Ok(())
    }

    /// Prints an incoming message, with the sender's fingerprint the first time.
    async fn show_message(&mut self, m: Received) -> anyhow::Result<()> {
        if self.seen.insert(m.from) {
            // Learn the sender's alias for display; a failed lookup only costs the alias.
            if self.client.cached_user(&m.from).is_none()
                && let Err(e) = self.client.get_user(&m.from.to_hex()).await
                && e.is_connection_lost()
            {
                return Err(lost(&self.client, e));
            }
            println!(
                "* new contact {}: fingerprint {}",
                self.name_of(&m.from),
                m.from.fingerprint()
            );
        }
        let name = if PublicKey::from_hex(&m.from_text).is_some() {
            self.name_of(&m.from)
        } else {
            m.from_text.clone()
        };
        println!("[{}] {name}: {}", format_time(m.date), m.text);
        // Shown, so the server may forget it (and tell the sender it was delivered).
        if let Some(id) = m.id {
            match self.client.ack(&[id]).await {
                Ok(_) => {}
                Err(e) if e.is_connection_lost() => return Err(lost(&self.client, e)),
                Err(e) => {
                    if !self.ack_warned {
                        println!(
                            "* cannot acknowledge messages ({e}); the server will deliver \
                             them again at the next login"
                        );
                        self.ack_warned = true;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Prints everything known about a user.
fn print_user_details(user: &User) {
    let online = match user.online {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    };
    println!("  key          {}", user.key.to_hex());
    println!("  fingerprint  {}", user.key.fingerprint());
    println!(
        "  aliases      {}",
        if user.aliases.is_empty() {
            "-".to_string()
        } else {
            user.aliases.join(", ")
        }
    );
    println!("  online       {online}");
    if user.last_seen > 0 {
        println!("  last seen    {}", format_utc(user.last_seen));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(-1), "1969-12-31T23:59:59Z");
        assert_eq!(format_time(1_700_000_000), "22:13:20");
    }

    #[test]
    fn plain_line_format() {
        let m = Received {
            from: PublicKey([1; 32]),
            from_text: "alice".into(),
            to: "bob".into(),
            date: 0,
            flags: vec![],
            text: "hi".into(),
            id: Some("x".into()),
        };
        assert_eq!(plain_line(&m), "[1970-01-01T00:00:00Z] alice: hi");
    }

    #[test]
    fn timeouts_parse() {
        assert_eq!(parse_secs("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_secs("0"), Ok(Duration::ZERO));
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("soon").is_err());
        assert!(parse_secs("inf").is_err());
    }

    #[test]
    fn listen_arguments() {
        let cli = Cli::try_parse_from([
            "flexim",
            "listen",
            "--key",
            "k",
            "--count",
            "2",
            "--timeout",
            "3",
            "--json",
        ])
        .unwrap();
        let Command::Listen(args) = cli.command else {
            panic!("not listen");
        };
        assert_eq!(args.count, Some(2));
        assert_eq!(args.timeout, Some(Duration::from_secs(3)));
        assert!(args.json && !args.ghost);
        assert!(Cli::try_parse_from(["flexim", "listen", "--key", "k", "--count", "0"]).is_err());
    }
}
