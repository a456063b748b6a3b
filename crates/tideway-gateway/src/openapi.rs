//! An OpenAPI 3.0 description of the live route table, served as `/openapi.json` with a
//! browsable page at `/docs`, on the admin listener and on the public listener.
//!
//! What the gateway knows of a route becomes the document:
//!
//! - the path template, in OpenAPI form (`{id}` stays, a catch-all `{*rest}` becomes `{rest}`),
//!   with each of its parameters declared as a required path parameter typed by the RPC
//!   argument it binds to (string, integer, number, boolean);
//! - the method (a route for any method is listed under each common method);
//! - for RPC routes, the other scalar arguments as optional query parameters, and a JSON object
//!   request body when an argument is bound to the whole body (`#[body]`);
//! - the responses: the service's JSON reply (200), and every status the gateway itself may
//!   answer with, each with the JSON error body `{code, message, request_id}`
//!   (400/401/403/404/405/409/412/413/429/500/503/504; 502 and 504 for HTTP upstreams), plus the
//!   route's fallback when it has one. HTTP upstream routes answer with whatever the upstream
//!   says, so their success responses are `default`.
//!
//! The gateway knows argument names and kinds, not the services' Rust types, so reply bodies and
//! request bodies are described as JSON values and objects without their fields.
//!
//! On the public listener the two paths are served only when no route of the table matches
//! them, so a service's own `/docs` is never shadowed.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use parking_lot::Mutex;
use serde_json::{Map, Value, json};

use crate::binding::{Param, ParamKind};
use crate::body::{GatewayBody, full};
use crate::handler::GatewayState;
use crate::router::{Match, Route, RouteTable, RouteTarget};

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/openapi.json";
/// Where the documentation page is served.
pub const DOCS_PATH: &str = "/docs";

/// The methods a route for any method is listed under.
const ANY_METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Statuses the gateway may answer an RPC route with besides the service's reply, and why.
const RPC_ERRORS: [(u16, &str); 12] = [
    (
        400,
        "Invalid argument: the request could not be bound (bad parameter value, body not a JSON object) or the service refused it",
    ),
    (
        401,
        "Unauthenticated: the route's auth policy found no valid credentials, or the service refused them",
    ),
    (
        403,
        "Permission denied by the route's IP rules, its auth policy or the service",
    ),
    (
        404,
        "No route for this path, or the service found no such resource",
    ),
    (405, "The path is routed, but not for this method"),
    (409, "The service says the resource already exists"),
    (412, "The service says a precondition failed"),
    (413, "The request body exceeds the gateway's limit"),
    (429, "The route's rate limit was reached; see Retry-After"),
    (500, "The service failed"),
    (
        503,
        "Overloaded or unavailable: the gateway or route is at its limit, no instance of the service can answer, or its breaker is open; see Retry-After",
    ),
    (504, "No answer within the route's deadline"),
];

/// Statuses the gateway may answer an HTTP upstream route with itself.
const HTTP_ERRORS: [(u16, &str); 3] = [
    (502, "The upstream could not be reached or answered badly"),
    (
        503,
        "Overloaded: the gateway or route is at its limit; see Retry-After",
    ),
    (
        504,
        "The upstream did not answer within the route's deadline",
    ),
];

/// A path template converted to OpenAPI form, with its parameters in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenApiPath {
    /// The OpenAPI path, e.g. `/api/waybills/{id}/events`.
    pub path: String,
    /// Parameter names, in order of appearance.
    pub params: Vec<String>,
    /// The last parameter is a catch-all (`{*rest}`): it may span several segments.
    pub catch_all: bool,
}

/// Converts a route template (matchit syntax: `{name}`, `{*name}`, `{{` and `}}` for literal
/// braces) to OpenAPI form.
pub fn openapi_path(template: &str) -> OpenApiPath {
    let mut path = String::with_capacity(template.len());
    let mut params = Vec::new();
    let mut catch_all = false;
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                path.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                path.push('}');
            }
            '{' => {
                let mut name = String::new();
                for c in chars.by_ref() {
                    if c == '}' {
                        break;
                    }
                    name.push(c);
                }
                if let Some(rest) = name.strip_prefix('*') {
                    name = rest.to_owned();
                    catch_all = true;
                }
                path.push('{');
                path.push_str(&name);
                path.push('}');
                params.push(name);
            }
            c => path.push(c),
        }
    }
    OpenApiPath {
        path,
        params,
        catch_all,
    }
}

fn kind_schema(kind: ParamKind) -> Value {
    match kind {
        ParamKind::String => json!({"type": "string"}),
        ParamKind::Integer => json!({"type": "integer"}),
        ParamKind::Number => json!({"type": "number"}),
        ParamKind::Boolean => json!({"type": "boolean"}),
    }
}

