//! kube-proxy's health-check servers (`pkg/proxy/healthcheck`), as a load
//! balancer or a probe meets them on a node:
//!
//! * per Service with a `healthCheckNodePort` (LoadBalancer with
//!   `externalTrafficPolicy: Local`), an HTTP server on that port of the
//!   node-port addresses (every address when `nodePortAddresses` is
//!   empty). It answers 200 when the node has ready local endpoints for the
//!   service and 503 when it has none, with the count
//!   (`LocalReadyEndpoints`: distinct endpoint IPs over all the service's
//!   ports; terminating endpoints do not count, so a draining node fails);
//! * the proxy's own `/healthz` on `healthzBindAddress` (default
//!   `0.0.0.0:10256`): 200 while the rules are in sync and the node is not
//!   being deleted, which kpsim's nodes always are.
//!
//! `loadBalancer.nodes: healthy` takes its node list from
//! [`ServiceHealth::passes`], the same decision.

use super::model::ProxyModel;
use crate::network::HttpAnswer;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// The health check of one service on one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceHealth {
    pub namespace: String,
    pub name: String,
    /// The service's `healthCheckNodePort`.
    pub port: u16,
    /// Ready endpoints on this node (distinct IPs).
    pub local_endpoints: usize,
}

impl ServiceHealth {
    /// Whether a load balancer probing the port keeps the node.
    pub fn passes(&self) -> bool {
        self.local_endpoints > 0
    }

    /// What kube-proxy answers (`hcHandler.ServeHTTP`): its JSON body, the
    /// proxy itself healthy.
    pub fn answer(&self) -> HttpAnswer {
        HttpAnswer {
            status: if self.passes() { 200 } else { 503 },
            body: format!(
                "{{\"service\": {{\"namespace\": {:?}, \"name\": {:?}}}, \"localEndpoints\": {}, \"serviceProxyHealthy\": true}}",
                self.namespace, self.name, self.local_endpoints
            ),
        }
    }
}

/// Ready local endpoints of every service, by (namespace, name), on `node`.
fn local_ready(model: &ProxyModel, node: &str) -> BTreeMap<(String, String), usize> {
    let mut ips: BTreeMap<(String, String), BTreeSet<Ipv4Addr>> = BTreeMap::new();
    for (svc, eps) in &model.ports {
        let set = ips
            .entry((svc.namespace.clone(), svc.name.clone()))
            .or_default();
        set.extend(
            eps.iter()
                .filter(|e| e.ready && e.node_name.as_deref() == Some(node))
                .map(|e| e.ip),
        );
    }
    ips.into_iter().map(|(k, v)| (k, v.len())).collect()
}

/// Every service health check on `node`, in (namespace, name) order.
pub fn service_health(model: &ProxyModel, node: &str) -> Vec<ServiceHealth> {
    if model
        .ports
        .iter()
        .all(|(svc, _)| svc.health_check_node_port == 0)
    {
        return Vec::new(); // no health checks: no need to count endpoints
    }
    let counts = local_ready(model, node);
    let mut out: Vec<ServiceHealth> = Vec::new();
    for (svc, _) in &model.ports {
        if svc.health_check_node_port == 0
            || out
                .iter()
                .any(|h| h.namespace == svc.namespace && h.name == svc.name)
        {
            continue;
        }
        out.push(ServiceHealth {
            namespace: svc.namespace.clone(),
            name: svc.name.clone(),
            port: svc.health_check_node_port,
            local_endpoints: counts
                .get(&(svc.namespace.clone(), svc.name.clone()))
                .copied()
                .unwrap_or(0),
        });
    }
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out
}

/// Whether the node passes the health check a load balancer would make
/// for this service: its health-check node port's answer, or, for a
/// service without one (external IPs), the same count.
pub fn node_passes(model: &ProxyModel, namespace: &str, name: &str, node: &str) -> bool {
    local_ready(model, node)
        .get(&(namespace.to_string(), name.to_string()))
        .is_some_and(|n| *n > 0)
}

/// The proxy's `/healthz` answer: healthy and eligible (the body's
/// timestamps are the moment of the request).
pub fn healthz_answer() -> HttpAnswer {
    HttpAnswer {
        status: 200,
        body: "{\"lastUpdated\": NOW, \"currentTime\": NOW, \"nodeEligible\": true}".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ready_local_endpoints_decide_and_terminating_ones_do_not_count() {
        let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.9", "externalTrafficPolicy": "Local",
                "healthCheckNodePort": 32000,
                "ports": [{"name": "a", "port": 80, "nodePort": 30080}, {"name": "b", "port": 443, "nodePort": 30443}]}
        }))
        .unwrap();
        let slice: k8s_openapi::api::discovery::v1::EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "a", "port": 8080}, {"name": "b", "port": 8443}],
            "endpoints": [
                {"addresses": ["10.0.1.5"], "nodeName": "node-a"},
                {"addresses": ["10.0.2.5"], "nodeName": "node-b", "conditions": {"ready": false, "serving": true, "terminating": true}},
            ]
        }))
        .unwrap();
        let model = ProxyModel::build(&[svc], &[slice]);
        let a = service_health(&model, "node-a");
        assert_eq!(a.len(), 1, "one check for the service, not per port");
        assert_eq!((a[0].port, a[0].local_endpoints), (32000, 1));
        assert_eq!(a[0].answer().status, 200);
        assert!(a[0].answer().body.contains("\"localEndpoints\": 1"));
        let b = service_health(&model, "node-b");
        assert_eq!((b[0].local_endpoints, b[0].answer().status), (0, 503));
        assert!(!node_passes(&model, "default", "web", "node-b"));
    }
}
