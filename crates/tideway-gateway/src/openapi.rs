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
//! - with the JSON Schemas a service publishes for its arguments (`#[service(schema)]`), the
//!   exact request body (its fields, which are required, their bounds and enums) and typed
//!   parameters; the schemas' definitions go under `components/schemas` (a name another
//!   schema already took with other content gets a `_2`, `_3`, ... suffix), and anything that is
//!   not OpenAPI 3.0 is converted (`$defs`/`definitions` references, type arrays with `null` to
//!   `nullable`, `const` to `enum`, numeric `exclusiveMinimum`, `examples`) or left out;
//! - the responses: the service's JSON reply (200), and every status the gateway itself may
//!   answer with, each with the JSON error body `{code, message, request_id}`
//!   (400/401/403/404/405/409/412/413/429/500/503/504; 502 and 504 for HTTP upstreams), plus the
//!   route's fallback when it has one. HTTP upstream routes answer with whatever the upstream
//!   says, so their success responses are `default`.
//!
//! Without published schemas the gateway knows argument names and kinds only, so such request
//! bodies are described as JSON objects without their fields; replies are JSON values.
//!
//! On the public listener the two paths are served only when no route of the table matches
//! them, so a service's own `/docs` is never shadowed.

use std::collections::{BTreeSet, HashMap};
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

/// Deepest nesting of a published schema kept; deeper parts become `{}` (any value).
const MAX_SCHEMA_DEPTH: usize = 32;
/// Most definitions taken from one published schema; the rest are left out (their references
/// become `{}`).
const MAX_DEFINITIONS: usize = 256;
/// Where a published schema may keep its definitions, and how it refers to them.
const DEFINITION_PLACES: [(&[&str], &str); 3] = [
    (&["components", "schemas"], "#/components/schemas/"),
    (&["$defs"], "#/$defs/"),
    (&["definitions"], "#/definitions/"),
];

/// The document's `components/schemas`: the gateway's own and the definitions of the schemas
/// services publish, under names unique in the document.
#[derive(Debug)]
struct Schemas {
    map: Map<String, Value>,
}

impl Schemas {
    fn new(own: Map<String, Value>) -> Self {
        Schemas { map: own }
    }

    /// A published schema in OpenAPI 3.0 form, its definitions added to the components; `None`
    /// when it is not a schema object.
    fn import(&mut self, published: &Value) -> Option<Value> {
        let Value::Object(root) = published else {
            return None;
        };
        // The definitions, by the reference that names each.
        let mut definitions: Vec<(String, String, &Value)> = Vec::new();
        for (path, prefix) in DEFINITION_PLACES {
            let mut node = Some(published);
            for key in path {
                node = node.and_then(|n| n.get(key));
            }
            if let Some(Value::Object(defs)) = node {
                for (name, schema) in defs {
                    if definitions.len() < MAX_DEFINITIONS {
                        definitions.push((format!("{prefix}{name}"), component_name(name), schema));
                    }
                }
            }
        }
        // Names: the definition's own (made unique among its siblings), unless a different
        // schema already has it in the document.
        let mut names: HashMap<String, String> = HashMap::new();
        let mut taken: BTreeSet<String> = BTreeSet::new();
        for (reference, name, _) in &definitions {
            let name = unique(name, |n| taken.contains(n));
            taken.insert(name.clone());
            names.insert(reference.clone(), name);
        }
        let collides = definitions.iter().any(|(reference, _, schema)| {
            let name = &names[reference];
            self.map
                .get(name)
                .is_some_and(|existing| *existing != convert(schema, &names, 0))
        });
        if collides {
            // Every definition that meets a name in use takes a fresh one, so the references
            // among this schema's definitions stay among them.
            for (reference, _, _) in &definitions {
                let name = names[reference].clone();
                if self.map.contains_key(&name) {
                    let fresh = unique(&name, |n| self.map.contains_key(n) || taken.contains(n));
                    taken.insert(fresh.clone());
                    names.insert(reference.clone(), fresh);
                }
            }
        }
        for (reference, _, schema) in &definitions {
            let converted = convert(schema, &names, 0);
            self.map
                .entry(names[reference].clone())
                .or_insert(converted);
        }
        let mut top = root.clone();
        top.remove("components");
        top.remove("$defs");
        top.remove("definitions");
        Some(convert(&Value::Object(top), &names, 0))
    }
}