fn kind_of(params: &[Param], name: &str) -> ParamKind {
    params
        .iter()
        .find(|p| p.name == name)
        .map_or(ParamKind::String, |p| p.kind)
}

fn error_ref(status: u16) -> Value {
    json!({"$ref": format!("#/components/responses/Error{status}")})
}

/// The operation object of one route under one method.
fn operation(route: &Route, template: &OpenApiPath, operation_id: String) -> Value {
    let mut parameters = Vec::new();
    let mut responses = Map::new();
    let mut op = Map::new();
    let no_params: &[Param] = &[];
    let params = match &route.target {
        RouteTarget::Rpc { params, .. } => params.as_slice(),
        RouteTarget::Http { .. } => no_params,
    };
    for (i, name) in template.params.iter().enumerate() {
        let mut p = json!({
            "name": name,
            "in": "path",
            "required": true,
            "schema": kind_schema(kind_of(params, name)),
        });
        if template.catch_all && i + 1 == template.params.len() {
            p["description"] = json!("The rest of the path; may contain `/`.");
        }
        parameters.push(p);
    }
    match &route.target {
        RouteTarget::Rpc {
            service, full_name, ..
        } => {
            op.insert("tags".into(), json!([service]));
            op.insert(
                "summary".into(),
                json!(format!("RPC {full_name} ({})", route.origin)),
            );
            for p in params
                .iter()
                .filter(|p| !p.body && !template.params.contains(&p.name))
            {
                parameters.push(json!({
                    "name": p.name,
                    "in": "query",
                    "required": false,
                    "schema": kind_schema(p.kind),
                }));
            }
            if let Some(body) = params.iter().find(|p| p.body) {
                op.insert(
                    "requestBody".into(),
                    json!({
                        "required": true,
                        "description": format!(
                            "The `{}` argument of {full_name}: a JSON object. Path and query parameters are merged into it (path first).",
                            body.name
                        ),
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }),
                );
            }
            responses.insert(
                "200".into(),
                json!({
                    "description": "The service's reply",
                    "headers": {"x-request-id": {"$ref": "#/components/headers/RequestId"}},
                    "content": {"application/json": {"schema": {}}},
                }),
            );
            for (status, _) in RPC_ERRORS {
                responses.insert(status.to_string(), error_ref(status));
            }
        }
        RouteTarget::Http { upstream, .. } => {
            op.insert("tags".into(), json!(["http upstreams"]));
            op.insert(
                "summary".into(),
                json!(format!(
                    "Forwarded to {} ({})",
                    upstream.base_url(),
                    route.origin
                )),
            );
            responses.insert(
                "default".into(),
                json!({"description": "The upstream's response, passed through"}),
            );
            for (status, _) in HTTP_ERRORS {
                responses.insert(status.to_string(), error_ref(status));
            }
        }
    }
    if let Some(fallback) = &route.call.fallback {
        let content_type = fallback
            .content_type
            .to_str()
            .unwrap_or("application/octet-stream")
            .to_owned();
        let key = fallback.status.as_str().to_owned();
        let entry = responses.entry(key).or_insert_with(|| {
            json!({"description": "The route's fallback, when every attempt failed", "content": {}})
        });
        // A shared error response is copied before the fallback's content type is added to it.
        if let Some(reference) = entry.get("$ref").and_then(Value::as_str) {
            let status = reference.trim_start_matches("#/components/responses/Error");
            *entry = error_response(status.parse().unwrap_or(0), "");
        }
        if let Some(content) = entry.get_mut("content").and_then(Value::as_object_mut) {
            content
                .entry(content_type)
                .or_insert_with(|| json!({"schema": {}}));
        }
    }
    op.insert("operationId".into(), json!(operation_id));
    if let Some(timeout) = route.timeout {
        op.insert(
            "description".into(),
            json!(format!("Deadline: {} ms.", timeout.as_millis())),
        );
    }
    op.insert("parameters".into(), Value::Array(parameters));
    op.insert("responses".into(), Value::Object(responses));
    Value::Object(op)
}

/// A response with the JSON error body.
fn error_response(status: u16, why: &str) -> Value {
    let description = if why.is_empty() {
        RPC_ERRORS
            .iter()
            .chain(HTTP_ERRORS.iter())
            .find(|(s, _)| *s == status)
            .map_or("An error", |(_, why)| why)
    } else {
        why
    };
    let mut headers = json!({"x-request-id": {"$ref": "#/components/headers/RequestId"}});
    match status {
        429 | 503 => headers["Retry-After"] = json!({"$ref": "#/components/headers/RetryAfter"}),
        405 => headers["Allow"] = json!({"$ref": "#/components/headers/Allow"}),
        _ => {}
    }
    json!({
        "description": description,
        "headers": headers,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    })
}

