//! The proxier's view of Services and EndpointSlices, computed once per
//! cluster and shared by every node: kube-proxy's `ServicePort` and
//! `Endpoint` facts (`serviceport.go`, `endpointslicecache.go`), and the
//! per-node endpoint selection (`topology.go`'s `CategorizeEndpoints`).

use super::names;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{EndpointHints, EndpointSlice};
use rayon::prelude::*;
use std::net::Ipv4Addr;

/// Why a service gets no rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceNote {
    pub service: String,
    pub note: String,
}

/// One service port, as kube-proxy's `servicePortInfo` holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePortInfo {
    pub namespace: String,
    pub name: String,
    pub port_name: String,
    /// `ns/name:port`.
    pub spn: String,
    /// Lower case: `tcp`, `udp`, `sctp`.
    pub protocol: String,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub node_port: u16,
    pub external_ips: Vec<Ipv4Addr>,
    pub lb_vips: Vec<Ipv4Addr>,
    pub lb_source_ranges: Vec<Ipv4Net>,
    pub external_policy_local: bool,
    pub internal_policy_local: bool,
    pub health_check_node_port: u16,
    /// `Some(timeout)` for `sessionAffinity: ClientIP`.
    pub affinity_timeout: Option<u32>,
    pub svc_chain: String,
    pub svl_chain: String,
    pub ext_chain: String,
    pub fw_chain: String,
}

impl ServicePortInfo {
    /// `ExternallyAccessible`: a NodePort, LB VIP or external IP exists.
    pub fn externally_accessible(&self) -> bool {
        self.node_port != 0 || !self.lb_vips.is_empty() || !self.external_ips.is_empty()
    }

    /// `UsesClusterEndpoints`: the internal policy is Cluster, or the
    /// service takes external traffic at all (even with a Local external
    /// policy, the cluster endpoints serve the short circuit of pod and
    /// host traffic).
    pub fn uses_cluster_endpoints(&self) -> bool {
        !self.internal_policy_local || self.externally_accessible()
    }

    /// `UsesLocalEndpoints`.
    pub fn uses_local_endpoints(&self) -> bool {
        self.internal_policy_local || (self.externally_accessible() && self.external_policy_local)
    }
}

/// One endpoint of a service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointInfo {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// `ip:port`, what kube-proxy sorts and hashes.
    pub text: String,
    pub node_name: Option<String>,
    /// `hints.forZones` names.
    pub zone_hints: Vec<String>,
    /// `hints.forNodes` names (PreferSameNode traffic distribution).
    pub node_hints: Vec<String>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub chain: String,
}

/// All service ports with their endpoints, in a deterministic order
/// (by service port name, then protocol).
#[derive(Clone, Debug, Default)]
pub struct ProxyModel {
    pub ports: Vec<(ServicePortInfo, Vec<EndpointInfo>)>,
    pub notes: Vec<ServiceNote>,
}

/// Default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;

impl ProxyModel {
    /// Build the model from API objects; what kube-proxy skips is noted.
    pub fn build(services: &[Service], slices: &[EndpointSlice]) -> ProxyModel {
        let mut model = ProxyModel::default();
        let endpoints = endpoints_by_port(slices);
        // Services are independent (chain names are hashes: the costly
        // part); gathered in service order.
        let per_service: Vec<Result<Vec<PortWithEndpoints>, ServiceNote>> = services
            .par_iter()
            .map(|svc| service_ports(svc, &endpoints))
            .collect();
        for ports in per_service {
            match ports {
                Ok(ports) => model.ports.extend(ports),
                Err(note) => model.notes.push(note),
            }
        }
        model.ports.par_sort_by(|a, b| {
            (a.0.spn.as_str(), a.0.protocol.as_str())
                .cmp(&(b.0.spn.as_str(), b.0.protocol.as_str()))
        });
        model
    }
}

/// A service port with its endpoints, as [`ProxyModel::ports`] holds it.
type PortWithEndpoints = (ServicePortInfo, Vec<EndpointInfo>);

/// (namespace, service, port name), borrowed from the slice.
type PortKey<'a> = (&'a str, &'a str, &'a str);

/// Endpoints by [`PortKey`], sorted by key (each key once), see
/// [`endpoints_by_port`]; looked up by borrowed names.
struct EndpointsByPort<'a>(Vec<(PortKey<'a>, Vec<RawEndpoint<'a>>)>);

impl<'a> EndpointsByPort<'a> {
    /// The endpoints of port `port_name` of service `namespace/name`.
    fn get(&self, namespace: &str, name: &str, port_name: &str) -> &[RawEndpoint<'a>] {
        self.0
            .binary_search_by(|(key, _)| key.cmp(&(namespace, name, port_name)))
            .map_or(&[], |i| &self.0[i].1)
    }
}

