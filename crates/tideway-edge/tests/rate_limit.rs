//! Rate limits: accuracy over 10 s (local, and two gateways sharing one limit through a real
//! redis-server; the two run in parallel), 429 headers, keys, bounded state, Redis outages.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tideway_edge::{Edge, EdgeConfig, Rejection, RoutePolicy, RoutePolicyConfig};

/// Requests per second the limit allows.
const RATE: f64 = 100.0;
/// Requests a fresh key may send at once.
const BURST: u32 = 20;
/// How long the accuracy tests offer load.
const WINDOW: Duration = Duration::from_secs(10);
/// The issue's bound.
const TOLERANCE: f64 = 0.05;

fn policy(edge: &Edge, text: &str) -> Arc<RoutePolicy> {
    edge.route_policy(
        "POST /api/quotes",
        &toml::from_str::<RoutePolicyConfig>(text).unwrap(),
    )
    .unwrap()
}

async fn hit(
    edge: &Edge,
    policy: &RoutePolicy,
    client: &str,
) -> Result<http::HeaderMap, Rejection> {
    let parts = parts(&[]);
    let c = edge.client_ip(ip(client), &parts.headers);
    edge.admit(policy, &parts, c)
        .await
        .map(|a| a.rate_headers.to_header_map())
}

/// Offers `per_second` requests per second from one client for [`WINDOW`], steadily (a tick
/// every 1/per_second s); returns (admitted, offered, elapsed from first to last request).
async fn offer(
    edge: &Edge,
    policy: &RoutePolicy,
    client: &str,
    per_second: u32,
) -> (u32, u32, Duration) {
    let period = Duration::from_secs(1) / per_second;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let (mut admitted, mut offered) = (0, 0);
    let start = Instant::now();
    let mut last = start;
    while offered < per_second * WINDOW.as_secs() as u32 {
        tick.tick().await;
        last = Instant::now();
        offered += 1;
        if hit(edge, policy, client).await.is_ok() {
            admitted += 1;
        }
    }
    (admitted, offered, last - start)
}