fn components() -> Value {
    let mut responses = Map::new();
    for (status, why) in RPC_ERRORS.iter().chain(HTTP_ERRORS.iter()) {
        responses
            .entry(format!("Error{status}"))
            .or_insert_with(|| error_response(*status, why));
    }
    json!({
        "schemas": {
            "Error": {
                "type": "object",
                "description": "Every error the gateway answers with.",
                "required": ["code", "message", "request_id"],
                "properties": {
                    "code": {"type": "string", "description": "Machine-readable: route_not_found, invalid_argument, overloaded, deadline_exceeded, ..."},
                    "message": {"type": "string", "description": "What went wrong, for people."},
                    "request_id": {"type": "string", "nullable": true, "description": "The request's x-request-id (null when refused before it had one)."},
                },
            },
        },
        "headers": {
            "RequestId": {"description": "The request id: the client's x-request-id when sane, else a fresh one.", "schema": {"type": "string"}},
            "RetryAfter": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}},
            "Allow": {"description": "The methods the path accepts.", "schema": {"type": "string"}},
        },
        "responses": Value::Object(responses),
    })
}

/// The OpenAPI 3.0 document of `table`. `server` is the base URL of the public listener for a
/// document served elsewhere (the admin listener); `None` leaves it relative to where the
/// document was fetched from.
pub fn document(table: &RouteTable, server: Option<&str>) -> Value {
    let mut paths = Map::new();
    let mut operation_ids = BTreeSet::new();
    let mut tags = BTreeSet::new();
    for route in table.routes() {
        let template = openapi_path(&route.path);
        let methods: Vec<String> = match &route.method {
            Some(m) => vec![m.as_str().to_ascii_lowercase()],
            None => ANY_METHODS.iter().map(|m| (*m).to_owned()).collect(),
        };
        let item = paths
            .entry(template.path.clone())
            .or_insert_with(|| json!({}));
        for method in methods {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            // A route for one method wins over a route for any method on the same path, as in
            // the router.
            if item.contains_key(&method) && route.method.is_none() {
                continue;
            }
            let base = match &route.target {
                RouteTarget::Rpc { full_name, .. } => full_name.replace('/', "."),
                RouteTarget::Http { .. } => format!(
                    "{method}{}",
                    template
                        .path
                        .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
                ),
            };
            let mut operation_id = base.clone();
            let mut n = 2;
            while !operation_ids.insert(operation_id.clone()) {
                operation_id = format!("{base}_{n}");
                n += 1;
            }
            if let RouteTarget::Rpc { service, .. } = &route.target {
                tags.insert(service.clone());
            }
            item.insert(method.clone(), operation(route, &template, operation_id));
        }
    }
    let mut doc = json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Tideway gateway",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The routes this gateway serves now, generated from its live route table (config file and registry). Errors from the gateway carry a JSON body {code, message, request_id}.",
        },
        "tags": tags.iter().map(|t| json!({"name": t})).collect::<Vec<_>>(),
        "paths": Value::Object(paths),
        "components": components(),
    });
    if let Some(server) = server {
        doc["servers"] = json!([{"url": server, "description": "The gateway's public listener"}]);
    }
    doc
}

/// The document as pretty JSON bytes.
pub fn document_bytes(table: &RouteTable, server: Option<&str>) -> Bytes {
    let mut body = serde_json::to_vec_pretty(&document(table, server)).unwrap_or_default();
    body.push(b'\n');
    Bytes::from(body)
}

/// The last document served on the public listener, for the table it was built from: built once
/// per route table, not per request. One slot; the `Weak` keeps the table's address from being
/// reused while the slot names it.
static PUBLIC_DOCUMENT: Mutex<Option<(Weak<RouteTable>, Bytes)>> = Mutex::new(None);

fn public_document(table: &Arc<RouteTable>) -> Bytes {
    let mut slot = PUBLIC_DOCUMENT.lock();
    if let Some((built_for, bytes)) = slot.as_ref()
        && Weak::ptr_eq(built_for, &Arc::downgrade(table))
    {
        return bytes.clone();
    }
    let bytes = document_bytes(table, None);
    *slot = Some((Arc::downgrade(table), bytes.clone()));
    bytes
}

