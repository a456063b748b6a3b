//! JWT bearer tokens: the key set (static keys and JWKS files, reloaded when they change) and
//! verification.
//!
//! Verification, in order, each step with its own error:
//!
//! 1. length at most `max_token_bytes`; three base64url parts;
//! 2. the header, parsed here rather than by `jsonwebtoken`, so `alg: none`, unknown algorithms
//!    and `crit` extensions get a clear refusal;
//! 3. the key: by `kid` when the header has one (an unknown `kid` is refused), else every key
//!    pinned to the header's algorithm. A key verifies only its own algorithm, so an `HS256`
//!    token cannot be checked against an RSA public key used as an HMAC secret;
//! 4. signature, then `exp`, `nbf` (with the key's leeway), `iss` and `aud` (required when the
//!    key names them), `sub` (always required: it becomes the principal), by `jsonwebtoken`;
//! 5. refresh tokens (claim `token_use = "refresh"`, see [`crate::token`]) are refused: they are
//!    for the token endpoint only.
//!
//! `jsonwebtoken` keeps keys as DER and its RustCrypto backend parses them on every
//! verification (a few microseconds, small next to the signature check itself); PEM decoding
//! and a probe verification that proves the key usable happen once, at build.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{DecodingKey, Validation};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::config::{JwtAlgorithm, JwtKeyConfig};
use crate::error::EdgeError;
use crate::jwt_cache::TokenCache;
use crate::metrics as m;
use crate::principal::PrincipalSlots;
use crate::token::{REFRESH_TOKEN_USE, TOKEN_USE_CLAIM};

/// Longest `kid` or algorithm name quoted back in an error message.
const MAX_QUOTED: usize = 64;

/// Why a credential was not accepted. `Display` is the message for the client; [`reason`]
/// is a bounded label for metrics.
///
/// [`reason`]: AuthError::reason
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No credentials of an accepted kind were sent.
    #[error("{0}")]
    Missing(&'static str),
    /// The token is longer than the limit.
    #[error("bearer token is longer than {0} bytes")]
    TooLong(usize),
    /// The token is not a well-formed JWS.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `alg: none`.
    #[error("unsigned tokens (alg \"none\") are not accepted")]
    AlgorithmNone,
    /// An algorithm no key is pinned to, or one Tideway does not support.
    #[error("algorithm {0:?} is not accepted")]
    AlgorithmNotAccepted(String),
    /// The `kid` names a key pinned to another algorithm.
    #[error("token algorithm {alg} does not match key {kid:?}, which is pinned to {pinned}")]
    AlgorithmMismatch {
        /// The header's algorithm.
        alg: String,
        /// The key named.
        kid: String,
        /// The key's algorithm.
        pinned: JwtAlgorithm,
    },
    /// The `kid` names no known key.
    #[error("unknown key id {0:?}")]
    UnknownKey(String),
    /// The header has `crit` extensions, which Tideway does not understand.
    #[error("token header lists critical extensions ({0}) that are not supported")]
    CriticalExtension(String),
    /// The signature does not verify.
    #[error("token signature is invalid")]
    BadSignature,
    /// `exp` has passed (beyond the leeway).
    #[error("token has expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token is not valid yet (nbf is in the future)")]
    NotYetValid,
    /// `iss` is not the key's issuer.
    #[error("token issuer is not accepted")]
    WrongIssuer,
    /// `aud` is not one of the key's audiences.
    #[error("token audience is not accepted")]
    WrongAudience,
    /// A required claim is absent.
    #[error("token lacks the required claim {0:?}")]
    MissingClaim(String),
    /// A claim has the wrong type.
    #[error("token claim {0:?} is malformed")]
    BadClaim(String),
    /// A refresh token was sent as an access token.
    #[error("a refresh token is not accepted as an access token")]
    RefreshToken,
    /// The API key matches none configured.
    #[error("API key is not valid")]
    BadApiKey,
}

