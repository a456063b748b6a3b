//! The token issuer: tokens it signs are accepted by the edge and by PyJWT; refresh tokens work
//! only at the token endpoint; a private key that does not match fails the build.

mod common;

use common::*;
use http::HeaderMap;
use serde_json::{Map, Value, json};
use tideway_edge::{
    AuthServiceReply, Edge, EdgeConfig, EdgeError, Grant, OAuthError, RoutePolicyConfig,
    TokenRequest,
};

const ISS: &str = "https://gateway.test";
const AUD: &str = "tideway";

fn config(alg: &str, key_line: &str, issuer_extra: &str) -> EdgeConfig {
    let text = format!(
        r#"
[[jwt_keys]]
id = "gw-1"
algorithm = "{alg}"
{key_line}
issuer = "{ISS}"
audience = "{AUD}"

[token_issuer]
key = "gw-1"
ttl = "5m"
auth_service = "logistics.Accounts"
auth_method = "login"
{issuer_extra}
"#
    );
    toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn form(body: &str) -> TokenRequest {
    let mut h = HeaderMap::new();
    h.insert(
        "content-type",
        "application/x-www-form-urlencoded".parse().unwrap(),
    );
    TokenRequest::parse(&h, body.as_bytes()).unwrap()
}

async fn accepted_subject(edge: &Edge, token: &str) -> Result<String, String> {
    let policy = edge
        .route_policy(
            "GET /api/me",
            &toml::from_str::<RoutePolicyConfig>(
                r#"auth = { methods = "jwt", forward_claims = ["scope"] }"#,
            )
            .unwrap(),
        )
        .unwrap();
    let parts = parts(&[("authorization", &bearer(token))]);
    let client = edge.client_ip(ip("192.0.2.1"), &parts.headers);
    edge.admit(&policy, &parts, client)
        .await
        .map(|a| a.principal.unwrap().subject().to_string())
        .map_err(|r| format!("{}: {}", r.reason, r.message))
}

#[tokio::test]
async fn issued_tokens_are_accepted_by_the_edge_and_by_pyjwt() {
    let k = keys();
    let cases = [
        (
            "HS256",
            format!("secret = \"{HS_SECRET}\""),
            String::new(),
            json!({"secret": HS_SECRET}),
        ),
        (
            "ES256",
            format!("public_key_file = \"{}\"", k.public("ec").display()),
            format!("private_key_file = \"{}\"", k.private("ec").display()),
            json!({"key_file": k.public("ec")}),
        ),
        (
            "EdDSA",
            format!("public_key_file = \"{}\"", k.public("ed").display()),
            format!("private_key_file = \"{}\"", k.private("ed").display()),
            json!({"key_file": k.public("ed")}),
        ),
        (
            "RS256",
            format!("public_key_file = \"{}\"", k.public("rsa").display()),
            format!("private_key_file = \"{}\"", k.private("rsa").display()),
            json!({"key_file": k.public("rsa")}),
        ),
    ];
    for (alg, key_line, private, verify_key) in cases {
        let edge = Edge::new(&config(alg, &key_line, &private)).unwrap();
        let issuer = edge.token_issuer().expect("configured");
        assert_eq!(issuer.path(), "/oauth2/token");
        assert_eq!(
            (issuer.auth_service(), issuer.auth_method()),
            ("logistics.Accounts", "login")
        );

        // The gateway's flow: parse, ask the auth service, issue.
        let request = form("grant_type=password&username=ada&password=s3cret&scope=waybills:read");
        let payload = request.auth_payload().unwrap();
        assert_eq!(payload["username"], "ada");
        assert_eq!(payload["password"], "s3cret");
        let reply = AuthServiceReply::from_json(
            br#"{"subject":"user-42","claims":{"scope":"waybills:read","sub":"root","exp":1}}"#,
        )
        .unwrap();
        let issued = issuer.issue(&reply.subject, &reply.claims).unwrap();
        assert_eq!(issued.expires_in, 300);
        assert_eq!(issued.scope.as_deref(), Some("waybills:read"));
        assert!(
            issued.refresh_token.is_none(),
            "refresh tokens are off by default"
        );
        let body = issued.to_json();
        assert_eq!(body["token_type"], "Bearer");

        assert_eq!(
            accepted_subject(&edge, &issued.access_token).await,
            Ok("user-42".to_owned()),
            "{alg}: the gateway accepts its own token; reserved claims from the service are ignored"
        );

        // An independent implementation agrees.
        let mut verify = json!({"op": "verify", "token": issued.access_token, "alg": alg, "audience": AUD, "issuer": ISS});
        for (k, v) in verify_key.as_object().unwrap() {
            verify[k] = v.clone();
        }
        let out: Value = serde_json::from_str(&py(&[verify])[0]).unwrap();
        let claims = out
            .get("ok")
            .unwrap_or_else(|| panic!("{alg}: PyJWT refused the issued token: {out}"));
        assert_eq!(claims["sub"], "user-42");
        assert_eq!(claims["scope"], "waybills:read");
        let (iat, exp) = (
            claims["iat"].as_u64().unwrap(),
            claims["exp"].as_u64().unwrap(),
        );
        assert_eq!(exp - iat, 300);
        assert!(iat.abs_diff(now()) <= 5);
        assert_eq!(claims["jti"].as_str().unwrap().len(), 32);
    }
}

#[tokio::test]
async fn refresh_tokens_work_at_the_token_endpoint_only() {
    let edge = Edge::new(&config(
        "HS256",
        &format!("secret = \"{HS_SECRET}\""),
        "refresh_ttl = \"1h\"",
    ))
    .unwrap();
    let issuer = edge.token_issuer().unwrap();
    let mut extra = Map::new();
    extra.insert("tenant".into(), json!("harbour"));
    let issued = issuer.issue("user-42", &extra).unwrap();
    let refresh = issued.refresh_token.clone().expect("refresh enabled");
    assert!(issued.to_json()["refresh_token"].is_string());

    // A refresh token is not an access token.
    let r = accepted_subject(&edge, &refresh).await.unwrap_err();
    assert!(r.starts_with("claims: a refresh token"), "{r}");

    // The grant parses, verifies, and re-issues with the same claims.
    let request = form(&format!("grant_type=refresh_token&refresh_token={refresh}"));
    let Grant::RefreshToken { refresh_token } = &request.grant else {
        panic!("{request:?}")
    };
    assert!(request.auth_payload().is_none());
    let grant = issuer.refresh(refresh_token.expose()).unwrap();
    assert_eq!(grant.subject, "user-42");
    assert_eq!(grant.claims.get("tenant"), Some(&json!("harbour")));
    assert_eq!(grant.auth_payload()["subject"], "user-42");
    let again = issuer.issue(&grant.subject, &grant.claims).unwrap();
    assert_eq!(
        accepted_subject(&edge, &again.access_token).await,
        Ok("user-42".into())
    );

    // An access token is not a refresh token; forged and foreign tokens are refused.
    let e: OAuthError = issuer.refresh(&issued.access_token).unwrap_err();
    assert_eq!((e.error, e.status.as_u16()), ("invalid_grant", 400));
    assert!(e.description.contains("not a refresh token"), "{e}");
    let mut forged = refresh.clone().into_bytes();
    let i = forged.len() - 10;
    forged[i] = if forged[i] == b'x' { b'y' } else { b'x' };
    assert_eq!(
        issuer
            .refresh(&String::from_utf8(forged).unwrap())
            .unwrap_err()
            .error,
        "invalid_grant"
    );
    let mut foreign = claims("user-42", ISS, AUD);
    foreign["token_use"] = json!("refresh");
    let foreign = py(&[sign_hs_req(HS_SECRET, Some("other-kid"), foreign)]);
    let e = issuer.refresh(&foreign[0]).unwrap_err();
    assert!(e.description.contains("not issued by this gateway"), "{e}");
}

#[tokio::test]
async fn a_private_key_that_does_not_match_fails_the_build() {
    let k = keys();
    let err = Edge::new(&config(
        "ES256",
        &format!("public_key_file = \"{}\"", k.public("ec").display()),
        &format!("private_key_file = \"{}\"", k.private("ec2").display()),
    ))
    .unwrap_err();
    assert!(
        matches!(&err, EdgeError::Key { message, .. } if message.contains("does not verify")),
        "{err}"
    );
    // A private key of another type is refused too.
    let err = Edge::new(&config(
        "ES256",
        &format!("public_key_file = \"{}\"", k.public("ec").display()),
        &format!("private_key_file = \"{}\"", k.private("ed").display()),
    ))
    .unwrap_err();
    assert!(matches!(err, EdgeError::Key { .. }), "{err}");
}

#[test]
fn issuer_configuration_problems_are_all_reported() {
    let config: EdgeConfig = toml::from_str(
        r#"
[[jwt_keys]]
id = "gw"
algorithm = "RS256"
public_key_file = "/nonexistent.pem"

[token_issuer]
key = "gw"
ttl = "1s"
refresh_ttl = "1s"
path = "token"
auth_service = ""
auth_method = "login"
"#,
    )
    .unwrap();
    let problems = config.validate();
    let paths: Vec<&str> = problems.iter().map(|(p, _)| p.as_str()).collect();
    for expected in [
        "jwt_keys[0].public_key_file",
        "token_issuer.key",
        "token_issuer.private_key_file",
        "token_issuer.ttl",
        "token_issuer.refresh_ttl",
        "token_issuer.path",
        "token_issuer.auth_service",
    ] {
        assert!(
            paths.contains(&expected),
            "{expected} missing from {problems:?}"
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    assert!(matches!(Edge::new(&config), Err(EdgeError::Invalid(p)) if p == problems));
}
