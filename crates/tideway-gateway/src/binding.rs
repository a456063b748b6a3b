//! Parameter binding: path parameters, the query string and a JSON object body merge into the one
//! payload object an RPC method takes its arguments from, by name.
//!
//! Precedence when a name appears twice: path over query over body, so a body cannot redirect a
//! call to another resource than its URL names. Path and query values are text; they are typed
//! by the parameter's declared kind (`"42"` becomes `42` for an integer parameter) and left as
//! strings otherwise.
//!
//! When there are no path or query parameters the body is forwarded as it came, without being
//! parsed and re-encoded: the service's decoder validates it.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How a path or query value is typed in the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamKind {
    /// Kept as a string.
    String,
    /// A JSON integer.
    Integer,
    /// A JSON number.
    Number,
    /// `true` or `false`.
    Boolean,
}

impl ParamKind {
    /// The kind for a Rust type as written in a service trait (`u32`, `Option<bool>`, `String`).
    /// Types that are not scalars are strings as far as URLs are concerned.
    pub fn from_rust_type(rust_type: &str) -> ParamKind {
        let t: String = rust_type.chars().filter(|c| !c.is_whitespace()).collect();
        let inner = t
            .strip_prefix("Option<")
            .and_then(|s| s.strip_suffix('>'))
            .unwrap_or(&t);
        let inner = inner.rsplit("::").next().unwrap_or(inner);
        match inner {
            "u8" | "u16" | "u32" | "u64" | "u128" | "usize" | "i8" | "i16" | "i32" | "i64"
            | "i128" | "isize" => ParamKind::Integer,
            "f32" | "f64" => ParamKind::Number,
            "bool" => ParamKind::Boolean,
            _ => ParamKind::String,
        }
    }
}

/// One argument of the RPC method a route calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Argument name.
    pub name: String,
    /// How URL values bound to it are typed.
    pub kind: ParamKind,
    /// The argument is the whole body object (its fields sit at the top level).
    pub body: bool,
    /// The argument's JSON Schema, when its service publishes one (`#[service(schema)]`), for
    /// the OpenAPI document; binding does not use it.
    pub schema: Option<Value>,
}

/// Why a request could not be bound; always the client's fault (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The body is not a JSON object.
    #[error("request body must be a JSON object: {0}")]
    BodyNotObject(String),
    /// A path or query value does not fit its parameter's kind.
    #[error("parameter `{name}`: {value:?} is not {expected}")]
    BadValue {
        /// The parameter.
        name: String,
        /// The value given.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// The query string is malformed.
    #[error("malformed query string: {0}")]
    BadQuery(String),
}

fn typed(name: &str, raw: &str, kind: ParamKind) -> Result<Value, BindError> {
    let bad = |expected| BindError::BadValue {
        name: name.to_owned(),
        value: raw.to_owned(),
        expected,
    };
    Ok(match kind {
        ParamKind::String => Value::String(raw.to_owned()),
        ParamKind::Integer => {
            if let Ok(i) = raw.parse::<i64>() {
                Value::from(i)
            } else if let Ok(u) = raw.parse::<u64>() {
                Value::from(u)
            } else {
                return Err(bad("an integer"));
            }
        }
        ParamKind::Number => raw
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| bad("a number"))?,
        ParamKind::Boolean => match raw {
            "true" | "1" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            _ => return Err(bad("true or false")),
        },
    })
}

fn kind_of(params: &[Param], name: &str) -> ParamKind {
    params
        .iter()
        .find(|p| p.name == name)
        .map_or(ParamKind::String, |p| p.kind)
}

fn is_blank(body: &[u8]) -> bool {
    body.iter().all(u8::is_ascii_whitespace)
}

