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
/// RFC 5929 hashes with the certificate's signature hash, and SHA-256 where
/// that is MD5 or SHA-1; SHA-256 covers the certificates PostgreSQL
/// deployments use (RSA or ECDSA with SHA-256).
pub fn end_point_hash(cert: &CertificateDer<'_>) -> Vec<u8> {
    Sha256::digest(cert.as_ref()).to_vec()
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