/// A component name OpenAPI accepts (`^[a-zA-Z0-9._-]+$`).
fn component_name(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "Schema".into()
    } else {
        name
    }
}

/// `name`, or `name_2`, `name_3`, ... : the first that is not `taken`.
fn unique(name: &str, taken: impl Fn(&str) -> bool) -> String {
    if !taken(name) {
        return name.to_owned();
    }
    (2..)
        .map(|n| format!("{name}_{n}"))
        .find(|candidate| !taken(candidate))
        .unwrap_or_else(|| name.to_owned())
}

/// Keywords of an OpenAPI 3.0 Schema Object whose value is kept as it is, when of this JSON
/// type.
fn kept(key: &str, value: &Value) -> bool {
    match key {
        "title" | "description" | "format" | "pattern" => value.is_string(),
        "multipleOf" | "maximum" | "minimum" => value.is_number(),
        "maxLength" | "minLength" | "maxItems" | "minItems" | "maxProperties" | "minProperties" => {
            value.is_u64()
        }
        "uniqueItems" | "readOnly" | "writeOnly" | "deprecated" | "nullable"
        | "exclusiveMinimum" | "exclusiveMaximum" => value.is_boolean(),
        "enum" => value.as_array().is_some_and(|a| !a.is_empty()),
        "default" | "example" => true,
        "discriminator" => value.get("propertyName").is_some_and(Value::is_string),
        _ => key.starts_with("x-"),
    }
}

/// The range of an integer `format` (schemars names Rust's integer types so), for bounds a
/// schema leaves out: a value outside it would not decode.
fn format_range(format: &str) -> Option<(Value, Value)> {
    Some(match format {
        "int8" => (json!(i8::MIN), json!(i8::MAX)),
        "int16" => (json!(i16::MIN), json!(i16::MAX)),
        "int32" => (json!(i32::MIN), json!(i32::MAX)),
        "int64" => (json!(i64::MIN), json!(i64::MAX)),
        "uint8" => (json!(0), json!(u8::MAX)),
        "uint16" => (json!(0), json!(u16::MAX)),
        "uint32" => (json!(0), json!(u32::MAX)),
        "uint64" => (json!(0), json!(u64::MAX)),
        _ => return None,
    })
}

