//! Where the command line keeps the keys it pinned, and what it says about them.
//!
//! The files are `known_servers` and `contacts` next to the key file unless `--known-servers`
//! and `--contacts` say otherwise (flexim_client::pins has their format). The logic of
//! contacts' pins is the engine's; this module only loads the file into it before the login,
//! saves it when the engine says the pins changed, and words the refusals.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use flexim_client::pins::{CONTACTS, ContactsFile, KNOWN_SERVERS, KnownServer, KnownServers};
use flexim_client::protocol::PublicKey;
use flexim_client::{Client, ContactPins, Endpoint, KeyChange, SavedRooms};

use crate::ConnArgs;

/// The pin files of one command, and the server whose contacts the engine holds.
pub(crate) struct Pins {
    /// The servers' keys.
    pub(crate) known: KnownServers,
    /// The contacts' keys.
    pub(crate) contacts: ContactsFile,
    /// The address, as its key is pinned.
    endpoint: Endpoint,
    /// The key pinned for the address before this command, if any.
    pub(crate) before: Option<KnownServer>,
    /// The server key whose contacts' pins the engine holds, once logged in.
    server: Option<PublicKey>,
    /// The rooms' state: `KEYFILE.rooms` (one per identity, since it holds its groups' secrets).
    rooms: PathBuf,
}

impl Pins {
    /// Opens the pin files named on the command line (or next to the key file).
    pub(crate) fn open(conn: &ConnArgs) -> anyhow::Result<Pins> {
        let endpoint = Endpoint::parse(&conn.server).map_err(|e| anyhow!(e))?;
        let known_path = conn
            .known_servers
            .clone()
            .unwrap_or_else(|| flexim_client::pins::next_to(&conn.key, KNOWN_SERVERS));
        let known = KnownServers::load(&known_path)?;
        let contacts = conn
            .contacts
            .clone()
            .unwrap_or_else(|| flexim_client::pins::next_to(&conn.key, CONTACTS));
        Ok(Pins {
            before: known.get(&endpoint),
            known,
            contacts: ContactsFile::new(contacts),
            endpoint,
            server: None,
            rooms: rooms_path(&conn.key),
        })
    }

    /// The server key to insist on: `--server-key`, else the one pinned for the address.
    pub(crate) fn expected(&self, conn: &ConnArgs) -> Option<PublicKey> {
        conn.server_key.or(self.before.map(|k| k.key))
    }

    /// The contacts' pins for the server key expected, for the engine before the login.
    pub(crate) fn contacts_for(&self, server: Option<PublicKey>) -> anyhow::Result<ContactPins> {
        Ok(match server {
            Some(key) => self.contacts.load(&key)?,
            None => ContactPins::new(),
        })
    }

    /// After the login: pins the server's key if it is new here (or was given with
    /// `--server-key`), saying so, and gives the engine the contacts' pins of a server met
    /// for the first time at this address (it may be known by another).
    pub(crate) fn logged_in(&mut self, client: &mut Client, conn: &ConnArgs) -> anyhow::Result<()> {
        let key = client.server().key;
        let pinned = self.before.map(|k| k.key);
        if pinned != Some(key) {
            let replacing = match pinned {
                Some(old) => format!(
                    " (given with --server-key, replacing {})",
                    old.fingerprint()
                ),
                None if conn.server_key.is_some() => " (given with --server-key)".to_string(),
                None => String::new(),
            };
            match self.known.remember(&self.endpoint, key) {
                Ok(()) => eprintln!(
                    "flexim: pinned server key {} for {} in {}{replacing}",
                    key.fingerprint(),
                    self.endpoint.pin_name(),
                    self.known.path().display()
                ),
                Err(e) => eprintln!("flexim: warning: the server's key is not remembered: {e}"),
            }
        }
        if pinned.is_none() && conn.server_key.is_none() {
            client.restore_contact_pins(self.contacts.load(&key)?);
        }
        self.server = Some(key);
        Ok(())
    }

    /// The contacts file.
    pub(crate) fn contacts_path(&self) -> &Path {
        self.contacts.path()
    }

    /// Saves the contacts' pins if the engine learnt or accepted one. A failure is reported
    /// and not fatal: the pins stay right in this run, and are learnt again next time.
    pub(crate) fn save(&self, client: &mut Client) {
        let Some(server) = self.server else {
            return;
        };
        if client.take_pins_changed()
            && let Err(e) = self.contacts.save(&server, client.contact_pins())
        {
            eprintln!("flexim: warning: contacts' keys not saved: {e}");
        }
        self.save_rooms(client);
    }

