//! Authentication: JWTs made by PyJWT for every supported algorithm are accepted; every forged,
//! stale or malformed token is refused with 401 and a clear message; JWKS files are reloaded
//! when they change; API keys.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tideway_edge::{
    Admitted, AuthMethod, Edge, EdgeConfig, Rejection, RoutePolicy, RoutePolicyConfig,
};

const ISS: &str = "https://idp.test";
const AUD: &str = "tideway";
const API_KEY: &str = "scanner-key-7d1f0c4e9b2a4c8e9f3a1b5c";

fn edge_config(extra: &str) -> EdgeConfig {
    let k = keys();
    let api_hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(API_KEY.as_bytes()))
    };
    let text = format!(
        r#"
{extra}

[[jwt_keys]]
id = "hs"
algorithm = "HS256"
secret = "{HS_SECRET}"
issuer = "{ISS}"
audience = "{AUD}"

[[jwt_keys]]
id = "rs"
algorithm = "RS256"
public_key_file = "{rs}"
issuer = "{ISS}"
audience = ["other", "{AUD}"]

[[jwt_keys]]
id = "es"
algorithm = "ES256"
public_key_file = "{es}"
issuer = "{ISS}"
audience = "{AUD}"

[[jwt_keys]]
id = "ed"
algorithm = "EdDSA"
public_key_file = "{ed}"
issuer = "{ISS}"
audience = "{AUD}"
leeway = "30s"

[[api_keys]]
name = "warehouse-scanner"
sha256 = "{api_hash}"
"#,
        rs = k.public("rsa").display(),
        es = k.public("ec").display(),
        ed = k.public("ed").display(),
    );
    toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn policy(edge: &Edge, toml_text: &str) -> Arc<RoutePolicy> {
    let config: RoutePolicyConfig = toml::from_str(toml_text).unwrap();
    edge.route_policy("GET /api/x", &config).unwrap()
}

async fn admit(
    edge: &Edge,
    policy: &RoutePolicy,
    headers: &[(&str, &str)],
) -> Result<Admitted, Rejection> {
    let parts = parts(headers);
    let client = edge.client_ip(ip("192.0.2.10"), &parts.headers);
    edge.admit(policy, &parts, client).await
}

async fn with_token(edge: &Edge, policy: &RoutePolicy, token: &str) -> Result<Admitted, Rejection> {
    admit(edge, policy, &[("authorization", &bearer(token))]).await
}