impl AuthError {
    /// A bounded label: `missing`, `malformed`, `algorithm`, `unknown_key`, `signature`,
    /// `expired`, `not_yet_valid`, `issuer`, `audience`, `claims`, `api_key`.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing(_) => "missing",
            AuthError::TooLong(_) | AuthError::Malformed(_) | AuthError::CriticalExtension(_) => {
                "malformed"
            }
            AuthError::AlgorithmNone
            | AuthError::AlgorithmNotAccepted(_)
            | AuthError::AlgorithmMismatch { .. } => "algorithm",
            AuthError::UnknownKey(_) => "unknown_key",
            AuthError::BadSignature => "signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::WrongIssuer => "issuer",
            AuthError::WrongAudience => "audience",
            AuthError::MissingClaim(_) | AuthError::BadClaim(_) | AuthError::RefreshToken => {
                "claims"
            }
            AuthError::BadApiKey => "api_key",
        }
    }

    /// A fixed description for `WWW-Authenticate` (never containing request input).
    pub(crate) fn description(&self) -> &'static str {
        match self {
            AuthError::Missing(_) => "credentials required",
            AuthError::TooLong(_) => "token too long",
            AuthError::Malformed(_) | AuthError::CriticalExtension(_) => "malformed token",
            AuthError::AlgorithmNone
            | AuthError::AlgorithmNotAccepted(_)
            | AuthError::AlgorithmMismatch { .. } => "algorithm not accepted",
            AuthError::UnknownKey(_) => "unknown key id",
            AuthError::BadSignature => "invalid signature",
            AuthError::Expired => "token expired",
            AuthError::NotYetValid => "token not yet valid",
            AuthError::WrongIssuer => "issuer not accepted",
            AuthError::WrongAudience => "audience not accepted",
            AuthError::MissingClaim(_) | AuthError::BadClaim(_) => "invalid claims",
            AuthError::RefreshToken => "refresh token used as access token",
            AuthError::BadApiKey => "invalid API key",
        }
    }

    fn from_jsonwebtoken(e: &jsonwebtoken::errors::Error) -> AuthError {
        match e.kind() {
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
            ErrorKind::InvalidAudience => AuthError::WrongAudience,
            ErrorKind::MissingRequiredClaim(c) => AuthError::MissingClaim(c.clone()),
            ErrorKind::InvalidClaimFormat(c) => AuthError::BadClaim(c.clone()),
            ErrorKind::InvalidSubject => AuthError::BadClaim("sub".into()),
            ErrorKind::Base64(_) => AuthError::Malformed("a part is not base64url".into()),
            ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
                AuthError::Malformed("the claims are not a JSON object".into())
            }
            // Exhausting the token's validity is the only failure left that comes from the
            // token (`exp` below `reject_tokens_expiring_in_less_than`, unused here); key
            // problems were ruled out at build.
            _ => AuthError::Malformed(e.to_string()),
        }
    }
}

fn quoted(s: &str) -> String {
    s.chars().take(MAX_QUOTED).collect()
}

