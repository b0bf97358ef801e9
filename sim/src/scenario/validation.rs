//! The API server's validation of the fields kpsim reads
//! (`pkg/apis/core/validation`, `pkg/apis/discovery/validation` of
//! Kubernetes v1.34), with its messages (`spec.type: Unsupported value:
//! "Nodeport": supported values: ...`), and the scenario's own consistency
//! rules for its networks. Each problem is placed at its field.
//!
//! Values are checked exactly as written: `Nodeport`, `local` or `tcp` are
//! not the enum values the API server accepts, so they are errors here too,
//! never silently read as something else.

use super::yaml::FieldPath;
use super::{ExternalDef, LbDelivery, LoadBalancerSpec, NodeDef, Origin, Problems};
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Node, Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeSet;
use std::fmt::Display;
use std::net::IpAddr;

pub const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const TRAFFIC_POLICIES: &[&str] = &["Cluster", "Local"];
const AFFINITIES: &[&str] = &["ClientIP", "None"];
const TRAFFIC_DISTRIBUTIONS: &[&str] = &["PreferClose", "PreferSameNode", "PreferSameZone"];
const ADDRESS_TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];
const NODE_ADDRESS_TYPES: &[&str] = &[
    "ExternalDNS",
    "ExternalIP",
    "Hostname",
    "InternalDNS",
    "InternalIP",
];
const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";

/// Field errors of one object, in the API server's words.
struct Report<'a> {
    p: &'a mut Problems,
    origin: &'a Origin,
    /// `Service web`.
    object: String,
}

impl Report<'_> {
    fn error(&mut self, at: &FieldPath, what: String) {
        let message = format!("{}: {at}: {what}", self.object);
        self.p.field(self.origin, at, message);
    }

    fn invalid(&mut self, at: &FieldPath, value: impl Display, detail: &str) {
        self.error(at, format!("Invalid value: {value}: {detail}"));
    }

    fn required(&mut self, at: &FieldPath) {
        self.error(at, "Required value".into());
    }

    fn duplicate(&mut self, at: &FieldPath, value: impl Display) {
        self.error(at, format!("Duplicate value: {value}"));
    }

    fn forbidden(&mut self, at: &FieldPath, detail: &str) {
        self.error(at, format!("Forbidden: {detail}"));
    }

    /// A value outside an enum, compared exactly (case matters).
    fn one_of(&mut self, at: &FieldPath, value: &str, supported: &[&str]) {
        if !supported.contains(&value) {
            let list = supported
                .iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            self.error(
                at,
                format!("Unsupported value: {value:?}: supported values: {list}"),
            );
        }
    }

    fn port(&mut self, at: &FieldPath, port: i32) {
        if !(1..=65535).contains(&port) {
            self.invalid(at, port, PORT_RANGE);
        }
    }

    fn ip(&mut self, at: &FieldPath, value: &str) {
        if value.parse::<IpAddr>().is_err() {
            self.invalid(
                at,
                format!("{value:?}"),
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            );
        }
    }

    fn name(&mut self, name: Option<&str>) {
        if name.is_none_or(str::is_empty) {
            self.error(
                &root().key("metadata").key("name"),
                "Required value: name or generateName is required".into(),
            );
        }
    }
}

fn root() -> FieldPath {
    FieldPath::default()
}

fn report<'a>(
    p: &'a mut Problems,
    origin: &'a Origin,
    kind: &str,
    name: Option<&str>,
) -> Report<'a> {
    Report {
        p,
        origin,
        object: format!("{kind} {}", name.unwrap_or("?")),
    }
}

