//! What a registry stores: [`ServiceInstance`] with the owned route metadata of its methods
//! ([`RouteMeta`], [`ParamMeta`]), and the rules an instance must meet.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use tideway_rpc::{MethodDescriptor, ParamDescriptor, ServiceDescriptor};

use crate::config::{
    DEFAULT_WEIGHT, MAX_INSTANCE_JSON_BYTES, MAX_NAME_LEN, MAX_PARAMS, MAX_ROUTES, MAX_TAGS,
    MAX_WEIGHT,
};
use crate::error::ValidationError;

/// One running instance of a service: where to reach it, how much traffic it takes, and the
/// routes its methods serve. This is the JSON value stored in etcd (unknown fields are ignored
/// when read, so newer writers stay readable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInstance {
    /// Fully qualified service name, e.g. `logistics.Waybills`.
    pub service: String,
    /// Unique among the service's instances, e.g. `host-1:7001` or a UUID.
    pub id: String,
    /// RPC address the gateway connects to.
    pub addr: SocketAddr,
    /// Share of traffic relative to the service's other instances, 1..=[`MAX_WEIGHT`].
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Failure domain (zone, rack), for zone-aware balancing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Version of the service build, for canaries and rolling deploys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The HTTP routes of the service's methods, as this instance's build declares them.
    #[serde(default)]
    pub routes: Vec<RouteMeta>,
}

fn default_weight() -> u32 {
    DEFAULT_WEIGHT
}

/// One method and its HTTP route: an owned mirror of [`MethodDescriptor`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteMeta {
    /// Method name as declared, e.g. `create`.
    pub name: String,
    /// `service/method`, the name that travels in Request frames. A registry file may leave it
    /// out; it is then filled in from the service's name.
    #[serde(default)]
    pub full_name: String,
    /// HTTP method of the route, upper case (`GET`, `POST`, ...).
    pub http_method: String,
    /// Path template with `{name}` parameters, e.g. `/api/waybills/{id}`.
    pub path: String,
    /// `true` when the route is the conventional `POST /api/{service}/{method}`.
    #[serde(default)]
    pub conventional_route: bool,
    /// Per-route deadline in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The arguments, bound by name from the payload object.
    #[serde(default)]
    pub params: Vec<ParamMeta>,
}

/// One argument of a method: an owned mirror of [`ParamDescriptor`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamMeta {
    /// Argument name: the key it is bound from in the payload object.
    pub name: String,
    /// The Rust type as written, for documentation and parameter typing.
    #[serde(default)]
    pub rust_type: String,
    /// `true` for a `#[body]` argument: the whole payload object.
    #[serde(default)]
    pub body: bool,
    /// The argument's JSON Schema when the service publishes one (`#[service(schema)]`): an
    /// OpenAPI 3.0 Schema Object with its definitions under `components.schemas` (see
    /// [`ParamDescriptor::schema`]). Absent in entries of older builds and of services without
    /// schemas. It counts towards [`MAX_INSTANCE_JSON_BYTES`] like the rest of the entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<serde_json::Value>,
}

impl From<&ParamDescriptor> for ParamMeta {
    fn from(p: &ParamDescriptor) -> Self {
        ParamMeta {
            name: p.name.to_owned(),
            rust_type: p.rust_type.to_owned(),
            body: p.body,
            schema: p.schema.map(|schema| schema()),
        }
    }
}

impl From<&MethodDescriptor> for RouteMeta {
    fn from(m: &MethodDescriptor) -> Self {
        RouteMeta {
            name: m.name.to_owned(),
            full_name: m.full_name.to_owned(),
            http_method: m.http_method.to_owned(),
            path: m.path.to_owned(),
            conventional_route: m.conventional_route,
            timeout_ms: m.timeout_ms,
            params: m.params.iter().map(ParamMeta::from).collect(),
        }
    }
}

impl RouteMeta {
    /// The routes of every method of a service, in declaration order.
    pub fn from_service(descriptor: &ServiceDescriptor) -> Vec<RouteMeta> {
        descriptor.methods.iter().map(RouteMeta::from).collect()
    }