    /// The rooms' state saved by an earlier run, if any.
    pub(crate) fn load_rooms(&self) -> anyhow::Result<Option<SavedRooms>> {
        match std::fs::read(&self.rooms) {
            Ok(bytes) => Ok(Some(
                SavedRooms::from_bytes(&bytes)
                    .map_err(|e| anyhow!("{}: {e}", self.rooms.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow!("cannot read {}: {e}", self.rooms.display())),
        }
    }

    /// Saves the rooms' state if it changed: written to a new file readable by its owner only,
    /// then renamed over the old one, so that a crash leaves one whole state or the other.
    /// Losing it loses the rooms' keys, so a failure is reported loudly.
    pub(crate) fn save_rooms(&self, client: &mut Client) {
        let Some(saved) = client.take_saved_rooms() else {
            return;
        };
        let written = saved
            .map_err(|e| e.to_string())
            .and_then(|s| write_private(&self.rooms, &s.to_bytes()).map_err(|e| e.to_string()));
        if let Err(e) = written {
            eprintln!(
                "flexim: warning: the rooms' keys were not saved to {}: {e}",
                self.rooms.display()
            );
        }
    }
}

/// The refusal of a server whose key is not the one pinned for it, before anything about the
/// user was sent.
pub(crate) fn server_changed(
    pins: &Pins,
    conn: &ConnArgs,
    pinned: &PublicKey,
    got: &PublicKey,
) -> anyhow::Error {
    let addr = pins.endpoint.pin_name();
    let presents = format!("the server at {addr} presents key {}, ", got.fingerprint());
    let refusing = "Refusing to log in: nothing about you was sent to it.";
    match (conn.server_key, pins.before) {
        (Some(_), _) => anyhow!(
            "{presents}not the key given with --server-key ({}). {refusing}",
            pinned.fingerprint()
        ),
        (None, Some(known)) => anyhow!(
            "{presents}but you pinned {} for it on first use in {} (line {}). If the operator \
             re-installed the server, compare the new fingerprint with them out of band, then \
             remove line {} from that file (or run once with --server-key {}); otherwise \
             someone may be in the middle. {refusing}",
            pinned.fingerprint(),
            pins.known.path().display(),
            known.line,
            known.line,
            got.to_hex()
        ),
        (None, None) => anyhow!(
            "{presents}not the key {} it had. {refusing}",
            pinned.fingerprint()
        ),
    }
}

/// What the command line says about a contact whose key changed; `accept` is how to accept
/// the new key in the current program (a command line, or a chat command).
pub(crate) fn contact_changed(change: &KeyChange, contacts: &Path, accept: &str) -> String {
    format!(
        "the server says {alias} now has the key\n    {new}\nbut you pinned\n    {old}\nfor \
         {alias} in {file}. If {alias} made a new key, compare its fingerprint with {alias} \
         out of band, then accept it with `{accept}`; otherwise someone (the server, or \
         someone in the middle) may be posing as {alias}",
        alias = change.alias,
        new = change.presented.fingerprint(),
        old = change.pinned.fingerprint(),
        file = contacts.display(),
    )
}

/// The `flexim trust` command that accepts `change`, with the options of this run.
pub(crate) fn trust_command(change: &KeyChange, conn: &ConnArgs) -> String {
    let mut line = format!(
        "flexim trust --server {} --key {}",
        conn.server,
        conn.key.display()
    );
    for (flag, path) in [
        ("--known-servers", &conn.known_servers),
        ("--contacts", &conn.contacts),
    ] {
        if let Some(path) = path {
            line.push_str(&format!(" {flag} {}", path.display()));
        }
    }
    line.push_str(&format!(
        " --new-key {} {}",
        change.presented.to_hex(),
        change.alias
    ));
    line
}

/// Where the rooms' state of the key file `key` lives: `KEYFILE.rooms`.
fn rooms_path(key: &Path) -> PathBuf {
    let mut name = key.as_os_str().to_owned();
    name.push(".rooms");
    PathBuf::from(name)
}

/// Writes `bytes` to `path` through a temporary file of mode 0600, renamed into place.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
