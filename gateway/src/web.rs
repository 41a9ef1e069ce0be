//! The browser client, embedded at build time so a gateway binary is all an operator deploys.

use axum::extract::Path;
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

#[cfg(test)]
mod tests {
    use super::MODULES;

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
