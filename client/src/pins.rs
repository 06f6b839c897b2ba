//! The command line's memory of keys, in two files next to the key file (docs/PROTOCOL.md §10):
//!
//! - `known_servers`: each server's key, pinned on first use, one `ADDRESS KEY` line per server
//!   address as [`Endpoint::pin_name`] writes it;
//! - `contacts`: each contact's key, pinned on first use by the engine, one
//!   `SERVER-KEY ALIAS KEY` line per alias and server (an alias belongs to one server's
//!   directory, which its key names whichever address it is reached by).
//!
//! Both are in the [`flexim_session::pinfile`] format, written atomically (a temporary file
//! renamed over the old one, so that a crash leaves the old file or the new one, never half of
//! one) and readable by their owner only (mode 0600). Each write reads the file again first and
//! changes only its own lines, so that two programs using one file lose little to each other.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use flexim_protocol::PublicKey;
use flexim_protocol::keys::alias_key;
use flexim_session::ContactPins;
use flexim_session::pinfile::{self, PinFileError, PinLine};

use crate::endpoint::Endpoint;

/// The file name of the known servers, next to the key file by default.
pub const KNOWN_SERVERS: &str = "known_servers";
/// The file name of the contacts' pins, next to the key file by default.
pub const CONTACTS: &str = "contacts";

/// The comment at the top of `known_servers`.
const SERVERS_HEADER: &str = "flexim known servers: ADDRESS KEY, one line per server address, \
pinned on first use.\nA server whose key changed is refused; remove its line only after \
comparing the new key's fingerprint with the server's operator.";

/// The comment at the top of `contacts`.
const CONTACTS_HEADER: &str = "flexim contacts: SERVER-KEY ALIAS KEY, one line per alias of \
each server, pinned on first use.\nA contact whose key changed is refused; accept a new key \
with `flexim trust ALIAS` after comparing its fingerprint with the contact.";

/// Why a pin file could not be read or written. Messages include their cause, so no variant
/// exposes a `source()` (chain reporters would print it twice).
#[derive(Debug, thiserror::Error)]
pub enum PinStoreError {
    /// The file exists but could not be read.
    #[error("cannot read {}: {error}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system reported.
        error: io::Error,
    },
    /// The file was read but is not a pin file of its kind.
    #[error("{} is damaged ({error}); fix or remove that line", .path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        error: PinFileError,
    },
    /// The file could not be written.
    #[error("cannot write {}: {error}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What the operating system reported.
        error: io::Error,
    },
}

/// The file `name` in the directory of `key_file`: where the pins are kept by default.
pub fn next_to(key_file: &Path, name: &str) -> PathBuf {
    match key_file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(name),
        _ => PathBuf::from(name),
    }
}

/// A server's pinned key and the line of `known_servers` it is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownServer {
    /// The pinned key.
    pub key: PublicKey,
    /// Its line number in the file, from 1, for a message that says which line to remove.
    pub line: usize,
}

/// The servers' keys pinned in a `known_servers` file.
#[derive(Debug, Clone)]
pub struct KnownServers {
    /// The file.
    path: PathBuf,
    /// Pinned keys by address ([`Endpoint::pin_name`]).
    servers: BTreeMap<String, KnownServer>,
}