/// A service's ports with their endpoints; or why kube-proxy writes
/// nothing for it.
fn service_ports(
    svc: &Service,
    endpoints: &EndpointsByPort<'_>,
) -> Result<Vec<PortWithEndpoints>, ServiceNote> {
    let ns = svc
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = svc.metadata.name.clone().unwrap_or_default();
    let full = format!("{ns}/{name}");
    let Some(spec) = &svc.spec else {
        return Ok(Vec::new());
    };
    let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
    if ty == "ExternalName" {
        return Err(ServiceNote {
            service: full,
            note: "ExternalName service: resolved by DNS, kube-proxy writes no rules".into(),
        });
    }
    let cluster_ip = match spec.cluster_ip.as_deref() {
        None | Some("") | Some("None") => {
            return Err(ServiceNote {
                service: full,
                note: "headless service (clusterIP None): no virtual IP, kube-proxy writes no rules; clients reach pods directly".into(),
            });
        }
        Some(ip) => match ip.parse::<Ipv4Addr>() {
            Ok(a) => a,
            Err(_) => {
                return Err(ServiceNote {
                    service: full,
                    note: format!("clusterIP {ip} is not IPv4: skipped (kpsim models IPv4 only)"),
                });
            }
        },
    };
    let external_ips: Vec<Ipv4Addr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|s| s.parse().ok())
        .collect();
    let lb_vips: Vec<Ipv4Addr> = if ty == "LoadBalancer" {
        svc.status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            // ipMode Proxy: the LB proxies, traffic never arrives with
            // the VIP as destination, so kube-proxy skips it.
            .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
            .filter_map(|i| i.ip.as_deref()?.parse().ok())
            .collect()
    } else {
        Vec::new()
    };
    let lb_source_ranges: Vec<Ipv4Net> = spec
        .load_balancer_source_ranges
        .iter()
        .flatten()
        .filter_map(|s| s.trim().parse::<Ipv4Net>().ok().map(|n| n.trunc()))
        .collect();
    let node_port_type = ty == "NodePort" || ty == "LoadBalancer";
    let external_policy_local = (node_port_type || !external_ips.is_empty())
        && spec.external_traffic_policy.as_deref() == Some("Local");
    let internal_policy_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .map_or(DEFAULT_AFFINITY_TIMEOUT, |t| t.max(0) as u32)
    });
    let health_check_node_port = if ty == "LoadBalancer" && external_policy_local {
        spec.health_check_node_port.unwrap_or(0).clamp(0, 65535) as u16
    } else {
        0
    };
    let mut ports = Vec::new();
    for p in spec.ports.iter().flatten() {
        let port_name = p.name.clone().unwrap_or_default();
        let protocol = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
        let spn = names::service_port_name(&ns, &name, &port_name);
        let hash = names::PortHash::new(&spn, &protocol);
        let mut eps: Vec<EndpointInfo> = endpoints
            .get(&ns, &name, &port_name)
            .iter()
            .filter(|e| e.protocol.eq_ignore_ascii_case(&protocol))
            .map(|e| {
                let text = format!("{}:{}", e.ip, e.port);
                EndpointInfo {
                    ip: e.ip,
                    port: e.port,
                    chain: names::sep_chain(&spn, &protocol, &text),
                    text,
                    node_name: e.node_name.map(str::to_string),
                    zone_hints: e
                        .hints
                        .and_then(|h| h.for_zones.as_ref())
                        .map(|z| z.iter().map(|z| z.name.clone()).collect())
                        .unwrap_or_default(),
                    node_hints: e
                        .hints
                        .and_then(|h| h.for_nodes.as_ref())
                        .map(|n| n.iter().map(|n| n.name.clone()).collect())
                        .unwrap_or_default(),
                    ready: e.ready,
                    serving: e.serving,
                    terminating: e.terminating,
                }
            })
            .collect();
        // kube-proxy returns endpoints sorted by their "ip:port" string
        // (so "10.0.0.10:80" sorts before "10.0.0.9:80") and merges
        // duplicates across slices.
        eps.sort_by(|a, b| a.text.cmp(&b.text));
        eps.dedup_by(|a, b| a.text == b.text);
        let info = ServicePortInfo {
            namespace: ns.clone(),
            name: name.clone(),
            port_name,
            protocol,
            cluster_ip,
            port: p.port.clamp(0, 65535) as u16,
            node_port: if node_port_type {
                p.node_port.unwrap_or(0).clamp(0, 65535) as u16
            } else {
                0
            },
            external_ips: external_ips.clone(),
            lb_vips: lb_vips.clone(),
            lb_source_ranges: lb_source_ranges.clone(),
            external_policy_local,
            internal_policy_local,
            health_check_node_port,
            affinity_timeout,
            svc_chain: hash.svc(),
            svl_chain: hash.svl(),
            ext_chain: hash.ext(),
            fw_chain: hash.fw(),
            spn,
        };
        ports.push((info, eps));
    }
    Ok(ports)
}

