//! The token endpoint's pieces (RFC 6749 shapes): parsing the credential request, the payload
//! for the auth service and its reply, signing tokens, checking refresh tokens, and the JSON
//! answers. The HTTP endpoint and the RPC call live in the gateway:
//!
//! ```text
//! POST {path}  ─► TokenRequest::parse(headers, body)          (400 invalid_request, ...)
//!   password / client_credentials:
//!     ─► call auth_service/auth_method with request.auth_payload()
//!        error unauthenticated/permission_denied/invalid_argument ─► OAuthError::invalid_grant
//!        (or ::invalid_client for client_credentials), other errors ─► ::unavailable
//!     ─► AuthServiceReply::from_json(reply) ─► issuer.issue(&reply.subject, &reply.claims)
//!   refresh_token:
//!     ─► issuer.refresh(token) ─► grant  (400 invalid_grant when expired, forged, or an access token)
//!     ─► optionally call the auth service with grant.auth_payload() to re-check the subject
//!     ─► issuer.issue(&grant.subject, &grant.claims)
//!   ─► IssuedToken::into_response()  (200, Cache-Control: no-store)
//! ```
//!
//! Tokens are JWTs signed with one of the gateway's own `jwt_keys` (its `kid`, `iss`, first
//! `aud`), so the gateway accepts what it issues. Refresh tokens, when enabled, are JWTs too,
//! marked with `token_use = "refresh"`: the verifier refuses them as access tokens and
//! [`TokenIssuer::refresh`] accepts nothing else. They are stateless: they cannot be revoked
//! before they expire, so keep `refresh_ttl` modest, and rotating the signing key revokes all.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::config::{JwtAlgorithm, JwtKeyConfig, Secret, TokenIssuerConfig};
use crate::error::EdgeError;
use crate::metrics as m;

/// Claim marking refresh tokens.
pub const TOKEN_USE_CLAIM: &str = "token_use";
/// Its value in refresh tokens.
pub const REFRESH_TOKEN_USE: &str = "refresh";
/// Claims the issuer sets itself; the same names from the auth service are ignored.
pub const RESERVED_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    TOKEN_USE_CLAIM,
];
/// Largest token request body looked at.
pub const MAX_TOKEN_REQUEST_BYTES: usize = 16 * 1024;

/// An OAuth 2.0 error answer (RFC 6749 §5.2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}: {description}")]
pub struct OAuthError {
    /// The error code: `invalid_request`, `invalid_client`, `invalid_grant`,
    /// `unsupported_grant_type`, `server_error`, `temporarily_unavailable`.
    pub error: &'static str,
    /// Human-readable detail.
    pub description: String,
    /// HTTP status.
    pub status: StatusCode,
}

impl OAuthError {
    fn new(error: &'static str, status: StatusCode, description: impl Into<String>) -> Self {
        OAuthError {
            error,
            description: description.into(),
            status,
        }
    }