    fn validate(&self) -> Result<(), ValidationError> {
        let bad = |reason: String| ValidationError::Route {
            route: if self.full_name.is_empty() {
                self.name.clone()
            } else {
                self.full_name.clone()
            },
            reason,
        };
        if self.name.is_empty() {
            return Err(bad("the method name is empty".into()));
        }
        if self.name.len() > MAX_NAME_LEN || self.full_name.len() > 2 * MAX_NAME_LEN + 1 {
            return Err(bad("the method name is too long".into()));
        }
        if self.http_method.is_empty()
            || self.http_method.len() > 16
            || !self.http_method.bytes().all(|b| b.is_ascii_uppercase())
        {
            return Err(bad(format!(
                "HTTP method {:?} is not an upper-case token like GET",
                self.http_method
            )));
        }
        if !self.path.starts_with('/') || self.path.len() > 2048 {
            return Err(bad(format!(
                "path {:?} must start with '/' (at most 2048 bytes)",
                self.path
            )));
        }
        if self
            .path
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(bad(format!(
                "path {:?} has whitespace or a control character",
                self.path
            )));
        }
        if self.params.len() > MAX_PARAMS {
            return Err(bad(format!(
                "{} parameters, more than {MAX_PARAMS}",
                self.params.len()
            )));
        }
        if let Some(p) = self
            .params
            .iter()
            .find(|p| p.name.is_empty() || p.name.len() > MAX_NAME_LEN)
        {
            return Err(bad(format!(
                "parameter name {:?} is empty or too long",
                p.name
            )));
        }
        Ok(())
    }
}

impl ServiceInstance {
    /// An instance of `service` with id `id` at `addr`: default weight, no zone, version, tags or
    /// routes.
    pub fn new(service: impl Into<String>, id: impl Into<String>, addr: SocketAddr) -> Self {
        ServiceInstance {
            service: service.into(),
            id: id.into(),
            addr,
            weight: DEFAULT_WEIGHT,
            zone: None,
            version: None,
            tags: Vec::new(),
            routes: Vec::new(),
        }
    }

    /// An instance of the service `descriptor` describes (what `#[service]` generates as
    /// `XClient::DESCRIPTOR`), publishing the routes of all its methods.
    pub fn for_service(
        descriptor: &ServiceDescriptor,
        id: impl Into<String>,
        addr: SocketAddr,
    ) -> Self {
        ServiceInstance {
            routes: RouteMeta::from_service(descriptor),
            ..ServiceInstance::new(descriptor.name, id, addr)
        }
    }

    /// Sets the weight.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Sets the zone.
    pub fn with_zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// Sets the version.
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Adds a tag.
    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Replaces the routes.
    pub fn with_routes(mut self, routes: Vec<RouteMeta>) -> Self {
        self.routes = routes;
        self
    }

    /// Checks everything a registry checks before storing an instance, and after reading one
    /// back: names, weight, address, list lengths, routes and encoded size.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_name("service", &self.service)?;
        check_name("id", &self.id)?;
        if self.weight == 0 {
            return Err(ValidationError::ZeroWeight);
        }
        if self.weight > MAX_WEIGHT {
            return Err(ValidationError::WeightTooLarge(self.weight));
        }
        if self.addr.ip().is_unspecified() {
            return Err(ValidationError::UnspecifiedAddress(self.addr));
        }
        if self.addr.port() == 0 {
            return Err(ValidationError::ZeroPort(self.addr));
        }
        if let Some(zone) = &self.zone {
            check_text("zone", zone)?;
        }
        if let Some(version) = &self.version {
            check_text("version", version)?;
        }
        if self.tags.len() > MAX_TAGS {
            return Err(ValidationError::TooMany {
                field: "tags",
                count: self.tags.len(),
                max: MAX_TAGS,
            });
        }
        for tag in &self.tags {
            check_text("tag", tag)?;
        }
        if self.routes.len() > MAX_ROUTES {
            return Err(ValidationError::TooMany {
                field: "routes",
                count: self.routes.len(),
                max: MAX_ROUTES,
            });
        }
        for route in &self.routes {
            route.validate()?;
        }
        Ok(())
    }

    /// Validates and encodes the instance as the JSON stored in etcd.
    pub fn to_json(&self) -> Result<Vec<u8>, ValidationError> {
        self.validate()?;
        // Serializing plain strings, numbers and an address cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        if json.len() > MAX_INSTANCE_JSON_BYTES {
            return Err(ValidationError::TooLarge {
                len: json.len(),
                max: MAX_INSTANCE_JSON_BYTES,
            });
        }
        Ok(json)
    }

    /// Decodes and validates an instance read from a backend. The error is a message for the
    /// log: the caller skips the record.
    #[cfg(any(feature = "etcd", test))]
    pub(crate) fn from_json(bytes: &[u8]) -> Result<ServiceInstance, String> {
        if bytes.len() > MAX_INSTANCE_JSON_BYTES {
            return Err(format!(
                "{} bytes, more than {MAX_INSTANCE_JSON_BYTES}",
                bytes.len()
            ));
        }
        let instance: ServiceInstance =
            serde_json::from_slice(bytes).map_err(|e| format!("not an instance: {e}"))?;
        instance.validate().map_err(|e| e.to_string())?;
        Ok(instance)
    }
}