impl KnownServers {
    /// Reads `path`; a missing file pins nothing yet. An address that does not parse, or one
    /// pinned twice (in two spellings), makes the file damaged rather than guessed at.
    pub fn load(path: &Path) -> Result<KnownServers, PinStoreError> {
        let mut servers = BTreeMap::new();
        for (line, pin) in read_lines(path, 1)? {
            let invalid = |reason: String| PinStoreError::Invalid {
                path: path.to_path_buf(),
                error: PinFileError::at(line, reason),
            };
            let name = Endpoint::parse(&pin.names[0])
                .map_err(|e| invalid(e.to_string()))?
                .pin_name();
            let known = KnownServer { key: pin.key, line };
            if let Some(first) = servers.insert(name.clone(), known) {
                return Err(invalid(format!(
                    "{name} is pinned twice (also on line {})",
                    first.line
                )));
            }
        }
        Ok(KnownServers {
            path: path.to_path_buf(),
            servers,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key pinned for `endpoint`, if any.
    pub fn get(&self, endpoint: &Endpoint) -> Option<KnownServer> {
        self.servers.get(&endpoint.pin_name()).copied()
    }

    /// Pins `key` for `endpoint` (replacing an earlier pin) and writes the file, read again
    /// first so that pins another program wrote meanwhile are kept.
    pub fn remember(&mut self, endpoint: &Endpoint, key: PublicKey) -> Result<(), PinStoreError> {
        let mut fresh = KnownServers::load(&self.path)?;
        let line = fresh.servers.len() + 1;
        fresh
            .servers
            .entry(endpoint.pin_name())
            .and_modify(|known| known.key = key)
            .or_insert(KnownServer { key, line });
        let lines: Vec<PinLine> = fresh
            .servers
            .iter()
            .map(|(name, known)| PinLine {
                names: vec![name.clone()],
                key: known.key,
            })
            .collect();
        write_private(&self.path, &pinfile::render(SERVERS_HEADER, &lines))?;
        // Line numbers follow the file as written now.
        *self = KnownServers::load(&self.path)?;
        Ok(())
    }
}

/// The lines of a contacts file with their numbers, by server key (lower-case hex) and alias
/// (case-insensitive form).
type ContactLines = BTreeMap<(String, String), (usize, PinLine)>;

/// The contacts' keys pinned in a `contacts` file, for every server.
#[derive(Debug, Clone)]
pub struct ContactsFile {
    /// The file.
    path: PathBuf,
}

impl ContactsFile {
    /// The contacts file at `path` (it need not exist yet).
    pub fn new(path: PathBuf) -> ContactsFile {
        ContactsFile { path }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every line with its number, by server key (lower-case hex) and alias (case-insensitive
    /// form); an alias pinned twice for one server makes the file damaged.
    fn read_all(&self) -> Result<ContactLines, PinStoreError> {
        let mut all = BTreeMap::new();
        for (line, mut pin) in read_lines(&self.path, 2)? {
            let invalid = |reason: String| PinStoreError::Invalid {
                path: self.path.clone(),
                error: PinFileError::at(line, reason),
            };
            let server = PublicKey::from_hex(&pin.names[0])
                .ok_or_else(|| invalid("the server key is not 64 hex digits".into()))?;
            pin.names[0] = server.to_hex();
            let alias = pin.names[1].clone();
            if all
                .insert((server.to_hex(), alias_key(&alias)), (line, pin))
                .is_some()
            {
                return Err(invalid(format!("the alias {alias} is pinned twice")));
            }
        }
        Ok(all)
    }

    /// The pins for the server with key `server`.
    pub fn load(&self, server: &PublicKey) -> Result<ContactPins, PinStoreError> {
        let hex = server.to_hex();
        let lines = self
            .read_all()?
            .into_iter()
            .filter(|((s, _), _)| *s == hex)
            .map(|(_, line)| line);
        ContactPins::from_lines(lines).map_err(|error| PinStoreError::Invalid {
            path: self.path.clone(),
            error,
        })
    }

    /// Writes `pins` as the server `server`'s, keeping the file's other lines (other servers,
    /// and aliases of this one that another program pinned meanwhile).
    pub fn save(&self, server: &PublicKey, pins: &ContactPins) -> Result<(), PinStoreError> {
        let mut all = self.read_all()?;
        for (alias, key) in pins.iter() {
            let pin = PinLine {
                names: vec![server.to_hex(), alias.to_string()],
                key: *key,
            };
            all.insert((server.to_hex(), alias_key(alias)), (0, pin));
        }
        let text = pinfile::render(CONTACTS_HEADER, all.values().map(|(_, pin)| pin));
        write_private(&self.path, &text)
    }
}

/// The lines of the pin file at `path` with `names` names each; none if it does not exist.
fn read_lines(path: &Path, names: usize) -> Result<Vec<(usize, PinLine)>, PinStoreError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(PinStoreError::Read {
                path: path.to_path_buf(),
                error,
            });
        }
    };
    pinfile::parse(&text, names).map_err(|error| PinStoreError::Invalid {
        path: path.to_path_buf(),
        error,
    })
}

/// Replaces the file at `path` with `text`, atomically and readable by its owner only: the
/// text goes to a new temporary file (mode 0600) in the same directory, is synced, and is
/// renamed over the old file, so a reader sees the old file or the new one, whole.
pub fn write_private(path: &Path, text: &str) -> Result<(), PinStoreError> {
    let failed = |error| PinStoreError::Write {
        path: path.to_path_buf(),
        error,
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map_or("pins".into(), |n| n.to_string_lossy());
    let mut nonce = [0u8; 8];
    crate::os::fill(&mut nonce).map_err(|e| failed(io::Error::other(e.to_string())))?;
    let temp = dir.join(format!(
        ".{name}.{}.tmp",
        flexim_protocol::keys::hex(&nonce)
    ));
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let written = options.open(&temp).and_then(|mut file| {
        file.write_all(text.as_bytes())?;
        file.sync_all()
    });
    let renamed = written.and_then(|()| std::fs::rename(&temp, path));
    if let Err(e) = renamed {
        let _ = std::fs::remove_file(&temp);
        return Err(failed(e));
    }
    // The rename is durable once the directory is synced; a failure to sync it leaves the
    // file correct, only perhaps not yet on disk, which is not worth failing for.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdir::TempDir;

    fn key(seed: u8) -> PublicKey {
        PublicKey([seed; 32])
    }

    fn endpoint(s: &str) -> Endpoint {
        Endpoint::parse(s).unwrap()
    }

    /// The file's mode bits, and whether a temporary file was left beside it.
    fn mode_and_leftovers(path: &Path) -> (u32, bool) {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let dir = path.parent().unwrap();
        let leftovers = std::fs::read_dir(dir)
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".tmp"));
        (mode, leftovers)
    }

    #[test]
    fn known_servers_are_pinned_by_address_in_a_private_file() {
        let dir = TempDir::new("known");
        let path = next_to(&dir.0.join("alice.key"), KNOWN_SERVERS);
        assert_eq!(path, dir.0.join("known_servers"));
        let mut known = KnownServers::load(&path).unwrap();
        assert_eq!(
            known.get(&endpoint("127.0.0.1:4321")),
            None,
            "no file, no pins"
        );
        known.remember(&endpoint("127.0.0.1:4321"), key(1)).unwrap();
        known
            .remember(&endpoint("WS://LOCALHOST/ws"), key(2))
            .unwrap();
        assert_eq!(mode_and_leftovers(&path), (0o600, false));
        let again = KnownServers::load(&path).unwrap();
        assert_eq!(again.get(&endpoint("127.0.0.1:4321")).unwrap().key, key(1));
        assert_eq!(
            again.get(&endpoint("ws://localhost:80/ws")).unwrap().key,
            key(2)
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# flexim known servers"), "{text}");
        let line = again.get(&endpoint("127.0.0.1:4321")).unwrap().line;
        assert_eq!(
            text.lines().nth(line - 1),
            Some(format!("127.0.0.1:4321 {}", key(1).to_hex()).as_str())
        );
        // A pin another program wrote meanwhile is kept; replacing a pin keeps one line.
        let mut other = KnownServers::load(&path).unwrap();
        other.remember(&endpoint("10.0.0.1:1"), key(3)).unwrap();
        known.remember(&endpoint("127.0.0.1:4321"), key(4)).unwrap();
        let last = KnownServers::load(&path).unwrap();
        assert_eq!(last.get(&endpoint("10.0.0.1:1")).unwrap().key, key(3));
        assert_eq!(last.get(&endpoint("127.0.0.1:4321")).unwrap().key, key(4));
        assert_eq!(last.servers.len(), 3);
    }

    #[test]
    fn a_damaged_known_servers_file_is_refused_not_guessed_at() {
        let dir = TempDir::new("known-bad");
        let path = dir.0.join("known_servers");
        for (text, reason) in [
            (
                format!("127.0.0.1 {}\n", key(1).to_hex()),
                "line 1: bad server address",
            ),
            (
                format!("# c\na:1 {}\nA:1 {}\n", key(1).to_hex(), key(2).to_hex()),
                "line 3: a:1 is pinned twice (also on line 2)",
            ),
            ("a:1 00\n".into(), "line 1: the key is not 64 hex digits"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = KnownServers::load(&path).unwrap_err();
            assert!(matches!(err, PinStoreError::Invalid { .. }), "{err:?}");
            assert!(err.to_string().contains(reason), "{err}");
            assert!(
                err.to_string().contains(&path.display().to_string()),
                "{err}"
            );
        }
    }

    #[test]
    fn contacts_are_kept_per_server_and_merged_on_save() {
        let dir = TempDir::new("contacts");
        let file = ContactsFile::new(dir.0.join(CONTACTS));
        let (one, two) = (key(1), key(2));
        assert!(file.load(&one).unwrap().is_empty());
        let mut pins = ContactPins::new();
        pins.insert("Bob", key(3));
        file.save(&one, &pins).unwrap();
        let mut other = ContactPins::new();
        other.insert("bob", key(4));
        file.save(&two, &other).unwrap();
        assert_eq!(mode_and_leftovers(file.path()), (0o600, false));
        assert_eq!(file.load(&one).unwrap().get("bob"), Some(&key(3)));
        assert_eq!(file.load(&two).unwrap().get("BOB"), Some(&key(4)));
        // A program that learnt carol keeps bob, whom another pinned; an accepted change
        // replaces its line.
        let mut later = ContactPins::new();
        later.insert("carol", key(5));
        later.insert("bob", key(6));
        file.save(&one, &later).unwrap();
        let read = file.load(&one).unwrap();
        assert_eq!(
            (read.get("bob"), read.get("carol")),
            (Some(&key(6)), Some(&key(5)))
        );
        let text = std::fs::read_to_string(file.path()).unwrap();
        assert_eq!(
            text.lines().filter(|l| !l.starts_with('#')).count(),
            3,
            "{text}"
        );
        std::fs::write(file.path(), format!("{} bob\n", one.to_hex())).unwrap();
        assert!(file.load(&one).unwrap_err().to_string().contains("line 1"));
    }
}
