//! `flexim`: the command-line client (key generation, one-shot send, listen, interactive chat).
//!
//! Each command is a module; all of them drive `flexim_client::Client`, and through it the
//! protocol engine shared with the browser client. This file holds the command line itself.

mod chat;
mod connect;
mod format;
mod listen;
mod pins;
mod requests;
mod room;
mod send;
mod trust;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use flexim_client::Identity;
use flexim_client::protocol::PublicKey;

pub(crate) const EXIT_TIMEOUT: u8 = 3;

const MAIN_EXAMPLES: &str = "\
Examples:
  flexim keygen --out alice.key
  flexim send --key alice.key --to bob 'hello bob'
  flexim listen --key bob.key --json --count 1 --timeout 10
  flexim chat --key alice.key --alias alice --to bob
  flexim trust --key alice.key bob       # accept bob's new key, once compared
  FLEXIM_SERVER=ws://127.0.0.1:8080/ws FLEXIM_KEY=alice.key flexim chat
  flexim chat --server wss://chat.example.org/ws --key alice.key
  flexim listen --server wss://10.0.0.5:8443/ws --ca my-ca.pem --key bob.key

Keys pinned on first use (as ssh does): every server's key in `known_servers` and every
contact's key in `contacts`, both next to the key file (--known-servers, --contacts). A
server whose key changed is refused before anything about you is sent to it; a contact whose
key changed is refused until you accept the new key with `flexim trust`.";

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

const TRUST_EXAMPLES: &str = "\
Examples:
  flexim trust --key alice.key bob
  flexim trust --key alice.key --new-key 3f9a...e1 bob   # only if the server names that key

When the server names another key for an alias than the one pinned for it (in `contacts`,
next to the key file), `send`, `chat` and `listen` refuse that alias and show both
fingerprints. If the contact really made a new key, compare the new fingerprint with them
out of band (in person, by phone), then run `flexim trust ALIAS`: the key the server names
now becomes the pin. With --new-key, only that key is accepted, so a key that changed again
since you compared is refused. The accepted key is printed on stdout.";

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

pub(crate) const CHAT_HELP: &str = "\
commands:
  /to WHO            talk to WHO (an alias or a key) from now on; shows its fingerprint
  /msg WHO TEXT      send TEXT to WHO once
  /roster            list your contacts (the users you accepted) with their presence
  /search TEXT       list the discoverable users whose alias contains TEXT
  /whois WHO         show WHO's key, fingerprint and presence
  /register ALIAS    claim ALIAS for your key
  /trust ALIAS       accept the new key the server names for ALIAS (compare it first)
  /ghost             make this the active session of your key
  /ask WHO           ask WHO to talk (a few messages wait in their requests box until then)
  /requests          list the strangers who asked to talk
  /accept WHO        accept WHO's request (an alias, a key or the request's id)
  /decline WHO       decline WHO's request
  /block WHO         refuse everything from WHO;  /unblock WHO  undoes it
  /room ...          rooms: create, invite, remove, accept, leave, members, say (/room alone for help)
  /rooms             your rooms and invitations
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
    /// Accept the new key the server names for a contact's alias.
    #[command(after_help = TRUST_EXAMPLES)]
    Trust(TrustArgs),
    /// List the requests box (strangers who asked to talk), and answer one: accept, decline,
    /// block; or ask someone to talk, or choose whether SEARCH finds you.
    #[command(after_help = REQUESTS_EXAMPLES)]
    Requests(RequestsArgs),
    /// Rooms, encrypted with MLS: create one, invite, remove, accept an invitation, leave, list
    /// the members with the room's safety number, send.
    #[command(after_help = ROOM_EXAMPLES)]
    Room(RoomArgs),
}

/// Options of `room`.
#[derive(Args, Debug)]
struct RoomArgs {
    /// Server and key.
    #[command(flatten)]
    conn: ConnArgs,
    /// What to do: create | list | invite ROOM WHO | remove ROOM WHO | accept ROOM |
    /// leave ROOM | members ROOM | say ROOM TEXT...
    #[arg(value_name = "ACTION", num_args = 0.., trailing_var_arg = true)]
    action: Vec<String>,
}

