//! The web console: one page and its script and style sheet, embedded in the binary at build
//! time (`console/`), served at `/` with the security headers every response carries.
//!
//! The console is a client of the REST API like the CLI: it holds the bearer token in session
//! storage, sends it as `Authorization`, and renders every value the API returns as text
//! (never as HTML), so names, parameters and logs cannot inject markup or script. The content
//! security policy backs that up: scripts only from this origin, no inline script or style.

use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../console/index.html");
const SCRIPT: &str = include_str!("../console/console.js");
const STYLE: &str = include_str!("../console/console.css");

/// Scripts, styles, images and API calls from this origin only; no framing, no plugins, no
/// `<base>` rewriting, forms post only here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The console's pages (client-side routes); each is a URL a responder can share.
const PAGES: &[&str] = &[
    "workflows",
    "approvals",
    "templates",
    "cluster-templates",
    "cron-workflows",
    "events",
    "sensors",
    "audit",
    "login",
];

/// A page, the script or the style sheet; `None` for anything else.
pub fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/console/console.js" => Some(("text/javascript; charset=utf-8", SCRIPT)),
        "/console/console.css" => Some(("text/css; charset=utf-8", STYLE)),
        "/" => Some(("text/html; charset=utf-8", INDEX)),
        p => {
            let first = p.trim_start_matches('/').split('/').next().unwrap_or("");
            PAGES
                .contains(&first)
                .then_some(("text/html; charset=utf-8", INDEX))
        }
    }
}

/// What is not an API route: a console page or asset, else Argo's not-found error.
pub async fn fallback(method: Method, uri: axum::http::Uri) -> Response {
    let path = uri.path();
    match asset(path) {
        Some((content_type, body)) if method == Method::GET || method == Method::HEAD => (
            [
                (header::CONTENT_TYPE, content_type),
                // Embedded in the binary: a new version is a new binary, so revalidate.
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body,
        )
            .into_response(),
        _ => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"code": 5, "message": format!("{method} {path}: no such route")})),
        )
            .into_response(),
    }
}

/// Adds the security headers to every response (API answers included: they are cheap, and a
/// JSON body opened in a browser tab is then not sniffed or framed either).
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    // A page with a stricter policy of its own (the approval link page: no script at all)
    // keeps it.
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        h.entry(name)
            .or_insert_with(|| HeaderValue::from_static(value));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_assets_resolve_and_nothing_else_does() {
        assert_eq!(asset("/").map(|a| a.0), Some("text/html; charset=utf-8"));
        assert!(asset("/workflows/default/x").is_some());
        assert!(asset("/audit").is_some());
        assert_eq!(
            asset("/console/console.js").map(|a| a.0),
            Some("text/javascript; charset=utf-8")
        );
        assert!(asset("/console/../secret").is_none());
        assert!(asset("/nope").is_none());
        assert!(asset("/api/v1/nope").is_none());
    }

    /// The page loads its script and style from files, never inline, so the policy can forbid
    /// inline script; and user data goes through `textContent`, never `innerHTML`.
    #[test]
    fn console_has_no_inline_script_and_never_assigns_html() {
        assert!(!INDEX.contains("<script>"), "inline <script> in index.html");
        assert!(!INDEX.contains(" style="), "inline style in index.html");
        assert!(INDEX.contains(r#"<script type="module" src="/console/console.js">"#));
        for bad in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!SCRIPT.contains(bad), "console.js uses {bad}");
        }
    }
}