/// One schema in OpenAPI 3.0 form: references to definitions rewritten by `names` (an unknown
/// one becomes `{}`), JSON Schema 2019+ forms converted, unknown keywords left out.
fn convert(schema: &Value, names: &HashMap<String, String>, depth: usize) -> Value {
    let object = match schema {
        Value::Object(object) if depth < MAX_SCHEMA_DEPTH => object,
        Value::Bool(false) => return json!({"not": {}}),
        _ => return json!({}),
    };
    let sub = |value: &Value| convert(value, names, depth + 1);
    let subs = |value: &Value| -> Option<Value> {
        let list: Vec<Value> = value.as_array()?.iter().map(sub).collect();
        (!list.is_empty()).then_some(Value::Array(list))
    };
    let mut out = Map::new();
    for (key, value) in object {
        match key.as_str() {
            "type" => {
                let types: Vec<&str> = match value {
                    Value::String(t) => vec![t.as_str()],
                    Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
                    _ => Vec::new(),
                };
                if types.contains(&"null") {
                    out.insert("nullable".into(), Value::Bool(true));
                }
                let types: Vec<&str> = types
                    .into_iter()
                    .filter(|t| {
                        matches!(
                            *t,
                            "string" | "number" | "integer" | "boolean" | "array" | "object"
                        )
                    })
                    .collect();
                match types[..] {
                    [] => {}
                    [one] => {
                        out.insert("type".into(), json!(one));
                    }
                    _ if !object.contains_key("anyOf") => {
                        let any: Vec<Value> = types.iter().map(|t| json!({"type": t})).collect();
                        out.insert("anyOf".into(), Value::Array(any));
                    }
                    _ => {}
                }
            }
            "const" if !object.contains_key("enum") => {
                out.insert("enum".into(), json!([value]));
            }
            "examples" if !object.contains_key("example") => {
                if let Some(first) = value.as_array().and_then(|a| a.first()) {
                    out.insert("example".into(), first.clone());
                }
            }
            "exclusiveMinimum" | "exclusiveMaximum" if value.is_number() => {
                let bound = if key == "exclusiveMinimum" {
                    "minimum"
                } else {
                    "maximum"
                };
                if !object.contains_key(bound) {
                    out.insert(bound.into(), value.clone());
                    out.insert(key.clone(), Value::Bool(true));
                }
            }
            "properties" => {
                if let Some(props) = value.as_object() {
                    let props: Map<String, Value> =
                        props.iter().map(|(k, v)| (k.clone(), sub(v))).collect();
                    out.insert(key.clone(), Value::Object(props));
                }
            }
            "additionalProperties" => {
                let converted = match value {
                    Value::Bool(b) => Value::Bool(*b),
                    other => sub(other),
                };
                out.insert(key.clone(), converted);
            }
            "items" => {
                let converted = match value {
                    // A tuple: OpenAPI 3.0 has no per-position items; any of them.
                    Value::Array(list) if list.len() == 1 => sub(&list[0]),
                    Value::Array(list) if !list.is_empty() => {
                        json!({"anyOf": list.iter().map(sub).collect::<Vec<_>>()})
                    }
                    Value::Array(_) => json!({}),
                    other => sub(other),
                };
                out.insert(key.clone(), converted);
            }
            "prefixItems" if !object.contains_key("items") => {
                if let Some(list) = subs(value) {
                    out.insert("items".into(), json!({"anyOf": list}));
                }
            }
            "allOf" | "anyOf" | "oneOf" => {
                if let Some(list) = subs(value) {
                    out.insert(key.clone(), list);
                }
            }
            "not" => {
                out.insert(key.clone(), sub(value));
            }
            "required" => {
                let mut required: Vec<&str> = Vec::new();
                for name in value
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    if !required.contains(&name) {
                        required.push(name);
                    }
                }
                if !required.is_empty() {
                    out.insert(key.clone(), json!(required));
                }
            }
            "$ref" => {}
            _ if kept(key, value) => {
                out.insert(key.clone(), value.clone());
            }
            _ => {}
        }
    }
    if out.get("type").and_then(Value::as_str) == Some("integer")
        && let Some((min, max)) = out
            .get("format")
            .and_then(Value::as_str)
            .and_then(format_range)
    {
        if !out.contains_key("minimum") {
            out.insert("minimum".into(), min);
        }
        if !out.contains_key("maximum") {
            out.insert("maximum".into(), max);
        }
    }
    if let Some(reference) = object.get("$ref") {
        let Some(name) = reference.as_str().and_then(|r| names.get(r)) else {
            return Value::Object(out);
        };
        let target = json!({"$ref": format!("#/components/schemas/{name}")});
        // In OpenAPI 3.0 the siblings of `$ref` are ignored: keep them beside it in `allOf`.
        if out.is_empty() {
            return target;
        }
        match out.get_mut("allOf").and_then(Value::as_array_mut) {
            Some(list) => list.insert(0, target),
            None => {
                out.insert("allOf".into(), json!([target]));
            }
        }
    }
    Value::Object(out)
}

fn error_ref(status: u16) -> Value {
    json!({"$ref": format!("#/components/responses/Error{status}")})
}

/// The schema of a parameter: the one its service published, else by its kind.
fn param_schema(param: Option<&Param>, schemas: &mut Schemas) -> Value {
    match param {
        Some(p) => p
            .schema
            .as_ref()
            .and_then(|published| schemas.import(published))
            .unwrap_or_else(|| kind_schema(p.kind)),
        None => kind_schema(ParamKind::String),
    }
}

