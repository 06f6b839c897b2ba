//! Key files: the user's long-term X25519 secret key on disk.
//!
//! A key file holds the 64 hex digits of the secret key followed by a newline, and nothing else.
//! The format is deliberately trivial so that a user can inspect, back up or move it by hand;
//! the file is created readable by its owner only, because anyone holding it *is* the user.

use std::fs::OpenOptions;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use flexim_protocol::{PublicKey, SecretKey};

/// Why a key file could not be created, read or written. Messages include their cause, so
/// no variant exposes a `source()` (chain reporters would print it twice).
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read (missing, unreadable, ...).
    #[error("cannot read key file {}: {error}", .path.display())]
    Read {
        /// The key file.
        path: PathBuf,
        /// What the operating system reported.
        error: io::Error,
    },
    /// The file was read but does not hold 64 hex digits and a newline.
    #[error(
        "key file {} is not a flexim key file: expected 64 hex digits and a newline",
        .path.display()
    )]
    Invalid {
        /// The key file.
        path: PathBuf,
    },
    /// `save` was asked to write over an existing file; overwriting would destroy an identity.
    #[error(
        "key file {} already exists; refusing to overwrite it (move it away or choose another file)",
        .path.display()
    )]
    Exists {
        /// The key file.
        path: PathBuf,
    },
    /// The file could not be created or written.
    #[error("cannot write key file {}: {error}", .path.display())]
    Write {
        /// The key file.
        path: PathBuf,
        /// What the operating system reported.
        error: io::Error,
    },
    /// The operating system's random number generator failed.
    #[error("cannot draw random bytes for a new key: {0}")]
    Random(getrandom::Error),
}

/// A user's identity: the long-term X25519 secret key. Its public key is the user.
#[derive(Clone, Debug)]
pub struct Identity(
    /// The secret key; `Debug` prints only the public half.
    pub SecretKey,
);

impl Identity {
    /// Draws a fresh secret key from the operating system's random number generator.
    pub fn generate() -> Result<Identity, KeyFileError> {
        let mut bytes = [0u8; flexim_protocol::keys::KEY_LEN];
        crate::os::fill(&mut bytes).map_err(KeyFileError::Random)?;
        Ok(Identity(SecretKey::from_bytes(bytes)))
    }

    /// Wraps an existing secret key (for tests and programs that keep keys elsewhere).
    pub fn from_secret(secret: SecretKey) -> Identity {
        Identity(secret)
    }

    /// The secret key.
    pub fn secret(&self) -> &SecretKey {
        &self.0
    }

    /// The public key, i.e. the user's address.
    pub fn public_key(&self) -> PublicKey {
        self.0.public_key()
    }

    /// Reads a key file. Surrounding whitespace (a trailing newline, a `\r\n` from an editor)
    /// is tolerated; anything else that is not exactly 64 hex digits is refused.
    pub fn load(path: impl AsRef<Path>) -> Result<Identity, KeyFileError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| match source.kind() {
            // A binary file is not "unreadable", it is simply not a key file.
            io::ErrorKind::InvalidData => KeyFileError::Invalid {
                path: path.to_path_buf(),
            },
            _ => KeyFileError::Read {
                path: path.to_path_buf(),
                error: source,
            },
        })?;
        SecretKey::from_hex(text.trim())
            .map(Identity)
            .ok_or_else(|| KeyFileError::Invalid {
                path: path.to_path_buf(),
            })
    }

    /// Writes a new key file with mode 0600. An existing file is never overwritten: losing a
    /// secret key loses the identity and every conversation bound to it.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), KeyFileError> {
        let path = path.as_ref();
        let mut options = OpenOptions::new();
        // `create_new` makes the existence check and the creation one atomic step, so two
        // concurrent `keygen` runs cannot both believe they created the file.
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                KeyFileError::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                KeyFileError::Write {
                    path: path.to_path_buf(),
                    error: source,
                }
            }
        })?;
        let write = |file: &mut std::fs::File| -> io::Result<()> {
            file.write_all(format!("{}\n", self.0.to_hex()).as_bytes())?;
            file.sync_all()
        };
        write(&mut file).map_err(|error| KeyFileError::Write {
            path: path.to_path_buf(),
            error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdir::TempDir;

    #[test]
    fn key_file_round_trips_with_owner_only_mode() {
        let dir = TempDir::new("roundtrip");
        let path = dir.0.join("me.key");
        let id = Identity::generate().unwrap();
        id.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 65);
        assert!(text.ends_with('\n'));
        let back = Identity::load(&path).unwrap();
        assert_eq!(back.public_key(), id.public_key());
        assert_eq!(back.secret().to_bytes(), id.secret().to_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn save_refuses_to_overwrite() {
        let dir = TempDir::new("overwrite");
        let path = dir.0.join("me.key");
        let first = Identity::generate().unwrap();
        first.save(&path).unwrap();
        let err = Identity::generate().unwrap().save(&path).unwrap_err();
        assert!(matches!(err, KeyFileError::Exists { .. }), "{err:?}");
        assert!(err.to_string().contains("already exists"), "{err}");
        // The original key is untouched.
        assert_eq!(
            Identity::load(&path).unwrap().public_key(),
            first.public_key()
        );
    }

    #[test]
    fn bad_or_missing_files_name_the_path() {
        let dir = TempDir::new("bad");
        let bad = dir.0.join("bad.key");
        std::fs::write(&bad, "not a key\n").unwrap();
        let err = Identity::load(&bad).unwrap_err();
        assert!(matches!(err, KeyFileError::Invalid { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&bad.display().to_string()),
            "{err}"
        );

        let short = dir.0.join("short.key");
        std::fs::write(&short, "ab".repeat(31)).unwrap();
        assert!(matches!(
            Identity::load(&short),
            Err(KeyFileError::Invalid { .. })
        ));

        let binary = dir.0.join("binary.key");
        std::fs::write(&binary, [0xff, 0xfe, 0x00]).unwrap();
        assert!(matches!(
            Identity::load(&binary),
            Err(KeyFileError::Invalid { .. })
        ));

        let missing = dir.0.join("missing.key");
        let err = Identity::load(&missing).unwrap_err();
        assert!(matches!(err, KeyFileError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains("missing.key"), "{err}");
    }

    #[test]
    fn crlf_and_upper_case_are_accepted() {
        let dir = TempDir::new("crlf");
        let path = dir.0.join("me.key");
        let id = Identity::generate().unwrap();
        std::fs::write(
            &path,
            format!("{}\r\n", id.secret().to_hex().to_uppercase()),
        )
        .unwrap();
        assert_eq!(Identity::load(&path).unwrap().public_key(), id.public_key());
    }
}
