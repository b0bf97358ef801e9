//! Synthetic clusters for benchmarks and capacity questions: N services,
//! each with some ready endpoints spread over the nodes, built directly as
//! Kubernetes objects (no YAML), deterministic for given sizes.
//!
//! [`cluster`] is the fixed benchmark shape; [`shaped`] takes a [`Shape`]
//! (shares of NodePort and LoadBalancer Services, of
//! `externalTrafficPolicy: Local`, of session affinity, a cycle of
//! endpoint counts), as capacity reports need. Shares are spread evenly
//! over the services in order: service `i` has a property of share `f`
//! when `floor(i·f)` steps at `i` (so 0.25 picks services 0, 4, 8, …).

use crate::network::Overlay;
use crate::scenario::*;
use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Service, ServicePort, ServiceSpec, ServiceStatus,
    SessionAffinityConfig,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Most nodes a synthetic cluster has: each node's pods live in
/// `10.244.<node>.0/24`.
pub const MAX_NODES: usize = 250;

/// Most pods per node (host parts 2..=253 of the node's /24; .254 is the
/// node's client pod).
pub const MAX_PODS_PER_NODE: usize = 252;

/// A cluster of `nodes` nodes (10.244.i.0/24 each, up to 250), `services`
/// services (every fourth a NodePort), each with `endpoints` endpoints
/// placed round-robin on the nodes, and one external client.
pub fn cluster(services: usize, endpoints: usize, nodes: usize) -> Scenario {
    let nodes = nodes.clamp(1, MAX_NODES);
    let mut svcs = Vec::with_capacity(services);
    let mut slices = Vec::with_capacity(services);
    let mut next_ep: u32 = 0;
    // Endpoints become real pods (so traces are delivered) while their
    // addresses stay unique and the host count stays small.
    let mut endpoint_pods = Vec::new();
    let make_pods = services * endpoints <= 5000 && services * endpoints <= 250 * nodes;
    for s in 0..services {
        let node_port = (s % 4 == 0 && s / 4 < 2700).then(|| 30000 + (s / 4) as i32);
        let kind = if node_port.is_some() {
            Kind::NodePort
        } else {
            Kind::ClusterIp
        };
        svcs.push(service(s, kind, node_port, None, false));
        let eps = (0..endpoints)
            .map(|_| {
                let k = next_ep as usize;
                next_ep += 1;
                let node = k % nodes;
                // Host part 2..=254 within the node's /24, wrapping.
                let host = 2 + (k / nodes) % 250;
                let ip = Ipv4Addr::new(10, 244, node as u8, host as u8);
                if make_pods {
                    endpoint_pods.push(pod(format!("ep-{k}"), node, ip));
                }
                (node, ip)
            })
            .collect::<Vec<_>>();
        slices.push(slice(s, &eps));
    }
    let mut pods = client_pods(nodes);
    pods.extend(endpoint_pods);
    scenario(
        format!("synthetic-{services}x{endpoints}x{nodes}"),
        nodes,
        pods,
        svcs,
        slices,
    )
}

/// The shape of a generated cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct Shape {
    pub services: usize,
    /// Endpoints of service `i`: `endpoints[i % len]` (one value: every
    /// service the same; several: a cycle, i.e. a distribution).
    pub endpoints: Vec<usize>,
    pub nodes: usize,
    /// Pods per node that back the endpoints; endpoint `k` is pod
    /// `k / nodes % pods_per_node` on node `k % nodes`, so a pod serves
    /// several Services when there are more endpoints than pods.
    pub pods_per_node: usize,
    /// Share of Services of type NodePort.
    pub node_port_share: f64,
    /// Share of Services of type LoadBalancer (taken after the NodePort
    /// ones: a service is NodePort or LoadBalancer, never both).
    pub load_balancer_share: f64,
    /// Share of the NodePort and LoadBalancer Services with
    /// `externalTrafficPolicy: Local`.
    pub local_share: f64,
    /// Share of Services with `sessionAffinity: ClientIP`.
    pub affinity_share: f64,
    /// The node port range the API server allocates from.
    pub node_port_range: (u16, u16),
}

