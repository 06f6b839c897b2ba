//! Certificates for the TLS tests, made with rcgen when a test needs them: a CA of the test's
//! own and a leaf it signed for `localhost` and `127.0.0.1`, written as PEM files to a
//! temporary directory. Nothing is trusted by the system: a client trusts the CA only when
//! it is told to (`flexim --ca`, the kit's requests, Chromium's SPKI list).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData as _, SanType,
};
use sha2::{Digest as _, Sha256};

use crate::{TempDir, Tls};

/// A CA, a server certificate it signed, and their files.
pub struct TestCerts {
    /// The directory holding the files; removed with this value.
    pub dir: TempDir,
    /// The server's files and the CA's certificate, as the kit's server options take them.
    pub tls: Tls,
    /// The SHA-256 of the leaf's SubjectPublicKeyInfo, in base64: what Chromium's
    /// `--ignore-certificate-errors-spki-list` takes to accept exactly this certificate.
    pub leaf_spki_sha256: String,
}

impl TestCerts {
    /// Makes a new CA and a leaf for `localhost` and `127.0.0.1`, and writes `ca.pem`,
    /// `cert.pem` and `key.pem`.
    pub fn new() -> TestCerts {
        let dir = TempDir::new("certs");
        let ca_key = KeyPair::generate().expect("a CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca.distinguished_name
            .push(DnType::CommonName, "flexim test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).expect("a self-signed CA");
        let issuer = Issuer::new(ca, ca_key);

        let leaf_key = KeyPair::generate().expect("a leaf key");
        let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).expect("leaf names");
        leaf.subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf.use_authority_key_identifier_extension = true;
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("a signed leaf");

        let write = |name: &str, text: &str| -> PathBuf {
            let path = dir.0.join(name);
            std::fs::write(&path, text).expect("a certificate file");
            path
        };
        let tls = Tls {
            ca: write("ca.pem", &ca_cert.pem()),
            cert: write("cert.pem", &leaf_cert.pem()),
            key: write("key.pem", &leaf_key.serialize_pem()),
        };
        let spki = Sha256::digest(leaf_key.subject_public_key_info());
        TestCerts {
            leaf_spki_sha256: base64::engine::general_purpose::STANDARD.encode(spki),
            tls,
            dir,
        }
    }
}

impl Default for TestCerts {
    fn default() -> Self {
        TestCerts::new()
    }
}
