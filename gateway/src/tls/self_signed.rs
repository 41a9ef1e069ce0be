//! A self-signed certificate for a LAN, made on first run and kept in a
//! directory (`key.pem`, `cert.pem`, and `names`, what it was made for), so a
//! phone that accepted it once keeps accepting it across restarts. It is made
//! again, with the same key, only when it does not name an address or hostname
//! it must (the laptop joined another network, or `--tls-hostnames` grew) or
//! expires within 30 days; the new one keeps the old one's names too, so a
//! laptop that moves between two networks settles on one naming both.

use anyhow::Context;
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Apple's limit for a TLS server certificate (iOS refuses longer ones).
const VALIDITY_DAYS: i64 = 825;
/// A certificate that expires sooner than this is made again at start.
const RENEW_BEFORE_DAYS: u64 = 30;

pub struct Issued {
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
    pub cert_path: PathBuf,
}

/// What the certificate must name: loopback, this machine's hostname (and its
/// mDNS `.local` name), its LAN addresses, and the configured hostnames.
pub fn names(configured: &[String]) -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Some(host) = hostname() {
        if !host.contains('.') {
            names.push(format!("{host}.local"));
        }
        names.push(host);
    }
    names.extend(lan_addresses().iter().map(IpAddr::to_string));
    names.extend(
        configured
            .iter()
            .map(|n| n.trim().to_ascii_lowercase())
            .filter(|n| !n.is_empty()),
    );
    dedup(names)
}

/// This machine's IPv4 addresses other than loopback and link-local, the
/// likely Wi-Fi or Ethernet ones first (container bridges and VPNs last).
pub fn lan_addresses() -> Vec<IpAddr> {
    let interfaces = match if_addrs::get_if_addrs() {
        Ok(list) => list,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the network interfaces");
            return Vec::new();
        }
    };
    let mut found: Vec<(bool, IpAddr)> = interfaces
        .iter()
        .filter(|i| i.ip().is_ipv4() && !i.is_loopback() && !i.is_link_local())
        .map(|i| {
            let virtual_ = ["docker", "br-", "veth", "virbr", "tun", "wg", "tailscale"]
                .iter()
                .any(|prefix| i.name.starts_with(prefix));
            (virtual_, i.ip())
        })
        .collect();
    found.sort_by_key(|&(virtual_, _)| virtual_);
    dedup(found.into_iter().map(|(_, ip)| ip).collect())
}

fn hostname() -> Option<String> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()?;
    let host = raw.trim().to_ascii_lowercase();
    let valid = !host.is_empty()
        && host != "localhost"
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    valid.then_some(host)
}

fn dedup<T: PartialEq>(items: Vec<T>) -> Vec<T> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// The certificate in `dir` if it names all of `names` for 30 more days, else
/// a new one (same key, the old names kept).
pub fn ensure(dir: &Path, names: &[String]) -> anyhow::Result<Issued> {
    create_private_dir(dir)?;
    let (key_path, cert_path, names_path) =
        (dir.join("key.pem"), dir.join("cert.pem"), dir.join("names"));
    let key = if key_path.exists() {
        let pem = std::fs::read_to_string(&key_path)
            .with_context(|| format!("reading {}", key_path.display()))?;
        rcgen::KeyPair::from_pem(&pem)
            .with_context(|| format!("{} is not a private key", key_path.display()))?
    } else {
        let key = rcgen::KeyPair::generate().context("generating a key")?;
        write_atomically(&key_path, key.serialize_pem().as_bytes())?;
        key
    };
    let key_der = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())
        .context("re-reading the generated key")?;
    if let Ok(cert) = CertificateDer::from_pem_file(&cert_path) {
        let missing = uncovered(&cert, names);
        if missing.is_empty() {
            return Ok(Issued {
                cert,
                key: key_der,
                cert_path,
            });
        }
        tracing::warn!(
            missing = %missing.join(","),
            "the self-signed certificate does not name these (or expires soon): issuing a new one, which phones must accept again"
        );
    }
    let previous = std::fs::read_to_string(&names_path).unwrap_or_default();
    let all = dedup(
        names
            .iter()
            .cloned()
            .chain(previous.lines().map(str::to_owned))
            .filter(|n| !n.is_empty())
            .collect(),
    );
    let cert = issue(&key, &all)?;
    write_atomically(&cert_path, cert.pem().as_bytes())?;
    write_atomically(&names_path, (all.join("\n") + "\n").as_bytes())?;
    tracing::info!(path = %cert_path.display(), names = %all.join(","), "self-signed certificate issued");
    Ok(Issued {
        cert: cert.der().clone(),
        key: key_der,
        cert_path,
    })
}

fn issue(key: &rcgen::KeyPair, names: &[String]) -> anyhow::Result<rcgen::Certificate> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .context("a name the certificate cannot hold")?;
    let mut subject = rcgen::DistinguishedName::new();
    subject.push(rcgen::DnType::CommonName, "BandSync gateway (self-signed)");
    params.distinguished_name = subject;
    let now = time::OffsetDateTime::now_utc();
    // A day's slack for a phone whose clock is behind.
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(VALIDITY_DAYS);
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.self_signed(key).context("signing the certificate")
}

/// The names `cert` is not valid for 30 days from now (all of them when it
/// expires by then), checked as a client trusting it would.
fn uncovered(cert: &CertificateDer<'static>, names: &[String]) -> Vec<String> {
    let mut roots = rustls::RootCertStore::empty();
    let verifier = roots.add(cert.clone()).ok().and_then(|()| {
        rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .ok()
    });
    let Some(verifier) = verifier else {
        return names.to_vec();
    };
    let soon = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        UnixTime::now().as_secs() + RENEW_BEFORE_DAYS * 86_400,
    ));
    names
        .iter()
        .filter(|name| {
            let Ok(server) = ServerName::try_from(name.as_str()) else {
                return true;
            };
            verifier
                .verify_server_cert(cert, &[], &server, &[], soon)
                .is_err()
        })
        .cloned()
        .collect()
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// Writes `path` through a temporary file and a rename, readable by the owner
/// only, so a crash never leaves half a key and another gateway sharing the
/// directory never reads one.
fn write_atomically(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn kept_across_restarts_and_reissued_for_a_new_name_only() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let first = ensure(dir.path(), &names(&["localhost", "127.0.0.1"])).expect("issued");
        let again = ensure(dir.path(), &names(&["localhost"])).expect("kept");
        assert_eq!(first.cert, again.cert, "a restart keeps the certificate");
        let moved = ensure(dir.path(), &names(&["localhost", "10.1.2.3"])).expect("reissued");
        assert_ne!(
            first.cert, moved.cert,
            "a new address needs a new certificate"
        );
        assert!(uncovered(&moved.cert, &names(&["127.0.0.1", "10.1.2.3", "localhost"])).is_empty());
        assert_eq!(
            uncovered(&moved.cert, &names(&["10.9.9.9", "other.example"])),
            names(&["10.9.9.9", "other.example"])
        );
        assert_eq!(first.key.secret_der(), moved.key.secret_der(), "same key");
    }
}
