//! Who a request is from, once authenticated, and how that travels to the service: RPC call
//! metadata (`x-auth-*` pairs), or request headers of the same names for HTTP upstreams.
//!
//! Services may trust these pairs only because the gateway sets them: on RPC routes the
//! metadata is built fresh per call; on HTTP upstream routes the gateway must remove whatever
//! `x-auth-*` headers the client sent ([`strip_identity_headers`]) before adding its own.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::ApiKeyConfig;

/// Prefix of every identity metadata key and header.
pub const IDENTITY_PREFIX: &str = "x-auth-";
/// The authenticated subject: JWT `sub`, or the API key's name.
pub const SUBJECT_KEY: &str = "x-auth-subject";
/// How the subject authenticated: `jwt` or `api_key`.
pub const METHOD_KEY: &str = "x-auth-method";
/// The JWT's `iss`, when it has one.
pub const ISSUER_KEY: &str = "x-auth-issuer";
/// The id of the key that verified the JWT (its `kid`).
pub const KEY_ID_KEY: &str = "x-auth-key-id";
/// Prefix of forwarded claims: `x-auth-claim-<name>`.
pub const CLAIM_PREFIX: &str = "x-auth-claim-";
/// Longest claim value forwarded; a longer claim is left out (and logged), so a service sees it
/// as absent, the safe direction for authorization.
pub const MAX_CLAIM_VALUE_BYTES: usize = 4096;

/// How a principal authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    /// A JWT bearer token.
    Jwt,
    /// An API key.
    ApiKey,
}

impl AuthMethod {
    /// `jwt` or `api_key`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Jwt => "jwt",
            AuthMethod::ApiKey => "api_key",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// JWT `sub`, or the API key's configured name.
    pub subject: String,
    /// How it authenticated.
    pub via: AuthMethod,
    /// The `kid` of the key that verified the token, or the API key's name.
    pub key_id: Arc<str>,
    /// The token's `iss`.
    pub issuer: Option<String>,
    /// Claims the route forwards (`forward_claims`), in that order, as text: strings as they
    /// are, other JSON values in compact JSON (`["ops","billing"]`, `42`, `true`). Claims the
    /// token lacks are absent.
    pub claims: Vec<(String, String)>,
}

impl Principal {
    /// The metadata pairs to add to the RPC call (`CallOptions.metadata`): `x-auth-subject`,
    /// `x-auth-method`, `x-auth-key-id`, `x-auth-issuer` (JWT with `iss`), and
    /// `x-auth-claim-<name>` per forwarded claim.
    pub fn metadata(&self) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(4 + self.claims.len());
        out.push((SUBJECT_KEY.to_owned(), self.subject.clone()));
        out.push((METHOD_KEY.to_owned(), self.via.as_str().to_owned()));
        out.push((KEY_ID_KEY.to_owned(), self.key_id.to_string()));
        if let Some(iss) = &self.issuer {
            out.push((ISSUER_KEY.to_owned(), iss.clone()));
        }
        for (name, value) in &self.claims {
            out.push((format!("{CLAIM_PREFIX}{name}"), value.clone()));
        }
        out
    }

    /// Sets the same pairs as request headers (for HTTP upstream routes), after removing any
    /// `x-auth-*` header the client sent. Values that cannot be header values (control
    /// characters) are left out.
    pub fn apply_to_headers(&self, headers: &mut HeaderMap) {
        strip_identity_headers(headers);
        for (name, value) in self.metadata() {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                headers.append(name, value);
            }
        }
    }
}

/// Removes every `x-auth-*` header: a client must not be able to claim an identity. Call it on
/// every request forwarded to an HTTP upstream, authenticated or not.
pub fn strip_identity_headers(headers: &mut HeaderMap) {
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with(IDENTITY_PREFIX))
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
}

/// The configured API keys, as hashes.
#[derive(Debug, Default)]
pub(crate) struct ApiKeys {
    keys: Vec<(Arc<str>, [u8; 32])>,
}

impl ApiKeys {
    pub(crate) fn new(configs: &[ApiKeyConfig]) -> Result<ApiKeys, String> {
        let mut keys = Vec::with_capacity(configs.len());
        for c in configs {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(&c.sha256, &mut hash)
                .map_err(|e| format!("api key {:?}: sha256 is not 64 hex digits: {e}", c.name))?;
            keys.push((Arc::from(c.name.as_str()), hash));
        }
        Ok(ApiKeys { keys })
    }

    /// The name of the key `presented` hashes to. Every configured hash is compared in constant
    /// time, and all of them are compared, so timing tells nothing about which (if any) matched.
    pub(crate) fn verify(&self, presented: &[u8]) -> Option<Arc<str>> {
        let hash: [u8; 32] = Sha256::digest(presented).into();
        let mut found: Option<&Arc<str>> = None;
        for (name, stored) in &self.keys {
            if bool::from(stored.ct_eq(&hash)) {
                found = Some(name);
            }
        }
        found.cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_match_by_hash_only() {
        let keys = ApiKeys::new(&[
            ApiKeyConfig {
                name: "scanner".into(),
                sha256: hex::encode(Sha256::digest(b"k-123")),
            },
            ApiKeyConfig {
                name: "billing".into(),
                sha256: hex::encode(Sha256::digest(b"k-456")),
            },
        ])
        .unwrap();
        assert_eq!(keys.verify(b"k-456").as_deref(), Some("billing"));
        assert_eq!(keys.verify(b"k-123").as_deref(), Some("scanner"));
        assert_eq!(keys.verify(b"k-12"), None);
        assert_eq!(keys.verify(b""), None);
    }

    #[test]
    fn metadata_and_headers() {
        let p = Principal {
            subject: "ada".into(),
            via: AuthMethod::Jwt,
            key_id: Arc::from("k1"),
            issuer: Some("https://idp".into()),
            claims: vec![("roles".into(), r#"["ops"]"#.into())],
        };
        assert_eq!(
            p.metadata(),
            vec![
                ("x-auth-subject".to_owned(), "ada".to_owned()),
                ("x-auth-method".to_owned(), "jwt".to_owned()),
                ("x-auth-key-id".to_owned(), "k1".to_owned()),
                ("x-auth-issuer".to_owned(), "https://idp".to_owned()),
                ("x-auth-claim-roles".to_owned(), r#"["ops"]"#.to_owned()),
            ]
        );
        let mut h = HeaderMap::new();
        h.insert("x-auth-subject", HeaderValue::from_static("mallory"));
        h.insert("x-auth-claim-admin", HeaderValue::from_static("true"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        p.apply_to_headers(&mut h);
        assert_eq!(h["x-auth-subject"], "ada");
        assert!(
            !h.contains_key("x-auth-claim-admin"),
            "spoofed claim removed"
        );
        assert_eq!(h["accept"], "*/*");
    }
}