/// One key that verifies tokens.
pub(crate) struct VerifyKey {
    /// The `kid` tokens name it by.
    pub(crate) kid: Arc<str>,
    /// The `jwt_keys` entry it comes from.
    pub(crate) source: Arc<str>,
    pub(crate) algorithm: JwtAlgorithm,
    pub(crate) key: DecodingKey,
    validation: Arc<Validation>,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("source", &self.source)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// The keys in force, indexed by `kid`.
#[derive(Debug, Default)]
struct KeySet {
    by_kid: HashMap<Arc<str>, Arc<VerifyKey>>,
    all: Vec<Arc<VerifyKey>>,
}

impl KeySet {
    fn build(keys: impl IntoIterator<Item = Arc<VerifyKey>>) -> KeySet {
        let mut set = KeySet::default();
        for key in keys {
            if let Some(existing) = set.by_kid.get(&key.kid) {
                tracing::warn!(kid = %key.kid, source = %key.source, first = %existing.source, "duplicate key id; the first one is kept");
                continue;
            }
            set.by_kid.insert(Arc::clone(&key.kid), Arc::clone(&key));
            set.all.push(key);
        }
        set
    }
}

/// SHA-256 of the content last loaded (or last failed; none after a read error), and the keys
/// of the last good content.
type JwksState = (Option<[u8; 32]>, Vec<Arc<VerifyKey>>);

/// A JWKS file and what it last held.
#[derive(Debug)]
struct JwksSource {
    config: JwtKeyConfig,
    path: PathBuf,
    validation: Arc<Validation>,
    state: Mutex<JwksState>,
}

/// A successfully verified token (cheap to clone: the verified-token cache hands out copies).
#[derive(Debug, Clone)]
pub(crate) struct Verified {
    pub(crate) key: Arc<VerifyKey>,
    pub(crate) claims: Arc<Map<String, Value>>,
    /// The principals made from this token, per route policy (shared by the cache's copies).
    pub(crate) principals: Arc<PrincipalSlots>,
}

/// The verifier: static keys, JWKS sources, and the current key set.
#[derive(Debug)]
pub(crate) struct JwtVerifier {
    static_keys: Vec<Arc<VerifyKey>>,
    jwks: Vec<JwksSource>,
    current: ArcSwap<KeySet>,
    max_token_bytes: usize,
    /// Verified tokens (see [`crate::jwt_cache`]); `None` when `jwt_cache_entries` is 0.
    cache: Option<TokenCache>,
}

fn validation_for(config: &JwtKeyConfig) -> Validation {
    let mut v = Validation::new(config.algorithm.to_jsonwebtoken());
    v.leeway = config.leeway.as_secs();
    v.validate_nbf = true;
    v.validate_exp = true;
    let mut required = vec!["exp", "sub"];
    if let Some(iss) = &config.issuer {
        v.set_issuer(&[iss]);
        required.push("iss");
    }
    if config.audience.is_empty() {
        // jsonwebtoken then refuses any token that carries an `aud`.
        v.validate_aud = true;
    } else {
        v.set_audience(&config.audience);
        required.push("aud");
    }
    v.set_required_spec_claims(&required);
    v
}

/// Proves a key usable with its algorithm: a probe verification must fail with "bad signature",
/// not with a key error.
fn probe(key: &DecodingKey, algorithm: JwtAlgorithm) -> Result<(), String> {
    match jsonwebtoken::crypto::verify("AAAA", b"probe", key, algorithm.to_jsonwebtoken()) {
        Ok(_) => Ok(()),
        Err(e) => match e.kind() {
            ErrorKind::InvalidSignature | ErrorKind::Base64(_) => Ok(()),
            _ => Err(format!("the key is not a usable {algorithm} key: {e}")),
        },
    }
}

pub(crate) fn read_secret_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let mut bytes =
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    Ok(bytes)
}

/// A static key from its config entry.
pub(crate) fn static_key(config: &JwtKeyConfig) -> Result<DecodingKey, String> {
    let key = if let Some(secret) = &config.secret {
        DecodingKey::from_secret(secret.expose().as_bytes())
    } else if let Some(file) = &config.secret_file {
        let secret = read_secret_file(file)?;
        if secret.len() < crate::config::MIN_HS256_SECRET_BYTES {
            return Err(format!(
                "{}: an HS256 secret must be at least {} bytes",
                file.display(),
                crate::config::MIN_HS256_SECRET_BYTES
            ));
        }
        DecodingKey::from_secret(&secret)
    } else if let Some(file) = &config.public_key_file {
        let pem =
            std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let parsed = match config.algorithm {
            JwtAlgorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
            JwtAlgorithm::ES256 => DecodingKey::from_ec_pem(&pem),
            JwtAlgorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
            JwtAlgorithm::HS256 => unreachable!("validate() refuses HS256 public keys"),
        };
        parsed.map_err(|e| {
            format!(
                "{} is not a {} public key in PEM: {e}",
                file.display(),
                config.algorithm
            )
        })?
    } else {
        return Err("no key material".into());
    };
    probe(&key, config.algorithm)?;
    Ok(key)
}

