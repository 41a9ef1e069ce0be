//! What a stranger's browser may do: open `/ws` only from the gateway's own
//! pages, and find every page marked against framing, sniffing, foreign
//! scripts and referrer leaks.

use crate::common::*;
use bandsync_testkit::http_get;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

/// The upgrade's answer: 101 when the socket opened, else the refusal's status.
async fn upgrade_status(base: &str, token: &str, origin: Option<&str>) -> u16 {
    let url = bandsync_client::ws_url(base, token);
    let mut request = url.into_client_request().expect("a request");
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().expect("a header value"));
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("the upgrade failed otherwise: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_gateways_own_pages_open_a_socket() {
    let stack = Stack::start(Knobs::default()).await;
    let base = stack.base(0);
    let lead = stack.api(0).create("Leader").await.expect("create");
    // The page's origin is the gateway's own address.
    assert_eq!(upgrade_status(&base, &lead.token, Some(&base)).await, 101);
    assert_eq!(
        upgrade_status(&base, &lead.token, None).await,
        101,
        "not a browser: the token decides"
    );
    for foreign in ["https://evil.example", "null"] {
        assert_eq!(
            upgrade_status(&base, &lead.token, Some(foreign)).await,
            403,
            "a page of {foreign}"
        );
    }
    let metrics = http_get(&format!("{base}/metrics")).await.expect("metrics");
    let refused = bandsync_testkit::metric(&metrics.body, "bandsync_gateway_origins_refused_total")
        .expect("the refusals are counted");
    assert_eq!(refused, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_is_marked_for_the_browser() {
    let stack = Stack::start(Knobs {
        gateways: 1,
        ..Knobs::default()
    })
    .await;
    for path in ["/", "/app.js", "/style.css", "/healthz"] {
        let page = http_get(&format!("{}{path}", stack.base(0)))
            .await
            .expect("the page");
        assert_eq!(page.status, 200, "{path}");
        for expected in [
            "content-security-policy: default-src 'self'; script-src 'self';",
            "frame-ancestors 'none'",
            "x-content-type-options: nosniff",
            "x-frame-options: deny",
            "referrer-policy: no-referrer",
        ] {
            assert!(
                page.headers.to_ascii_lowercase().contains(expected),
                "{path} lacks {expected:?}: {}",
                page.headers
            );
        }
    }
}
