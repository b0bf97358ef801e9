//! The proxier's view of Services and EndpointSlices, computed once per
//! cluster and shared by every node: kube-proxy's `ServicePort` and
//! `Endpoint` facts (`serviceport.go`, `endpointslicecache.go`), and the
//! per-node endpoint selection (`topology.go`'s `CategorizeEndpoints`).

use super::names;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::BTreeMap;
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
    /// Topology hints apply (annotation or trafficDistribution).
    pub topology_aware: bool,
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

    /// `UsesClusterEndpoints`.
    pub fn uses_cluster_endpoints(&self) -> bool {
        !self.internal_policy_local || (self.externally_accessible() && !self.external_policy_local)
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
    pub zone_hints: Vec<String>,
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
        for svc in services {
            model.add_service(svc, &endpoints);
        }
        model.ports.sort_by(|a, b| {
            (a.0.spn.as_str(), a.0.protocol.as_str())
                .cmp(&(b.0.spn.as_str(), b.0.protocol.as_str()))
        });
        model
    }

    fn add_service(
        &mut self,
        svc: &Service,
        endpoints: &BTreeMap<(String, String, String), Vec<RawEndpoint>>,
    ) {
        let ns = svc
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = svc.metadata.name.clone().unwrap_or_default();
        let full = format!("{ns}/{name}");
        let Some(spec) = &svc.spec else {
            return;
        };
        let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
        if ty == "ExternalName" {
            self.notes.push(ServiceNote {
                service: full,
                note: "ExternalName service: resolved by DNS, kube-proxy writes no rules".into(),
            });
            return;
        }
        let cluster_ip = match spec.cluster_ip.as_deref() {
            None | Some("") | Some("None") => {
                self.notes.push(ServiceNote {
                    service: full,
                    note: "headless service (clusterIP None): no virtual IP, kube-proxy writes no rules; clients reach pods directly".into(),
                });
                return;
            }
            Some(ip) => match ip.parse::<Ipv4Addr>() {
                Ok(a) => a,
                Err(_) => {
                    self.notes.push(ServiceNote {
                        service: full,
                        note: format!(
                            "clusterIP {ip} is not IPv4: skipped (kpsim models IPv4 only)"
                        ),
                    });
                    return;
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
        let annotations = svc.metadata.annotations.clone().unwrap_or_default();
        let topology_aware = matches!(
            annotations
                .get("service.kubernetes.io/topology-mode")
                .or_else(|| annotations.get("service.kubernetes.io/topology-aware-hints"))
                .map(String::as_str),
            Some("Auto") | Some("auto")
        ) || spec.traffic_distribution.as_deref() == Some("PreferClose");
        let health_check_node_port = if ty == "LoadBalancer" && external_policy_local {
            spec.health_check_node_port.unwrap_or(0).clamp(0, 65535) as u16
        } else {
            0
        };
        for p in spec.ports.iter().flatten() {
            let port_name = p.name.clone().unwrap_or_default();
            let protocol = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
            let spn = names::service_port_name(&ns, &name, &port_name);
            let info = ServicePortInfo {
                namespace: ns.clone(),
                name: name.clone(),
                port_name: port_name.clone(),
                protocol: protocol.clone(),
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
                topology_aware,
                svc_chain: names::svc_chain(&spn, &protocol),
                svl_chain: names::svl_chain(&spn, &protocol),
                ext_chain: names::ext_chain(&spn, &protocol),
                fw_chain: names::fw_chain(&spn, &protocol),
                spn: spn.clone(),
            };
            let key = (ns.clone(), name.clone(), port_name.clone());
            let mut eps: Vec<EndpointInfo> = endpoints
                .get(&key)
                .into_iter()
                .flatten()
                .filter(|e| e.protocol.eq_ignore_ascii_case(&protocol))
                .map(|e| EndpointInfo {
                    ip: e.ip,
                    port: e.port,
                    text: format!("{}:{}", e.ip, e.port),
                    node_name: e.node_name.clone(),
                    zone_hints: e.zone_hints.clone(),
                    ready: e.ready,
                    serving: e.serving,
                    terminating: e.terminating,
                    chain: names::sep_chain(&spn, &protocol, &format!("{}:{}", e.ip, e.port)),
                })
                .collect();
            // kube-proxy returns endpoints sorted by their "ip:port" string
            // (so "10.0.0.10:80" sorts before "10.0.0.9:80") and merges
            // duplicates across slices.
            eps.sort_by(|a, b| a.text.cmp(&b.text));
            eps.dedup_by(|a, b| a.text == b.text);
            self.ports.push((info, eps));
        }
    }
}

#[derive(Clone, Debug)]
struct RawEndpoint {
    ip: Ipv4Addr,
    port: u16,
    protocol: String,
    node_name: Option<String>,
    zone_hints: Vec<String>,
    ready: bool,
    serving: bool,
    terminating: bool,
}

/// EndpointSlices grouped by (namespace, service, port name), as
/// `EndpointSliceCache` does: IPv4 slices only, the service named by the
/// `kubernetes.io/service-name` label, conditions defaulted as kube-proxy
/// defaults them (ready and serving when unset, not terminating).
fn endpoints_by_port(
    slices: &[EndpointSlice],
) -> BTreeMap<(String, String, String), Vec<RawEndpoint>> {
    let mut out: BTreeMap<(String, String, String), Vec<RawEndpoint>> = BTreeMap::new();
    for s in slices {
        if s.address_type != "IPv4" {
            continue;
        }
        let ns = s
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let Some(svc) = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
        else {
            continue;
        };
        for p in s.ports.iter().flatten() {
            let Some(port) = p.port else {
                continue;
            };
            let port_name = p.name.clone().unwrap_or_default();
            let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            for e in &s.endpoints {
                let Some(ip) = e.addresses.first().and_then(|a| a.parse().ok()) else {
                    continue;
                };
                let c = e.conditions.clone().unwrap_or_default();
                out.entry((ns.clone(), svc.clone(), port_name.clone()))
                    .or_default()
                    .push(RawEndpoint {
                        ip,
                        port: port.clamp(0, 65535) as u16,
                        protocol: protocol.clone(),
                        node_name: e.node_name.clone(),
                        zone_hints: e
                            .hints
                            .as_ref()
                            .and_then(|h| h.for_zones.as_ref())
                            .map(|z| z.iter().map(|z| z.name.clone()).collect())
                            .unwrap_or_default(),
                        ready: c.ready.unwrap_or(true),
                        serving: c.serving.unwrap_or(true),
                        terminating: c.terminating.unwrap_or(false),
                    });
            }
        }
    }
    out
}

/// `CategorizeEndpoints` for one node: the endpoints the Cluster policy
/// chain uses, those the Local policy chain uses, every endpoint that
/// needs a `KUBE-SEP` chain, and whether the service has any usable
/// endpoint at all.
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
        let topo = can_use_topology(svc, eps, zone);
        cluster = eps
            .iter()
            .filter(|e| {
                e.ready && (!topo || zone.is_some_and(|z| e.zone_hints.iter().any(|h| h == z)))
            })
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

/// `canUseTopology`: hints are enabled for the service, the node has a
/// zone, every ready endpoint carries zone hints, and one is for our zone.
fn can_use_topology(svc: &ServicePortInfo, eps: &[EndpointInfo], zone: Option<&str>) -> bool {
    if !svc.topology_aware {
        return false;
    }
    let Some(zone) = zone.filter(|z| !z.is_empty()) else {
        return false;
    };
    let mut has_for_zone = false;
    for e in eps.iter().filter(|e| e.ready) {
        if e.zone_hints.is_empty() {
            return false;
        }
        has_for_zone |= e.zone_hints.iter().any(|h| h == zone);
    }
    has_for_zone
}
