//! HTTPS and WebSockets over TLS with the self-signed certificate a gateway
//! makes for a LAN, checked by a client that trusts exactly that certificate;
//! and a client that never finishes its handshake holds nobody up.

use crate::common::*;
use bandsync_testkit::{eventually, http_get, metric};
use futures::StreamExt;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A gateway process serving HTTPS with its self-signed certificate in `dir`.
async fn tls_gateway(stack: &Stack, dir: &Path, extra: &[&str]) -> GatewayProcess {
    let mut args = stack.gateway_args("gw-tls");
    args.push("--tls=self-signed".into());
    args.push(format!("--tls-dir={}", dir.display()));
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    GatewayProcess::spawn(&args).await
}

/// A TLS client that trusts the certificate in `cert_pem` and nothing else.
fn client_trusting(cert_pem: &Path) -> tokio_rustls::TlsConnector {
    let cert = CertificateDer::from_pem_file(cert_pem).expect("the certificate file");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("a usable certificate");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn connect_tls(
    connector: &tokio_rustls::TlsConnector,
    gateway: &GatewayProcess,
) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(gateway.addr).await.expect("tcp connect");
    let name = ServerName::try_from("localhost").expect("a name");
    tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("the handshake succeeds against the trusted certificate")
}

/// `GET path` over TLS: (status line, body).
async fn https_get(
    connector: &tokio_rustls::TlsConnector,
    gateway: &GatewayProcess,
    path: &str,
) -> (String, String) {
    let mut tls = connect_tls(connector, gateway).await;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes())
        .await
        .expect("request sent");
    let mut raw = Vec::new();
    // A server may close without close_notify once it has answered.
    match tokio::time::timeout(WAIT, tls.read_to_end(&mut raw)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Ok(Err(e)) => panic!("reading the answer: {e}"),
        Err(_) => panic!("no answer in time"),
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

/// SHA-256 of a certificate as browsers show it (`AB:CD:…`), computed here
/// rather than by the gateway's own function.
fn sha256_colons(der: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(der);
    let pairs: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    pairs.join(":")
}

fn fingerprint_line(line: &str) -> Option<String> {
    line.trim()
        .strip_prefix("SHA-256 fingerprint: ")
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_wss_with_the_self_signed_certificate() {
    let stack = Stack::start(Knobs {
        gateways: 1,
        ..Knobs::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let gateway = tls_gateway(&stack, dir.path(), &[]).await;
    let printed = gateway.printed("a fingerprint", fingerprint_line).await;
    let url = gateway
        .printed("a URL", |l| {
            l.trim()
                .strip_prefix("open https://localhost:")
                .map(str::to_owned)
        })
        .await;
    assert_eq!(url, format!("{}/", gateway.addr.port()), "the URL printed");

    // The certificate kept in the directory is the one printed...
    let cert_path = dir.path().join("cert.pem");
    let kept = CertificateDer::from_pem_file(&cert_path).expect("cert.pem");
    assert_eq!(sha256_colons(&kept), printed);
    // ...and the one served.
    let connector = client_trusting(&cert_path);
    let tls = connect_tls(&connector, &gateway).await;
    let served = tls.get_ref().1.peer_certificates().expect("a certificate")[0].clone();
    assert_eq!(sha256_colons(&served), printed, "the certificate served");
    drop(tls);

    let (status, page) = https_get(&connector, &gateway, "/").await;
    assert!(status.contains(" 200 "), "{status}");
    assert!(page.contains("/app.js"), "the web client: {page}");

    // A WebSocket over TLS, with a member of a session made elsewhere.
    let lead = stack.api(0).create("Leader").await.expect("create");
    let port = gateway.addr.port();
    let mut request = bandsync_client::ws_request(&format!("http://localhost:{port}"), &lead.token)
        .expect("a request");
    *request.uri_mut() = format!("wss://localhost:{port}/ws").parse().expect("a URI");
    let tls = connect_tls(&connector, &gateway).await;
    let (mut socket, response) = tokio_tungstenite::client_async(request, tls)
        .await
        .expect("the upgrade over TLS");
    assert_eq!(response.status().as_u16(), 101);
    let first = tokio::time::timeout(WAIT, socket.next())
        .await
        .expect("a message in time")
        .expect("a message")
        .expect("a frame");
    let text = first.into_text().expect("text");
    assert!(text.contains("\"type\":\"welcome\""), "{text}");

    // A restart keeps the certificate (phones accepted it once).
    drop(socket);
    drop(gateway);
    let again = tls_gateway(&stack, dir.path(), &[]).await;
    assert_eq!(
        again.printed("a fingerprint", fingerprint_line).await,
        printed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_is_cut_off_and_holds_nobody_up() {
    const TIMEOUT: Duration = Duration::from_millis(1_000);
    let stack = Stack::start(Knobs {
        gateways: 0,
        ..Knobs::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let gateway = tls_gateway(&stack, dir.path(), &["--tls-handshake-timeout-ms=1000"]).await;
    let connector = client_trusting(&dir.path().join("cert.pem"));
    let failures = |reason: &str| {
        let url = format!("http://{}/metrics", gateway.ops_addr);
        let series =
            format!("bandsync_gateway_tls_handshake_failures_total{{reason=\"{reason}\"}}");
        async move {
            let text = http_get(&url).await.expect("metrics").body;
            metric(&text, &series).expect("the failures are exported")
        }
    };
    assert_eq!(failures("timeout").await, 0.0);

    // Clients that connect and say nothing.
    let started = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(gateway.addr).await.expect("tcp connect"));
    }
    // Meanwhile everyone else is served at once.
    let (status, _) = https_get(&connector, &gateway, "/").await;
    assert!(status.contains(" 200 "), "{status}");
    assert!(
        started.elapsed() < TIMEOUT,
        "another client waited {:?}, behind the silent ones",
        started.elapsed()
    );
    // The silent ones are closed once their time is up.
    for mut tcp in silent {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(TIMEOUT * 3, tcp.read(&mut byte))
            .await
            .expect("closed within the handshake timeout");
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "closed, not answered: {read:?}"
        );
    }
    let waited = started.elapsed();
    assert!(
        waited >= TIMEOUT * 9 / 10 && waited < TIMEOUT * 3,
        "closed after {waited:?} with a {TIMEOUT:?} limit"
    );
    eventually(WAIT, "the timeouts counted", || async {
        failures("timeout").await >= 20.0
    })
    .await;

    // Plain HTTP on the HTTPS port (someone typed http://) is sent to HTTPS.
    let before = failures("plain_http").await;
    let plain = http_get(&format!("http://{}/?x=1", gateway.addr))
        .await
        .expect("an answer over plain HTTP");
    assert_eq!(plain.status, 301);
    assert_eq!(
        plain.header("location"),
        Some(format!("https://{}/?x=1", gateway.addr).as_str())
    );
    assert_eq!(failures("plain_http").await, before + 1.0);

    // A handshake that is not one is counted as a failure.
    let before = failures("error").await;
    let mut garbage = TcpStream::connect(gateway.addr).await.expect("tcp connect");
    garbage
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef])
        .await
        .expect("sent");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, garbage.read_to_end(&mut rest)).await;
    eventually(WAIT, "the bad handshake counted", || async {
        failures("error").await > before
    })
    .await;
}