/// The keys of a JWKS document pinned to `config.algorithm`; keys that do not fit are skipped
/// with a warning (one bad key must not take the others down). Fails when the document does not
/// parse or holds no usable key.
fn parse_jwks(
    config: &JwtKeyConfig,
    validation: &Arc<Validation>,
    text: &[u8],
) -> Result<Vec<Arc<VerifyKey>>, String> {
    // Keys are parsed one by one: a key of a kind `jsonwebtoken` does not know must not make
    // the whole document unusable.
    #[derive(Deserialize)]
    struct RawSet {
        keys: Vec<Value>,
    }
    let set: RawSet =
        serde_json::from_slice(text).map_err(|e| format!("not a JWKS document: {e}"))?;
    let source: Arc<str> = Arc::from(config.id.as_str());
    let mut keys = Vec::new();
    for (i, raw) in set.keys.into_iter().enumerate() {
        let jwk = match serde_json::from_value::<Jwk>(raw) {
            Ok(jwk) => jwk,
            Err(e) => {
                tracing::warn!(source = %config.id, index = i, error = %e, "JWKS entry not understood; skipped");
                continue;
            }
        };
        let jwk = &jwk;
        let Some(kid) = jwk.common.key_id.as_deref().filter(|k| !k.is_empty()) else {
            tracing::warn!(source = %config.id, index = i, "JWKS key without kid skipped");
            continue;
        };
        if let Some(alg) = jwk.common.key_algorithm {
            let name = format!("{alg:?}");
            if name != config.algorithm.as_str() {
                tracing::warn!(source = %config.id, kid, alg = %name, pinned = %config.algorithm, "JWKS key for another algorithm skipped");
                continue;
            }
        }
        if matches!(
            jwk.common.public_key_use,
            Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
        ) {
            tracing::warn!(source = %config.id, kid, "JWKS encryption key skipped");
            continue;
        }
        let key = match DecodingKey::from_jwk(jwk) {
            Ok(key) => key,
            Err(e) => {
                tracing::warn!(source = %config.id, kid, error = %e, "unusable JWKS key skipped");
                continue;
            }
        };
        if key.family() != config.algorithm.to_jsonwebtoken().family() {
            tracing::warn!(source = %config.id, kid, pinned = %config.algorithm, "JWKS key of another key type skipped");
            continue;
        }
        if let Err(e) = probe(&key, config.algorithm) {
            tracing::warn!(source = %config.id, kid, error = %e, "unusable JWKS key skipped");
            continue;
        }
        keys.push(Arc::new(VerifyKey {
            kid: Arc::from(kid),
            source: Arc::clone(&source),
            algorithm: config.algorithm,
            key,
            validation: Arc::clone(validation),
        }));
    }
    if keys.is_empty() {
        return Err(format!(
            "no usable {} key (with a kid) in the JWKS document",
            config.algorithm
        ));
    }
    Ok(keys)
}

/// The token header fields that matter here.
#[derive(Deserialize)]
struct RawHeader {
    alg: Option<Value>,
    kid: Option<Value>,
    crit: Option<Value>,
}

