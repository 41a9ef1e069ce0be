//! The browser client, embedded at build time so a gateway binary is all an operator deploys.

use axum::extract::{Path, Query};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// What every response says about how a browser may use it: scripts, styles
/// and connections from this origin only (the page has no inline script or
/// style), never inside another site's frame, no referrer sent on (the page's
/// URL names the session), and content types taken as given.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'self'; object-src 'none'";

pub async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

pub async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("../web/index.html"),
    )
}

/// The client's ES modules, served as `/js/<name>`: `index.html` loads
/// `app.js`, which imports the rest (no build step; the CSP's
/// `script-src 'self'` admits them, and `nosniff` needs the JavaScript type).
const MODULES: &[(&str, &str)] = &[
    ("app.js", include_str!("../web/js/app.js")),
    ("band.js", include_str!("../web/js/band.js")),
    ("chart.js", include_str!("../web/js/chart.js")),
    ("chordpro.js", include_str!("../web/js/chordpro.js")),
    ("clock.js", include_str!("../web/js/clock.js")),
    ("conn.js", include_str!("../web/js/conn.js")),
    ("controls.js", include_str!("../web/js/controls.js")),
    ("frame.js", include_str!("../web/js/frame.js")),
    ("keys.js", include_str!("../web/js/keys.js")),
    ("latency.js", include_str!("../web/js/latency.js")),
    ("library.js", include_str!("../web/js/library.js")),
    ("prefs.js", include_str!("../web/js/prefs.js")),
    ("session.js", include_str!("../web/js/session.js")),
    ("sound.js", include_str!("../web/js/sound.js")),
    ("state.js", include_str!("../web/js/state.js")),
    ("timeline.js", include_str!("../web/js/timeline.js")),
    ("util.js", include_str!("../web/js/util.js")),
    ("views.js", include_str!("../web/js/views.js")),
    ("watchdog.js", include_str!("../web/js/watchdog.js")),
];

pub async fn module(Path(name): Path<String>) -> Response {
    match MODULES.iter().find(|(file, _)| *file == name) {
        Some((_, body)) => (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            *body,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

pub async fn style_css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../web/style.css"),
    )
}

/// `GET /qr.svg?origin=https://host:port&code=K7MQ2XBD`: the join link
/// `<origin>/?join=<code>` as a QR code, for the leader's screen. The
/// `qrcode` crate encodes and draws it (quiet zone included).
/// Both parts are validated (a join code, an http(s) origin of host and
/// port characters only), so the image can only ever say a join link.
pub async fn join_qr(Query(q): Query<JoinQr>) -> Response {
    match join_link(&q.origin, &q.code).and_then(|link| qr_svg(&link)) {
        Some(svg) => (
            [
                (header::CONTENT_TYPE, "image/svg+xml"),
                (header::CACHE_CONTROL, "private, max-age=3600"),
            ],
            svg,
        )
            .into_response(),
        None => StatusCode::BAD_REQUEST.into_response(),
    }
}

#[derive(serde::Deserialize)]
pub struct JoinQr {
    origin: String,
    code: String,
}

fn join_link(origin: &str, code: &str) -> Option<String> {
    let code = bandsync_nats::JoinCode::parse(code).ok()?;
    let host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))?;
    let host_ok = !host.is_empty()
        && host.len() <= 260
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    host_ok.then(|| format!("{origin}/?join={}", code.as_str()))
}

fn qr_svg(data: &str) -> Option<String> {
    let code = qrcode::QrCode::new(data.as_bytes()).ok()?;
    Some(code.render::<qrcode::render::svg::Color>().build())
}

#[cfg(test)]
mod tests {
    use super::MODULES;

    #[test]
    fn a_join_qr_is_only_ever_a_join_link() {
        assert_eq!(
            super::join_link("https://band.example:8443", "k7mq-2xbd").as_deref(),
            Some("https://band.example:8443/?join=K7MQ2XBD")
        );
        assert_eq!(super::join_link("javascript:alert(1)", "K7MQ2XBD"), None);
        assert_eq!(
            super::join_link("https://evil.example/x?", "K7MQ2XBD"),
            None
        );
        assert_eq!(super::join_link("https://band.example", "nope"), None);
        let svg = super::qr_svg("https://band.example/?join=K7MQ2XBD").expect("a code");
        assert!(svg.contains("<svg ") && svg.contains("<path fill=\"#000\" d=\"M"));
    }

    /// A module added to web/js but not to `MODULES` would be a 404 in the
    /// browser, and the page dead, in a release built from a clean tree.
    #[test]
    fn every_module_in_web_js_is_served() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web/js");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .expect("gateway/web/js")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".js"))
            .collect();
        on_disk.sort();
        let served: Vec<String> = MODULES.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(served, on_disk);
    }
}