    /// 400 `invalid_request`: the request is malformed.
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new("invalid_request", StatusCode::BAD_REQUEST, description)
    }

    /// 401 `invalid_client`: client authentication failed.
    pub fn invalid_client(description: impl Into<String>) -> Self {
        Self::new("invalid_client", StatusCode::UNAUTHORIZED, description)
    }

    /// 400 `invalid_grant`: the credentials or refresh token are not accepted.
    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new("invalid_grant", StatusCode::BAD_REQUEST, description)
    }

    /// 400 `unsupported_grant_type`.
    pub fn unsupported_grant_type(description: impl Into<String>) -> Self {
        Self::new(
            "unsupported_grant_type",
            StatusCode::BAD_REQUEST,
            description,
        )
    }

    /// 503 `temporarily_unavailable`: the auth service could not be asked.
    pub fn unavailable(description: impl Into<String>) -> Self {
        Self::new(
            "temporarily_unavailable",
            StatusCode::SERVICE_UNAVAILABLE,
            description,
        )
    }

    /// 500 `server_error`.
    pub fn server_error(description: impl Into<String>) -> Self {
        Self::new(
            "server_error",
            StatusCode::INTERNAL_SERVER_ERROR,
            description,
        )
    }

    /// The JSON body `{"error", "error_description"}`.
    pub fn to_json(&self) -> Value {
        json!({"error": self.error, "error_description": self.description})
    }

    /// The whole answer: status, JSON body, `Cache-Control: no-store`, and for
    /// `invalid_client` a `WWW-Authenticate: Basic` challenge.
    pub fn into_response(self) -> Response<Bytes> {
        let mut r = json_response(self.status, &self.to_json());
        if self.error == "invalid_client" {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"token\""),
            );
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Bytes> {
    let mut r = Response::new(Bytes::from(body.to_string()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

/// The grant a token request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Grant {
    /// `grant_type=password`: a user's credentials.
    Password {
        /// The user name.
        username: String,
        /// The password.
        password: Secret,
    },
    /// `grant_type=client_credentials`: a machine client's credentials (in the body or HTTP
    /// Basic).
    ClientCredentials {
        /// The client id.
        client_id: String,
        /// The client secret.
        client_secret: Secret,
    },
    /// `grant_type=refresh_token`.
    RefreshToken {
        /// The refresh token.
        refresh_token: Secret,
    },
}

/// A parsed token request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// What is asked for.
    pub grant: Grant,
    /// The requested `scope`, as sent.
    pub scope: Option<String>,
}

impl TokenRequest {
    /// Parses a token request body: `application/x-www-form-urlencoded` (RFC 6749; also when no
    /// `Content-Type` is sent) or `application/json` (an object of strings). Client credentials
    /// may come as HTTP Basic (`Authorization: Basic`), but not both ways at once. Parameters
    /// sent twice are refused.
    pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<TokenRequest, OAuthError> {
        if body.len() > MAX_TOKEN_REQUEST_BYTES {
            return Err(OAuthError::invalid_request(format!(
                "the request body exceeds {MAX_TOKEN_REQUEST_BYTES} bytes"
            )));
        }
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        let params: Vec<(String, String)> = match content_type.as_deref() {
            None | Some("application/x-www-form-urlencoded") => serde_urlencoded::from_bytes(body)
                .map_err(|e| OAuthError::invalid_request(format!("malformed form body: {e}")))?,
            Some("application/json") => {
                let map: Map<String, Value> = serde_json::from_slice(body).map_err(|e| {
                    OAuthError::invalid_request(format!("the body is not a JSON object: {e}"))
                })?;
                let mut params = Vec::with_capacity(map.len());
                for (k, v) in map {
                    match v {
                        Value::String(s) => params.push((k, s)),
                        Value::Null => {}
                        _ => {
                            return Err(OAuthError::invalid_request(format!(
                                "parameter {k:?} must be a string"
                            )));
                        }
                    }
                }
                params
            }
            Some(other) => {
                return Err(OAuthError::invalid_request(format!(
                    "unsupported content type {other:?}; send application/x-www-form-urlencoded or application/json"
                )));
            }
        };
        let mut seen = HashSet::new();
        for (k, _) in &params {
            if !seen.insert(k.as_str()) {
                return Err(OAuthError::invalid_request(format!(
                    "parameter {k:?} is sent more than once"
                )));
            }
        }
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
        };
        let basic = basic_credentials(headers)?;
        let grant_type = get("grant_type")
            .ok_or_else(|| OAuthError::invalid_request("grant_type is missing"))?;
        let require = |name: &str| {
            get(name).ok_or_else(|| OAuthError::invalid_request(format!("{name} is missing")))
        };
        let grant = match grant_type.as_str() {
            "password" => Grant::Password {
                username: require("username")?,
                password: Secret::new(require("password")?),
            },
            "client_credentials" => match basic {
                Some((id, secret)) => {
                    if get("client_secret").is_some() {
                        return Err(OAuthError::invalid_request(
                            "client credentials sent both as HTTP Basic and in the body",
                        ));
                    }
                    if get("client_id").is_some_and(|body_id| body_id != id) {
                        return Err(OAuthError::invalid_request(
                            "client_id in the body differs from HTTP Basic",
                        ));
                    }
                    Grant::ClientCredentials {
                        client_id: id,
                        client_secret: Secret::new(secret),
                    }
                }
                None => Grant::ClientCredentials {
                    client_id: require("client_id")?,
                    client_secret: Secret::new(require("client_secret")?),
                },
            },
            "refresh_token" => Grant::RefreshToken {
                refresh_token: Secret::new(require("refresh_token")?),
            },
            other => {
                return Err(OAuthError::unsupported_grant_type(format!(
                    "grant_type {:?} is not supported (password, client_credentials, refresh_token)",
                    other.chars().take(64).collect::<String>()
                )));
            }
        };
        Ok(TokenRequest {
            grant,
            scope: get("scope"),
        })
    }

    /// The JSON payload for the auth service's method: `{"grant_type", "username",
    /// "password"}` or `{"grant_type", "client_id", "client_secret"}`, plus `"scope"` when
    /// sent. `None` for a refresh grant (use [`RefreshGrant::auth_payload`] after
    /// [`TokenIssuer::refresh`]).
    pub fn auth_payload(&self) -> Option<Value> {
        let mut v = match &self.grant {
            Grant::Password { username, password } => json!({
                "grant_type": "password",
                "username": username,
                "password": password.expose(),
            }),
            Grant::ClientCredentials {
                client_id,
                client_secret,
            } => json!({
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": client_secret.expose(),
            }),
            Grant::RefreshToken { .. } => return None,
        };
        if let Some(scope) = &self.scope {
            v["scope"] = Value::String(scope.clone());
        }
        Some(v)
    }
}

