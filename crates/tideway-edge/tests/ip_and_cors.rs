//! IP rules with CIDR ranges and X-Forwarded-For (believed only from trusted proxies), and CORS
//! preflights and actual responses.

mod common;

use common::*;
use http::HeaderMap;
use tideway_edge::{Edge, EdgeConfig, RoutePolicyConfig, preflight_method};

fn edge(trusted: &[&str]) -> Edge {
    let config = EdgeConfig {
        trusted_proxies: trusted.iter().map(|s| s.to_string()).collect(),
        ..EdgeConfig::default()
    };
    Edge::new(&config).unwrap()
}

fn route(edge: &Edge, text: &str) -> std::sync::Arc<tideway_edge::RoutePolicy> {
    edge.route_policy(
        "GET /api/x",
        &toml::from_str::<RoutePolicyConfig>(text).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn ip_rules_use_cidr_ranges_and_only_trusted_forwarded_for() {
    let edge = edge(&["127.0.0.1", "10.200.0.0/16"]);
    let policy = route(
        &edge,
        r#"ip = { allow = ["10.0.0.0/8", "2001:db8::/32", "198.51.100.7"], deny = ["10.66.0.0/16"] }"#,
    );
    /// (peer, X-Forwarded-For, expected client, expected outcome)
    type Case = (
        &'static str,
        Option<&'static str>,
        &'static str,
        Result<(), &'static str>,
    );
    let cases: &[Case] = &[
        ("10.1.2.3", None, "10.1.2.3", Ok(())),
        ("198.51.100.7", None, "198.51.100.7", Ok(())),
        ("198.51.100.8", None, "198.51.100.8", Err("ip_not_allowed")),
        ("10.66.4.4", None, "10.66.4.4", Err("ip_denied")),
        ("2001:db8:5::1", None, "2001:db8:5::1", Ok(())),
        ("::ffff:10.1.2.3", None, "10.1.2.3", Ok(())),
        // Spoofing from an untrusted peer: the header is ignored.
        (
            "203.0.113.5",
            Some("10.1.1.1"),
            "203.0.113.5",
            Err("ip_not_allowed"),
        ),
        ("10.66.0.9", Some("10.1.1.1"), "10.66.0.9", Err("ip_denied")),
        // Through a trusted proxy: the address it appended is the client...
        ("127.0.0.1", Some("10.1.1.1"), "10.1.1.1", Ok(())),
        (
            "127.0.0.1",
            Some("203.0.113.5"),
            "203.0.113.5",
            Err("ip_not_allowed"),
        ),
        (
            "127.0.0.1",
            Some("10.66.1.1"),
            "10.66.1.1",
            Err("ip_denied"),
        ),
        // ...and a client cannot hide behind an allowed address written to its left.
        (
            "127.0.0.1",
            Some("10.1.1.1, 203.0.113.5"),
            "203.0.113.5",
            Err("ip_not_allowed"),
        ),
        // Two trusted hops.
        (
            "10.200.0.1",
            Some("10.1.1.1, 127.0.0.1"),
            "10.1.1.1",
            Ok(()),
        ),
    ];
    for (peer, xff, client, expected) in cases {
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(xff) = xff {
            headers.push(("x-forwarded-for", xff));
        }
        let parts = parts(&headers);
        let c = edge.client_ip(ip(peer), &parts.headers);
        assert_eq!(c.ip(), ip(client), "peer {peer}, xff {xff:?}");
        let outcome = edge
            .admit(&policy, &parts, c)
            .await
            .map(|_| ())
            .map_err(|r| {
                assert_eq!((r.status.as_u16(), r.code), (403, "permission_denied"));
                assert!(r.message.contains(client), "{}", r.message);
                r.reason
            });
        assert_eq!(outcome, *expected, "peer {peer}, xff {xff:?}");
    }
}

#[tokio::test]
async fn without_trusted_proxies_forwarded_for_is_never_believed() {
    let edge = edge(&[]);
    let parts = parts(&[("x-forwarded-for", "10.1.1.1")]);
    assert_eq!(
        edge.client_ip(ip("127.0.0.1"), &parts.headers).ip(),
        ip("127.0.0.1")
    );
}

#[test]
fn bad_ranges_are_configuration_errors() {
    let config = EdgeConfig {
        trusted_proxies: vec!["10.0.0.1/8".into()],
        ..EdgeConfig::default()
    };
    let problems = config.validate();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].1.contains("did you mean 10.0.0.0/8"),
        "{problems:?}"
    );
    let route: RoutePolicyConfig =
        toml::from_str(r#"ip = { allow = ["10.0.0.0/33"], deny = ["x"] }"#).unwrap();
    let problems = EdgeConfig::default().validate_route(&route);
    let paths: Vec<&str> = problems.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, ["ip.allow", "ip.deny"], "{problems:?}");
}

const CORS: &str = r#"
auth = { methods = "api_key" }
[cors]
allow_origins = ["https://app.example.com", "https://*.partners.example"]
allow_methods = ["GET", "POST", "DELETE"]
allow_headers = ["Content-Type", "Authorization", "X-Api-Key"]
expose_headers = ["X-Request-Id", "RateLimit-Remaining"]
max_age = "10m"
allow_credentials = true
"#;