/// An endpoint as its slice gives it, borrowed from the slice.
#[derive(Clone, Debug)]
struct RawEndpoint<'a> {
    ip: Ipv4Addr,
    port: u16,
    protocol: &'a str,
    node_name: Option<&'a str>,
    hints: Option<&'a EndpointHints>,
    ready: bool,
    serving: bool,
    terminating: bool,
}

/// EndpointSlices grouped by (namespace, service, port name), as
/// `EndpointSliceCache` does: IPv4 slices only, the service named by the
/// `kubernetes.io/service-name` label, conditions defaulted as kube-proxy
/// defaults them (ready and serving when unset, not terminating).
fn endpoints_by_port(slices: &[EndpointSlice]) -> EndpointsByPort<'_> {
    // Each slice's ports read in parallel, gathered in slice order; the
    // sort is stable, so a port's endpoints stay in slice order.
    let mut groups: Vec<(PortKey, Vec<RawEndpoint>)> =
        slices.par_iter().flat_map_iter(slice_endpoints).collect();
    groups.par_sort_by(|a, b| a.0.cmp(&b.0));
    let mut merged: Vec<(PortKey, Vec<RawEndpoint>)> = Vec::with_capacity(groups.len());
    for (key, eps) in groups {
        match merged.last_mut() {
            Some((last, all)) if *last == key => all.extend(eps),
            _ => merged.push((key, eps)),
        }
    }
    EndpointsByPort(merged)
}

/// One slice's endpoints per (namespace, service, port name), in the
/// order of its ports.
fn slice_endpoints(s: &EndpointSlice) -> Vec<(PortKey<'_>, Vec<RawEndpoint<'_>>)> {
    let mut out = Vec::new();
    if s.address_type != "IPv4" {
        return out;
    }
    let ns = s.metadata.namespace.as_deref().unwrap_or("default");
    let Some(svc) = s
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("kubernetes.io/service-name"))
    else {
        return out;
    };
    for p in s.ports.iter().flatten() {
        let Some(port) = p.port else {
            continue;
        };
        let port_name = p.name.as_deref().unwrap_or_default();
        let protocol = p.protocol.as_deref().unwrap_or("TCP");
        let eps: Vec<RawEndpoint> = s
            .endpoints
            .iter()
            .filter_map(|e| {
                let ip = e.addresses.first()?.parse().ok()?;
                let c = e.conditions.as_ref();
                Some(RawEndpoint {
                    ip,
                    port: port.clamp(0, 65535) as u16,
                    protocol,
                    node_name: e.node_name.as_deref(),
                    hints: e.hints.as_ref(),
                    ready: c.and_then(|c| c.ready).unwrap_or(true),
                    serving: c.and_then(|c| c.serving).unwrap_or(true),
                    terminating: c.and_then(|c| c.terminating).unwrap_or(false),
                })
            })
            .collect();
        if !eps.is_empty() {
            out.push(((ns, svc.as_str(), port_name), eps));
        }
    }
    out
}

/// `CategorizeEndpoints` for one node: the endpoints the Cluster policy
/// chain uses, those the Local policy chain uses, every endpoint that
/// needs a `KUBE-SEP` chain, and whether the service has any usable
/// endpoint at all.
#[derive(Clone, Debug)]
pub struct Categorized<'a> {
    pub cluster: Vec<&'a EndpointInfo>,
    pub local: Vec<&'a EndpointInfo>,
    pub reachable: Vec<&'a EndpointInfo>,
    pub has_any: bool,
}

pub fn categorize<'a>(
    svc: &ServicePortInfo,
    eps: &'a [EndpointInfo],
    node: &str,
    zone: Option<&str>,
) -> Categorized<'a> {
    let is_local = |e: &EndpointInfo| e.node_name.as_deref() == Some(node);
    let mut cluster = Vec::new();
    let mut has_any = false;
    if svc.uses_cluster_endpoints() {
        let topo = topology_mode(eps, node, zone);
        cluster = eps
            .iter()
            .filter(|e| e.ready && topo.admits(e, node, zone))
            .collect();
        if cluster.is_empty() {
            cluster = eps.iter().filter(|e| e.serving && e.terminating).collect();
        }
        has_any = !cluster.is_empty();
    }
    if !svc.uses_local_endpoints() {
        return Categorized {
            reachable: cluster.clone(),
            cluster,
            local: Vec::new(),
            has_any,
        };
    }
    let (mut local_ready, mut local_term) = (false, false);
    for e in eps {
        if e.ready {
            has_any = true;
            local_ready |= is_local(e);
        } else if e.serving && e.terminating {
            has_any = true;
            local_term |= is_local(e);
        }
    }
    let local: Vec<&EndpointInfo> = if local_ready {
        eps.iter().filter(|e| is_local(e) && e.ready).collect()
    } else if local_term {
        eps.iter()
            .filter(|e| is_local(e) && e.serving && e.terminating)
            .collect()
    } else {
        Vec::new()
    };
    if !svc.uses_cluster_endpoints() {
        return Categorized {
            reachable: local.clone(),
            cluster,
            local,
            has_any,
        };
    }
    let reachable = eps
        .iter()
        .filter(|e| {
            cluster.iter().any(|c| c.text == e.text) || local.iter().any(|l| l.text == e.text)
        })
        .collect();
    Categorized {
        cluster,
        local,
        reachable,
        has_any,
    }
}