const ROOM_EXAMPLES: &str = "\
examples:
  ROOM=$(flexim room -k alice.key create)      create a room; its id is printed
  flexim room -k alice.key invite $ROOM bob    add bob (he must have logged in once)
  flexim room -k bob.key accept $ROOM          bob accepts the invitation
  flexim room -k alice.key say $ROOM hello all
  flexim room -k alice.key members $ROOM       members, fingerprints, safety number
  flexim room -k alice.key remove $ROOM bob
  flexim listen -k bob.key                     room messages are printed with #ROOM

A room's secrets live in KEYFILE.rooms next to the key file (keep it as private as the key).
ROOM may be the start of the id of one of your rooms. Compare the safety number of `members`
with the other members out of band: equal numbers mean the same members with the same keys.";

/// Options of `requests`.
#[derive(Args, Debug)]
struct RequestsArgs {
    /// Server and key.
    #[command(flatten)]
    conn: ConnArgs,
    /// Ask WHO (an alias or a key) to talk; until they accept, a few of your messages wait in
    /// their requests box.
    #[arg(long, value_name = "WHO", group = "action")]
    ask: Option<String>,
    /// Accept the request of WHO (an alias, a key, or the conversation id of its request).
    #[arg(long, value_name = "WHO", group = "action")]
    accept: Option<String>,
    /// Decline the request of WHO; its messages are refused from now on.
    #[arg(long, value_name = "WHO", group = "action")]
    decline: Option<String>,
    /// Block WHO: nothing from them reaches you, and they do not see you online.
    #[arg(long, value_name = "WHO", group = "action")]
    block: Option<String>,
    /// Undo a block or a decline of WHO.
    #[arg(long, value_name = "WHO", group = "action")]
    unblock: Option<String>,
    /// Whether SEARCH finds you by your aliases (off until you turn it on).
    #[arg(long, value_name = "on|off")]
    discoverable: Option<requests::OnOff>,
}

const REQUESTS_EXAMPLES: &str = "\
examples:
  flexim requests -k alice.key                  list who asked to talk
  flexim requests -k alice.key --accept bob     accept bob's request
  flexim requests -k alice.key --block 3f2a...  block a key
  flexim requests -k alice.key --ask carol      ask carol to talk
  flexim requests -k alice.key --discoverable on";

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
    /// WebSocket, or a wss:// URL such as wss://chat.example.org/ws for WebSocket over TLS.
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
    /// prints it at start). It overrides the key pinned for the address, and once the server
    /// proves it, it is pinned in its place. Without it, the pinned key is required, and the
    /// first server to answer at a new address is pinned.
    #[arg(long, env = "FLEXIM_SERVER_KEY", value_name = "HEX", value_parser = parse_key)]
    server_key: Option<PublicKey>,
    /// For a wss:// server whose certificate comes from a private CA: that CA's certificate
    /// (PEM). Only it is trusted then; without it, the public web's certificate authorities
    /// (Mozilla's list, built in) are.
    #[arg(long, env = "FLEXIM_CA", value_name = "FILE")]
    ca: Option<PathBuf>,
    /// The servers' keys, pinned on first use: one `ADDRESS KEY` line per server address
    /// [default: known_servers next to the key file].
    #[arg(long, env = "FLEXIM_KNOWN_SERVERS", value_name = "FILE")]
    known_servers: Option<PathBuf>,
    /// The contacts' keys, pinned on first use: one `SERVER-KEY ALIAS KEY` line per alias
    /// [default: contacts next to the key file].
    #[arg(long, env = "FLEXIM_CONTACTS", value_name = "FILE")]
    contacts: Option<PathBuf>,
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

/// Options of `trust`.
#[derive(Args, Debug)]
struct TrustArgs {
    /// Server and key.
    #[command(flatten)]
    conn: ConnArgs,
    /// Accept only this key (64 hex digits, as the refusal shows it): if the server names
    /// another one now, nothing is changed.
    #[arg(long, value_name = "HEX", value_parser = parse_key)]
    new_key: Option<PublicKey>,
    /// The contact's alias.
    #[arg(value_name = "ALIAS")]
    contact: String,
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
        Command::Send(args) => send::run(args).await,
        Command::Listen(args) => listen::run(args).await,
        Command::Chat(args) => chat::run(args).await,
        Command::Trust(args) => trust::run(args).await,
        Command::Requests(args) => requests::run(args).await,
        Command::Room(args) => room::run(args).await,
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
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