/// Service names and instance ids become etcd key segments and log fields: non-empty, bounded,
/// and a conservative character set (no '/', no whitespace).
fn check_name(field: &'static str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::Empty { field });
    }
    if value.len() > MAX_NAME_LEN {
        return Err(ValidationError::TooLong {
            field,
            len: value.len(),
            max: MAX_NAME_LEN,
        });
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
    {
        return Err(ValidationError::BadName {
            field,
            value: value.to_owned(),
        });
    }
    Ok(())
}

fn check_text(field: &'static str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::Empty { field });
    }
    if value.len() > MAX_NAME_LEN {
        return Err(ValidationError::TooLong {
            field,
            len: value.len(),
            max: MAX_NAME_LEN,
        });
    }
    if value.chars().any(char::is_control) {
        return Err(ValidationError::ControlCharacter {
            field,
            value: value.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARAMS: &[ParamDescriptor] = &[ParamDescriptor {
        name: "id",
        rust_type: "String",
        body: false,
        schema: None,
    }];
    const DESCRIPTOR: ServiceDescriptor = ServiceDescriptor {
        name: "logistics.Waybills",
        methods: &[
            MethodDescriptor {
                name: "get",
                full_name: "logistics.Waybills/get",
                http_method: "GET",
                path: "/api/waybills/{id}",
                conventional_route: false,
                timeout_ms: Some(2000),
                params: PARAMS,
            },
            MethodDescriptor {
                name: "list",
                full_name: "logistics.Waybills/list",
                http_method: "POST",
                path: "/api/logistics/waybills/list",
                conventional_route: true,
                timeout_ms: None,
                params: &[],
            },
        ],
    };

    fn addr() -> SocketAddr {
        "127.0.0.1:7001".parse().unwrap()
    }

    #[test]
    fn routes_mirror_the_descriptor() {
        let instance = ServiceInstance::for_service(&DESCRIPTOR, "wb-1", addr())
            .with_zone("eu-1")
            .with_version("1.2.0")
            .with_tag("canary");
        instance.validate().unwrap();
        assert_eq!(instance.service, "logistics.Waybills");
        assert_eq!(instance.weight, DEFAULT_WEIGHT);
        assert_eq!(instance.routes.len(), 2);
        let get = &instance.routes[0];
        assert_eq!(get.full_name, "logistics.Waybills/get");
        assert_eq!(get.http_method, "GET");
        assert_eq!(get.path, "/api/waybills/{id}");
        assert_eq!(get.timeout_ms, Some(2000));
        assert_eq!(
            get.params,
            vec![ParamMeta {
                name: "id".into(),
                rust_type: "String".into(),
                body: false,
                schema: None,
            }]
        );
        assert!(instance.routes[1].conventional_route);
    }

    #[test]
    fn json_round_trips() {
        let instance = ServiceInstance::for_service(&DESCRIPTOR, "wb-1", addr()).with_weight(7);
        let json = instance.to_json().unwrap();
        assert_eq!(ServiceInstance::from_json(&json).unwrap(), instance);
        // Optional fields may be missing; unknown ones are ignored.
        let minimal = br#"{"service":"s","id":"i","addr":"10.0.0.1:9","future_field":1}"#;
        let parsed = ServiceInstance::from_json(minimal).unwrap();
        assert_eq!(parsed.weight, DEFAULT_WEIGHT);
        assert!(parsed.routes.is_empty());
    }

    fn body_schema() -> serde_json::Value {
        serde_json::json!({
            "$ref": "#/components/schemas/NewWaybill",
            "components": {"schemas": {"NewWaybill": {
                "type": "object",
                "required": ["sender"],
                "properties": {"sender": {"type": "string", "minLength": 1}},
            }}},
        })
    }

    #[test]
    fn published_schemas_travel_with_the_params_and_old_entries_still_read() {
        const WITH_SCHEMA: ServiceDescriptor = ServiceDescriptor {
            name: "logistics.Waybills",
            methods: &[MethodDescriptor {
                name: "create",
                full_name: "logistics.Waybills/create",
                http_method: "POST",
                path: "/api/waybills",
                conventional_route: false,
                timeout_ms: None,
                params: &[ParamDescriptor {
                    name: "waybill",
                    rust_type: "NewWaybill",
                    body: true,
                    schema: Some(body_schema),
                }],
            }],
        };
        let instance = ServiceInstance::for_service(&WITH_SCHEMA, "wb-1", addr());
        assert_eq!(instance.routes[0].params[0].schema, Some(body_schema()));
        let json = instance.to_json().unwrap();
        assert_eq!(ServiceInstance::from_json(&json).unwrap(), instance);
        // Without a schema the key is left out, and an entry without it reads as `None`.
        let plain = ServiceInstance::for_service(&DESCRIPTOR, "wb-1", addr());
        let text = String::from_utf8(plain.to_json().unwrap()).unwrap();
        assert!(!text.contains("schema"), "{text}");
        let old = br#"{"service":"s","id":"i","addr":"10.0.0.1:9","routes":[{"name":"m",
            "http_method":"POST","path":"/m","params":[{"name":"b","rust_type":"B","body":true}]}]}"#;
        let parsed = ServiceInstance::from_json(old).unwrap();
        assert_eq!(parsed.routes[0].params[0].schema, None);
        assert!(parsed.routes[0].params[0].body);
    }

    #[test]
    fn bad_data_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"null",
            b"[1,2]",
            b"{\"service\":\"s\"}",
            b"{\"service\":\"s\",\"id\":\"i\",\"addr\":\"nowhere\"}",
            b"{\"service\":\"s\",\"id\":\"i\",\"addr\":\"10.0.0.1:9\",\"weight\":0}",
            b"{\"service\":\"s\",\"id\":\"i\",\"addr\":\"10.0.0.1:9\",\"weight\":-1}",
            b"\xff\xfe",
        ] {
            assert!(ServiceInstance::from_json(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn validation_names_the_problem() {
        let ok = ServiceInstance::new("svc", "i-1", addr());
        ok.validate().unwrap();
        let cases: Vec<(ServiceInstance, ValidationError)> = vec![
            (
                ServiceInstance::new("", "i", addr()),
                ValidationError::Empty { field: "service" },
            ),
            (
                ServiceInstance::new("svc", "", addr()),
                ValidationError::Empty { field: "id" },
            ),
            (
                ServiceInstance::new("a/b", "i", addr()),
                ValidationError::BadName {
                    field: "service",
                    value: "a/b".into(),
                },
            ),
            (ok.clone().with_weight(0), ValidationError::ZeroWeight),
            (
                ok.clone().with_weight(MAX_WEIGHT + 1),
                ValidationError::WeightTooLarge(MAX_WEIGHT + 1),
            ),
            (
                ServiceInstance::new("svc", "i", "0.0.0.0:80".parse().unwrap()),
                ValidationError::UnspecifiedAddress("0.0.0.0:80".parse().unwrap()),
            ),
            (
                ServiceInstance::new("svc", "i", "10.0.0.1:0".parse().unwrap()),
                ValidationError::ZeroPort("10.0.0.1:0".parse().unwrap()),
            ),
            (
                ok.clone().with_zone(""),
                ValidationError::Empty { field: "zone" },
            ),
            (
                ok.clone().with_tag("a\nb"),
                ValidationError::ControlCharacter {
                    field: "tag",
                    value: "a\nb".into(),
                },
            ),
        ];
        for (instance, expected) in cases {
            assert_eq!(instance.validate(), Err(expected));
        }
        let long = ServiceInstance::new("s".repeat(MAX_NAME_LEN + 1), "i", addr());
        assert!(matches!(
            long.validate(),
            Err(ValidationError::TooLong {
                field: "service",
                ..
            })
        ));
        let mut bad_route = RouteMeta::from(&DESCRIPTOR.methods[0]);
        bad_route.http_method = "get".into();
        assert!(matches!(
            ok.clone().with_routes(vec![bad_route]).validate(),
            Err(ValidationError::Route { .. })
        ));
        let too_many = ok.with_routes(vec![
            RouteMeta::from(&DESCRIPTOR.methods[0]);
            MAX_ROUTES + 1
        ]);
        assert!(matches!(
            too_many.validate(),
            Err(ValidationError::TooMany {
                field: "routes",
                ..
            })
        ));
    }
}
