//! Secrets out of what the admin API shows (`/admin/config`, the policies in `/admin/routes`).
//!
//! Two layers, because one forgotten field would leak a key to everyone who can read the admin
//! API:
//!
//! 1. **At the type.** Secret fields serialize as `"<redacted>"` wherever they are serialized:
//!    `tideway_edge::Secret` (HS256 secrets; the Redis URL, shown with its password redacted),
//!    `serialize_with` on the API key hashes, `admin_token`, the etcd password and the OTLP
//!    export headers. The secret never reaches the JSON value.
//! 2. **By name, on the JSON.** [`redact`] walks the serialized document and replaces any string
//!    under a key that names a secret (`*secret`, `*password`, `*token`, `sha256`, ...), every
//!    value of a `headers` map, and the password of any URL. A field added later without the
//!    type-level marking is still caught if its name says what it is; the unit tests below fail
//!    when a default-serialized config has a secret-looking string the types did not redact
//!    (so the first layer stays complete, not just papered over by the second).
//!
//! File paths (`secret_file`, `private_key_file`, TLS `key`) are shown: they say where a key
//! is, not what it is, and operators need them.

use serde_json::Value;

/// What a secret is shown as.
pub(crate) const REDACTED: &str = tideway_edge::REDACTED;

/// Last words (of `_`- or `-`-separated key names, lower case) whose string values are secrets.
const SECRET_WORDS: [&str; 11] = [
    "secret",
    "secrets",
    "password",
    "passwd",
    "token",
    "sha256",
    "credential",
    "credentials",
    "authorization",
    "cookie",
    "apikey",
];

/// Whether a key's string value is a secret: its last word names one (`admin_token`,
/// `client_secret`; not `secret_file`, a path, nor `max_token_bytes`, a number).
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    let last = key.rsplit(['_', '-']).next().unwrap_or(&key);
    SECRET_WORDS.contains(&last)
}

/// Replaces every secret in `doc` (see the module docs) with `"<redacted>"`; returns how many
/// values it changed.
pub(crate) fn redact(doc: &mut Value) -> usize {
    match doc {
        Value::Object(map) => {
            let mut changed = 0;
            for (key, value) in map.iter_mut() {
                if key == "headers"
                    && let Value::Object(headers) = value
                {
                    for header in headers.values_mut() {
                        changed += hide(header);
                    }
                } else if is_secret_key(key) && matches!(value, Value::String(_) | Value::Number(_))
                {
                    changed += hide(value);
                } else {
                    changed += redact(value);
                }
            }
            changed
        }
        Value::Array(items) => items.iter_mut().map(redact).sum(),
        Value::String(text) if text.contains("://") => {
            let shown = tideway_edge::redact_url(text);
            if shown == *text {
                0
            } else {
                *text = shown;
                1
            }
        }
        _ => 0,
    }
}