fn check_accuracy(what: &str, admitted: u32, elapsed: Duration) {
    // GCRA's bound over a window w: burst + w · rate.
    let expected = f64::from(BURST) + RATE * elapsed.as_secs_f64();
    let error = (f64::from(admitted) - expected) / expected;
    eprintln!(
        "{what}: admitted {admitted} in {:.3} s, limit allows {expected:.1}: error {:+.2}%",
        elapsed.as_secs_f64(),
        error * 100.0
    );
    assert!(
        error.abs() <= TOLERANCE,
        "{what}: admitted {admitted}, expected {expected:.1} ± 5%"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_limit_holds_within_5_percent_over_10_s() {
    let edge = Edge::new(&EdgeConfig::default()).unwrap();
    let policy = policy(
        &edge,
        &format!("rate_limit = {{ rate = {RATE}, burst = {BURST} }}"),
    );
    // Twice the limit, steadily.
    let (admitted, offered, elapsed) = offer(&edge, &policy, "192.0.2.1", 2 * RATE as u32).await;
    assert_eq!(offered, 2000);
    check_accuracy("local", admitted, elapsed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_sharing_redis_enforce_one_limit() {
    let redis = RedisServer::start();
    let config: EdgeConfig = toml::from_str(&format!(
        "[redis]\nurl = \"{}\"\ntimeout = \"250ms\"\n",
        redis.url()
    ))
    .unwrap();
    let text = format!("rate_limit = {{ rate = {RATE}, burst = {BURST}, shared = true }}");
    let (a, b) = (Edge::new(&config).unwrap(), Edge::new(&config).unwrap());
    let (pa, pb) = (policy(&a, &text), policy(&b, &text));

    // Deterministic first: a client that spends its burst at gateway A is refused at B. A
    // bucket that refills once in 10 s, so no token comes back while the burst is spent (at
    // the main rate one would every 10 ms, less than a loaded machine's round trips take).
    let slow = format!(
        "rate_limit = {{ rate = 0.1, burst = {BURST}, shared = true, bucket = \"spend-at-a\" }}"
    );
    let (sa, sb) = (policy(&a, &slow), policy(&b, &slow));
    for i in 0..BURST {
        hit(&a, &sa, "198.51.100.1")
            .await
            .unwrap_or_else(|r| panic!("burst request {i} refused: {}", r.message));
    }
    let r = hit(&b, &sb, "198.51.100.1").await.unwrap_err();
    assert_eq!(r.status, 429, "{}", r.message);
    let keys = redis.command(&["KEYS", "tideway:rl:*"]);
    assert!(
        keys.contains("198.51.100.1"),
        "the state is in Redis: {keys}"
    );

    // Then load: each gateway offers 1.5x the limit from the same client for 10 s.
    let (a, b) = (Arc::new(a), Arc::new(b));
    let client = "198.51.100.2";
    let ta = tokio::spawn({
        let (a, pa) = (Arc::clone(&a), Arc::clone(&pa));
        async move { offer(&a, &pa, client, 150).await }
    });
    let tb = tokio::spawn({
        let (b, pb) = (Arc::clone(&b), Arc::clone(&pb));
        async move { offer(&b, &pb, client, 150).await }
    });
    let ((admitted_a, _, ea), (admitted_b, _, eb)) = (ta.await.unwrap(), tb.await.unwrap());
    eprintln!("shared: gateway A admitted {admitted_a}, gateway B {admitted_b}");
    assert!(admitted_a > 0 && admitted_b > 0, "both gateways served");
    check_accuracy(
        "shared by two gateways",
        admitted_a + admitted_b,
        ea.max(eb),
    );
}

#[tokio::test]
async fn refusals_carry_retry_after_and_ratelimit_headers() {
    let edge = Edge::new(&EdgeConfig::default()).unwrap();
    let p = policy(&edge, "rate_limit = { rate = 1.0, burst = 3 }");
    for remaining in [2, 1, 0] {
        let h = hit(&edge, &p, "192.0.2.1").await.unwrap();
        assert_eq!(h["ratelimit-limit"], "3");
        assert_eq!(h["ratelimit-remaining"], remaining.to_string().as_str());
    }
    let r = hit(&edge, &p, "192.0.2.1").await.unwrap_err();
    assert_eq!(
        (r.status.as_u16(), r.code, r.reason),
        (429, "rate_limited", "rate_limited")
    );
    assert_eq!(r.headers["retry-after"], "1");
    assert_eq!(r.headers["ratelimit-remaining"], "0");
    assert_eq!(r.headers["ratelimit-reset"], "3");
    assert!(r.message.contains("POST /api/quotes"), "{}", r.message);
    // Another client has its own budget; an IPv6 client's whole /64 shares one.
    assert!(hit(&edge, &p, "192.0.2.2").await.is_ok());
    for _ in 0..3 {
        assert!(hit(&edge, &p, "2001:db8:1:2::a").await.is_ok());
    }
    assert!(hit(&edge, &p, "2001:db8:1:2::b").await.is_err(), "same /64");
    assert!(
        hit(&edge, &p, "2001:db8:1:3::a").await.is_ok(),
        "another /64"
    );
    // headers = false: no RateLimit headers on admitted responses.
    let quiet = edge
        .route_policy(
            "GET /q",
            &toml::from_str("rate_limit = { rate = 1.0, burst = 3, headers = false }").unwrap(),
        )
        .unwrap();
    assert!(hit(&edge, &quiet, "192.0.2.1").await.unwrap().is_empty());
}

#[tokio::test]
async fn limits_can_count_per_subject_or_api_key() {
    use sha2::Digest;
    let config: EdgeConfig = toml::from_str(&format!(
        r#"
[[api_keys]]
name = "alpha"
sha256 = "{}"
[[api_keys]]
name = "beta"
sha256 = "{}"
"#,
        hex::encode(sha2::Sha256::digest(b"alpha-key-0123456789")),
        hex::encode(sha2::Sha256::digest(b"beta-key-0123456789")),
    ))
    .unwrap();
    let edge = Edge::new(&config).unwrap();
    let p = policy(
        &edge,
        r#"
auth = { methods = "api_key", optional = true }
rate_limit = { rate = 1.0, burst = 2, key = "subject" }
"#,
    );
    let call = |key: Option<&'static str>, client: &'static str| {
        let edge = &edge;
        let p = &p;
        async move {
            let headers: Vec<(&str, &str)> = key.map(|k| ("x-api-key", k)).into_iter().collect();
            let parts = parts(&headers);
            let c = edge.client_ip(ip(client), &parts.headers);
            edge.admit(p, &parts, c).await.is_ok()
        }
    };
    // Same client address, two keys: two budgets.
    assert!(call(Some("alpha-key-0123456789"), "192.0.2.1").await);
    assert!(call(Some("alpha-key-0123456789"), "192.0.2.1").await);
    assert!(
        !call(Some("alpha-key-0123456789"), "192.0.2.9").await,
        "alpha's budget follows the key, not the address"
    );
    assert!(call(Some("beta-key-0123456789"), "192.0.2.1").await);
    // Anonymous callers are counted per address.
    assert!(call(None, "192.0.2.1").await);
    assert!(call(None, "192.0.2.1").await);
    assert!(!call(None, "192.0.2.1").await);
    assert!(call(None, "192.0.2.2").await);
    // Failed authentications count against the address: guessing keys is throttled.
    let guess = |client: &'static str| {
        let edge = &edge;
        let p = &p;
        async move {
            let parts = parts(&[("x-api-key", "guess")]);
            let c = edge.client_ip(ip(client), &parts.headers);
            edge.admit(p, &parts, c).await.unwrap_err().status.as_u16()
        }
    };
    assert_eq!(guess("192.0.2.30").await, 401);
    assert_eq!(guess("192.0.2.30").await, 401);
    assert_eq!(guess("192.0.2.30").await, 429);
    assert_eq!(guess("192.0.2.31").await, 401, "per address");
}

#[tokio::test]
async fn local_key_state_is_bounded_and_pruned() {
    let config = EdgeConfig {
        prune_interval: Duration::from_millis(50),
        ..EdgeConfig::default()
    };
    let edge = Edge::new(&config).unwrap();
    let p = policy(
        &edge,
        "rate_limit = { rate = 1000.0, burst = 1, max_keys = 1000 }",
    );
    // A spray of 20,000 addresses: every new one is admitted (evicting), memory stays bounded.
    for i in 0..20_000u32 {
        let client = std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string();
        assert!(
            hit(&edge, &p, &client).await.is_ok(),
            "new key {client} refused"
        );
    }
    let keys = edge.rate_limit_keys();
    assert!(
        (1..=1000).contains(&keys),
        "{keys} keys tracked for a bound of 1000"
    );
    // Each key is back at full burst 1 ms later; the prune task (every 50 ms) drops them all.
    let mut left = keys;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        left = edge.rate_limit_keys();
        if left == 0 {
            break;
        }
    }
    assert_eq!(left, 0, "the prune task dropped idle keys");
}

#[tokio::test]
async fn buckets_survive_recompiling_and_can_be_shared_by_name() {
    let edge = Edge::new(&EdgeConfig::default()).unwrap();
    let text = "rate_limit = { rate = 1.0, burst = 1 }";
    let first = policy(&edge, text);
    assert!(hit(&edge, &first, "192.0.2.1").await.is_ok());
    // A route table rebuilt (the same route compiled again) keeps the count.
    let again = policy(&edge, text);
    assert!(hit(&edge, &again, "192.0.2.1").await.is_err());
    // A changed limit starts afresh.
    let changed = policy(&edge, "rate_limit = { rate = 1.0, burst = 2 }");
    assert!(hit(&edge, &changed, "192.0.2.1").await.is_ok());
    // Two routes naming one bucket share it.
    let x = edge
        .route_policy(
            "GET /x",
            &toml::from_str(r#"rate_limit = { rate = 1.0, burst = 1, bucket = "reads" }"#).unwrap(),
        )
        .unwrap();
    let y = edge
        .route_policy(
            "GET /y",
            &toml::from_str(r#"rate_limit = { rate = 1.0, burst = 1, bucket = "reads" }"#).unwrap(),
        )
        .unwrap();
    assert_eq!(x.rate_limit_bucket(), Some("reads"));
    assert!(hit(&edge, &x, "192.0.2.7").await.is_ok());
    assert!(hit(&edge, &y, "192.0.2.7").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_falls_back_as_configured_and_recovers() {
    let mut redis = RedisServer::start();
    let edge_with = |on_error: &str| {
        let config: EdgeConfig = toml::from_str(&format!(
            "[redis]\nurl = \"{}\"\ntimeout = \"100ms\"\nretry_interval = \"200ms\"\non_error = \"{on_error}\"\n",
            redis.url()
        ))
        .unwrap();
        Edge::new(&config).unwrap()
    };
    let text = "rate_limit = { rate = 1.0, burst = 2, shared = true }";
    let (local, allow, deny) = (edge_with("local"), edge_with("allow"), edge_with("deny"));
    let (pl, pa, pd) = (
        policy(&local, text),
        policy(&allow, text),
        policy(&deny, text),
    );
    // Connected and shared.
    assert!(hit(&local, &pl, "192.0.2.1").await.is_ok());
    assert!(hit(&allow, &pa, "192.0.2.2").await.is_ok());
    assert!(hit(&deny, &pd, "192.0.2.3").await.is_ok());

    redis.stop();
    let started = Instant::now();
    // local: this gateway's own limiter takes over (burst 2, then 429).
    let outcomes: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(
                hit(&local, &pl, "192.0.2.50")
                    .await
                    .map_or_else(|r| r.status.as_u16(), |_| 200),
            );
        }
        v
    };
    assert_eq!(outcomes, [200, 200, 429, 429]);
    // allow: fail open.
    for _ in 0..4 {
        assert!(hit(&allow, &pa, "192.0.2.51").await.is_ok());
    }
    // deny: fail closed with 503.
    let r = hit(&deny, &pd, "192.0.2.52").await.unwrap_err();
    assert_eq!(
        (r.status.as_u16(), r.reason),
        (503, "rate_limiter_unavailable")
    );
    assert_eq!(r.headers["retry-after"], "1");
    // 12 checks, at most one Redis timeout per gateway per retry interval.
    let spent = started.elapsed();
    assert!(
        spent < Duration::from_secs(2),
        "checks during the outage took {spent:?}"
    );

    // Redis comes back on the same port: shared counting resumes.
    redis.restart();
    let mut resumed = false;
    for _ in 0..100 {
        let _ = hit(&deny, &pd, "192.0.2.60").await;
        if redis
            .command(&["KEYS", "tideway:rl:*"])
            .contains("192.0.2.60")
        {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        resumed,
        "shared checks did not resume within 5 s of Redis coming back"
    );
}