/// A Service's spec as `ValidateService` checks it, for the fields kube-proxy
/// reads.
pub(crate) fn service(s: &Service, origin: &Origin, p: &mut Problems) {
    let mut r = report(p, origin, "Service", s.metadata.name.as_deref());
    r.name(s.metadata.name.as_deref());
    let spec_at = root().key("spec");
    let Some(spec) = &s.spec else {
        r.required(&spec_at);
        return;
    };
    let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
    if let Some(t) = &spec.type_ {
        r.one_of(&spec_at.key("type"), t, SERVICE_TYPES);
    }
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let ports = spec.ports.as_deref().unwrap_or_default();
    if ports.is_empty() && !headless && ty != "ExternalName" {
        r.required(&spec_at.key("ports"));
    }
    if ty == "ExternalName" && spec.external_name.as_deref().is_none_or(str::is_empty) {
        r.required(&spec_at.key("externalName"));
    }
    service_ports(&mut r, ports, ty);
    let accessible = matches!(ty, "NodePort" | "LoadBalancer")
        || (ty == "ClusterIP" && spec.external_ips.as_ref().is_some_and(|x| !x.is_empty()));
    if let Some(etp) = &spec.external_traffic_policy {
        let at = spec_at.key("externalTrafficPolicy");
        r.one_of(&at, etp, TRAFFIC_POLICIES);
        // (Under a misspelt type, the type's own error says enough.)
        if !accessible && SERVICE_TYPES.contains(&ty) {
            r.invalid(
                &at,
                format!("{etp:?}"),
                "may only be set for externally-accessible services",
            );
        }
    }
    if let Some(itp) = &spec.internal_traffic_policy {
        r.one_of(&spec_at.key("internalTrafficPolicy"), itp, TRAFFIC_POLICIES);
    }
    if let Some(a) = &spec.session_affinity {
        r.one_of(&spec_at.key("sessionAffinity"), a, AFFINITIES);
    }
    if let Some(t) = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds)
    {
        if !(1..=86400).contains(&t) {
            r.invalid(
                &spec_at
                    .key("sessionAffinityConfig")
                    .key("clientIP")
                    .key("timeoutSeconds"),
                t,
                "must be greater than 0 and less than 86400",
            );
        }
    }
    if let Some(td) = &spec.traffic_distribution {
        r.one_of(
            &spec_at.key("trafficDistribution"),
            td,
            TRAFFIC_DISTRIBUTIONS,
        );
    }
    if let Some(hc) = spec.health_check_node_port.filter(|p| *p != 0) {
        let at = spec_at.key("healthCheckNodePort");
        r.port(&at, hc);
        let wanted =
            ty == "LoadBalancer" && spec.external_traffic_policy.as_deref() == Some("Local");
        if !wanted {
            r.invalid(
                &at,
                hc,
                "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
            );
        }
    }
    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        r.ip(&spec_at.key("externalIPs").index(i), ip);
    }
    for (i, range) in spec
        .load_balancer_source_ranges
        .iter()
        .flatten()
        .enumerate()
    {
        let at = spec_at.key("loadBalancerSourceRanges").index(i);
        if range.trim().parse::<ipnet::IpNet>().is_err() {
            r.invalid(
                &at,
                format!("{range:?}"),
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            );
        }
    }
    let ingress = s
        .status
        .as_ref()
        .and_then(|st| st.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    for (i, ing) in ingress.into_iter().flatten().enumerate() {
        if let Some(ip) = &ing.ip {
            r.ip(
                &root()
                    .key("status")
                    .key("loadBalancer")
                    .key("ingress")
                    .index(i)
                    .key("ip"),
                ip,
            );
        }
    }
}

fn service_ports(r: &mut Report, ports: &[ServicePort], ty: &str) {
    let mut names = BTreeSet::new();
    let mut pairs = BTreeSet::new();
    let mut node_ports = BTreeSet::new();
    for (i, sp) in ports.iter().enumerate() {
        let at = root().key("spec").key("ports").index(i);
        match sp.name.as_deref().filter(|n| !n.is_empty()) {
            None if ports.len() > 1 => r.required(&at.key("name")),
            Some(n) if !names.insert(n) => r.duplicate(&at.key("name"), format!("{n:?}")),
            _ => {}
        }
        r.port(&at.key("port"), sp.port);
        let proto = sp.protocol.as_deref().unwrap_or("TCP");
        r.one_of(&at.key("protocol"), proto, PROTOCOLS);
        if !pairs.insert((sp.port, proto)) {
            r.duplicate(
                &at,
                format!("{{\"protocol\":{proto:?},\"port\":{}}}", sp.port),
            );
        }
        match &sp.target_port {
            // 0 is defaulted to the port, as the API server does.
            Some(IntOrString::Int(n)) if *n != 0 => r.port(&at.key("targetPort"), *n),
            Some(IntOrString::String(name)) => {
                if let Err(why) = port_name(name) {
                    r.invalid(&at.key("targetPort"), format!("{name:?}"), why);
                }
            }
            _ => {}
        }
        if let Some(np) = sp.node_port.filter(|n| *n != 0) {
            let np_at = at.key("nodePort");
            if matches!(ty, "ClusterIP" | "ExternalName") {
                r.forbidden(&np_at, &format!("may not be used when `type` is '{ty}'"));
            }
            r.port(&np_at, np);
            if !node_ports.insert((np, proto)) {
                r.duplicate(&np_at, format!("\"{np}/{proto}\""));
            }
        }
    }
}