fn cors_edge() -> Edge {
    let config: EdgeConfig = toml::from_str(
        r#"
[[api_keys]]
name = "k"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
"#,
    )
    .unwrap();
    Edge::new(&config).unwrap()
}

#[tokio::test]
async fn cors_preflights_are_answered_before_authentication() {
    let edge = cors_edge();
    let policy = route(&edge, CORS);
    let preflight = |origin: &str, method: &str, headers: &str| {
        let mut h = vec![
            ("origin", origin),
            ("access-control-request-method", method),
        ];
        if !headers.is_empty() {
            h.push(("access-control-request-headers", headers));
        }
        parts_with("OPTIONS", "/api/x", &h)
    };

    let p = preflight(
        "https://app.example.com",
        "DELETE",
        "content-type, x-api-key",
    );
    assert_eq!(
        preflight_method(&p),
        Some(http::Method::DELETE),
        "route lookup by the asked method"
    );
    let r = edge.cors_preflight(&policy, &p).expect("a preflight");
    assert_eq!(r.status(), 204, "no credentials needed for a preflight");
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-methods"], "GET, POST, DELETE");
    assert_eq!(
        h["access-control-allow-headers"],
        "content-type, authorization, x-api-key"
    );
    assert_eq!(h["access-control-max-age"], "600");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert!(h["vary"].to_str().unwrap().contains("origin"));

    // A wildcard subdomain, no extra headers.
    let r = edge
        .cors_preflight(
            &policy,
            &preflight("https://depot.partners.example", "POST", ""),
        )
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://depot.partners.example"
    );

    // Refusals carry no CORS headers.
    for (origin, method, headers) in [
        ("https://evil.example", "GET", ""),
        ("https://app.example.com.evil.example", "GET", ""),
        ("https://partners.example", "GET", ""),
        ("https://app.example.com", "PUT", ""),
        ("https://app.example.com", "GET", "x-admin"),
    ] {
        let r = edge
            .cors_preflight(&policy, &preflight(origin, method, headers))
            .unwrap();
        assert_eq!(r.status(), 403, "{origin} {method} {headers}");
        assert!(!r.headers().contains_key("access-control-allow-origin"));
    }

    // Not a preflight: a plain OPTIONS, or a GET.
    assert!(
        edge.cors_preflight(
            &policy,
            &parts_with(
                "OPTIONS",
                "/api/x",
                &[("origin", "https://app.example.com")]
            )
        )
        .is_none()
    );
    assert!(
        edge.cors_preflight(&policy, &parts(&[("origin", "https://app.example.com")]))
            .is_none()
    );
    // A route without CORS answers no preflight.
    let plain = route(&edge, "");
    assert!(
        edge.cors_preflight(&plain, &preflight("https://app.example.com", "GET", ""))
            .is_none()
    );
}

#[tokio::test]
async fn cors_headers_on_actual_responses() {
    let edge = cors_edge();
    let policy = route(&edge, CORS);
    let request = parts(&[("origin", "https://app.example.com")]);
    let mut response = HeaderMap::new();
    // An upstream's own CORS headers are replaced: the route's policy decides.
    response.insert("access-control-allow-origin", "*".parse().unwrap());
    edge.apply_cors(&policy, &request.headers, &mut response);
    assert_eq!(
        response["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(response["access-control-allow-credentials"], "true");
    assert_eq!(
        response["access-control-expose-headers"],
        "X-Request-Id, RateLimit-Remaining"
    );
    assert_eq!(response["vary"], "origin");

    // Also on a rejection, so the page can read the 401.
    let client = edge.client_ip(ip("192.0.2.1"), &request.headers);
    let rejection = edge.admit(&policy, &request, client).await.unwrap_err();
    let mut headers = rejection.headers.clone();
    edge.apply_cors(&policy, &request.headers, &mut headers);
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example.com"
    );

    let mut response = HeaderMap::new();
    let other = parts(&[("origin", "https://evil.example")]);
    edge.apply_cors(&policy, &other.headers, &mut response);
    assert!(!response.contains_key("access-control-allow-origin"));
    assert_eq!(
        response["vary"], "origin",
        "caches must still key on Origin"
    );

    // "*" without credentials: a literal star, no Vary needed.
    let star = route(&edge, r#"cors = { allow_origins = ["*"] }"#);
    let mut response = HeaderMap::new();
    edge.apply_cors(&star, &request.headers, &mut response);
    assert_eq!(response["access-control-allow-origin"], "*");
    assert!(!response.contains_key("vary"));
    assert!(!response.contains_key("access-control-allow-credentials"));
}

#[test]
fn cors_misconfigurations_are_reported() {
    let route: RoutePolicyConfig = toml::from_str(
        r#"cors = { allow_origins = ["*", "https://a.example/"], allow_credentials = true, allow_methods = ["G E T"] }"#,
    )
    .unwrap();
    let problems = EdgeConfig::default().validate_route(&route);
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems.iter().all(|(p, _)| p.starts_with("cors.")));
}
