//! Test certificates made with rcgen: a CA and a server certificate for
//! `localhost` and 127.0.0.1 signed by it.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// PEM material, also written to files in a directory.
pub struct TestPki {
    /// The CA certificate (PEM).
    pub ca_pem: String,
    /// The server certificate (PEM).
    pub cert_pem: String,
    /// The server key (PEM).
    pub key_pem: String,
    /// Files: ca.pem, server.pem, server.key.
    pub ca_file: PathBuf,
    /// Server certificate file.
    pub cert_file: PathBuf,
    /// Server key file.
    pub key_file: PathBuf,
}

impl TestPki {
    /// Makes a fresh CA and server certificate (ECDSA P-256 / SHA-256),
    /// writing them under `dir`.
    pub fn new(dir: &Path, ca_name: &str) -> TestPki {
        Self::with_algorithm(dir, ca_name, &rcgen::PKCS_ECDSA_P256_SHA256)
    }

    /// The same with another signature algorithm for both certificates.
    pub fn with_algorithm(
        dir: &Path,
        ca_name: &str,
        alg: &'static rcgen::SignatureAlgorithm,
    ) -> TestPki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, ca_name);
        let ca_key = KeyPair::generate_for(alg).expect("ca key");
        let ca = ca_params.self_signed(&ca_key).expect("ca cert");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let key = KeyPair::generate_for(alg).expect("key");
        let cert = params.signed_by(&key, &ca, &ca_key).expect("cert");
        let pki = TestPki {
            ca_pem: ca.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_file: dir.join(format!("{ca_name}-ca.pem")),
            cert_file: dir.join(format!("{ca_name}-server.pem")),
            key_file: dir.join(format!("{ca_name}-server.key")),
        };
        std::fs::write(&pki.ca_file, &pki.ca_pem).expect("write ca");
        std::fs::write(&pki.cert_file, &pki.cert_pem).expect("write cert");
        std::fs::write(&pki.key_file, &pki.key_pem).expect("write key");
        pki
    }

    /// A rustls client config trusting only this CA (aws-lc-rs), which
    /// checks the chain and the host name: libpq's verify-full.
    pub fn client_config(&self) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut self.ca_pem.as_bytes()) {
            roots.add(cert.expect("pem")).expect("root");
        }
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
    }
}
