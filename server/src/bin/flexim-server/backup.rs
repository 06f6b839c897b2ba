//! `flexim-server backup` and `restore`: the backup is made by the running server (only it
//! may read its store consistently while writing), asked through its admin listener with the
//! token from the data directory; the restore is done here, with the server stopped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use flexim_server::StoreChoice;
use flexim_server::admin::TOKEN_FILE;

use super::Cli;

/// How long the backup may take before this gives up waiting (the server finishes it anyway).
const BACKUP_WAIT: Duration = Duration::from_secs(600);

/// Asks the server at `cli.admin` for a backup at `to`; returns what it said.
pub(crate) fn run(cli: &Cli, to: &Path) -> anyhow::Result<String> {
    let Some(admin) = cli.admin else {
        bail!(
            "a backup is made by the running server through its admin listener: give --admin \
             ADDR as the server has it (and --data, for its token)"
        );
    };
    let token_file = cli.data.join(TOKEN_FILE);
    let token = std::fs::read_to_string(&token_file)
        .with_context(|| format!("cannot read the admin token {}", token_file.display()))?;
    let to = std::path::absolute(to).context("cannot make the backup path absolute")?;
    let path = to.to_str().context("the backup path is not UTF-8")?;
    let mut stream = TcpStream::connect_timeout(&admin, Duration::from_secs(5)).with_context(
        || format!("cannot reach the admin listener at {admin} (is the server running with --admin {admin}?)"),
    )?;
    stream.set_read_timeout(Some(BACKUP_WAIT))?;
    let request = format!(
        "POST /admin/backup HTTP/1.1\r\nHost: {admin}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{path}",
        token.trim(),
        path.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .context("the server's answer did not come")?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let ok = head.lines().next().is_some_and(|l| l.contains(" 200 "));
    match ok {
        true => Ok(body.trim().to_string()),
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