impl Shape {
    /// Node ports the shape needs (one per NodePort or LoadBalancer
    /// Service, plus a health check port per LoadBalancer Service with the
    /// Local policy).
    pub fn node_ports_needed(&self) -> usize {
        let mut n = 0;
        for i in 0..self.services {
            match self.kind(i) {
                Kind::NodePort => n += 1,
                Kind::LoadBalancer => n += 1 + usize::from(self.is_local(i)),
                Kind::ClusterIp => {}
            }
        }
        n
    }

    fn node_port_capacity(&self) -> usize {
        usize::from(self.node_port_range.1 - self.node_port_range.0) + 1
    }

    fn kind(&self, i: usize) -> Kind {
        if picked(i, self.node_port_share) {
            Kind::NodePort
        } else if picked(i, self.load_balancer_share) {
            Kind::LoadBalancer
        } else {
            Kind::ClusterIp
        }
    }

    fn is_local(&self, i: usize) -> bool {
        self.kind(i) != Kind::ClusterIp && picked(i, self.local_share)
    }
}

/// Why a shape cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("nodes: {0} is outside 1..={MAX_NODES}")]
    Nodes(usize),
    #[error("podsPerNode: {0} is outside 1..={MAX_PODS_PER_NODE}")]
    Pods(usize),
    #[error("endpointsPerService: needs at least one value")]
    NoEndpoints,
    #[error(
        "{needed} node ports needed, but the node port range {first}-{last} holds {capacity}: \
         the API server would refuse the Services (lower nodePortShare or loadBalancerShare)"
    )]
    NodePorts {
        needed: usize,
        first: u16,
        last: u16,
        capacity: usize,
    },
    #[error("{0} services: more than the service CIDR 10.96.0.0/12 holds")]
    Services(usize),
}

/// The cluster a [`Shape`] describes: one client pod per node
/// (`probe-<node>`, the first pod of its node), the endpoint pods, one
/// external client, Services with their EndpointSlices.
pub fn shaped(shape: &Shape) -> Result<Scenario, ShapeError> {
    let nodes = shape.nodes;
    if !(1..=MAX_NODES).contains(&nodes) {
        return Err(ShapeError::Nodes(nodes));
    }
    if !(1..=MAX_PODS_PER_NODE).contains(&shape.pods_per_node) {
        return Err(ShapeError::Pods(shape.pods_per_node));
    }
    if shape.endpoints.is_empty() {
        return Err(ShapeError::NoEndpoints);
    }
    if shape.services > (1 << 20) - 20 {
        return Err(ShapeError::Services(shape.services));
    }
    let needed = shape.node_ports_needed();
    if needed > shape.node_port_capacity() {
        return Err(ShapeError::NodePorts {
            needed,
            first: shape.node_port_range.0,
            last: shape.node_port_range.1,
            capacity: shape.node_port_capacity(),
        });
    }
    let mut ports = NodePorts {
        next: shape.node_port_range.0,
        last_free: shape.node_port_range.1,
    };
    let mut svcs = Vec::with_capacity(shape.services);
    let mut slices = Vec::with_capacity(shape.services);
    let mut next_ep = 0usize;
    for i in 0..shape.services {
        let kind = shape.kind(i);
        let local = shape.is_local(i);
        let node_port = (kind != Kind::ClusterIp).then(|| ports.take());
        let health = (kind == Kind::LoadBalancer && local).then(|| ports.take_health());
        let mut svc = service(i, kind, node_port, health, picked(i, shape.affinity_share));
        if local {
            let spec = svc.spec.as_mut().expect("built with a spec");
            spec.external_traffic_policy = Some("Local".into());
        }
        svcs.push(svc);
        let count = shape.endpoints[i % shape.endpoints.len()];
        let eps: Vec<(usize, Ipv4Addr)> = (0..count)
            .map(|_| {
                let k = next_ep;
                next_ep += 1;
                let node = k % nodes;
                let host = 2 + (k / nodes) % shape.pods_per_node;
                (node, Ipv4Addr::new(10, 244, node as u8, host as u8))
            })
            .collect();
        slices.push(slice(i, &eps));
    }
    let mut pods = client_pods(nodes);
    for node in 0..nodes {
        for j in 0..shape.pods_per_node {
            let ip = Ipv4Addr::new(10, 244, node as u8, (2 + j) as u8);
            pods.push(pod(format!("ep-{node}-{j}"), node, ip));
        }
    }
    let name = format!(
        "shape-{}x{}x{}",
        shape.services,
        shape
            .endpoints
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("-"),
        nodes
    );
    Ok(scenario(name, nodes, pods, svcs, slices))
}