/// Builds the JSON payload of an RPC call from the request's parts.
pub fn bind(
    params: &[Param],
    path_params: &[(String, String)],
    query: Option<&str>,
    body: Bytes,
) -> Result<Bytes, BindError> {
    let query = query.filter(|q| !q.is_empty());
    if path_params.is_empty() && query.is_none() && is_blank(&body) {
        // Nothing at all: the empty object, made without a map or an allocation.
        return Ok(Bytes::from_static(b"{}"));
    }
    if path_params.is_empty() && query.is_none() {
        // Nothing to merge: forward the body untouched, after the cheap check that it is an
        // object at all.
        return match body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => Ok(body),
            _ => Err(BindError::BodyNotObject(
                "found something other than an object".into(),
            )),
        };
    }
    let mut payload = if is_blank(&body) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(map)) => map,
            Ok(_) => {
                return Err(BindError::BodyNotObject(
                    "found something other than an object".into(),
                ));
            }
            Err(e) => return Err(BindError::BodyNotObject(e.to_string())),
        }
    };
    if let Some(query) = query {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(query).map_err(|e| BindError::BadQuery(e.to_string()))?;
        for (name, raw) in pairs {
            let value = typed(&name, &raw, kind_of(params, &name))?;
            payload.insert(name, value);
        }
    }
    for (name, raw) in path_params {
        let value = typed(name, raw, kind_of(params, name))?;
        payload.insert(name.clone(), value);
    }
    Ok(Bytes::from(
        serde_json::to_vec(&Value::Object(payload)).expect("a JSON map always serializes"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Vec<Param> {
        vec![
            Param {
                name: "id".into(),
                kind: ParamKind::String,
                body: false,
                schema: None,
            },
            Param {
                name: "limit".into(),
                kind: ParamKind::Integer,
                body: false,
                schema: None,
            },
            Param {
                name: "express".into(),
                kind: ParamKind::Boolean,
                body: false,
                schema: None,
            },
        ]
    }

    fn json(b: Bytes) -> Value {
        serde_json::from_slice(&b).unwrap()
    }

    #[test]
    fn kinds_from_rust_types() {
        assert_eq!(ParamKind::from_rust_type("u32"), ParamKind::Integer);
        assert_eq!(
            ParamKind::from_rust_type("Option < u32 >"),
            ParamKind::Integer
        );
        assert_eq!(ParamKind::from_rust_type("f64"), ParamKind::Number);
        assert_eq!(ParamKind::from_rust_type("bool"), ParamKind::Boolean);
        assert_eq!(ParamKind::from_rust_type("String"), ParamKind::String);
        assert_eq!(ParamKind::from_rust_type("NewWaybill"), ParamKind::String);
    }

    #[test]
    fn body_alone_is_forwarded_byte_for_byte() {
        let body = Bytes::from_static(b" {\"b\": 1,   \"a\":2}");
        let out = bind(&params(), &[], None, body.clone()).unwrap();
        assert_eq!(out, body);
        assert_eq!(out.as_ptr(), body.as_ptr(), "no copy");
    }

    #[test]
    fn path_query_and_body_merge_with_path_winning() {
        let out = bind(
            &params(),
            &[("id".into(), "007".into())],
            Some("limit=5&express=true&extra=x"),
            Bytes::from_static(br#"{"id":"evil","note":"hi"}"#),
        )
        .unwrap();
        assert_eq!(
            json(out),
            serde_json::json!({"id":"007","limit":5,"express":true,"extra":"x","note":"hi"})
        );
    }

    #[test]
    fn bad_bodies_and_values_are_client_errors() {
        for body in [&b"[1,2]"[..], b"\"s\""] {
            let err = bind(&params(), &[], None, Bytes::copy_from_slice(body)).unwrap_err();
            assert!(matches!(err, BindError::BodyNotObject(_)), "{err}");
        }
        // Forwarded untouched, malformed JSON that starts like an object is the service
        // decoder's to reject (also a 400); once merging is needed the gateway parses it.
        assert!(bind(&params(), &[], None, Bytes::from_static(b"{nope")).is_ok());
        for body in [&b"[1,2]"[..], b"\"s\"", b"{nope"] {
            let err = bind(
                &params(),
                &[("id".into(), "1".into())],
                None,
                Bytes::copy_from_slice(body),
            )
            .unwrap_err();
            assert!(matches!(err, BindError::BodyNotObject(_)), "{err}");
        }
        let err = bind(&params(), &[], Some("limit=ten"), Bytes::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "parameter `limit`: \"ten\" is not an integer"
        );
    }

    #[test]
    fn empty_body_is_an_empty_object() {
        let out = bind(&params(), &[], None, Bytes::new());
        // No path, no query and no body: an empty object.
        assert_eq!(json(out.unwrap()), serde_json::json!({}));
    }
}
