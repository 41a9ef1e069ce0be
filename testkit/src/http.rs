//! A minimal HTTP/1.1 GET over loopback for tests: the services' operations and
//! analyst endpoints are plain HTTP, so no client crate is needed. Errors say what
//! failed (connect, time-out, a malformed answer) instead of reading as empty.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one request may take before it fails.
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// The head after the status line, lower-cased, one header a line.
    pub headers: String,
    pub body: String,
}

impl Response {
    /// A header's value by its lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim())
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("GET {url}: {source}")]
    Io { url: String, source: std::io::Error },
    #[error("GET {url}: no answer within {TIMEOUT:?}")]
    TimedOut { url: String },
    #[error("GET {url}: malformed response: {what}")]
    Malformed { url: String, what: &'static str },
}

/// `GET url` (`http://host:port/path`, or `host:port/path`), whole body read;
/// chunked bodies are decoded.
pub async fn http_get(url: &str) -> Result<Response, HttpError> {
    http_get_with(url, &[]).await
}

/// `GET url` with extra request headers (`("Authorization", "Bearer …")`).
pub async fn http_get_with(url: &str, headers: &[(&str, &str)]) -> Result<Response, HttpError> {
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let io = |source| HttpError::Io {
        url: url.to_owned(),
        source,
    };
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(host).await.map_err(io)?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.map_err(io)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.map_err(io)?;
        Ok(raw)
    };
    let raw = tokio::time::timeout(TIMEOUT, fetch)
        .await
        .map_err(|_| HttpError::TimedOut {
            url: url.to_owned(),
        })??;
    parse(&String::from_utf8_lossy(&raw)).map_err(|what| HttpError::Malformed {
        url: url.to_owned(),
        what,
    })
}

fn parse(text: &str) -> Result<Response, &'static str> {
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no end of head")?;
    let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status code")?;
    let headers = headers.to_ascii_lowercase().replace("\r\n", "\n");
    let mut response = Response {
        status,
        headers,
        body: String::new(),
    };
    response.body = if response.header("transfer-encoding") == Some("chunked") {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Ok(response)
}

fn dechunk(mut body: &str) -> Result<String, &'static str> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").ok_or("chunk size missing")?;
        let n = usize::from_str_radix(size.trim(), 16).map_err(|_| "bad chunk size")?;
        if n == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..n).ok_or("chunk shorter than its size")?);
        body = rest.get(n + 2..).ok_or("chunk not terminated")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_bodies() {
        let plain = parse("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello").expect("ok");
        assert_eq!((plain.status, plain.body.as_str()), (200, "hello"));
        assert_eq!(plain.header("content-type"), Some("text/plain"));
        let chunked = parse(
            "HTTP/1.1 503 X\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .expect("ok");
        assert_eq!((chunked.status, chunked.body.as_str()), (503, "abcde"));
        assert!(
            parse("HTTP/1.1 200 OK\r\n").is_err(),
            "a cut-off head is an error"
        );
    }
}
