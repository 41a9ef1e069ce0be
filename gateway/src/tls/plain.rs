//! Plain HTTP sent to the HTTPS port: someone typed `http://` (or only the
//! address) instead of the `https://` URL. Rather than a reset connection,
//! which a phone shows as a bare error, they get a redirect to the same
//! address over HTTPS.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most of a request's head read to find its `Host`.
const MAX_HEAD: usize = 4096;

/// Whether a connection's first byte starts a plain HTTP request rather than a
/// TLS record (22: a handshake).
pub fn looks_like_http(first: u8) -> bool {
    first.is_ascii_uppercase()
}

/// The `https://` URL for a request head (`GET /path HTTP/1.1`, `Host: h`),
/// if it names a host that may go in a header.
pub fn redirect_target(head: &[u8]) -> Option<String> {
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?;
    let host = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("host")
            .then(|| value.trim())
    })?;
    let safe_host = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    let safe_path = path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic());
    (safe_host && safe_path).then(|| format!("https://{host}{path}"))
}

/// Reads the request head within `limit` and answers 301 to its HTTPS URL
/// (400 when it has no usable `Host`), then closes.
pub async fn redirect(mut tcp: TcpStream, limit: Duration) {
    let answer = async {
        let mut head = Vec::with_capacity(512);
        let mut buf = [0u8; 512];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            let n = tcp.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let response = match redirect_target(&head) {
            Some(url) => format!(
                "HTTP/1.1 301 Moved Permanently\r\nLocation: {url}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ),
            None => "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 27\r\nConnection: close\r\n\r\nthis port speaks HTTPS only"
                .to_owned(),
        };
        tcp.write_all(response.as_bytes()).await?;
        tcp.shutdown().await
    };
    let _ = tokio::time::timeout(limit, answer).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_sent_to_the_same_place_over_https() {
        let head = b"GET /?x=1 HTTP/1.1\r\nHost: 192.168.1.20:8443\r\nAccept: */*\r\n\r\n";
        assert_eq!(
            redirect_target(head).as_deref(),
            Some("https://192.168.1.20:8443/?x=1")
        );
        assert!(looks_like_http(b'G') && !looks_like_http(22));
        for bad in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: evil\rSet-Cookie:x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert_eq!(
                redirect_target(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
