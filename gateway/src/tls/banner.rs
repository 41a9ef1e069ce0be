//! What the gateway prints at start when it serves HTTPS: the URLs to open
//! (this machine's LAN addresses when it listens on all of them), the
//! certificate's fingerprint to compare with what a phone shows, and a QR code
//! of the LAN URL for the phones to scan.

use std::net::{IpAddr, SocketAddr};

/// The `https://` URLs that reach a gateway listening on `addr`, the one to
/// put in the QR code first (a LAN address when there is one).
pub fn urls(addr: SocketAddr, lan: &[IpAddr]) -> Vec<String> {
    let port = match addr.port() {
        443 => String::new(),
        p => format!(":{p}"),
    };
    let url = |host: String| format!("https://{host}{port}/");
    let host = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    };
    let ip = addr.ip();
    if ip.is_unspecified() {
        lan.iter()
            .map(|&ip| url(host(ip)))
            .chain(std::iter::once(url("localhost".into())))
            .collect()
    } else if ip.is_loopback() {
        vec![url("localhost".into())]
    } else {
        vec![url(host(ip))]
    }
}

/// The banner: URLs, fingerprint, and the first URL as a QR code (for a
/// terminal with a dark background, as most are).
pub fn text(
    urls: &[String],
    fingerprint: &str,
    cert: &std::path::Path,
    self_signed: bool,
) -> String {
    let mut out = String::new();
    let kind = if self_signed {
        "a self-signed"
    } else {
        "the configured"
    };
    out.push_str(&format!(
        "HTTPS with {kind} certificate ({})\n",
        cert.display()
    ));
    out.push_str(&format!("  SHA-256 fingerprint: {fingerprint}\n"));
    for url in urls {
        out.push_str(&format!("  open {url}\n"));
    }
    if let Some(first) = urls.first() {
        match qr(first) {
            Some(code) => {
                out.push_str(&format!("  scan to open {first}:\n"));
                out.push_str(&code);
                out.push('\n');
            }
            None => out.push_str("  (no QR code: the URL is too long for one)\n"),
        }
    }
    out
}

fn qr(data: &str) -> Option<String> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::new(data.as_bytes()).ok()?;
    Some(
        code.render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lan_addresses_first_when_listening_on_all() {
        let lan: Vec<IpAddr> = vec!["192.168.1.20".parse().expect("an address")];
        let all = urls("0.0.0.0:8443".parse().expect("an address"), &lan);
        assert_eq!(
            all,
            ["https://192.168.1.20:8443/", "https://localhost:8443/"]
        );
        let local = urls("127.0.0.1:443".parse().expect("an address"), &lan);
        assert_eq!(local, ["https://localhost/"]);
        let banner = text(&all, "AB:CD", std::path::Path::new("cert.pem"), true);
        assert!(banner.contains("SHA-256 fingerprint: AB:CD"));
        assert!(
            banner.contains('█') || banner.contains('▀'),
            "a QR code: {banner}"
        );
    }
}