/// Which endpoints topology-aware routing keeps (`topologyModeFromHints`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TopologyMode {
    /// No hints in use: every ready endpoint.
    None,
    /// Endpoints hinted for this node (`hints.forNodes`).
    SameNode,
    /// Endpoints hinted for this node's zone (`hints.forZones`).
    SameZone,
}

impl TopologyMode {
    fn admits(self, e: &EndpointInfo, node: &str, zone: Option<&str>) -> bool {
        match self {
            TopologyMode::None => true,
            TopologyMode::SameNode => e.node_hints.iter().any(|h| h == node),
            TopologyMode::SameZone => zone.is_some_and(|z| e.zone_hints.iter().any(|h| h == z)),
        }
    }
}

/// kube-proxy v1.34 decides from the hints alone (the EndpointSlice
/// controller writes them only for services that asked, by annotation or
/// `trafficDistribution`): node hints when every ready endpoint has one and
/// one names this node (PreferSameTrafficDistribution, on by default in
/// 1.34), else zone hints when every ready endpoint has one and one names
/// this node's zone, else none.
fn topology_mode(eps: &[EndpointInfo], node: &str, zone: Option<&str>) -> TopologyMode {
    let ready: Vec<&EndpointInfo> = eps.iter().filter(|e| e.ready).collect();
    let all_have = |f: fn(&EndpointInfo) -> &Vec<String>| ready.iter().all(|e| !f(e).is_empty());
    if all_have(|e| &e.node_hints) && ready.iter().any(|e| e.node_hints.iter().any(|h| h == node)) {
        return TopologyMode::SameNode;
    }
    let zone = zone.unwrap_or("");
    if all_have(|e| &e.zone_hints) && ready.iter().any(|e| e.zone_hints.iter().any(|h| h == zone)) {
        return TopologyMode::SameZone;
    }
    TopologyMode::None
}

#[cfg(test)]
mod topology_tests {
    use super::*;

    fn ep(ip: u8, node: &str, zones: &[&str], nodes: &[&str]) -> EndpointInfo {
        EndpointInfo {
            ip: Ipv4Addr::new(10, 0, 0, ip),
            port: 80,
            text: format!("10.0.0.{ip}:80"),
            node_name: Some(node.into()),
            zone_hints: zones.iter().map(|z| z.to_string()).collect(),
            node_hints: nodes.iter().map(|n| n.to_string()).collect(),
            ready: true,
            serving: true,
            terminating: false,
            chain: String::new(),
        }
    }

    #[test]
    fn zone_hints_apply_only_when_every_ready_endpoint_has_one() {
        let eps = [ep(1, "a", &["za"], &[]), ep(2, "b", &["zb"], &[])];
        assert_eq!(topology_mode(&eps, "a", Some("za")), TopologyMode::SameZone);
        // No endpoint for our zone: hints are ignored.
        assert_eq!(topology_mode(&eps, "c", Some("zc")), TopologyMode::None);
        // A node without a zone ignores them too.
        assert_eq!(topology_mode(&eps, "c", None), TopologyMode::None);
        let partial = [ep(1, "a", &["za"], &[]), ep(2, "b", &[], &[])];
        assert_eq!(topology_mode(&partial, "a", Some("za")), TopologyMode::None);
        // A not-ready endpoint without hints does not count.
        let mut not_ready = ep(3, "b", &[], &[]);
        not_ready.ready = false;
        let eps = [ep(1, "a", &["za"], &[]), not_ready];
        assert_eq!(topology_mode(&eps, "a", Some("za")), TopologyMode::SameZone);
    }

    #[test]
    fn node_hints_come_first() {
        let eps = [ep(1, "a", &["za"], &["a"]), ep(2, "b", &["za"], &["b"])];
        let mode = topology_mode(&eps, "a", Some("za"));
        assert_eq!(mode, TopologyMode::SameNode);
        assert!(mode.admits(&eps[0], "a", Some("za")));
        assert!(!mode.admits(&eps[1], "a", Some("za")));
        // A node no endpoint is hinted for falls back to zone hints.
        assert_eq!(topology_mode(&eps, "c", Some("za")), TopologyMode::SameZone);
    }
}
