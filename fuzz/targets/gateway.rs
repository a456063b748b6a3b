//! Bodies of the gateway fuzz targets `bind_payload` and `route_match`, shared by the cargo-fuzz
//! binaries (`fuzz/fuzz_targets/*.rs`, as `#[path]` modules) and by the corpus replay in
//! `crates/tideway-gateway/tests/fuzz_corpus.rs`, so `cargo test` runs every seed through exactly
//! the code the fuzzer runs. Only the gateway's public API is used, with no dependency beyond the
//! gateway's own (`bytes`, `http`, `serde_json`, `tideway-rpc`).
//!
//! Every check is an `assert!`: a panic is what the fuzzer reports as a crash.
//!
//! # Input formats
//!
//! `bind_payload`: `[flags] [kind bytes...] segments separated by 0xFF`. `flags` bits 0-2: how
//! many of [`NAMES`] are declared parameters (their kinds are the next bytes, `b % 4`: string,
//! integer, number, boolean); bits 3-5: how many path parameters (named `NAMES[i]`, values are
//! the first segments); bit 6: the next segment is the query string. The remaining segments,
//! rejoined with 0xFF, are the body.
//!
//! `route_match`: `[mode] [method] rest`. `mode` bit 0 clear: the fixed [`fixed_templates`]
//! table, `rest` is the path looked up. Set: `rest` is `templates \0 path`, the templates one
//! per line (routes from a registry are input too), built with conflicts skipped.

#![allow(dead_code)]

use bytes::Bytes;
use http::Method;
use serde_json::Value;
use tideway_gateway::binding::{self, Param, ParamKind};
use tideway_gateway::router::Match;
use tideway_gateway::{Route, RouteTable};
use tideway_rpc::{MethodDescriptor, ServiceDescriptor};

/// Parameter names the `bind_payload` target uses (shared by declarations, path and query, so
/// that typing and precedence are exercised).
pub(crate) const NAMES: [&str; 8] = ["id", "limit", "express", "weight", "zone", "a", "b", "c"];

/// Separator of `bind_payload` segments.
pub(crate) const SEP: u8 = 0xFF;

fn kind(b: u8) -> ParamKind {
    match b % 4 {
        0 => ParamKind::String,
        1 => ParamKind::Integer,
        2 => ParamKind::Number,
        _ => ParamKind::Boolean,
    }
}

/// Body of the `bind_payload` fuzz target: `tideway_gateway::binding::bind` must never panic,
/// must be deterministic, must forward a lone body byte for byte, and when it merges, the result
/// is a JSON object in which every path parameter has its value typed by its declared kind.
pub(crate) fn bind_payload(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let declared = usize::from(flags & 0b111);
    let n_path = usize::from((flags >> 3) & 0b111);
    let has_query = flags & 0b100_0000 != 0;
    let (kinds, rest) = rest.split_at(declared.min(rest.len()));
    let params: Vec<Param> = kinds
        .iter()
        .enumerate()
        .map(|(i, &b)| Param {
            name: NAMES[i].to_owned(),
            kind: kind(b),
            body: false,
            schema: None,
        })
        .collect();
    let mut segments = rest.split(|&b| b == SEP);
    let mut path_params = Vec::new();
    for name in NAMES.iter().take(n_path) {
        let Some(value) = segments.next() else { break };
        path_params.push((
            name.to_string(),
            String::from_utf8_lossy(value).into_owned(),
        ));
    }
    let query = if has_query {
        segments
            .next()
            .map(|q| String::from_utf8_lossy(q).into_owned())
    } else {
        None
    };
    let body: Vec<u8> = segments.collect::<Vec<_>>().join(&SEP);
    let body = Bytes::from(body);

    let first = binding::bind(&params, &path_params, query.as_deref(), body.clone());
    let second = binding::bind(&params, &path_params, query.as_deref(), body.clone());
    assert_eq!(first, second, "bind is deterministic");
    let out = match first {
        Ok(out) => out,
        Err(e) => {
            // Errors render; they are the client's 400.
            let _ = e.to_string();
            return;
        }
    };
    let query_given = query.as_deref().is_some_and(|q| !q.is_empty());
    let body_blank = body.iter().all(u8::is_ascii_whitespace);
    if path_params.is_empty() && !query_given && !body_blank {
        assert_eq!(out, body, "a lone body is forwarded byte for byte");
        return;
    }
    let value: Value = serde_json::from_slice(&out).expect("a merged payload is JSON");
    let object = value.as_object().expect("a merged payload is an object");
    for (name, raw) in &path_params {
        // The last path value of a name wins (the router never repeats one, the fuzzer may).
        if path_params
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            != Some(raw)
        {
            continue;
        }
        let got = object.get(name).expect("every path parameter is bound");
        let declared = params.iter().find(|p| &p.name == name).map(|p| p.kind);
        match declared.unwrap_or(ParamKind::String) {
            ParamKind::String => assert_eq!(got, &Value::String(raw.clone()), "path wins"),
            ParamKind::Integer => assert!(got.is_i64() || got.is_u64(), "{name}: {got}"),
            ParamKind::Number => assert!(got.is_number(), "{name}: {got}"),
            ParamKind::Boolean => assert!(got.is_boolean(), "{name}: {got}"),
        }
    }
}

