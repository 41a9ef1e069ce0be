//! HTTPS on the gateway's public port, for a band on a LAN: phones open the
//! laptop's address, and only a page served over HTTPS is a secure context (a
//! plain `http://192.168.…` page gets no Wake Lock, so the screen sleeps
//! mid-song). Public deployments end TLS at nginx instead (`--tls off`,
//! deploy/nginx-tls.conf).
//!
//! `self_signed`: a certificate made on first run and kept, `accept`: the
//! listener that shakes hands (each handshake in its own task, with a time
//! limit, so a stalled client holds nothing; plain HTTP on the port gets a
//! redirect to HTTPS, `plain`), `banner`: the URLs, the
//! fingerprint and a QR code printed at start.

mod accept;
pub mod banner;
mod plain;
mod self_signed;

pub use accept::{TlsListener, describe_metrics};
pub use self_signed::lan_addresses;

use anyhow::Context;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;

/// How the public port speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsMode {
    /// Plain HTTP (behind a proxy that ends TLS, or on loopback).
    Off,
    /// HTTPS with a certificate this gateway makes on first run and keeps in
    /// `--tls-dir` (a LAN: phones accept it once).
    SelfSigned,
    /// HTTPS with `--tls-cert` and `--tls-key` (PEM files).
    Files,
}

/// The certificate the gateway serves and how to recognise it.
pub struct Tls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// SHA-256 of the certificate (DER), as browsers and `openssl x509
    /// -fingerprint -sha256` show it: `AB:CD:…`.
    pub fingerprint: String,
    /// Where the certificate is (PEM).
    pub cert_path: PathBuf,
    pub self_signed: bool,
}

/// Reads or makes the certificate; `None` with `--tls off`. Runs before
/// anything is bound, so a missing file or an unwritable directory is a
/// start-up error.
pub fn load(config: &crate::Config) -> anyhow::Result<Option<Tls>> {
    let (chain, key, cert_path, self_signed) = match config.tls {
        TlsMode::Off => return Ok(None),
        TlsMode::Files => {
            let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
                anyhow::bail!("--tls files needs --tls-cert and --tls-key");
            };
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("reading certificates from {}", cert.display()))?;
            anyhow::ensure!(!chain.is_empty(), "no certificate in {}", cert.display());
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("reading a private key from {}", key.display()))?;
            (chain, key, cert.clone(), false)
        }
        TlsMode::SelfSigned => {
            let dir = config.tls_dir()?;
            let names = self_signed::names(&config.tls_hostnames);
            let issued = self_signed::ensure(&dir, &names)?;
            (vec![issued.cert], issued.key, issued.cert_path, true)
        }
    };
    let fingerprint = fingerprint(&chain[0]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the TLS certificate and key do not go together")?;
    // HTTP/1.1 only: the gateway's WebSocket upgrade is HTTP/1.1's.
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Tls {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        fingerprint,
        cert_path,
        self_signed,
    }))
}

/// `AB:CD:…`: SHA-256 of a certificate's DER, upper-case hex pairs.
pub fn fingerprint(cert: &[u8]) -> String {
    let digest = Sha256::digest(cert);
    let hex: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}
