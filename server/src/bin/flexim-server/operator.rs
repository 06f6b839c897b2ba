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

use super::{AdminAction, Cli};

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
    match action {
        AdminAction::Sessions => request(cli, "GET", "/admin/sessions", ""),
        AdminAction::Stats => request(cli, "GET", "/admin/stats", ""),
        AdminAction::User { who } => {
            request(cli, "GET", &format!("/admin/user/{}", path_part(who)?), "")
        }
        AdminAction::Purge { key } => request(
            cli,
            "POST",
            &format!("/admin/purge/{}", path_part(key)?),
            "",
        ),
        AdminAction::Stop => request(cli, "POST", "/admin/stop", ""),
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
    let Some(admin) = cli.admin else {
        bail!(
            "this goes through the running server's admin listener: give --admin ADDR as the \
             server has it (and --data, for its token)"
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