/// A `200` with a static or generated body.
pub(crate) fn page(content_type: &'static str, body: Bytes) -> Response<GatewayBody> {
    let mut response = Response::new(full(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The public listener's answer to `GET /openapi.json` and `GET /docs` when no route takes those
/// paths; `None` for every other request (the cost: one comparison of the path).
pub(crate) fn public_answer<B>(
    state: &GatewayState,
    req: &Request<B>,
) -> Option<Response<GatewayBody>> {
    let path = req.uri().path();
    if path != OPENAPI_PATH && path != DOCS_PATH {
        return None;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return None;
    }
    let table = state.routes.load_full();
    if !matches!(table.lookup(req.method(), path), Match::NotFound) {
        return None;
    }
    let mut response = if path == OPENAPI_PATH {
        page("application/json", public_document(&table))
    } else {
        page(
            "text/html; charset=utf-8",
            Bytes::from_static(crate::dashboard::DOCS_HTML.as_bytes()),
        )
    };
    if req.method() == Method::HEAD {
        *response.body_mut() = crate::body::empty();
    }
    *response.status_mut() = StatusCode::OK;
    Some(response)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::router::CallSettings;

    fn rpc(method: &str, path: &str, params: Vec<Param>) -> Route {
        Route {
            method: Some(Method::from_bytes(method.as_bytes()).unwrap()),
            path: path.into(),
            timeout: Some(Duration::from_millis(1500)),
            target: RouteTarget::Rpc {
                service: "logistics.Waybills".into(),
                full_name: format!("logistics.Waybills/{}", method.to_lowercase()),
                params,
            },
            origin: "test".into(),
            limit: None,
            call: CallSettings::default(),
        }
    }

    fn param(name: &str, kind: ParamKind, body: bool) -> Param {
        Param {
            name: name.into(),
            kind,
            body,
        }
    }

    #[test]
    fn templates_become_openapi_paths() {
        assert_eq!(
            openapi_path("/api/waybills/{id}/events"),
            OpenApiPath {
                path: "/api/waybills/{id}/events".into(),
                params: vec!["id".into()],
                catch_all: false,
            }
        );
        let p = openapi_path("/files/{*rest}");
        assert_eq!(p.path, "/files/{rest}");
        assert_eq!(p.params, vec!["rest".to_string()]);
        assert!(p.catch_all);
        assert_eq!(openapi_path("/a/{{literal}}").path, "/a/{literal}");
        assert!(openapi_path("/a/{{literal}}").params.is_empty());
    }

    #[test]
    fn the_document_declares_params_bodies_and_errors() {
        let table = RouteTable::new([
            rpc(
                "GET",
                "/api/waybills/{id}",
                vec![param("id", ParamKind::Integer, false)],
            ),
            rpc(
                "POST",
                "/api/waybills",
                vec![
                    param("waybill", ParamKind::String, true),
                    param("dry_run", ParamKind::Boolean, false),
                ],
            ),
        ])
        .unwrap();
        let doc = document(&table, Some("http://127.0.0.1:8080"));
        assert_eq!(doc["openapi"], "3.0.3");
        assert_eq!(doc["servers"][0]["url"], "http://127.0.0.1:8080");
        let get = &doc["paths"]["/api/waybills/{id}"]["get"];
        assert_eq!(get["parameters"][0]["name"], "id");
        assert_eq!(get["parameters"][0]["in"], "path");
        assert_eq!(get["parameters"][0]["required"], true);
        assert_eq!(get["parameters"][0]["schema"]["type"], "integer");
        assert!(get.get("requestBody").is_none());
        assert_eq!(get["operationId"], "logistics.Waybills.get");
        for status in ["200", "400", "404", "405", "413", "429", "503", "504"] {
            assert!(get["responses"].get(status).is_some(), "{status}");
        }
        let post = &doc["paths"]["/api/waybills"]["post"];
        assert_eq!(
            post["requestBody"]["content"]["application/json"]["schema"]["type"],
            "object"
        );
        assert_eq!(post["parameters"][0]["in"], "query");
        assert_eq!(post["parameters"][0]["schema"]["type"], "boolean");
        let error = &doc["components"]["schemas"]["Error"];
        assert_eq!(error["required"], json!(["code", "message", "request_id"]));
        let e503 = &doc["components"]["responses"]["Error503"];
        assert!(e503["headers"].get("Retry-After").is_some());
        // Every reference resolves.
        let text = doc.to_string();
        for part in text.split("\"$ref\":\"#/components/").skip(1) {
            let target = part.split('"').next().unwrap();
            let mut node = &doc["components"];
            for key in target.split('/') {
                node = &node[key];
            }
            assert!(!node.is_null(), "dangling $ref {target}");
        }
    }

    #[test]
    fn the_public_document_is_built_once_per_table() {
        let table = Arc::new(RouteTable::new([rpc("GET", "/a/{id}", vec![])]).unwrap());
        let first = public_document(&table);
        let second = public_document(&table);
        assert_eq!(first.as_ptr(), second.as_ptr(), "served from the cache");
        let other = Arc::new(RouteTable::new([rpc("GET", "/b", vec![])]).unwrap());
        let third = public_document(&other);
        assert!(String::from_utf8_lossy(&third).contains("\"/b\""));
    }
}
