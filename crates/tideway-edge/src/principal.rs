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

/// An authenticated caller. Made once per token and route policy and shared (`Arc`) by the
/// requests that present that token: its call metadata is built here, once, so that a request
/// adds it to its RPC call without copying a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    subject: Arc<str>,
    via: AuthMethod,
    key_id: Arc<str>,
    issuer: Option<Arc<str>>,
    claims: Vec<(String, String)>,
    metadata: Arc<[(String, String)]>,
}

impl Principal {
    /// A principal; `claims` are the forwarded claims, in order, as text.
    pub fn new(
        subject: Arc<str>,
        via: AuthMethod,
        key_id: Arc<str>,
        issuer: Option<Arc<str>>,
        claims: Vec<(String, String)>,
    ) -> Principal {
        let mut metadata = Vec::with_capacity(4 + claims.len());
        metadata.push((SUBJECT_KEY.to_owned(), subject.to_string()));
        metadata.push((METHOD_KEY.to_owned(), via.as_str().to_owned()));
        metadata.push((KEY_ID_KEY.to_owned(), key_id.to_string()));
        if let Some(iss) = &issuer {
            metadata.push((ISSUER_KEY.to_owned(), iss.to_string()));
        }
        for (name, value) in &claims {
            metadata.push((format!("{CLAIM_PREFIX}{name}"), value.clone()));
        }
        Principal {
            subject,
            via,
            key_id,
            issuer,
            claims,
            metadata: Arc::from(metadata),
        }
    }

    /// JWT `sub`, or the API key's configured name.
    pub fn subject(&self) -> &Arc<str> {
        &self.subject
    }

    /// How it authenticated.
    pub fn via(&self) -> AuthMethod {
        self.via
    }

    /// The `kid` of the key that verified the token, or the API key's name.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The token's `iss`.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// Claims the route forwards (`forward_claims`), in that order, as text: strings as they
    /// are, other JSON values in compact JSON (`["ops","billing"]`, `42`, `true`). Claims the
    /// token lacks are absent.
    pub fn claims(&self) -> &[(String, String)] {
        &self.claims
    }

    /// The metadata pairs for the RPC call (add them with `Metadata::extend_shared`):
    /// `x-auth-subject`, `x-auth-method`, `x-auth-key-id`, `x-auth-issuer` (JWT with `iss`),
    /// and `x-auth-claim-<name>` per forwarded claim.
    pub fn metadata(&self) -> &Arc<[(String, String)]> {
        &self.metadata
    }

    /// Sets the same pairs as request headers (for HTTP upstream routes), after removing any
    /// `x-auth-*` header the client sent. Values that cannot be header values (control
    /// characters) are left out.
    pub fn apply_to_headers(&self, headers: &mut HeaderMap) {
        strip_identity_headers(headers);
        for (name, value) in self.metadata.iter() {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.append(name, value);
            }
        }
    }
}

/// Principals made from one verified token, one per route policy (`CompiledAuth` id), so a
/// request with a cached token finds its principal ready. Shared by every copy of the token's
/// cache entry; at most [`MAX_PRINCIPALS_PER_TOKEN`] kept (a token used on more policies than
/// that gets the rest made per request).
#[derive(Debug, Default)]
pub(crate) struct PrincipalSlots {
    slots: parking_lot::Mutex<Vec<(u64, Arc<Principal>)>>,
}

/// Route policies whose principal is kept per verified token.
pub(crate) const MAX_PRINCIPALS_PER_TOKEN: usize = 8;

impl PrincipalSlots {
    /// The principal kept for policy `policy_id`, or the one `make` builds (then kept while there
    /// is room).
    pub(crate) fn get_or_make<E>(
        &self,
        policy_id: u64,
        make: impl FnOnce() -> Result<Principal, E>,
    ) -> Result<Arc<Principal>, E> {
        if let Some((_, p)) = self.slots.lock().iter().find(|(id, _)| *id == policy_id) {
            return Ok(Arc::clone(p));
        }
        let made = Arc::new(make()?);
        let mut slots = self.slots.lock();
        if slots.len() < MAX_PRINCIPALS_PER_TOKEN && !slots.iter().any(|(id, _)| *id == policy_id) {
            slots.push((policy_id, Arc::clone(&made)));
        }
        Ok(made)
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
        let p = Principal::new(
            "ada".into(),
            AuthMethod::Jwt,
            Arc::from("k1"),
            Some("https://idp".into()),
            vec![("roles".into(), r#"["ops"]"#.into())],
        );
        assert_eq!(
            &p.metadata()[..],
            [
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

    #[test]
    fn principal_slots_keep_one_principal_per_policy() {
        let slots = PrincipalSlots::default();
        let make = |sub: &str| {
            let sub: Arc<str> = sub.into();
            move || {
                Ok::<_, ()>(Principal::new(
                    sub,
                    AuthMethod::Jwt,
                    "k".into(),
                    None,
                    vec![],
                ))
            }
        };
        let a = slots.get_or_make(1, make("ada")).unwrap();
        // Kept: the second request for policy 1 does not build (its `make` would differ).
        let again = slots.get_or_make(1, make("other")).unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        let b = slots.get_or_make(2, make("bob")).unwrap();
        assert_eq!(&**b.subject(), "bob");
        assert_eq!(slots.get_or_make(3, || Err(())), Err(()));
        // Bounded: past MAX_PRINCIPALS_PER_TOKEN policies, principals are made and not kept.
        for id in 10..10 + MAX_PRINCIPALS_PER_TOKEN as u64 {
            slots.get_or_make(id, make("x")).unwrap();
        }
        assert_eq!(slots.slots.lock().len(), MAX_PRINCIPALS_PER_TOKEN);
        let first = slots.get_or_make(99, make("y")).unwrap();
        let second = slots.get_or_make(99, make("y")).unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
    }
}