/// Node ports handed out in order from the bottom of the range; health
/// check ports from the top, so they never meet (the shape checked the
/// count).
struct NodePorts {
    next: u16,
    last_free: u16,
}

impl NodePorts {
    fn take(&mut self) -> i32 {
        let p = self.next;
        self.next += 1;
        i32::from(p)
    }

    fn take_health(&mut self) -> i32 {
        let p = self.last_free;
        self.last_free -= 1;
        i32::from(p)
    }
}

/// Whether service `i` has a property held by share `f` of the services:
/// the spread is even and the first service is picked when `f > 0`.
fn picked(i: usize, f: f64) -> bool {
    if f <= 0.0 {
        return false;
    }
    let at = |k: f64| (k * f).floor();
    i == 0 || at(i as f64) > at(i as f64 - 1.0)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    ClusterIp,
    NodePort,
    LoadBalancer,
}

/// Service `svc-<i>` (cluster IP 10.96.0.10 + i, port 80 → 8080/TCP).
fn service(
    i: usize,
    kind: Kind,
    node_port: Option<i32>,
    health_check_node_port: Option<i32>,
    affinity: bool,
) -> Service {
    let cip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + 10 + i as u32);
    let lb_ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i as u32);
    Service {
        metadata: ObjectMeta {
            name: Some(format!("svc-{i}")),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some(
                match kind {
                    Kind::ClusterIp => "ClusterIP",
                    Kind::NodePort => "NodePort",
                    Kind::LoadBalancer => "LoadBalancer",
                }
                .into(),
            ),
            cluster_ip: Some(cip.to_string()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                node_port,
                protocol: Some("TCP".into()),
                target_port: Some(IntOrString::Int(8080)),
                ..Default::default()
            }]),
            health_check_node_port,
            session_affinity: affinity.then(|| "ClientIP".into()),
            session_affinity_config: affinity.then_some(SessionAffinityConfig {
                client_ip: Some(k8s_openapi::api::core::v1::ClientIPConfig {
                    timeout_seconds: Some(10800),
                }),
            }),
            ..Default::default()
        }),
        status: (kind == Kind::LoadBalancer).then(|| ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![LoadBalancerIngress {
                    ip: Some(lb_ip.to_string()),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        }),
    }
}

/// The EndpointSlice of service `svc-<i>`: ready endpoints at the given
/// (node index, address) pairs.
fn slice(i: usize, endpoints: &[(usize, Ipv4Addr)]) -> EndpointSlice {
    let name = format!("svc-{i}");
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("{name}-1")),
            namespace: Some("default".into()),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/service-name".to_string(),
                name,
            )])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: endpoints
            .iter()
            .map(|(node, ip)| Endpoint {
                addresses: vec![ip.to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    serving: Some(true),
                    terminating: Some(false),
                }),
                node_name: Some(format!("node-{node}")),
                ..Default::default()
            })
            .collect(),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    }
}

fn pod(name: String, node: usize, ip: Ipv4Addr) -> PodDef {
    PodDef {
        namespace: "default".into(),
        name,
        node: format!("node-{node}"),
        labels: BTreeMap::new(),
        ip,
        ready: true,
        terminating: false,
        host_network: false,
        ports: Vec::new(),
    }
}

/// `probe-<i>` at 10.244.i.254: the first pod of each node, the sender
/// that stands for "a pod on this node".
fn client_pods(nodes: usize) -> Vec<PodDef> {
    (0..nodes)
        .map(|i| {
            pod(
                format!("probe-{i}"),
                i,
                Ipv4Addr::new(10, 244, i as u8, 254),
            )
        })
        .collect()
}