/// The operation object of one route under one method.
fn operation(
    route: &Route,
    template: &OpenApiPath,
    operation_id: String,
    schemas: &mut Schemas,
) -> Value {
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
            "schema": param_schema(params.iter().find(|p| &p.name == name), schemas),
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
                    "schema": param_schema(Some(p), schemas),
                }));
            }
            if let Some(body) = params.iter().find(|p| p.body) {
                let schema = body
                    .schema
                    .as_ref()
                    .and_then(|published| schemas.import(published))
                    .unwrap_or_else(|| json!({"type": "object"}));
                op.insert(
                    "requestBody".into(),
                    json!({
                        "required": true,
                        "description": format!(
                            "The `{}` argument of {full_name}: a JSON object. Path and query parameters are merged into it (path first).",
                            body.name
                        ),
                        "content": {"application/json": {"schema": schema}},
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

/// The gateway's own schemas.
fn own_schemas() -> Map<String, Value> {
    let mut map = Map::new();
    map.insert(
        "Error".into(),
        json!({
            "type": "object",
            "description": "Every error the gateway answers with.",
            "required": ["code", "message", "request_id"],
            "properties": {
                "code": {"type": "string", "description": "Machine-readable: route_not_found, invalid_argument, overloaded, deadline_exceeded, ..."},
                "message": {"type": "string", "description": "What went wrong, for people."},
                "request_id": {"type": "string", "nullable": true, "description": "The request's x-request-id (null when refused before it had one)."},
            },
        }),
    );
    map
}

fn components(schemas: Schemas) -> Value {
    let mut responses = Map::new();
    for (status, why) in RPC_ERRORS.iter().chain(HTTP_ERRORS.iter()) {
        responses
            .entry(format!("Error{status}"))
            .or_insert_with(|| error_response(*status, why));
    }
    json!({
        "schemas": Value::Object(schemas.map),
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
    let mut schemas = Schemas::new(own_schemas());
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
            item.insert(
                method.clone(),
                operation(route, &template, operation_id, &mut schemas),
            );
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
        "components": components(schemas),
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
            schema: None,
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

    fn with_schema(mut p: Param, schema: Value) -> Param {
        p.schema = Some(schema);
        p
    }

    /// Every `$ref` of the document resolves.
    fn assert_refs_resolve(doc: &Value) {
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
    fn published_schemas_describe_bodies_and_parameters() {
        // As `#[service(schema)]` publishes them (schemars' openapi3 settings).
        let body = json!({
            "$ref": "#/components/schemas/NewWaybill",
            "components": {"schemas": {
                "NewWaybill": {
                    "type": "object",
                    "required": ["sender", "weight_grams", "service_level"],
                    "properties": {
                        "sender": {"$ref": "#/components/schemas/Party"},
                        "weight_grams": {"type": "integer", "format": "uint32", "minimum": 1, "maximum": 70000},
                        "service_level": {"allOf": [{"$ref": "#/components/schemas/ServiceLevel"}], "description": "Speed."},
                        "note": {"type": "string", "nullable": true, "maxLength": 200},
                    },
                },
                "Party": {"type": "object", "required": ["zone"], "properties": {"zone": {"type": "integer", "format": "uint8", "minimum": 1, "maximum": 8}}},
                "ServiceLevel": {"type": "string", "enum": ["standard", "express"]},
            }},
        });
        let limit = json!({"type": "integer", "format": "uint32", "minimum": 1, "maximum": 100});
        let offset = json!({"type": "integer", "format": "uint32", "minimum": 0});
        let table = RouteTable::new([
            rpc(
                "POST",
                "/api/waybills",
                vec![with_schema(
                    param("waybill", ParamKind::String, true),
                    body.clone(),
                )],
            ),
            rpc(
                "GET",
                "/api/waybills",
                vec![
                    with_schema(param("offset", ParamKind::Integer, false), offset),
                    with_schema(param("limit", ParamKind::Integer, false), limit),
                ],
            ),
            // The same body again (deduplicated), and a different `Party` (renamed).
            rpc(
                "PUT",
                "/api/waybills",
                vec![with_schema(param("waybill", ParamKind::String, true), body)],
            ),
            rpc(
                "PATCH",
                "/api/parties",
                vec![with_schema(
                    param("party", ParamKind::String, true),
                    json!({
                        "$ref": "#/$defs/Party",
                        "$schema": "https://json-schema.org/draft/2020-12/schema",
                        "$defs": {"Party": {
                            "type": "object",
                            "properties": {
                                "name": {"type": ["string", "null"]},
                                "kind": {"const": "person"},
                                "age": {"type": "integer", "exclusiveMinimum": 0},
                                "tags": {"type": "array", "prefixItems": [{"type": "string"}]},
                                "extra": {"unevaluatedProperties": false, "type": "object"},
                                "self": {"$ref": "#/$defs/Party"},
                                "elsewhere": {"$ref": "https://example.com/schema"},
                            },
                            "required": [],
                        }},
                    }),
                )],
            ),
        ])
        .unwrap();
        let doc = document(&table, None);
        assert_refs_resolve(&doc);
        let schemas = &doc["components"]["schemas"];

        let post = &doc["paths"]["/api/waybills"]["post"];
        let schema = &post["requestBody"]["content"]["application/json"]["schema"];
        assert_eq!(schema, &json!({"$ref": "#/components/schemas/NewWaybill"}));
        let new_waybill = &schemas["NewWaybill"];
        assert_eq!(
            new_waybill["required"],
            json!(["sender", "weight_grams", "service_level"])
        );
        assert_eq!(new_waybill["properties"]["weight_grams"]["maximum"], 70000);
        assert_eq!(
            schemas["ServiceLevel"]["enum"],
            json!(["standard", "express"])
        );
        let put = &doc["paths"]["/api/waybills"]["put"];
        assert_eq!(
            put["requestBody"]["content"]["application/json"]["schema"],
            json!({"$ref": "#/components/schemas/NewWaybill"})
        );
        assert!(
            schemas.get("NewWaybill_2").is_none(),
            "same schema, one component"
        );

        // Query parameters: typed and bounded; an unsigned integer without a maximum gets the
        // type's, so no generated value fails to decode.
        let get = &doc["paths"]["/api/waybills"]["get"]["parameters"];
        assert_eq!(get[0]["name"], "offset");
        assert_eq!(get[0]["schema"]["minimum"], 0);
        assert_eq!(get[0]["schema"]["maximum"], u64::from(u32::MAX));
        assert_eq!(get[1]["schema"]["minimum"], 1);
        assert_eq!(get[1]["schema"]["maximum"], 100);

        // JSON Schema 2020 forms become OpenAPI 3.0; a name in use gets a suffix.
        let patch = &doc["paths"]["/api/parties"]["patch"];
        assert_eq!(
            patch["requestBody"]["content"]["application/json"]["schema"],
            json!({"$ref": "#/components/schemas/Party_2"})
        );
        assert_eq!(schemas["Party"]["required"], json!(["zone"]));
        let party = &schemas["Party_2"];
        assert!(party.get("required").is_none(), "empty `required` left out");
        let props = &party["properties"];
        assert_eq!(props["name"], json!({"type": "string", "nullable": true}));
        assert_eq!(props["kind"], json!({"enum": ["person"]}));
        assert_eq!(
            props["age"],
            json!({"type": "integer", "minimum": 0, "exclusiveMinimum": true})
        );
        assert_eq!(
            props["tags"]["items"],
            json!({"anyOf": [{"type": "string"}]})
        );
        assert_eq!(props["extra"], json!({"type": "object"}));
        assert_eq!(
            props["self"],
            json!({"$ref": "#/components/schemas/Party_2"})
        );
        assert_eq!(props["elsewhere"], json!({}));
        assert!(!doc.to_string().contains("$schema"));
        assert!(!doc.to_string().contains("$defs"));
        assert_eq!(
            schemas["Error"]["required"],
            json!(["code", "message", "request_id"])
        );
    }

    #[test]
    fn odd_published_schemas_do_not_break_the_document() {
        let mut deep = json!({"type": "string"});
        for _ in 0..100 {
            deep = json!({"type": "array", "items": deep});
        }
        let table = RouteTable::new([
            rpc(
                "POST",
                "/a",
                vec![with_schema(param("b", ParamKind::String, true), json!(true))],
            ),
            rpc(
                "PUT",
                "/a",
                vec![with_schema(param("b", ParamKind::String, true), deep)],
            ),
            rpc(
                "PATCH",
                "/a",
                vec![with_schema(
                    param("b", ParamKind::String, true),
                    json!({"$ref": "#/components/schemas/Error", "components": {"schemas": {"Error": {"type": "integer"}}}}),
                )],
            ),
        ])
        .unwrap();
        let doc = document(&table, None);
        assert_refs_resolve(&doc);
        let body = |m: &str| {
            doc["paths"]["/a"][m]["requestBody"]["content"]["application/json"]["schema"].clone()
        };
        assert_eq!(body("post"), json!({"type": "object"}));
        let mut node = body("put");
        let mut depth = 0;
        while node.get("items").is_some() {
            node = node["items"].clone();
            depth += 1;
        }
        assert_eq!((depth, node), (MAX_SCHEMA_DEPTH, json!({})));
        // A service's `Error` does not replace the gateway's.
        assert_eq!(
            body("patch"),
            json!({"$ref": "#/components/schemas/Error_2"})
        );
        assert_eq!(doc["components"]["schemas"]["Error_2"]["type"], "integer");
        assert_eq!(doc["components"]["schemas"]["Error"]["type"], "object");
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

/// Schemas arrive from the registry, so from the network: whatever JSON a service publishes,
/// importing it must not panic, and what comes out must be bounded and serializable.
#[cfg(test)]
mod schema_import_props {
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    use super::Schemas;

    /// Keys a schema uses, a few it should not, and definition names (`A`, `B`, which the
    /// generated references `#/$defs/A` and `#/definitions/B` name).
    const KEYS: &[&str] = &[
        "type",
        "$ref",
        "$defs",
        "definitions",
        "components",
        "schemas",
        "properties",
        "items",
        "anyOf",
        "oneOf",
        "allOf",
        "not",
        "enum",
        "const",
        "nullable",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "examples",
        "format",
        "required",
        "$schema",
        "additionalProperties",
        "x",
        "A",
        "B",
    ];

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            prop_oneof![
                Just("object".to_owned()),
                Just("null".to_owned()),
                Just("#/$defs/A".to_owned()),
                Just("#/definitions/B".to_owned()),
                Just("uint32".to_owned()),
                "[a-zA-Z#/$_-]{0,12}",
            ]
            .prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(
                    |pairs| {
                        Value::Object(
                            pairs
                                .into_iter()
                                .map(|(k, v)| (k.to_owned(), v))
                                .collect::<Map<String, Value>>(),
                        )
                    }
                ),
            ]
        })
    }

    fn collect_refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r.clone()),
                        // Values, not schemas: a `$ref` key in them is data.
                        ("enum" | "const" | "example" | "examples" | "default", _) => {}
                        _ => collect_refs(v, out),
                    }
                }
            }
            Value::Array(list) => list.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }

    proptest! {
        #[test]
        fn importing_any_json_never_panics(schemas in prop::collection::vec(json_value(), 1..4)) {
            let mut components = Schemas::new(Map::new());
            let mut refs = Vec::new();
            for schema in &schemas {
                if let Some(converted) = components.import(schema) {
                    prop_assert!(serde_json::to_vec(&converted).is_ok());
                    collect_refs(&converted, &mut refs);
                }
            }
            for component in components.map.values() {
                collect_refs(component, &mut refs);
            }
            // Every reference left in the output names a component of the document.
            for reference in refs {
                let name = reference.strip_prefix("#/components/schemas/");
                prop_assert!(
                    name.is_some_and(|n| components.map.contains_key(n)),
                    "dangling reference {reference}"
                );
            }
            prop_assert!(components.map.len() <= schemas.len() * super::MAX_DEFINITIONS * 2);
        }
    }
}