#[tokio::test]
async fn tokens_signed_by_pyjwt_are_accepted_for_every_algorithm() {
    let edge = Edge::new(&edge_config("")).unwrap();
    let policy = policy(
        &edge,
        r#"auth = { methods = "jwt", forward_claims = ["roles", "tenant", "absent"] }"#,
    );
    let k = keys();
    let mut c = claims("ada", ISS, AUD);
    c["roles"] = json!(["ops", "billing"]);
    c["tenant"] = json!("harbour");
    let cases: Vec<(&str, Option<&str>, Value)> = vec![
        (
            "hs",
            Some("hs"),
            sign_hs_req(HS_SECRET, Some("hs"), c.clone()),
        ),
        ("hs", None, sign_hs_req(HS_SECRET, None, c.clone())),
        (
            "rs",
            Some("rs"),
            sign_req("RS256", &k.private("rsa"), Some("rs"), c.clone()),
        ),
        (
            "rs",
            None,
            sign_req("RS256", &k.private("rsa"), None, c.clone()),
        ),
        (
            "es",
            Some("es"),
            sign_req("ES256", &k.private("ec"), Some("es"), c.clone()),
        ),
        (
            "es",
            None,
            sign_req("ES256", &k.private("ec"), None, c.clone()),
        ),
        (
            "ed",
            Some("ed"),
            sign_req("EdDSA", &k.private("ed"), Some("ed"), c.clone()),
        ),
        (
            "ed",
            None,
            sign_req("EdDSA", &k.private("ed"), None, c.clone()),
        ),
    ];
    let tokens = py(&cases.iter().map(|(_, _, r)| r.clone()).collect::<Vec<_>>());
    for ((key, kid, _), token) in cases.iter().zip(&tokens) {
        let admitted = with_token(&edge, &policy, token)
            .await
            .unwrap_or_else(|r| panic!("{key} (kid {kid:?}) refused: {} {}", r.reason, r.message));
        let p = admitted.principal.as_ref().expect("a principal");
        assert_eq!(&**p.subject(), "ada");
        assert_eq!(p.via(), AuthMethod::Jwt);
        assert_eq!(
            p.key_id(),
            *key,
            "verified by the key the token names or fits"
        );
        assert_eq!(p.issuer(), Some(ISS));
        assert_eq!(
            p.claims(),
            [
                ("roles".to_owned(), r#"["ops","billing"]"#.to_owned()),
                ("tenant".to_owned(), "harbour".to_owned()),
            ]
        );
        let metadata = admitted.metadata();
        assert!(
            metadata.contains(&("x-auth-subject".into(), "ada".into())),
            "{metadata:?}"
        );
        assert!(metadata.contains(&("x-auth-claim-tenant".into(), "harbour".into())));
        assert!(admitted.rate_headers.is_empty());
    }
}

#[tokio::test]
async fn a_cached_token_reuses_its_principal_per_policy_only() {
    let edge = Edge::new(&edge_config("")).unwrap();
    let roles = policy(
        &edge,
        r#"auth = { methods = "jwt", forward_claims = ["roles"] }"#,
    );
    let tenant = policy(
        &edge,
        r#"auth = { methods = "jwt", forward_claims = ["tenant"] }"#,
    );
    let mut c = claims("ada", ISS, AUD);
    c["roles"] = json!(["ops"]);
    c["tenant"] = json!("harbour");
    let token = &py(&[sign_hs_req(HS_SECRET, Some("hs"), c)])[0];
    let principal = |a: Admitted| a.principal.expect("a principal");
    let first = principal(with_token(&edge, &roles, token).await.unwrap());
    let again = principal(with_token(&edge, &roles, token).await.unwrap());
    assert!(
        Arc::ptr_eq(&first, &again),
        "the second request with the token finds the principal made for the first"
    );
    assert_eq!(
        first.claims(),
        [("roles".to_owned(), r#"["ops"]"#.to_owned())]
    );
    // Another policy forwards other claims: it gets a principal of its own.
    let other = principal(with_token(&edge, &tenant, token).await.unwrap());
    assert!(!Arc::ptr_eq(&first, &other));
    assert_eq!(
        other.claims(),
        [("tenant".to_owned(), "harbour".to_owned())]
    );
    assert!(
        other
            .metadata()
            .contains(&("x-auth-claim-tenant".to_owned(), "harbour".to_owned()))
    );
    assert!(
        !other
            .metadata()
            .iter()
            .any(|(k, _)| k == "x-auth-claim-roles")
    );
}

#[tokio::test]
async fn forged_stale_and_malformed_tokens_are_refused_with_clear_errors() {
    let edge = Edge::new(&edge_config("")).unwrap();
    let policy = policy(&edge, r#"auth = { methods = "jwt" }"#);
    let k = keys();
    let good = claims("ada", ISS, AUD);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = good.clone();
        f(&mut c);
        c
    };
    let requests = vec![
        // 0: a valid RS256 token to tamper with
        sign_req("RS256", &k.private("rsa"), Some("rs"), good.clone()),
        // 1: HS256 keyed with the RS256 public key, naming the RS256 key
        json!({"op": "hmac_with_file", "key_file": k.public("rsa"), "claims": good, "headers": {"kid": "rs"}}),
        // 2: the same without kid: only HS256 keys are tried, and the signature fails
        json!({"op": "hmac_with_file", "key_file": k.public("rsa"), "claims": good}),
        // 3: expired an hour ago
        sign_req(
            "RS256",
            &k.private("rsa"),
            Some("rs"),
            with(&|c| c["exp"] = json!(now() - 3600)),
        ),
        // 4: not valid for another hour
        sign_req(
            "ES256",
            &k.private("ec"),
            Some("es"),
            with(&|c| c["nbf"] = json!(now() + 3600)),
        ),
        // 5: wrong audience
        sign_req(
            "EdDSA",
            &k.private("ed"),
            Some("ed"),
            with(&|c| c["aud"] = json!("someone-else")),
        ),
        // 6: wrong issuer
        sign_hs_req(
            HS_SECRET,
            Some("hs"),
            with(&|c| c["iss"] = json!("https://evil.test")),
        ),
        // 7: unknown kid
        sign_req("RS256", &k.private("rsa"), Some("rs-2019"), good.clone()),
        // 8: ES256 signed by a key we do not know, naming ours
        sign_req("ES256", &k.private("ec2"), Some("es"), good.clone()),
        // 9: EdDSA signed by a key we do not know, no kid
        sign_req("EdDSA", &k.private("ed2"), None, good.clone()),
        // 10: no exp
        sign_hs_req(
            HS_SECRET,
            Some("hs"),
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
        ),
        // 11: no aud while the key requires one
        sign_hs_req(
            HS_SECRET,
            Some("hs"),
            with(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
        ),
        // 12: HS512, an algorithm no key is pinned to
        json!({"op": "sign", "alg": "HS512", "secret": HS_SECRET, "claims": good}),
        // 13: a critical header extension
        json!({"op": "sign", "alg": "HS256", "secret": HS_SECRET, "claims": good, "headers": {"kid": "hs", "crit": ["exp-v2"], "exp-v2": 1}}),
        // 14: no sub
        sign_hs_req(
            HS_SECRET,
            Some("hs"),
            with(&|c| {
                c.as_object_mut().unwrap().remove("sub");
            }),
        ),
    ];
    let t = py(&requests);
    let valid = &t[0];
    let mut tampered_sig = valid.clone().into_bytes();
    let mid = valid.rfind('.').unwrap() + 20;
    tampered_sig[mid] = if tampered_sig[mid] == b'A' {
        b'B'
    } else {
        b'A'
    };
    let tampered_sig = String::from_utf8(tampered_sig).unwrap();
    let mut admin = good.clone();
    admin["sub"] = json!("admin");
    let b64 = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    };
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "alg none",
            unsigned_token(&good),
            "algorithm",
            "alg \"none\"",
        ),
        (
            "HS256 with the RS256 public key, kid of the RSA key",
            t[1].clone(),
            "algorithm",
            "pinned to RS256",
        ),
        (
            "HS256 with the RS256 public key, no kid",
            t[2].clone(),
            "signature",
            "signature is invalid",
        ),
        ("expired", t[3].clone(), "expired", "expired"),
        (
            "nbf in the future",
            t[4].clone(),
            "not_yet_valid",
            "not valid yet",
        ),
        ("wrong aud", t[5].clone(), "audience", "audience"),
        ("wrong iss", t[6].clone(), "issuer", "issuer"),
        (
            "unknown kid",
            t[7].clone(),
            "unknown_key",
            "unknown key id \"rs-2019\"",
        ),
        (
            "ES256 by an unknown key",
            t[8].clone(),
            "signature",
            "signature is invalid",
        ),
        (
            "EdDSA by an unknown key",
            t[9].clone(),
            "signature",
            "signature is invalid",
        ),
        ("no exp", t[10].clone(), "claims", "\"exp\""),
        ("no aud", t[11].clone(), "claims", "\"aud\""),
        (
            "HS512",
            t[12].clone(),
            "algorithm",
            "\"HS512\" is not accepted",
        ),
        (
            "crit header",
            t[13].clone(),
            "malformed",
            "critical extensions",
        ),
        ("no sub", t[14].clone(), "claims", "\"sub\""),
        (
            "tampered payload",
            with_payload(valid, &admin),
            "signature",
            "signature is invalid",
        ),
        (
            "tampered signature",
            tampered_sig,
            "signature",
            "signature is invalid",
        ),
        (
            "two parts",
            "abc.def".into(),
            "malformed",
            "three dot-separated parts",
        ),
        (
            "four parts",
            format!("{valid}.x"),
            "malformed",
            "three dot-separated parts",
        ),
        (
            "header not base64",
            "!!!.e30.c2ln".into(),
            "malformed",
            "header is not base64url",
        ),
        (
            "header not JSON",
            format!("{}.e30.c2ln", b64("not json")),
            "malformed",
            "header is not base64url",
        ),
        (
            "header without alg",
            format!("{}.e30.c2ln", b64(r#"{"typ":"JWT"}"#)),
            "malformed",
            "no \"alg\"",
        ),
        (
            "kid not a string",
            format!("{}.e30.c2ln", b64(r#"{"alg":"RS256","kid":7}"#)),
            "malformed",
            "kid",
        ),
        (
            "too long",
            "a".repeat(9000),
            "malformed",
            "longer than 8192",
        ),
        ("empty bearer", String::new(), "malformed", "empty"),
    ];
    for (name, token, reason, needle) in cases {
        let r = with_token(&edge, &policy, &token).await.expect_err(name);
        assert_eq!(r.status, 401, "{name}");
        assert_eq!(r.code, "unauthenticated", "{name}");
        assert_eq!(r.reason, reason, "{name}: {}", r.message);
        assert!(
            r.message.contains(needle),
            "{name}: {:?} lacks {needle:?}",
            r.message
        );
        let challenge = r.headers["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.starts_with(
                "Bearer realm=\"tideway\", error=\"invalid_token\", error_description=\""
            ),
            "{name}: {challenge}"
        );
    }
    // The valid token itself passes: the refusals above are about what was changed.
    assert!(with_token(&edge, &policy, valid).await.is_ok());
}

#[tokio::test]
async fn leeway_absorbs_small_clock_skew_only() {
    let edge = Edge::new(&edge_config("")).unwrap();
    let policy = policy(&edge, r#"auth = { methods = "jwt" }"#);
    let k = keys();
    let mut just = claims("ada", ISS, AUD);
    just["exp"] = json!(now() - 10);
    let mut long_ago = claims("ada", ISS, AUD);
    long_ago["exp"] = json!(now() - 90);
    let mut soon = claims("ada", ISS, AUD);
    soon["nbf"] = json!(now() + 10);
    let t = py(&[
        sign_req("EdDSA", &k.private("ed"), Some("ed"), just),
        sign_req("EdDSA", &k.private("ed"), Some("ed"), long_ago),
        sign_req("EdDSA", &k.private("ed"), Some("ed"), soon),
    ]);
    assert!(
        with_token(&edge, &policy, &t[0]).await.is_ok(),
        "10 s past exp, within 30 s"
    );
    assert_eq!(
        with_token(&edge, &policy, &t[1]).await.unwrap_err().reason,
        "expired"
    );
    assert!(
        with_token(&edge, &policy, &t[2]).await.is_ok(),
        "nbf 10 s ahead, within 30 s"
    );
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn jwks_files_are_reloaded_when_they_change() {
    let k = keys();
    let dir = tempfile::tempdir().unwrap();
    let jwks_path = dir.path().join("partners.jwks.json");
    let jwks = py(&[
        json!({"op": "jwk", "alg": "ES256", "key_file": k.public("ec"), "kid": "p1"}),
        json!({"op": "jwk", "alg": "ES256", "key_file": k.public("ec2"), "kid": "p2"}),
        json!({"op": "jwk", "alg": "RS256", "key_file": k.public("rsa"), "kid": "r1"}),
    ]);
    let set = |items: &[&String]| {
        format!(
            r#"{{"keys": [{}]}}"#,
            items
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    // An RS256 key in an ES256-pinned set is skipped, not trusted.
    write_atomically(&jwks_path, &set(&[&jwks[0], &jwks[2]]));
    let config: EdgeConfig = toml::from_str(&format!(
        r#"
jwks_poll_interval = "50ms"
[[jwt_keys]]
id = "partners"
algorithm = "ES256"
jwks_file = "{}"
issuer = "{ISS}"
audience = "{AUD}"
"#,
        jwks_path.display()
    ))
    .unwrap();
    let edge = Edge::new(&config).unwrap();
    let policy = policy(&edge, r#"auth = { methods = "jwt" }"#);
    let c = claims("partner-7", ISS, AUD);
    let t = py(&[
        sign_req("ES256", &k.private("ec"), Some("p1"), c.clone()),
        sign_req("ES256", &k.private("ec2"), Some("p2"), c.clone()),
        sign_req("RS256", &k.private("rsa"), Some("r1"), c.clone()),
    ]);
    let (p1, p2, r1) = (&t[0], &t[1], &t[2]);
    assert_eq!(
        with_token(&edge, &policy, p1)
            .await
            .unwrap()
            .principal
            .unwrap()
            .key_id(),
        "p1"
    );
    assert_eq!(
        with_token(&edge, &policy, p2).await.unwrap_err().reason,
        "unknown_key"
    );
    assert_eq!(
        with_token(&edge, &policy, r1).await.unwrap_err().reason,
        "unknown_key"
    );

    // A rotation adds p2: the reload task picks it up.
    write_atomically(&jwks_path, &set(&[&jwks[0], &jwks[1]]));
    let mut accepted = false;
    for _ in 0..200 {
        if with_token(&edge, &policy, p2).await.is_ok() {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(accepted, "p2 not accepted within 5 s of the JWKS change");
    assert!(with_token(&edge, &policy, p1).await.is_ok());

    // A broken file keeps the last good keys.
    write_atomically(&jwks_path, "{ this is not JSON");
    assert!(!edge.reload_keys(), "an unusable file changes nothing");
    assert!(with_token(&edge, &policy, p1).await.is_ok());
    assert!(with_token(&edge, &policy, p2).await.is_ok());

    // Retiring p1 revokes its tokens.
    write_atomically(&jwks_path, &set(&[&jwks[1]]));
    let mut revoked = false;
    for _ in 0..200 {
        if with_token(&edge, &policy, p1).await.is_err() {
            revoked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(revoked, "p1 still accepted 5 s after it left the JWKS");
    assert_eq!(
        with_token(&edge, &policy, p1).await.unwrap_err().reason,
        "unknown_key"
    );
    assert!(with_token(&edge, &policy, p2).await.is_ok());
}

#[tokio::test]
async fn api_keys_are_checked_against_their_hashes() {
    let edge = Edge::new(&edge_config("")).unwrap();
    let api = policy(&edge, r#"auth = { methods = "api_key" }"#);
    let ok = admit(&edge, &api, &[("x-api-key", API_KEY)]).await.unwrap();
    let p = ok.principal.as_ref().unwrap();
    assert_eq!(&**p.subject(), "warehouse-scanner");
    assert_eq!(p.via(), AuthMethod::ApiKey);
    assert!(
        ok.metadata()
            .contains(&("x-auth-method".into(), "api_key".into()))
    );

    let wrong = admit(&edge, &api, &[("x-api-key", "scanner-key-guess")])
        .await
        .unwrap_err();
    assert_eq!((wrong.status.as_u16(), wrong.reason), (401, "api_key"));
    assert_eq!(wrong.message, "API key is not valid");

    let missing = admit(&edge, &api, &[]).await.unwrap_err();
    assert_eq!((missing.status.as_u16(), missing.reason), (401, "missing"));
    assert_eq!(
        missing.headers["www-authenticate"],
        "ApiKey realm=\"tideway\", header=\"x-api-key\""
    );

    // A bearer token is not an API key.
    let t = py(&[sign_hs_req(HS_SECRET, Some("hs"), claims("ada", ISS, AUD))]);
    let r = admit(&edge, &api, &[("authorization", &bearer(&t[0]))])
        .await
        .unwrap_err();
    assert_eq!(r.reason, "missing");

    // Either: the bearer token wins when both are sent.
    let either = policy(&edge, r#"auth = { methods = "either" }"#);
    let both = admit(
        &edge,
        &either,
        &[("authorization", &bearer(&t[0])), ("x-api-key", API_KEY)],
    )
    .await
    .unwrap();
    assert_eq!(&**both.principal.unwrap().subject(), "ada");
    let key_only = admit(&edge, &either, &[("x-api-key", API_KEY)])
        .await
        .unwrap();
    assert_eq!(
        &**key_only.principal.unwrap().subject(),
        "warehouse-scanner"
    );
    let none = admit(&edge, &either, &[]).await.unwrap_err();
    assert_eq!(
        none.headers.get_all("www-authenticate").iter().count(),
        2,
        "both challenges"
    );
}

#[tokio::test]
async fn optional_auth_admits_anonymous_callers_but_not_bad_credentials() {
    let edge = Edge::new(&edge_config("")).unwrap();
    let p = policy(&edge, r#"auth = { methods = "either", optional = true }"#);
    let anonymous = admit(&edge, &p, &[]).await.unwrap();
    assert!(anonymous.principal.is_none());
    assert!(anonymous.metadata().is_empty());
    assert!(
        admit(&edge, &p, &[("authorization", "Bearer nope")])
            .await
            .is_err()
    );
    assert!(admit(&edge, &p, &[("x-api-key", "nope")]).await.is_err());
    // Basic credentials are not ours to judge: anonymous.
    assert!(
        admit(&edge, &p, &[("authorization", "Basic YTpi")])
            .await
            .unwrap()
            .principal
            .is_none()
    );
    // Two Authorization headers are ambiguous.
    let r = admit(
        &edge,
        &p,
        &[("authorization", "Bearer a"), ("authorization", "Bearer b")],
    )
    .await
    .unwrap_err();
    assert!(r.message.contains("more than one"), "{}", r.message);
}

#[tokio::test]
async fn an_empty_policy_admits_at_once() {
    let edge = Edge::new(&EdgeConfig::default()).unwrap();
    let p = edge
        .route_policy("GET /open", &RoutePolicyConfig::default())
        .unwrap();
    assert!(p.is_empty());
    let a = admit(&edge, &p, &[("authorization", "Bearer garbage")])
        .await
        .unwrap();
    assert!(a.principal.is_none() && a.rate_headers.is_empty());
    let default = RoutePolicy::default();
    assert!(admit(&edge, &default, &[]).await.is_ok());
}
