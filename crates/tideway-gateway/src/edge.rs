//! Edge policies on the request path: which `tideway-edge` policy applies to a route, and the
//! steps around the call (CORS preflight, admission, identity to the service, response headers).
//!
//! Policies are found by route: `[route_policies."GET /api/waybills/{id}"]` (method and template,
//! as in metrics), then `[route_policies."/api/waybills/{id}"]` (any method), then
//! `[route_policies.default]`. Keys are templates, so they apply to routes from the config file
//! and from the registry alike. Each policy is compiled once, when the policies are built.

use std::collections::HashMap;
use std::sync::Arc;

use tideway_edge::{Edge, EdgeConfig, EdgeError, RoutePolicy, RoutePolicyConfig};

/// The `[route_policies]` key that applies to routes without their own.
pub const DEFAULT_POLICY: &str = "default";

/// An [`Edge`] and the compiled policies of one configuration generation.
#[derive(Debug)]
pub struct EdgePolicies {
    edge: Edge,
    by_key: HashMap<String, Arc<RoutePolicy>>,
    default: Option<Arc<RoutePolicy>>,
}

impl EdgePolicies {
    /// Builds the edge and compiles every policy. Must run inside a Tokio runtime (the edge
    /// owns its key-reload and pruning tasks; they stop when this is dropped).
    pub fn new(
        config: &EdgeConfig,
        policies: &std::collections::BTreeMap<String, RoutePolicyConfig>,
    ) -> Result<Self, EdgeError> {
        let edge = Edge::new(config)?;
        let mut by_key = HashMap::new();
        let mut default = None;
        for (key, policy) in policies {
            let compiled = edge.route_policy(key, policy)?;
            if key == DEFAULT_POLICY {
                default = Some(compiled);
            } else {
                by_key.insert(key.clone(), compiled);
            }
        }
        Ok(EdgePolicies {
            edge,
            by_key,
            default,
        })
    }

    /// The edge.
    pub fn edge(&self) -> &Edge {
        &self.edge
    }

    /// The policy of the route labelled `label` (`GET /path`) with template `path`; `None` when
    /// none applies or it is empty.
    pub fn policy_for(&self, label: &str, path: &str) -> Option<&Arc<RoutePolicy>> {
        self.by_key
            .get(label)
            .or_else(|| self.by_key.get(path))
            .or(self.default.as_ref())
            .filter(|p| !p.is_empty())
    }
}
