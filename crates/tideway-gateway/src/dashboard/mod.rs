//! The web pages the gateway serves, plain HTML, CSS and JavaScript embedded in the binary (no
//! build step, nothing fetched from elsewhere):
//!
//! - `/dashboard` on the admin listener: polls `/admin/services`, `/admin/overload`,
//!   `/admin/memory` and `/metrics` every two seconds and shows request rate, error rate and
//!   latency per route, instance health, breaker states, shed counts and the memory chart.
//! - `/docs` on both listeners: renders `/openapi.json` ([`crate::openapi`]).
//!
//! The pages hold no data themselves, so the admin listener serves them without the admin
//! token; the data they fetch needs it (the dashboard asks for it and keeps it in the tab's
//! session storage).

/// The dashboard page.
pub(crate) const INDEX_HTML: &str = include_str!("index.html");
/// The dashboard's script.
pub(crate) const APP_JS: &str = include_str!("app.js");
/// The dashboard's style sheet.
pub(crate) const STYLE_CSS: &str = include_str!("style.css");
/// The documentation page for `/openapi.json`, self-contained.
pub(crate) const DOCS_HTML: &str = include_str!("docs.html");

/// A static page: its content type and body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Asset {
    /// `Content-Type`.
    pub(crate) content_type: &'static str,
    /// The body.
    pub(crate) body: &'static str,
}

/// The static page at `path` on the admin listener, if there is one.
pub(crate) fn asset(path: &str) -> Option<Asset> {
    let (content_type, body) = match path {
        "/dashboard" | "/dashboard/" | "/dashboard/index.html" => {
            ("text/html; charset=utf-8", INDEX_HTML)
        }
        "/dashboard/app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "/dashboard/style.css" => ("text/css; charset=utf-8", STYLE_CSS),
        crate::openapi::DOCS_PATH => ("text/html; charset=utf-8", DOCS_HTML),
        _ => return None,
    };
    Some(Asset { content_type, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_reference_only_embedded_assets() {
        let index = asset("/dashboard").unwrap();
        assert!(index.body.contains("/dashboard/app.js"));
        assert!(index.body.contains("/dashboard/style.css"));
        for page in [INDEX_HTML, APP_JS, STYLE_CSS, DOCS_HTML] {
            assert!(!page.contains("http://"), "no external resources");
            assert!(!page.contains("https://"), "no external resources");
        }
        assert!(asset("/dashboard/nope.js").is_none());
    }
}