/// Encodes a `bind_payload` input (for seeds and tests): declared kinds, path values, query,
/// body.
pub(crate) fn encode_bind_input(
    kinds: &[u8],
    path: &[&str],
    query: Option<&str>,
    body: &[u8],
) -> Vec<u8> {
    assert!(kinds.len() <= 7 && path.len() <= 7);
    let mut flags = kinds.len() as u8 | ((path.len() as u8) << 3);
    if query.is_some() {
        flags |= 0b100_0000;
    }
    let mut out = vec![flags];
    out.extend_from_slice(kinds);
    let mut segments: Vec<&[u8]> = path.iter().map(|p| p.as_bytes()).collect();
    if let Some(q) = query {
        segments.push(q.as_bytes());
    }
    segments.push(body);
    out.extend_from_slice(&segments.join(&SEP));
    out
}

/// The templates of the fixed table: static, parameters, a catch-all, a shared prefix.
pub(crate) fn fixed_templates() -> Vec<(&'static str, &'static str)> {
    vec![
        ("GET", "/api/waybills"),
        ("POST", "/api/waybills"),
        ("GET", "/api/waybills/{id}"),
        ("DELETE", "/api/waybills/{id}"),
        ("GET", "/api/waybills/{waybill_id}/events"),
        ("POST", "/api/waybills/{waybill_id}/events"),
        ("POST", "/api/quotes"),
        ("GET", "/api/rates/{from_zone}/{to_zone}"),
        ("*", "/legacy/{*rest}"),
        ("GET", "/"),
    ]
}

const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "*",
];

/// A route as a service publishes it; the targets change only its method and path, so new
/// fields of `Route` need no change here.
static DESCRIPTOR: ServiceDescriptor = ServiceDescriptor {
    name: "fuzz.Service",
    methods: &[MethodDescriptor {
        name: "call",
        full_name: "fuzz.Service/call",
        http_method: "GET",
        path: "/",
        conventional_route: false,
        timeout_ms: None,
        params: &[],
    }],
};

fn route(method: &str, path: &str) -> Route {
    let mut route = Route::from_descriptor(&DESCRIPTOR)
        .pop()
        .expect("one method, one route");
    route.method = (method != "*")
        .then(|| Method::from_bytes(method.as_bytes()).ok())
        .flatten();
    route.path = path.to_owned();
    route
}

/// The `{name}` / `{*name}` parameter names of a template, in order.
fn template_params(template: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        names.push(
            rest[open + 1..open + close]
                .trim_start_matches('*')
                .to_owned(),
        );
        rest = &rest[open + close + 1..];
    }
    names
}