impl JwtVerifier {
    /// Loads every key; a key or JWKS file that cannot be used fails the build (a reload later
    /// keeps the last good keys instead).
    pub(crate) fn new(
        configs: &[JwtKeyConfig],
        max_token_bytes: usize,
        cache_entries: usize,
    ) -> Result<JwtVerifier, EdgeError> {
        let mut static_keys = Vec::new();
        let mut jwks = Vec::new();
        for config in configs {
            let validation = Arc::new(validation_for(config));
            let fail = |message: String| EdgeError::Key {
                key: config.id.clone(),
                message,
            };
            if let Some(path) = &config.jwks_file {
                let text = std::fs::read(path)
                    .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
                let keys = parse_jwks(config, &validation, &text)
                    .map_err(|e| fail(format!("{}: {e}", path.display())))?;
                let digest: [u8; 32] = Sha256::digest(&text).into();
                jwks.push(JwksSource {
                    config: config.clone(),
                    path: path.clone(),
                    validation,
                    state: Mutex::new((Some(digest), keys)),
                });
            } else {
                let key = static_key(config).map_err(fail)?;
                static_keys.push(Arc::new(VerifyKey {
                    kid: Arc::from(config.id.as_str()),
                    source: Arc::from(config.id.as_str()),
                    algorithm: config.algorithm,
                    key,
                    validation,
                }));
            }
        }
        let verifier = JwtVerifier {
            static_keys,
            jwks,
            current: ArcSwap::from_pointee(KeySet::default()),
            max_token_bytes,
            cache: (cache_entries > 0).then(|| TokenCache::new(cache_entries)),
        };
        verifier.rebuild();
        Ok(verifier)
    }

    fn rebuild(&self) {
        let mut keys = self.static_keys.clone();
        for source in &self.jwks {
            keys.extend(source.state.lock().1.iter().cloned());
        }
        let set = KeySet::build(keys);
        metrics::gauge!(m::JWT_KEYS).set(set.all.len() as f64);
        self.current.store(Arc::new(set));
        // A token verified with a key that is gone must not be accepted from the cache.
        if let Some(cache) = &self.cache {
            cache.clear();
        }
    }

    /// Whether any JWKS file is configured (then a reload task is worth running).
    pub(crate) fn has_jwks(&self) -> bool {
        !self.jwks.is_empty()
    }

    /// Re-reads every JWKS file; a changed one that parses replaces its keys, one that does not
    /// keeps the last good keys (logged and counted). Returns whether the key set changed.
    pub(crate) fn reload(&self) -> bool {
        let mut changed = false;
        for source in &self.jwks {
            let text = match std::fs::read(&source.path) {
                Ok(text) => text,
                Err(e) => {
                    let mut state = source.state.lock();
                    if state.0.is_some() {
                        state.0 = None;
                        metrics::counter!(m::JWKS_RELOADS, "result" => "error").increment(1);
                        tracing::warn!(source = %source.config.id, path = %source.path.display(), error = %e, "cannot read the JWKS file; keeping its last keys");
                    }
                    continue;
                }
            };
            let digest: [u8; 32] = Sha256::digest(&text).into();
            let mut state = source.state.lock();
            if state.0 == Some(digest) {
                continue;
            }
            state.0 = Some(digest);
            match parse_jwks(&source.config, &source.validation, &text) {
                Ok(keys) => {
                    tracing::info!(source = %source.config.id, keys = keys.len(), "JWKS file reloaded");
                    metrics::counter!(m::JWKS_RELOADS, "result" => "ok").increment(1);
                    state.1 = keys;
                    changed = true;
                }
                Err(e) => {
                    metrics::counter!(m::JWKS_RELOADS, "result" => "error").increment(1);
                    tracing::warn!(source = %source.config.id, path = %source.path.display(), error = %e, "JWKS file changed but is unusable; keeping its last keys");
                }
            }
        }
        if changed {
            self.rebuild();
        }
        changed
    }

    /// The static key with this id (for the token issuer).
    pub(crate) fn static_key(&self, id: &str) -> Option<&Arc<VerifyKey>> {
        self.static_keys.iter().find(|k| &*k.kid == id)
    }

    /// Verifies a bearer token: from the verified-token cache when this exact token verified
    /// before and has not expired, else in full (and then cached).
    pub(crate) fn verify(&self, token: &str) -> Result<Verified, AuthError> {
        if token.len() > self.max_token_bytes {
            return Err(AuthError::TooLong(self.max_token_bytes));
        }
        let Some(cache) = &self.cache else {
            return self.verify_uncached(token);
        };
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(verified) = cache.get(token, now) {
            return Ok(verified);
        }
        let verified = self.verify_uncached(token)?;
        cache.insert(token, &verified, now);
        Ok(verified)
    }