/// An IANA service name (a named port): at most 15 characters, lower-case
/// letters, digits and single hyphens inside, at least one letter.
fn port_name(s: &str) -> Result<(), &'static str> {
    if s.is_empty() || s.len() > 15 {
        return Err("must be no more than 15 characters");
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
    }
    if s.contains("--") {
        return Err("must not contain consecutive hyphens");
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("must not begin or end with a hyphen");
    }
    if !s.chars().any(|c| c.is_ascii_lowercase()) {
        return Err("must contain at least one letter (a-z)");
    }
    Ok(())
}

/// `ValidateEndpointSlice` for what kube-proxy reads.
pub(crate) fn endpoint_slice(s: &EndpointSlice, origin: &Origin, p: &mut Problems) {
    let mut r = report(p, origin, "EndpointSlice", s.metadata.name.as_deref());
    r.name(s.metadata.name.as_deref());
    let ipv4 = s.address_type == "IPv4";
    r.one_of(&root().key("addressType"), &s.address_type, ADDRESS_TYPES);
    for (i, e) in s.endpoints.iter().enumerate() {
        let at = root().key("endpoints").index(i).key("addresses");
        if e.addresses.is_empty() {
            r.error(
                &at,
                "Required value: must contain at least 1 address".into(),
            );
        }
        if e.addresses.len() > 100 {
            r.error(
                &at,
                format!(
                    "Too many: {}: must have at most 100 items",
                    e.addresses.len()
                ),
            );
        }
        for (j, a) in e.addresses.iter().enumerate() {
            if ipv4 && a.parse::<std::net::Ipv4Addr>().is_err() {
                r.invalid(
                    &at.index(j),
                    format!("{a:?}"),
                    "must be a valid IPv4 address",
                );
            }
        }
    }
    let mut names = BTreeSet::new();
    for (i, port) in s.ports.iter().flatten().enumerate() {
        let at = root().key("ports").index(i);
        if let Some(n) = port.port {
            r.port(&at.key("port"), n);
        }
        if let Some(proto) = &port.protocol {
            r.one_of(&at.key("protocol"), proto, PROTOCOLS);
        }
        let name = port.name.as_deref().unwrap_or("");
        if !names.insert(name) {
            r.duplicate(&at.key("name"), format!("{name:?}"));
        }
    }
}

/// A Pod's container ports.
pub(crate) fn pod(pod: &Pod, origin: &Origin, p: &mut Problems) {
    let mut r = report(p, origin, "Pod", pod.metadata.name.as_deref());
    r.name(pod.metadata.name.as_deref());
    let Some(spec) = &pod.spec else { return };
    for (i, c) in spec.containers.iter().enumerate() {
        let mut names = BTreeSet::new();
        for (j, cp) in c.ports.iter().flatten().enumerate() {
            let at = root()
                .key("spec")
                .key("containers")
                .index(i)
                .key("ports")
                .index(j);
            r.port(&at.key("containerPort"), cp.container_port);
            if let Some(proto) = &cp.protocol {
                r.one_of(&at.key("protocol"), proto, PROTOCOLS);
            }
            if let Some(hp) = cp.host_port.filter(|h| *h != 0) {
                r.port(&at.key("hostPort"), hp);
            }
            if let Some(n) = &cp.name {
                if let Err(why) = port_name(n) {
                    r.invalid(&at.key("name"), format!("{n:?}"), why);
                }
                if !names.insert(n.as_str()) {
                    r.duplicate(&at.key("name"), format!("{n:?}"));
                }
            }
        }
    }
}

/// A Node's pod CIDR and address types.
pub(crate) fn node(node: &Node, origin: &Origin, p: &mut Problems) {
    let mut r = report(p, origin, "Node", node.metadata.name.as_deref());
    r.name(node.metadata.name.as_deref());
    if let Some(cidr) = node.spec.as_ref().and_then(|s| s.pod_cidr.as_ref()) {
        if cidr.parse::<ipnet::IpNet>().is_err() {
            r.invalid(
                &root().key("spec").key("podCIDR"),
                format!("{cidr:?}"),
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            );
        }
    }
    let addresses = node.status.as_ref().and_then(|s| s.addresses.as_ref());
    for (i, a) in addresses.into_iter().flatten().enumerate() {
        let at = root().key("status").key("addresses").index(i);
        r.one_of(&at.key("type"), &a.type_, NODE_ADDRESS_TYPES);
        if matches!(a.type_.as_str(), "InternalIP" | "ExternalIP") {
            r.ip(&at.key("address"), &a.address);
        }
    }
}

