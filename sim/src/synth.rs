//! Synthetic clusters for benchmarks and capacity questions: N services,
//! each with E ready endpoints spread over the nodes, built directly as
//! Kubernetes objects (no YAML), deterministic for given sizes.

use crate::network::Overlay;
use crate::scenario::*;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// A cluster of `nodes` nodes (10.244.i.0/24 each, up to 250), `services`
/// services (every fourth a NodePort), each with `endpoints` endpoints
/// placed round-robin on the nodes, and one external client.
pub fn cluster(services: usize, endpoints: usize, nodes: usize) -> Scenario {
    let nodes = nodes.clamp(1, 250);
    let node_defs: Vec<NodeDef> = (0..nodes)
        .map(|i| NodeDef {
            name: format!("node-{i}"),
            address: Ipv4Addr::new(192, 168, (i / 200) as u8, (i % 200 + 10) as u8),
            extra_addresses: Vec::new(),
            pod_cidr: format!("10.244.{i}.0/24").parse().expect("valid"),
            zone: None,
            labels: BTreeMap::new(),
            cpus: None,
        })
        .collect();
    let mut svcs = Vec::with_capacity(services);
    let mut slices = Vec::with_capacity(services);
    let mut next_ep: u32 = 0;
    // Endpoints become real pods (so traces are delivered) while their
    // addresses stay unique and the host count stays small.
    let mut endpoint_pods = Vec::new();
    let make_pods = services * endpoints <= 5000 && services * endpoints <= 250 * nodes;
    for s in 0..services {
        let name = format!("svc-{s}");
        let cip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + 10 + s as u32);
        let node_port = (s % 4 == 0 && s / 4 < 2700).then(|| 30000 + (s / 4) as i32);
        svcs.push(Service {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some(
                    if node_port.is_some() {
                        "NodePort"
                    } else {
                        "ClusterIP"
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
                ..Default::default()
            }),
            status: None,
        });
        let eps = (0..endpoints)
            .map(|_| {
                let k = next_ep;
                next_ep += 1;
                let node = k as usize % nodes;
                // Host part 2..=254 within the node's /24, wrapping.
                let host = 2 + (k as usize / nodes) % 250;
                if make_pods {
                    endpoint_pods.push(PodDef {
                        namespace: "default".into(),
                        name: format!("ep-{k}"),
                        node: format!("node-{node}"),
                        labels: BTreeMap::new(),
                        ip: Ipv4Addr::new(10, 244, node as u8, host as u8),
                        ready: true,
                        terminating: false,
                        host_network: false,
                        ports: Vec::new(),
                    });
                }
                Endpoint {
                    addresses: vec![format!("10.244.{node}.{host}")],
                    conditions: Some(EndpointConditions {
                        ready: Some(true),
                        serving: Some(true),
                        terminating: Some(false),
                    }),
                    node_name: Some(format!("node-{node}")),
                    ..Default::default()
                }
            })
            .collect();
        slices.push(EndpointSlice {
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
            endpoints: eps,
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: Some(8080),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
        });
    }
    Scenario {
        path: "synthetic".into(),
        name: format!("synthetic-{services}x{endpoints}x{nodes}"),
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
        nodes: node_defs,
        externals: vec![ExternalDef {
            name: "client".into(),
            address: Ipv4Addr::new(203, 0, 113, 7),
            routes: Vec::new(),
        }],
        pods: (0..nodes)
            .map(|i| PodDef {
                namespace: "default".into(),
                name: format!("probe-{i}"),
                node: format!("node-{i}"),
                labels: BTreeMap::new(),
                ip: Ipv4Addr::new(10, 244, i as u8, 254),
                ready: true,
                terminating: false,
                host_network: false,
                ports: Vec::new(),
            })
            .chain(endpoint_pods)
            .collect(),
        services: svcs,
        slices,
        checks: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
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
}
