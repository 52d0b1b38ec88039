//! rustls configurations (aws-lc-rs provider) for both legs.

use crate::config::{SslMode, TlsFiles, UpstreamConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{aws_lc_rs, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;

/// A TLS setup problem, naming the file or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the material.
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(aws_lc_rs::default_provider())
}

fn file_err(path: &Path, message: impl Into<String>) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        message: message.into(),
    }
}

fn read_certs(path: &Path) -> Result<(Vec<CertificateDer<'static>>, Vec<u8>), TlsError> {
    let pem = std::fs::read(path).map_err(|e| file_err(path, e.to_string()))?;
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, e.to_string()))?;
    if certs.is_empty() {
        return Err(file_err(path, "no PEM certificate found"));
    }
    Ok((certs, pem))
}

/// Client-facing TLS: the rustls config and the certificate PEM, which SCRAM
/// channel binding (tls-server-end-point) hashes.
pub fn server_config(files: &TlsFiles) -> Result<(Arc<rustls::ServerConfig>, Vec<u8>), TlsError> {
    let (certs, pem) = read_certs(&files.cert)?;
    let key_pem = std::fs::read(&files.key).map_err(|e| file_err(&files.key, e.to_string()))?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| file_err(&files.key, e.to_string()))?
        .ok_or_else(|| file_err(&files.key, "no PEM private key found"))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok((Arc::new(config), pem))
}

/// Backend-facing TLS for one upstream, or `None` when sslmode is disable.
pub fn client_config(u: &UpstreamConfig) -> Result<Option<Arc<rustls::ClientConfig>>, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let config = match u.sslmode {
        SslMode::Disable => return Ok(None),
        // libpq's prefer and require encrypt without checking who answers.
        SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert(provider())))
            .with_no_client_auth(),
        SslMode::VerifyFull => {
            let mut roots = rustls::RootCertStore::empty();
            match &u.ca_file {
                Some(path) => {
                    for cert in read_certs(path)?.0 {
                        roots.add(cert)?;
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Some(Arc::new(config)))
}

/// The tls-server-end-point channel-binding data for a server certificate.
///
/// RFC 5929 hashes the certificate with its signature's hash function, and
/// with SHA-256 where that is MD5 or SHA-1 (or unknown), as PostgreSQL does.
pub fn end_point_hash(cert: &CertificateDer<'_>) -> Vec<u8> {
    use sha2::{Sha384, Sha512};
    match signature_hash(cert.as_ref()) {
        Some(SignatureHash::Sha384) => Sha384::digest(cert.as_ref()).to_vec(),
        Some(SignatureHash::Sha512) => Sha512::digest(cert.as_ref()).to_vec(),
        None => Sha256::digest(cert.as_ref()).to_vec(),
    }
}

/// Signature hashes other than the SHA-256 default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SignatureHash {
    Sha384,
    Sha512,
}

/// The hash of a DER certificate's outer signatureAlgorithm, when it is
/// SHA-384 or SHA-512 (RSA PKCS#1 or ECDSA).
fn signature_hash(der: &[u8]) -> Option<SignatureHash> {
    const RSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
    const RSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
    const ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
    const ECDSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }
    let (certificate, _) = der_element(der, 0x30)?;
    let (_tbs, rest) = der_element(certificate, 0x30)?;
    let (algorithm, _) = der_element(rest, 0x30)?;
    let (oid, _) = der_element(algorithm, 0x06)?;
    match oid {
        RSA_SHA384 | ECDSA_SHA384 => Some(SignatureHash::Sha384),
        RSA_SHA512 | ECDSA_SHA512 => Some(SignatureHash::Sha512),
        _ => None,
    }
}

/// Splits one DER element with the expected tag off `input`: its content
/// and what follows it. `None` on any malformation.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod end_point_tests {
    use super::*;
    use sha2::Sha384;

    fn cert(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(alg).expect("key");
        rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert")
            .der()
            .to_vec()
    }

    #[test]
    fn hash_follows_the_signature_algorithm() {
        let p256 = cert(&rcgen::PKCS_ECDSA_P256_SHA256);
        let p384 = cert(&rcgen::PKCS_ECDSA_P384_SHA384);
        let hash = |der: &Vec<u8>| end_point_hash(&CertificateDer::from(der.clone()));
        assert_eq!(hash(&p256), Sha256::digest(&p256).to_vec());
        assert_eq!(hash(&p384), Sha384::digest(&p384).to_vec());
        assert_eq!(signature_hash(&p384), Some(SignatureHash::Sha384));
        assert_eq!(signature_hash(&p256), None);
        // Truncated or garbage input falls back to SHA-256, never panics.
        for cut in 0..p384.len() {
            let _ = signature_hash(&p384[..cut]);
        }
        assert_eq!(signature_hash(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }
}

/// sslmode prefer / require: encryption without authentication of the server,
/// exactly as libpq does. Signatures are still checked so the handshake is sound.
#[derive(Debug)]
struct AcceptAnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