/// A container port protocol of the scenario's own `pods:` list, held to
/// the same enum.
pub(crate) fn protocol(value: &str) -> Result<(), String> {
    if PROTOCOLS.contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "protocol: Unsupported value: {value:?}: supported values: \"SCTP\", \"TCP\", \"UDP\""
        ))
    }
}

/// The scenario's networks must not overlap: pod addresses (clusterCIDR),
/// service addresses (serviceCIDR) and host addresses (nodes, externals,
/// the load balancer) would otherwise be ambiguous, and kube-proxy's rules
/// (which tell pod traffic by clusterCIDR) would misjudge them.
pub(crate) fn networks(
    p: &mut Problems,
    cluster: Ipv4Net,
    service: (Ipv4Net, &Origin),
    nodes: &[(&NodeDef, &Origin)],
    externals: &[(&ExternalDef, &Origin)],
    lb: &LoadBalancerSpec,
) {
    let cc = cluster;
    let (sc, sc_at) = service;
    if overlap(cc, sc) {
        let how = if sc.contains(&cc) {
            "contains"
        } else if cc.contains(&sc) {
            "is inside"
        } else {
            "overlaps"
        };
        p.at_origin(
            sc_at,
            format!("serviceCIDR {sc} {how} clusterCIDR {cc}: service and pod addresses must not overlap"),
        );
    }
    let hosts: Vec<(String, std::net::Ipv4Addr, &Origin)> = nodes
        .iter()
        .map(|(n, o)| (format!("node {}", n.name), n.address, *o))
        .chain(
            externals
                .iter()
                .map(|(e, o)| (format!("external {}", e.name), e.address, *o)),
        )
        .collect();
    for (who, addr, at) in &hosts {
        for (net, what) in [(cc, "clusterCIDR"), (sc, "serviceCIDR")] {
            if net.contains(addr) {
                p.at_origin(
                    at,
                    format!("address {addr} of {who} is inside {what} {net}: host addresses must be outside the pod and service networks"),
                );
            }
        }
        if lb.delivery == LbDelivery::NodePort && *addr == lb.address {
            p.at_origin(
                at,
                format!("address {addr} of {who} is the load balancer's own address (cluster.loadBalancer.address)"),
            );
        }
    }
}

/// A pod's address must be a host address of its node's podCIDR that the
/// node does not hold itself (`cni0` has the first one, `flannel.1` the
/// network address).
pub(crate) fn pod_address(ip: std::net::Ipv4Addr, node: &NodeDef) -> Result<(), String> {
    let net = node.pod_cidr;
    if !net.contains(&ip) {
        return Err(format!(
            "ip {ip} is outside its node {}'s podCIDR {net}",
            node.name
        ));
    }
    if ip == crate::network::bridge_address(&net) {
        return Err(format!(
            "ip {ip} is node {}'s own cni0 address (the first of its podCIDR {net})",
            node.name
        ));
    }
    // A /31 or /32 has no network or broadcast address (RFC 3021).
    if net.prefix_len() < 31 && (ip == net.network() || ip == net.broadcast()) {
        return Err(format!(
            "ip {ip} is the network or broadcast address of node {}'s podCIDR {net}",
            node.name
        ));
    }
    Ok(())
}

fn overlap(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names_follow_iana() {
        assert!(port_name("http").is_ok());
        assert!(port_name("http-alt2").is_ok());
        assert!(port_name("HTTP").is_err());
        assert!(port_name("a--b").is_err());
        assert!(port_name("8080").is_err());
        assert!(port_name("sixteen-letters1").is_err());
    }

    #[test]
    fn overlap_is_symmetric() {
        let a: Ipv4Net = "10.0.0.0/8".parse().unwrap();
        let b: Ipv4Net = "10.96.0.0/12".parse().unwrap();
        let c: Ipv4Net = "192.168.0.0/16".parse().unwrap();
        assert!(overlap(a, b) && overlap(b, a));
        assert!(!overlap(a, c));
    }
}