/// Sets a string or number to `"<redacted>"` (null stays null: not set); 1 when it changed.
fn hide(value: &mut Value) -> usize {
    match value {
        Value::String(s) if s == REDACTED => 0,
        Value::String(_) | Value::Number(_) => {
            *value = Value::String(REDACTED.to_owned());
            1
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GatewayConfig;

    /// Every secret the config format has, each a distinct string.
    const SECRETS: [&str; 7] = [
        "hs256-shared-secret-0123456789abcdef",
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "admin-token-0123456789",
        "redis-password",
        "etcd-password",
        "collector-token",
        "env-admin-token-abcdefgh",
    ];

    fn full_config(env: Vec<(String, String)>) -> GatewayConfig {
        let text = format!(
            r#"
[server]
admin_listen = "127.0.0.1:0"
admin_token = "{admin}"

[registry]
backend = "etcd"
endpoints = ["http://127.0.0.1:2379"]
user = {{ name = "gw", password = "{etcd}" }}

[[edge.jwt_keys]]
id = "k1"
algorithm = "HS256"
secret = "{hs}"
issuer = "me"
audience = "api"

[[edge.api_keys]]
name = "scanner"
sha256 = "{sha}"

[edge.redis]
url = "redis://default:{redis}@127.0.0.1:6379"

[edge.token_issuer]
key = "k1"
auth_service = "a.Auth"
auth_method = "login"

[route_policies.default]
auth = {{ methods = "either" }}
rate_limit = {{ rate = 5.0, burst = 10, shared = true }}

[observability.tracing]
endpoint = "http://127.0.0.1:4318"
headers = {{ authorization = "Bearer {collector}" }}
"#,
            admin = SECRETS[2],
            etcd = SECRETS[4],
            hs = SECRETS[0],
            sha = SECRETS[1],
            redis = SECRETS[3],
            collector = SECRETS[5],
        );
        GatewayConfig::parse(&text, "full.toml", env).unwrap()
    }

    #[test]
    fn the_types_redact_every_secret_of_the_config_format() {
        let env = vec![(
            "TIDEWAY__SERVER__ADMIN_TOKEN".to_owned(),
            SECRETS[6].to_owned(),
        )];
        let mut doc = serde_json::to_value(full_config(env)).unwrap();
        let text = doc.to_string();
        for secret in SECRETS {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        // Nothing left for the name-based net: a secret-looking field the types did not mark
        // fails here (its default value, even "", is caught by name).
        let before = doc.clone();
        assert_eq!(redact(&mut doc), 0, "unmarked secret fields: {before:#}");
        // The keys stay, so operators see what is set.
        assert_eq!(doc["server"]["admin_token"], REDACTED);
        assert_eq!(doc["edge"]["jwt_keys"][0]["secret"], REDACTED);
        assert_eq!(doc["edge"]["jwt_keys"][0]["algorithm"], "HS256");
        assert_eq!(doc["edge"]["api_keys"][0]["sha256"], REDACTED);
        assert_eq!(doc["edge"]["api_keys"][0]["name"], "scanner");
        assert_eq!(
            doc["edge"]["redis"]["url"],
            "redis://default:<redacted>@127.0.0.1:6379"
        );
        assert_eq!(doc["registry"]["user"]["password"], REDACTED);
        assert_eq!(
            doc["observability"]["tracing"]["headers"]["authorization"],
            REDACTED
        );
        assert_eq!(doc["route_policies"]["default"]["rate_limit"]["burst"], 10);
    }

    #[test]
    fn a_default_config_has_no_unmarked_secret() {
        let mut doc = serde_json::to_value(GatewayConfig::default()).unwrap();
        let before = doc.clone();
        assert_eq!(redact(&mut doc), 0, "{before:#}");
    }

    #[test]
    fn the_net_catches_fields_the_types_missed() {
        let mut doc = serde_json::json!({
            "new_section": {
                "client_secret": "s1",
                "db-password": "s2",
                "refresh_token": "s3",
                "secret_file": "/etc/key",
                "max_token_bytes": 8192,
                "token_issuer": { "key": "k1" },
                "password": null,
                "upstream": "http://user:s4@example.com/x",
                "list": ["amqp://guest:s5@mq:5672"],
                "headers": { "x-api-key": "s6" },
            }
        });
        assert_eq!(redact(&mut doc), 6);
        let text = doc.to_string();
        for s in ["s1", "s2", "s3", "s4", "s5", "s6"] {
            assert!(!text.contains(&format!("\"{s}\"")), "{s} in {text}");
            assert!(!text.contains(&format!(":{s}@")), "{s} in {text}");
        }
        let section = &doc["new_section"];
        assert_eq!(section["secret_file"], "/etc/key");
        assert_eq!(section["max_token_bytes"], 8192);
        assert_eq!(section["token_issuer"]["key"], "k1");
        assert_eq!(section["password"], Value::Null);
        assert_eq!(section["upstream"], "http://user:<redacted>@example.com/x");
    }
}
