//! TLS for `wss://` servers: which certificate authorities are trusted, and the handshake's
//! failures in words. rustls on the ring provider, the only one linked.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

/// Which certificate authorities a `wss://` server's certificate must chain to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Trust {
    /// The public web's: Mozilla's root certificates, built into this program (so the same on
    /// every machine, and present where the system has none).
    #[default]
    PublicRoots,
    /// These CA certificates and no others: a private CA, as `flexim --ca FILE` reads it.
    Ca(Vec<CertificateDer<'static>>),
}

/// Why a CA file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot use the CA certificate file {}: {reason} (expected a PEM file with \
     -----BEGIN CERTIFICATE-----)",
    path.display()
)]
pub struct CaFileError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

impl Trust {
    /// Trusts the CA certificates in the PEM file at `path` (one or more), and only them.
    pub fn from_ca_file(path: &Path) -> Result<Trust, CaFileError> {
        let bad = |reason: String| CaFileError {
            path: path.to_path_buf(),
            reason,
        };
        let pem_reason = |e: rustls::pki_types::pem::Error| match e {
            rustls::pki_types::pem::Error::Io(e) => e.to_string(),
            rustls::pki_types::pem::Error::NoItemsFound => "no certificate in the file".into(),
            other => format!("not valid PEM ({other})"),
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(pem_reason(e)))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(pem_reason(e)))?;
        if certs.is_empty() {
            return Err(bad("no certificate in the file".into()));
        }
        // Checked now, so that a certificate that cannot be a trust anchor is reported with
        // the file's name rather than at each connection.
        let mut roots = RootCertStore::empty();
        for cert in &certs {
            roots
                .add(cert.clone())
                .map_err(|e| bad(format!("a certificate does not parse ({e})")))?;
        }
        Ok(Trust::Ca(certs))
    }

    /// The rustls configuration that trusts these authorities.
    pub(crate) fn client_config(&self) -> Arc<ClientConfig> {
        let roots = match self {
            Trust::PublicRoots => RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
            Trust::Ca(certs) => {
                let mut roots = RootCertStore::empty();
                // Each was added once already when the file was read.
                let _ = roots.add_parsable_certificates(certs.iter().cloned());
                roots
            }
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

/// The name a server's certificate must carry for `host` (a DNS name, or an IP address, in
/// brackets for IPv6 as in URLs).
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, io::Error> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_string()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{host} is not a host name a certificate can name"),
        )
    })
}

/// Whether a failed TLS handshake was about the server's certificate.
pub(crate) fn is_certificate_error(error: &io::Error) -> bool {
    matches!(
        error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::InvalidCertificate(_))
    )
}

/// A failed TLS handshake in words: a certificate the client does not trust is said so, with
/// what rustls found wrong with it; anything else as it was reported.
pub(crate) fn describe(error: &io::Error) -> String {
    use rustls::{CertificateError, Error};
    match error.get_ref().and_then(|e| e.downcast_ref::<Error>()) {
        Some(Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
            "the server's certificate is not trusted: no certificate authority this client \
             trusts signed it (UnknownIssuer)"
                .into()
        }
        Some(Error::InvalidCertificate(why)) => {
            format!("the server's certificate is not trusted: {why}")
        }
        Some(other) => other.to_string(),
        None => crate::ioerr::describe_io(error),
    }
}
