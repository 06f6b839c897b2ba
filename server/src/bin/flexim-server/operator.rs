//! What an operator runs against a server: `backup` and the `admin` actions go to the
//! running server's admin listener (`--admin`), with the token from the data directory
//! (only the server may read its store consistently while writing); `restore` is done here,
//! with the server stopped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use flexim_server::StoreChoice;
use flexim_server::admin::TOKEN_FILE;

use super::Cli;

/// The admin listener's actions.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum AdminAction {
    /// The sessions logged in: key, aliases, transport, address, since (JSON).
    Sessions,
    /// The users the store knows, most recently seen first: key, aliases, last seen, whether
    /// online and whether blocked (JSON).
    Users {
        /// Most users listed.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// One user by key or alias: aliases, last seen, stored messages and sessions (JSON).
    User {
        /// A key (64 hex digits) or an alias.
        who: String,
    },
    /// Block a key server-wide: its sessions end (Status -31) and it cannot log in. Messages
    /// already stored for it stay (purge deletes them).
    Block {
        /// A key (64 hex digits; it may never have logged in) or an alias.
        who: String,
    },
    /// Let a blocked key log in again.
    Unblock {
        /// A key (64 hex digits) or an alias.
        who: String,
    },
    /// Take an alias from the user who holds it; anyone may register it afterwards. That
    /// user's sessions end, so that they log in again without it.
    Revoke {
        /// The alias.
        alias: String,
    },
    /// Give an alias to another user (created if never seen), whoever holds it and however
    /// many aliases that user has. The sessions of both end, so that each logs in again
    /// with the aliases it has now.
    Reassign {
        /// The alias.
        alias: String,
        /// Its new holder: a key (64 hex digits) or another alias of that user.
        to: String,
    },
    /// Delete every message stored for a user (their senders get no receipt).
    Purge {
        /// The user's key (64 hex digits).
        key: String,
    },
    /// Sessions, connections, queued bytes, the store's writes and the live limits (JSON).
    Stats,
    /// Take no new sessions (a login is told -17 and /readyz answers 503) while those open
    /// go on: before taking the server out of a load balancer's rotation.
    Drain,
    /// Take new sessions again after a drain.
    Resume,
    /// Stop the server as SIGTERM does: connections told and drained, then it exits.
    Stop,
}

/// How long an action (a backup, mostly) may take before this gives up waiting (the server
/// finishes it anyway).
const BACKUP_WAIT: Duration = Duration::from_secs(600);

/// Asks the server at `cli.admin` for a backup at `to`; returns what it said.
pub(crate) fn backup(cli: &Cli, to: &Path) -> anyhow::Result<String> {
    let to = std::path::absolute(to).context("cannot make the backup path absolute")?;
    let path = to.to_str().context("the backup path is not UTF-8")?;
    request(cli, "POST", "/admin/backup", path)
}

/// Runs an admin action on the server at `cli.admin`; returns what it said.
pub(crate) fn admin(cli: &Cli, action: &AdminAction) -> anyhow::Result<String> {
    let post = |path: String, body: &str| request(cli, "POST", &path, body);
    match action {
        AdminAction::Sessions => request(cli, "GET", "/admin/sessions", ""),
        AdminAction::Users { limit } => {
            request(cli, "GET", &format!("/admin/users?limit={limit}"), "")
        }
        AdminAction::User { who } => {
            request(cli, "GET", &format!("/admin/user/{}", path_part(who)?), "")
        }
        AdminAction::Block { who } => post(format!("/admin/block/{}", path_part(who)?), ""),
        AdminAction::Unblock { who } => post(format!("/admin/unblock/{}", path_part(who)?), ""),
        AdminAction::Revoke { alias } => post(format!("/admin/revoke/{}", path_part(alias)?), ""),
        AdminAction::Reassign { alias, to } => post(
            format!("/admin/reassign/{}", path_part(alias)?),
            path_part(to)?,
        ),
        AdminAction::Purge { key } => post(format!("/admin/purge/{}", path_part(key)?), ""),
        AdminAction::Stats => request(cli, "GET", "/admin/stats", ""),
        AdminAction::Drain => post("/admin/drain".into(), ""),
        AdminAction::Resume => post("/admin/resume".into(), ""),
        AdminAction::Stop => post("/admin/stop".into(), ""),
    }
}

/// `who` as one segment of a path: aliases and keys are letters, digits, `-`, `_` and `.`.
fn path_part(who: &str) -> anyhow::Result<&str> {
    let fits = !who.is_empty()
        && who
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    match fits {
        true => Ok(who),
        false => bail!("{who:?} is not a key or an alias"),
    }
}

/// One HTTP request to the admin listener with the token; the body of a 200 answer, or an
/// error with the server's words.
fn request(cli: &Cli, method: &str, path: &str, body: &str) -> anyhow::Result<String> {
    let Some(admin) = cli.admin.0 else {
        bail!(
            "this goes through the running server's admin listener, and --admin is off: give \
             --admin ADDR as the server has it (and --data, for its token)"
        );
    };
    let token_file = cli.data.join(TOKEN_FILE);
    let token = std::fs::read_to_string(&token_file)
        .with_context(|| format!("cannot read the admin token {}", token_file.display()))?;
    let mut stream = TcpStream::connect_timeout(&admin, Duration::from_secs(5)).with_context(
        || format!("cannot reach the admin listener at {admin} (is the server running with --admin {admin}?)"),
    )?;
    stream.set_read_timeout(Some(BACKUP_WAIT))?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        token.trim(),
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .context("the server's answer did not come")?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let ok = head.lines().next().is_some_and(|l| l.contains(" 200 "));
    match ok {
        true => Ok(body.trim_end().to_string()),
        false => bail!("{}", body.trim()),
    }
}

/// Puts the backup at `from` back as the embedded store of `cli.data`.
pub(crate) fn restore(cli: &Cli, from: &Path) -> anyhow::Result<String> {
    if cli.store != StoreChoice::Embedded {
        bail!("restore puts back the embedded store; this server's store is Redis");
    }
    std::fs::create_dir_all(&cli.data)
        .with_context(|| format!("cannot create {}", cli.data.display()))?;
    let store = cli.data.join("flexim.redb");
    let held = flexim_server::store::restore_backup(from, &store)
        .with_context(|| format!("cannot restore {}", from.display()))?;
    Ok(format!(
        "restored {} users and {} stored messages from {} into {}; start the server",
        held.users,
        held.stored,
        from.display(),
        store.display()
    ))
}