/// `Authorization: Basic` client credentials (RFC 6749 §2.3.1: each part form-urlencoded).
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let bad = || OAuthError::invalid_client("malformed HTTP Basic credentials");
    let value = value.to_str().map_err(|_| bad())?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Err(bad());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
    let decode = |s: &str| -> Result<String, OAuthError> {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(&format!("v={s}")).map_err(|_| bad())?;
        Ok(pairs.into_iter().next().map(|(_, v)| v).unwrap_or_default())
    };
    let (id, secret) = (decode(id)?, decode(secret)?);
    if id.is_empty() {
        return Err(bad());
    }
    Ok(Some((id, secret)))
}

/// What the auth service answers when it accepts credentials: `{"subject": "...", "claims":
/// {...}}`. Claims go into the token as they are (except [`RESERVED_CLAIMS`]); a `scope` claim
/// is also echoed in the token response.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AuthServiceReply {
    /// The principal the token is for.
    pub subject: String,
    /// Extra claims.
    #[serde(default)]
    pub claims: Map<String, Value>,
}

impl AuthServiceReply {
    /// Parses the service's JSON reply; a reply without a non-empty `subject` is a server
    /// error (the service broke its contract).
    pub fn from_json(bytes: &[u8]) -> Result<AuthServiceReply, OAuthError> {
        let reply: AuthServiceReply = serde_json::from_slice(bytes).map_err(|e| {
            OAuthError::server_error(format!("the auth service's reply is not understood: {e}"))
        })?;
        if reply.subject.is_empty() {
            return Err(OAuthError::server_error(
                "the auth service accepted the credentials but named no subject",
            ));
        }
        Ok(reply)
    }
}

/// A verified refresh token: whom to issue a new token for.
#[derive(Debug, Clone, PartialEq)]
pub struct RefreshGrant {
    /// The subject of the refresh token.
    pub subject: String,
    /// The extra claims it carries (those of the original grant).
    pub claims: Map<String, Value>,
}

impl RefreshGrant {
    /// `{"grant_type": "refresh_token", "subject"}`: for an auth service that wants to re-check
    /// the subject (disabled accounts) before a new token is issued.
    pub fn auth_payload(&self) -> Value {
        json!({"grant_type": "refresh_token", "subject": self.subject})
    }
}

