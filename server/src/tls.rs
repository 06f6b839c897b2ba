//! TLS for the HTTP listener: the certificate chain and key from PEM files, as a rustls
//! configuration on the ring provider (the only one linked: two providers in one binary make
//! rustls panic when it builds a configuration).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The two PEM files that turn TLS on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (what a CA or `certbot` calls `fullchain.pem`).
    pub cert: PathBuf,
    /// The leaf's private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key: PathBuf,
}

/// Why the certificate or the key cannot be used. Each message names the file and says what
/// the file should hold, on one line.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file does not hold a readable PEM certificate.
    #[error(
        "cannot use the TLS certificate {}: {reason} (expected a PEM file with \
         -----BEGIN CERTIFICATE-----, leaf first)",
        path.display()
    )]
    Cert {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key file does not hold a readable PEM private key.
    #[error(
        "cannot use the TLS key {}: {reason} (expected a PEM file with -----BEGIN PRIVATE KEY-----)",
        path.display()
    )]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Both files read, but rustls refuses the pair (the key is not the certificate's, or of
    /// a kind it does not support).
    #[error("cannot use the TLS certificate {} with the key {}: {reason}", cert.display(), key.display())]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls reported.
        reason: String,
    },
}

/// The HTTP listener's TLS configuration, which a reload replaces (a renewed certificate,
/// on SIGHUP) while the server runs: each handshake takes the configuration that is current
/// when it starts, so connections open keep theirs and the next ones get the new one.
pub struct TlsSlot {
    /// The files it was read from, read again by [`TlsSlot::reload`].
    files: TlsFiles,
    /// The configuration now.
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsSlot {
    /// Reads `files` ([`server_config`]).
    pub(crate) fn load(files: &TlsFiles) -> Result<TlsSlot, TlsError> {
        Ok(TlsSlot {
            files: files.clone(),
            current: RwLock::new(server_config(files)?),
        })
    }

    /// An acceptor for one handshake, with the configuration now.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.read().expect("tls lock").clone())
    }

    /// Reads the files again and, if they can be used, serves them from the next handshake
    /// on; if not, the configuration stays as it was and the error says why.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.files)?;
        *self.current.write().expect("tls lock") = config;
        Ok(())
    }

    /// The files it reads.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}

/// Reads `files` and builds the server's TLS configuration. HTTP/1.1 is the only protocol
/// offered (ALPN), because the listener speaks nothing else.
pub(crate) fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_chain(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Key {
        path: files.key.clone(),
        reason: pem_reason(&e, "no private key in the file"),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pair = |e: rustls::Error| TlsError::Pair {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason: e.to_string(),
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(pair)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(pair)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The certificates of a PEM file, in order; at least one.
fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::Cert {
        path: path.to_path_buf(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(pem_reason(&e, "no certificate in the file")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(pem_reason(&e, "no certificate in the file")))?;
    if chain.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    Ok(chain)
}

/// A PEM error in words: `empty` for a file without the item looked for, the operating
/// system's words for a file that cannot be read.
fn pem_reason(e: &rustls::pki_types::pem::Error, empty: &str) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::NoItemsFound => empty.to_string(),
        Error::Io(io) => io.to_string(),
        other => format!("not valid PEM ({other})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of its own in the system's temporary directory, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn with(name: &str, text: &str) -> Scratch {
            let path =
                std::env::temp_dir().join(format!("flexim-tls-{}-{name}", std::process::id()));
            std::fs::write(&path, text).unwrap();
            Scratch(path)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn unusable_files_are_named_with_what_is_wrong() {
        let empty = Scratch::with("empty.pem", "");
        let garbage = Scratch::with(
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        );
        let missing = PathBuf::from("/nonexistent/flexim/cert.pem");
        for (cert, says) in [
            (&empty.0, "no certificate in the file"),
            (&garbage.0, "not valid PEM"),
            (&missing, "No such file"),
        ] {
            let files = TlsFiles {
                cert: cert.clone(),
                key: empty.0.clone(),
            };
            let text = server_config(&files).unwrap_err().to_string();
            assert!(text.contains(says), "{text}");
            assert!(text.contains(&cert.display().to_string()), "{text}");
            assert!(!text.contains('\n'), "one line: {text}");
        }
    }
}