fn scenario(
    name: String,
    nodes: usize,
    pods: Vec<PodDef>,
    services: Vec<Service>,
    slices: Vec<EndpointSlice>,
) -> Scenario {
    Scenario {
        path: "synthetic".into(),
        name,
        description: String::new(),
        cluster: ClusterSpec {
            cluster_cidr: "10.244.0.0/16".parse().expect("valid"),
            service_cidr: "10.96.0.0/12".parse().expect("valid"),
            network: Overlay::Routed,
            load_balancer: LoadBalancerSpec {
                delivery: LbDelivery::Direct,
                nodes: LbNodes::Healthy,
                address: Ipv4Addr::new(198, 51, 100, 10),
            },
        },
        kube_proxy: KubeProxy::defaults("10.244.0.0/16".parse().expect("valid")),
        nodes: (0..nodes)
            .map(|i| NodeDef {
                name: format!("node-{i}"),
                address: Ipv4Addr::new(192, 168, (i / 200) as u8, (i % 200 + 10) as u8),
                extra_addresses: Vec::new(),
                pod_cidr: format!("10.244.{i}.0/24").parse().expect("valid"),
                zone: None,
                labels: BTreeMap::new(),
                cpus: None,
            })
            .collect(),
        externals: vec![ExternalDef {
            name: "client".into(),
            address: Ipv4Addr::new(203, 0, 113, 7),
            routes: Vec::new(),
        }],
        pods,
        services,
        slices,
        checks: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_cluster_compiles_and_routes() {
        let s = super::cluster(20, 3, 3);
        let c = crate::compile::compile(&s, &Default::default()).unwrap();
        let f = c.flow("probe-0", "svc-5:80", None, 0).unwrap();
        let r = crate::trace::trace(&c.cluster, &[f]).unwrap();
        assert_eq!(r.len(), 3);
        assert!(r
            .iter()
            .all(|(_, x)| x[0].delivered_to().is_some() && x[0].reply_ok == Some(true)));
    }

    fn shape(services: usize) -> Shape {
        Shape {
            services,
            endpoints: vec![2],
            nodes: 3,
            pods_per_node: 4,
            node_port_share: 0.25,
            load_balancer_share: 0.0,
            local_share: 0.0,
            affinity_share: 0.0,
            node_port_range: (30000, 32767),
        }
    }

    #[test]
    fn shares_are_spread_evenly_from_the_first_service() {
        let picks: Vec<usize> = (0..12).filter(|&i| picked(i, 0.25)).collect();
        assert_eq!(picks, vec![0, 4, 8]);
        assert_eq!((0..1000).filter(|&i| picked(i, 0.05)).count(), 50);
        assert_eq!((0..10).filter(|&i| picked(i, 1.0)).count(), 10);
        assert_eq!((0..10).filter(|&i| picked(i, 0.0)).count(), 0);
    }

    #[test]
    fn shaped_services_have_their_kinds_policies_and_ports() {
        let mut sh = shape(8);
        sh.load_balancer_share = 0.5;
        sh.local_share = 1.0;
        let s = shaped(&sh).unwrap();
        let spec = |i: usize| s.services[i].spec.clone().unwrap();
        // 0, 4: NodePort; of the rest, 1, 3 (… by the LB share's spread).
        assert_eq!(spec(0).type_.as_deref(), Some("NodePort"));
        assert_eq!(spec(0).external_traffic_policy.as_deref(), Some("Local"));
        assert_eq!(spec(0).health_check_node_port, None);
        let lb: Vec<usize> = (0..8)
            .filter(|&i| spec(i).type_.as_deref() == Some("LoadBalancer"))
            .collect();
        assert!(!lb.is_empty());
        for i in lb {
            assert!(spec(i).health_check_node_port.unwrap() >= 32760);
            assert!(s.services[i].status.is_some());
        }
        // Node ports are unique.
        let mut ports: Vec<i32> = (0..8)
            .flat_map(|i| {
                let sp = spec(i);
                sp.ports.unwrap()[0]
                    .node_port
                    .into_iter()
                    .chain(sp.health_check_node_port)
            })
            .collect();
        let n = ports.len();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), n);
        let c = crate::compile::compile(&s, &Default::default()).unwrap();
        let f = c.flow("probe-1", "svc-2:80", None, 0).unwrap();
        let r = crate::trace::trace(&c.cluster, &[f]).unwrap();
        assert!(r.iter().all(|(_, x)| x[0].delivered_to().is_some()));
    }

    #[test]
    fn too_many_node_ports_is_an_error_not_a_quiet_downgrade() {
        let mut sh = shape(20_000);
        sh.node_port_share = 0.5;
        assert!(matches!(
            shaped(&sh),
            Err(ShapeError::NodePorts {
                needed: 10_000,
                capacity: 2768,
                ..
            })
        ));
    }
}