/// Body of the `route_match` fuzz target: building a table and looking paths up must never
/// panic, and a lookup's answer must be consistent: a found route's captured parameters fill its
/// template back into the looked-up path (when nothing was percent-decoded), a 405's `Allow`
/// methods are found, HEAD follows GET, and "no route" holds for every method.
pub(crate) fn route_match(data: &[u8]) {
    let [mode, method, rest @ ..] = data else {
        return;
    };
    let method = Method::from_bytes(METHODS[usize::from(*method) % (METHODS.len() - 1)].as_bytes())
        .expect("a listed method");
    let (table, path) = if mode & 1 == 0 {
        let routes = fixed_templates().into_iter().map(|(m, p)| route(m, p));
        let table = RouteTable::new(routes).expect("the fixed table has no conflicts");
        (table, String::from_utf8_lossy(rest).into_owned())
    } else {
        let (templates, path) = match rest.iter().position(|&b| b == 0) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &b""[..]),
        };
        let templates = String::from_utf8_lossy(templates);
        let routes = templates
            .lines()
            .take(64)
            .enumerate()
            .map(|(i, t)| route(METHODS[i % METHODS.len()], t));
        let (table, _conflicts) = RouteTable::build_skipping_conflicts(routes);
        (table, String::from_utf8_lossy(path).into_owned())
    };
    match table.lookup(&method, &path) {
        // Templates with escaped braces (`{{`, `}}`) are literal text the checks below would
        // misread; they get the no-panic check only.
        Match::Found { route, .. } if route.path.contains("{{") || route.path.contains("}}") => {}
        Match::Found { route, params, .. } => {
            let names = template_params(&route.path);
            let captured: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(captured, names, "{} captured {params:?}", route.path);
            if !path.contains('%') {
                // The template filled in left to right (a value may itself look like `{name}`).
                let mut rebuilt = String::new();
                let mut rest = route.path.as_str();
                let mut values = params.iter().map(|(_, v)| v.as_str());
                while let Some(open) = rest.find('{') {
                    let Some(close) = rest[open..].find('}') else {
                        break;
                    };
                    rebuilt.push_str(&rest[..open]);
                    rebuilt.push_str(values.next().expect("a value for every parameter"));
                    rest = &rest[open + close + 1..];
                }
                rebuilt.push_str(rest);
                assert_eq!(rebuilt, path, "template {} with {params:?}", route.path);
            }
            assert!(
                route.method.is_none()
                    || route.method.as_ref() == Some(&method)
                    || (method == Method::HEAD && route.method == Some(Method::GET)),
                "{method} matched a {:?} route",
                route.method
            );
            if method == Method::GET {
                assert!(
                    matches!(table.lookup(&Method::HEAD, &path), Match::Found { .. }),
                    "HEAD follows GET"
                );
            }
        }
        Match::MethodNotAllowed { allow } => {
            assert!(!allow.is_empty(), "405 without Allow");
            for m in allow.split(", ") {
                let m = Method::from_bytes(m.as_bytes()).expect("Allow lists methods");
                assert_ne!(m, method, "{method} is in Allow but was refused");
                assert!(
                    matches!(table.lookup(&m, &path), Match::Found { .. }),
                    "{m} is in Allow but not found"
                );
            }
        }
        Match::NotFound => {
            for m in [Method::GET, Method::POST, Method::DELETE] {
                assert!(
                    matches!(table.lookup(&m, &path), Match::NotFound),
                    "NotFound for {method} but not for {m}"
                );
            }
        }
    }
}

/// Encodes a `route_match` input against the fixed table.
pub(crate) fn encode_route_input(method: u8, path: &str) -> Vec<u8> {
    let mut out = vec![0, method];
    out.extend_from_slice(path.as_bytes());
    out
}

/// Encodes a `route_match` input with its own templates.
pub(crate) fn encode_route_templates_input(method: u8, templates: &[&str], path: &str) -> Vec<u8> {
    let mut out = vec![1, method];
    out.extend_from_slice(templates.join("\n").as_bytes());
    out.push(0);
    out.extend_from_slice(path.as_bytes());
    out
}