/// A signed token and what the token response says about it.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The access token (a JWT).
    pub access_token: String,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// A refresh token, when `refresh_ttl` is set.
    pub refresh_token: Option<String>,
    /// The `scope` claim, when the grant has one.
    pub scope: Option<String>,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("expires_in", &self.expires_in)
            .field("refresh_token", &self.refresh_token.is_some())
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl IssuedToken {
    /// The RFC 6749 §5.1 body: `{"access_token", "token_type": "Bearer", "expires_in",
    /// "refresh_token"?, "scope"?}`.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
        });
        if let Some(r) = &self.refresh_token {
            v["refresh_token"] = Value::String(r.clone());
        }
        if let Some(s) = &self.scope {
            v["scope"] = Value::String(s.clone());
        }
        v
    }

    /// The whole answer: 200, JSON, `Cache-Control: no-store`, `Pragma: no-cache`.
    pub fn into_response(self) -> Response<Bytes> {
        json_response(StatusCode::OK, &self.to_json())
    }
}

/// Why a token could not be signed (a server-side problem).
#[derive(Debug, thiserror::Error)]
#[error("cannot sign the token: {0}")]
pub struct SignError(String);

impl From<SignError> for OAuthError {
    fn from(e: SignError) -> Self {
        OAuthError::server_error(e.to_string())
    }
}

/// Signs access (and refresh) tokens with one of the gateway's keys.
pub struct TokenIssuer {
    kid: Arc<str>,
    algorithm: JwtAlgorithm,
    encoding: EncodingKey,
    issuer: String,
    audience: String,
    ttl: Duration,
    refresh_ttl: Option<Duration>,
    refresh_decoding: DecodingKey,
    refresh_validation: Validation,
    path: String,
    auth_service: String,
    auth_method: String,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("ttl", &self.ttl)
            .field("refresh_ttl", &self.refresh_ttl)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn token_id() -> String {
    let mut bytes = [0u8; 16];
    // A failing OS random source leaves zeros: the jti is an identifier, not a secret.
    if let Err(e) = getrandom::fill(&mut bytes) {
        tracing::error!(error = %e, "no OS randomness for a token id");
    }
    hex::encode(bytes)
}

impl TokenIssuer {
    /// Builds the issuer for `config`, signing with the `jwt_keys` entry `key` (already loaded
    /// as `verify_key`). Proves at build that the private key matches the public key.
    pub(crate) fn new(
        config: &TokenIssuerConfig,
        key: &JwtKeyConfig,
        verify_key: &DecodingKey,
    ) -> Result<TokenIssuer, EdgeError> {
        let fail = |message: String| EdgeError::Key {
            key: format!("token_issuer ({})", config.key),
            message,
        };
        let encoding = match key.algorithm {
            JwtAlgorithm::HS256 => match (&key.secret, &key.secret_file) {
                (Some(s), _) => EncodingKey::from_secret(s.expose().as_bytes()),
                (None, Some(file)) => {
                    EncodingKey::from_secret(&crate::jwt::read_secret_file(file).map_err(fail)?)
                }
                (None, None) => return Err(fail("the key has no secret".into())),
            },
            alg => {
                let file = config
                    .private_key_file
                    .as_ref()
                    .ok_or_else(|| fail("private_key_file is required".into()))?;
                let pem = std::fs::read(file)
                    .map_err(|e| fail(format!("cannot read {}: {e}", file.display())))?;
                match alg {
                    JwtAlgorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
                    JwtAlgorithm::ES256 => EncodingKey::from_ec_pem(&pem),
                    _ => EncodingKey::from_ed_pem(&pem),
                }
                .map_err(|e| {
                    fail(format!(
                        "{} is not a {alg} private key in PEM: {e}",
                        file.display()
                    ))
                })?
            }
        };
        let (Some(issuer), Some(audience)) = (key.issuer.clone(), key.audience.first().cloned())
        else {
            return Err(fail("the key must set issuer and audience".into()));
        };
        let mut refresh_validation = Validation::new(key.algorithm.to_jsonwebtoken());
        refresh_validation.leeway = key.leeway.as_secs();
        refresh_validation.set_issuer(&[&issuer]);
        refresh_validation.set_audience(&[&audience]);
        refresh_validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        let issuer = TokenIssuer {
            kid: Arc::from(key.id.as_str()),
            algorithm: key.algorithm,
            encoding,
            issuer,
            audience,
            ttl: config.ttl,
            refresh_ttl: config.refresh_ttl,
            refresh_decoding: verify_key.clone(),
            refresh_validation,
            path: config.path.clone(),
            auth_service: config.auth_service.clone(),
            auth_method: config.auth_method.clone(),
        };
        // The private key must match the public one the gateway verifies with.
        let probe = issuer
            .sign("probe", &Map::new(), Duration::from_secs(60), false)
            .map_err(|e| fail(e.to_string()))?;
        let mut check = issuer.refresh_validation.clone();
        check.set_required_spec_claims(&["exp"]);
        jsonwebtoken::decode::<Map<String, Value>>(&probe, verify_key, &check).map_err(|e| {
            fail(format!(
                "a token signed with the private key does not verify with jwt_keys entry {:?}: {e}",
                key.id
            ))
        })?;
        Ok(issuer)
    }