    /// Verifies a bearer token in full: header, key, signature, claims.
    fn verify_uncached(&self, token: &str) -> Result<Verified, AuthError> {
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed(
                "a JWT has three dot-separated parts".into(),
            ));
        };
        let header = URL_SAFE_NO_PAD
            .decode(header)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<RawHeader>(&bytes).ok())
            .ok_or_else(|| {
                AuthError::Malformed("the header is not base64url-encoded JSON".into())
            })?;
        let alg = match &header.alg {
            Some(Value::String(alg)) => alg.as_str(),
            _ => return Err(AuthError::Malformed("the header has no \"alg\"".into())),
        };
        if alg.eq_ignore_ascii_case("none") {
            return Err(AuthError::AlgorithmNone);
        }
        if let Some(crit) = &header.crit {
            return Err(AuthError::CriticalExtension(quoted(&crit.to_string())));
        }
        let algorithm = match alg {
            "HS256" => JwtAlgorithm::HS256,
            "RS256" => JwtAlgorithm::RS256,
            "ES256" => JwtAlgorithm::ES256,
            "EdDSA" => JwtAlgorithm::EdDSA,
            other => return Err(AuthError::AlgorithmNotAccepted(quoted(other))),
        };
        let set = self.current.load();
        match &header.kid {
            Some(Value::String(kid)) => {
                let Some(key) = set.by_kid.get(kid.as_str()) else {
                    return Err(AuthError::UnknownKey(quoted(kid)));
                };
                if key.algorithm != algorithm {
                    return Err(AuthError::AlgorithmMismatch {
                        alg: algorithm.to_string(),
                        kid: quoted(kid),
                        pinned: key.algorithm,
                    });
                }
                decode(token, key, algorithm)
            }
            Some(_) => Err(AuthError::Malformed("\"kid\" is not a string".into())),
            None => {
                let mut last = None;
                for key in set.all.iter().filter(|k| k.algorithm == algorithm) {
                    match decode(token, key, algorithm) {
                        Err(AuthError::BadSignature) => last = Some(AuthError::BadSignature),
                        other => return other,
                    }
                }
                Err(last.unwrap_or_else(|| AuthError::AlgorithmNotAccepted(alg.to_owned())))
            }
        }
    }
}

fn decode(token: &str, key: &Arc<VerifyKey>, alg: JwtAlgorithm) -> Result<Verified, AuthError> {
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &key.validation)
        .map_err(|e| match e.kind() {
            // Ruled out before (keys are only tried for their own algorithm); kept as a second
            // line of defence with the same message.
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                AuthError::AlgorithmMismatch {
                    alg: alg.to_string(),
                    kid: quoted(&key.kid),
                    pinned: key.algorithm,
                }
            }
            _ => AuthError::from_jsonwebtoken(&e),
        })?;
    let claims = data.claims;
    if claims.get(TOKEN_USE_CLAIM).and_then(Value::as_str) == Some(REFRESH_TOKEN_USE) {
        return Err(AuthError::RefreshToken);
    }
    match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => {}
        _ => return Err(AuthError::BadClaim("sub".into())),
    }
    Ok(Verified {
        key: Arc::clone(key),
        claims: Arc::new(claims),
        principals: Arc::default(),
    })
}

