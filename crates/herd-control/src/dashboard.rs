//! The web dashboard's page shell: HTML, JS and CSS embedded in the binary and served at
//! `/dashboard` without a token, since they hold no data. The page takes the API token from
//! its URL fragment (`/dashboard#token=...`, which browsers never send to a server), keeps it
//! in the tab's session storage and sends it as `Authorization: Bearer` with every API call;
//! everything it shows comes from the token-protected API.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

const HTML: &str = include_str!("../assets/dashboard.html");
const JS: &str = include_str!("../assets/dashboard.js");
const CSS: &str = include_str!("../assets/dashboard.css");

/// Only the page's own files may run, style or be fetched: no inline script, no other origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
                   form-action 'none'; base-uri 'none'; frame-ancestors 'none'";

/// The dashboard's routes, all served without a token: `/` (redirects), `/dashboard` and
/// its two files.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/dashboard") }))
        .route("/dashboard", get(|| async { asset("text/html; charset=utf-8", HTML) }))
        .route("/dashboard/dashboard.js", get(|| async { asset("text/javascript; charset=utf-8", JS) }))
        .route("/dashboard/dashboard.css", get(|| async { asset("text/css; charset=utf-8", CSS) }))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Revalidated on each load, so a new binary's page is never mixed with an old script.
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves the dashboard's router on a free port; `GET path` returns the status line's
    /// code, the headers (lower-cased) and the body.
    async fn get(path: &str) -> (u16, String, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, router::<()>()).await });
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        server.abort();
        let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP answer");
        let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (code, head.to_ascii_lowercase(), body.to_string())
    }

    #[tokio::test]
    async fn serves_the_shell_and_its_files_with_their_types() {
        let (code, head, body) = get("/dashboard").await;
        assert_eq!(code, 200);
        assert!(head.contains("content-type: text/html; charset=utf-8"), "{head}");
        assert!(head.contains("content-security-policy: default-src 'none'"), "{head}");
        assert!(head.contains("referrer-policy: no-referrer"), "{head}");
        assert!(body.contains(r#"<script src="/dashboard/dashboard.js" defer></script>"#), "{body}");
        assert!(body.contains(r#"href="/dashboard/dashboard.css""#), "{body}");

        let (code, head, body) = get("/dashboard/dashboard.js").await;
        assert_eq!(code, 200);
        assert!(head.contains("content-type: text/javascript; charset=utf-8"), "{head}");
        assert_eq!(body, JS);

        let (code, head, body) = get("/dashboard/dashboard.css").await;
        assert_eq!(code, 200);
        assert!(head.contains("content-type: text/css; charset=utf-8"), "{head}");
        assert_eq!(body, CSS);
    }

    #[tokio::test]
    async fn the_root_redirects_to_the_dashboard() {
        let (code, head, _) = get("/").await;
        assert_eq!(code, 303);
        assert!(head.contains("location: /dashboard\r\n"), "{head}");
    }

    #[tokio::test]
    async fn nothing_else_is_served() {
        // In the API's router, other paths fall through to its authenticated routes.
        assert_eq!(get("/dashboard/other.js").await.0, 404);
        assert_eq!(get("/v1/nodes").await.0, 404);
    }

    #[test]
    fn the_shell_holds_no_inline_code_the_policy_would_block() {
        assert!(!HTML.contains("<script>") && !HTML.contains("<style") && !HTML.contains(" style="), "{HTML}");
        let handler =
            HTML.split(|c: char| c.is_whitespace() || c == '<').find(|w| w.starts_with("on") && w.contains('='));
        assert_eq!(handler, None, "an inline event handler");
    }
}