    fn sign(
        &self,
        subject: &str,
        extra: &Map<String, Value>,
        ttl: Duration,
        refresh: bool,
    ) -> Result<String, SignError> {
        let now = unix_now();
        let mut claims = Map::with_capacity(extra.len() + 8);
        for (k, v) in extra {
            if RESERVED_CLAIMS.contains(&k.as_str()) {
                tracing::debug!(claim = %k, "reserved claim from the auth service ignored");
                continue;
            }
            claims.insert(k.clone(), v.clone());
        }
        claims.insert("iss".into(), Value::String(self.issuer.clone()));
        claims.insert("sub".into(), Value::String(subject.to_owned()));
        claims.insert("aud".into(), Value::String(self.audience.clone()));
        claims.insert("iat".into(), Value::from(now));
        claims.insert("exp".into(), Value::from(now + ttl.as_secs()));
        claims.insert("jti".into(), Value::String(token_id()));
        if refresh {
            claims.insert(
                TOKEN_USE_CLAIM.into(),
                Value::String(REFRESH_TOKEN_USE.into()),
            );
        }
        let mut header = Header::new(self.algorithm.to_jsonwebtoken());
        header.kid = Some(self.kid.to_string());
        jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(|e| SignError(e.to_string()))
    }

    /// Signs an access token for `subject` with `extra_claims` (reserved names ignored), and a
    /// refresh token carrying the same claims when refresh tokens are enabled.
    pub fn issue(
        &self,
        subject: &str,
        extra_claims: &Map<String, Value>,
    ) -> Result<IssuedToken, SignError> {
        let access_token = self.sign(subject, extra_claims, self.ttl, false)?;
        metrics::counter!(m::TOKENS_ISSUED, "kind" => "access").increment(1);
        let refresh_token = match self.refresh_ttl {
            Some(ttl) => {
                let token = self.sign(subject, extra_claims, ttl, true)?;
                metrics::counter!(m::TOKENS_ISSUED, "kind" => "refresh").increment(1);
                Some(token)
            }
            None => None,
        };
        Ok(IssuedToken {
            access_token,
            expires_in: self.ttl.as_secs(),
            refresh_token,
            scope: extra_claims
                .get("scope")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }

    /// Checks a refresh token this issuer signed; access tokens, expired or forged tokens are
    /// `invalid_grant`.
    pub fn refresh(&self, refresh_token: &str) -> Result<RefreshGrant, OAuthError> {
        if self.refresh_ttl.is_none() {
            return Err(OAuthError::unsupported_grant_type(
                "refresh tokens are not enabled",
            ));
        }
        if refresh_token.len() > crate::config::DEFAULT_MAX_TOKEN_BYTES {
            return Err(OAuthError::invalid_grant("the refresh token is too long"));
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(
            refresh_token,
            &self.refresh_decoding,
            &self.refresh_validation,
        )
        .map_err(|e| OAuthError::invalid_grant(format!("the refresh token is not valid: {e}")))?;
        let mut claims = data.claims;
        if claims.get(TOKEN_USE_CLAIM).and_then(Value::as_str) != Some(REFRESH_TOKEN_USE) {
            return Err(OAuthError::invalid_grant("this is not a refresh token"));
        }
        if data.header.kid.as_deref() != Some(&*self.kid) {
            return Err(OAuthError::invalid_grant(
                "the refresh token was not issued by this gateway",
            ));
        }
        let Some(Value::String(subject)) = claims.remove("sub") else {
            return Err(OAuthError::invalid_grant(
                "the refresh token has no subject",
            ));
        };
        claims.retain(|k, _| !RESERVED_CLAIMS.contains(&k.as_str()));
        Ok(RefreshGrant { subject, claims })
    }

    /// Path of the token endpoint.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The RPC service that checks credentials.
    pub fn auth_service(&self) -> &str {
        &self.auth_service
    }

    /// Its method (short name).
    pub fn auth_method(&self) -> &str {
        &self.auth_method
    }

    /// Access token lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether refresh tokens are issued.
    pub fn refresh_enabled(&self) -> bool {
        self.refresh_ttl.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(body: &str) -> Result<TokenRequest, OAuthError> {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        TokenRequest::parse(&h, body.as_bytes())
    }

    #[test]
    fn password_and_client_credentials_parse() {
        let r = form("grant_type=password&username=ada&password=p%40ss+word&scope=read").unwrap();
        assert_eq!(
            r.grant,
            Grant::Password {
                username: "ada".into(),
                password: Secret::new("p@ss word"),
            }
        );
        assert_eq!(r.scope.as_deref(), Some("read"));
        assert_eq!(
            r.auth_payload().unwrap(),
            json!({"grant_type":"password","username":"ada","password":"p@ss word","scope":"read"})
        );

        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        let r = TokenRequest::parse(
            &h,
            br#"{"grant_type":"client_credentials","client_id":"scanner","client_secret":"s3"}"#,
        )
        .unwrap();
        assert!(
            matches!(r.grant, Grant::ClientCredentials { ref client_id, .. } if client_id == "scanner")
        );

        // HTTP Basic, with form-urlencoded parts.
        let mut h = HeaderMap::new();
        let basic = STANDARD.encode("scan%3Aner:s%203");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {basic}")).unwrap(),
        );
        let r = TokenRequest::parse(&h, b"grant_type=client_credentials").unwrap();
        assert_eq!(
            r.grant,
            Grant::ClientCredentials {
                client_id: "scan:ner".into(),
                client_secret: Secret::new("s 3"),
            }
        );
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        for (body, error, needle) in [
            (
                "username=a&password=b",
                "invalid_request",
                "grant_type is missing",
            ),
            (
                "grant_type=password&username=a",
                "invalid_request",
                "password is missing",
            ),
            ("grant_type=implicit", "unsupported_grant_type", "implicit"),
            (
                "grant_type=password&username=a&username=b&password=c",
                "invalid_request",
                "more than once",
            ),
            (
                "grant_type=client_credentials&client_id=x",
                "invalid_request",
                "client_secret",
            ),
        ] {
            let e = form(body).unwrap_err();
            assert_eq!(e.error, error, "{body}: {e}");
            assert!(e.description.contains(needle), "{body}: {e}");
        }
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_eq!(
            TokenRequest::parse(&h, b"x").unwrap_err().error,
            "invalid_request"
        );
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert_eq!(
            TokenRequest::parse(&h, b"grant_type=client_credentials")
                .unwrap_err()
                .error,
            "invalid_client"
        );
        assert!(form(&"a".repeat(MAX_TOKEN_REQUEST_BYTES + 1)).is_err());
    }

    #[test]
    fn error_and_token_responses_are_not_cached() {
        let r = OAuthError::invalid_client("no").into_response();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["cache-control"], "no-store");
        assert!(r.headers().contains_key("www-authenticate"));
        let body: Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(
            body,
            json!({"error":"invalid_client","error_description":"no"})
        );
    }
}
