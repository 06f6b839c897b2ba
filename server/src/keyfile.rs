//! The server's long-term X25519 key, kept in the data directory so clients can pin it.

use std::io::Write;
use std::path::Path;

use flexim_protocol::SecretKey;

/// Why the key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The key file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The file exists but does not hold 64 hex digits.
    #[error("{0}: not a flexim key file (expected 64 hex digits)")]
    Format(String),
}

/// Loads the key at `path`, or makes one with fresh randomness and writes it there (mode 0600)
/// if the file does not exist. Returns the key and whether it was new.
pub fn load_or_create(path: &Path) -> Result<(SecretKey, bool), KeyFileError> {
    secret_file(path).map(|(bytes, new)| (SecretKey::from_bytes(bytes), new))
}

/// The 32 secret bytes in the file at `path` (64 hex digits), made with fresh randomness and
/// written there (mode 0600) if it does not exist: the server key, and the admin token.
/// Returns them and whether they were new.
pub fn secret_file(path: &Path) -> Result<([u8; 32], bool), KeyFileError> {
    let shown = path.display().to_string();
    let io = |source| KeyFileError::Io {
        path: shown.clone(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => SecretKey::from_hex(text.trim())
            .map(|k| (k.to_bytes(), false))
            .ok_or_else(|| KeyFileError::Format(shown.clone())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            crate::clock::random(&mut bytes);
            let key = SecretKey::from_bytes(bytes);
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(path).map_err(io)?;
            writeln!(file, "{}", key.to_hex()).map_err(io)?;
            file.sync_all().map_err(io)?;
            Ok((bytes, true))
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_made_once_and_then_kept() {
        let dir = std::env::temp_dir().join(format!("flexim-keyfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("server.key");
        let (a, new_a) = load_or_create(&path).unwrap();
        let (b, new_b) = load_or_create(&path).unwrap();
        assert!(new_a && !new_b);
        assert_eq!(a.public_key(), b.public_key());
        std::fs::write(&path, "garbage").unwrap();
        assert!(matches!(
            load_or_create(&path),
            Err(KeyFileError::Format(_))
        ));
        let _ = std::fs::remove_dir_all(dir);
    }
}