/// A verification key built from `config` (static keys only), for unit tests.
#[cfg(test)]
pub(crate) fn test_key(config: &JwtKeyConfig) -> Arc<VerifyKey> {
    Arc::new(VerifyKey {
        kid: Arc::from(config.id.as_str()),
        source: Arc::from(config.id.as_str()),
        algorithm: config.algorithm,
        key: static_key(config).expect("a usable test key"),
        validation: Arc::new(validation_for(config)),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn hs_config(id: &str) -> JwtKeyConfig {
        JwtKeyConfig {
            id: id.into(),
            algorithm: JwtAlgorithm::HS256,
            secret: Some(crate::config::Secret::new(SECRET)),
            secret_file: None,
            public_key_file: None,
            jwks_file: None,
            issuer: Some("https://idp.test".into()),
            audience: vec!["api".into()],
            leeway: Duration::ZERO,
        }
    }

    fn token(kid: &str, sub: &str, exp_in: i64) -> String {
        let now = jsonwebtoken::get_current_timestamp() as i64;
        let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(kid.into());
        let claims =
            json!({"sub": sub, "iss": "https://idp.test", "aud": "api", "exp": now + exp_in});
        jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn cached(v: &JwtVerifier) -> usize {
        v.cache.as_ref().map_or(0, TokenCache::len)
    }

    #[test]
    fn a_verified_token_is_cached_and_a_tampered_one_still_refused() {
        let v = JwtVerifier::new(&[hs_config("k")], 8192, 16).unwrap();
        let t = token("k", "alice", 600);
        assert_eq!(v.verify(&t).unwrap().claims["sub"], "alice");
        assert_eq!(cached(&v), 1);
        assert_eq!(v.verify(&t).unwrap().claims["sub"], "alice");
        assert_eq!(cached(&v), 1);
        // The same header and claims with another signature: not the cached bytes, verified
        // in full and refused.
        let (signed, sig) = t.rsplit_once('.').unwrap();
        let flipped = if sig.starts_with('A') { 'B' } else { 'A' };
        let tampered = format!("{signed}.{flipped}{}", &sig[1..]);
        assert_eq!(v.verify(&tampered).unwrap_err(), AuthError::BadSignature);
        assert_eq!(cached(&v), 1, "refused tokens are not cached");
    }

    #[test]
    fn expired_tokens_are_not_cached_and_refused() {
        let v = JwtVerifier::new(&[hs_config("k")], 8192, 16).unwrap();
        let t = token("k", "alice", -5);
        assert_eq!(v.verify(&t).unwrap_err(), AuthError::Expired);
        assert_eq!(cached(&v), 0);
    }

    #[test]
    fn a_cached_token_expires_with_its_exp() {
        let v = JwtVerifier::new(&[hs_config("k")], 8192, 16).unwrap();
        let t = token("k", "alice", 1);
        v.verify(&t).unwrap();
        assert_eq!(cached(&v), 1);
        // Past exp (leeway 0): the cache no longer answers and full verification refuses it.
        std::thread::sleep(Duration::from_millis(2_100));
        assert_eq!(v.verify(&t).unwrap_err(), AuthError::Expired);
        assert_eq!(cached(&v), 0);
    }

    #[test]
    fn a_key_set_change_empties_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let jwks = |kid: &str| {
            let k = URL_SAFE_NO_PAD.encode(SECRET);
            format!(r#"{{"keys":[{{"kty":"oct","kid":"{kid}","alg":"HS256","k":"{k}"}}]}}"#)
        };
        std::fs::write(&path, jwks("one")).unwrap();
        let config = JwtKeyConfig {
            secret: None,
            jwks_file: Some(path.clone()),
            ..hs_config("set")
        };
        let v = JwtVerifier::new(&[config], 8192, 16).unwrap();
        let t = token("one", "alice", 600);
        v.verify(&t).unwrap();
        assert_eq!(cached(&v), 1);
        // Key "one" is replaced by "two": the token cached under "one" must be refused now.
        std::fs::write(&path, jwks("two")).unwrap();
        assert!(v.reload());
        assert_eq!(cached(&v), 0);
        assert_eq!(
            v.verify(&t).unwrap_err(),
            AuthError::UnknownKey("one".into())
        );
    }

    #[test]
    fn no_cache_when_configured_off() {
        let v = JwtVerifier::new(&[hs_config("k")], 8192, 0).unwrap();
        assert!(v.cache.is_none());
        let t = token("k", "alice", 600);
        v.verify(&t).unwrap();
        v.verify(&t).unwrap();
    }
}
