//! Where a flow goes, as a user names it (`--to`, a check's `to:`), and
//! how the scenario turns that into an address, a port and a protocol.
//!
//! ```text
//! NAME:PORT[/PROTO]                        a pod, node, external or Service by name
//! IP:PORT[/PROTO]                          an address
//! service/NS/NAME:PORT[/PROTO]             the Service's cluster IP
//! nodeport/NS/NAME:PORT@NODE[/PROTO]       the Service's node port on NODE
//! loadbalancer/NS/NAME:PORT[/PROTO]        the Service's load balancer address
//! ```
//!
//! PORT is a number or, for a Service or a pod, a port's name
//! (`service/shop/web:http`). A Service target must name a port the
//! Service has: the port is looked up by name or number, and a node port
//! or load balancer target reaches the Service where the cluster gave it
//! one. Without `/PROTO` the protocol is the port's own (TCP when the
//! Service serves the number over TCP and another protocol); an explicit
//! `/PROTO` is used as written, so `service/kube-system/dns:53/tcp` can
//! ask what happens to TCP sent to a UDP-only port.

use super::{ExternalDef, NodeDef, PodDef};
use crate::wire;
use k8s_openapi::api::core::v1::{Service, ServicePort};
use std::net::Ipv4Addr;

/// A port as a target names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortRef {
    Number(u16),
    /// A Service port's or a container port's `name`.
    Name(String),
}

impl std::fmt::Display for PortRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(n) => f.write_str(n),
        }
    }
}

/// Which of a Service's addresses a target means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    ClusterIp,
    /// The node port on this node's address.
    NodePort {
        node: String,
    },
    /// The first load balancer ingress address.
    LoadBalancer,
}

/// `to:` of a check or `--to` of a trace: where the flow goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlowTarget {
    /// A pod, node, external or service by name (`NAME:PORT`).
    Named {
        name: String,
        port: PortRef,
        proto: Option<u8>,
    },
    /// A literal address.
    Addr {
        addr: Ipv4Addr,
        port: u16,
        proto: Option<u8>,
    },
    /// `service/`, `nodeport/` or `loadbalancer/NS/NAME:PORT`.
    Service {
        namespace: String,
        name: String,
        port: PortRef,
        entry: Entry,
        proto: Option<u8>,
    },
}

const SYNTAX: &str = "NAME:PORT, IP:PORT, service/NS/NAME:PORT, nodeport/NS/NAME:PORT@NODE or loadbalancer/NS/NAME:PORT, each optionally followed by /tcp, /udp or /sctp";

impl FlowTarget {
    /// Read a target as written (see the module documentation).
    pub fn parse(s: &str) -> Result<FlowTarget, String> {
        let (rest, proto) = match s.rsplit_once('/') {
            Some((r, p)) if wire::proto_number(p).is_some() && p != "icmp" => {
                (r, wire::proto_number(p))
            }
            _ => (s, None),
        };
        let (kind, rest) = match rest.split_once('/') {
            Some((k @ ("service" | "nodeport" | "loadbalancer"), r)) => (Some(k), r),
            _ => (None, rest),
        };
        let (rest, node) = match (kind, rest.rsplit_once('@')) {
            (Some("nodeport"), Some((r, n))) if !n.is_empty() => (r, Some(n.to_string())),
            (Some("nodeport"), _) => {
                return Err(format!(
                    "expected nodeport/NAMESPACE/NAME:PORT@NODE, got {s:?} (which node's port?)"
                ))
            }
            _ => (rest, None),
        };
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| format!("expected {SYNTAX}; got {s:?}"))?;
        let port = port_ref(port, s)?;
        let Some(kind) = kind else {
            if host.is_empty() {
                return Err(format!("missing host in {s:?}"));
            }
            return Ok(match host.parse::<Ipv4Addr>() {
                Ok(addr) => match port {
                    PortRef::Number(port) => FlowTarget::Addr { addr, port, proto },
                    PortRef::Name(n) => {
                        return Err(format!(
                            "{s:?}: an address takes a port number, not the name {n:?}"
                        ))
                    }
                },
                Err(_) => FlowTarget::Named {
                    name: host.into(),
                    port,
                    proto,
                },
            });
        };
        let (namespace, name) = host
            .split_once('/')
            .filter(|(ns, n)| !ns.is_empty() && !n.is_empty() && !n.contains('/'))
            .ok_or_else(|| format!("expected {kind}/NAMESPACE/NAME:PORT, got {s:?}"))?;
        let entry = match (kind, node) {
            ("nodeport", Some(node)) => Entry::NodePort { node },
            ("loadbalancer", _) => Entry::LoadBalancer,
            _ => Entry::ClusterIp,
        };
        Ok(FlowTarget::Service {
            namespace: namespace.into(),
            name: name.into(),
            port,
            entry,
            proto,
        })
    }
}

fn port_ref(port: &str, whole: &str) -> Result<PortRef, String> {
    if port.starts_with(|c: char| c.is_ascii_digit()) {
        return port
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .map(PortRef::Number)
            .ok_or_else(|| {
                format!("bad port {port:?} in {whole:?} (expected 1-65535 or a port name)")
            });
    }
    // An IANA_SVC_NAME, as Kubernetes port names are.
    let valid = !port.is_empty()
        && port.len() <= 15
        && port
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(PortRef::Name(port.into()))
    } else {
        Err(format!(
            "bad port {port:?} in {whole:?} (expected 1-65535 or a port name)"
        ))
    }
}

/// The hosts and Services a target can name.
pub struct Scope<'a> {
    pub nodes: &'a [NodeDef],
    pub externals: &'a [ExternalDef],
    pub pods: &'a [PodDef],
    pub services: &'a [Service],
}

/// Where a target leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub proto: u8,
}

impl Scope<'_> {
    /// The address, port and protocol a target means, or why it means
    /// nothing in this scenario.
    pub fn resolve(&self, t: &FlowTarget) -> Result<Resolved, String> {
        match t {
            FlowTarget::Addr { addr, port, proto } => Ok(Resolved {
                addr: *addr,
                port: *port,
                proto: proto.unwrap_or(wire::PROTO_TCP),
            }),
            FlowTarget::Named { name, port, proto } => self.named(name, port, *proto),
            FlowTarget::Service {
                namespace,
                name,
                port,
                entry,
                proto,
            } => {
                let svc = self
                    .services
                    .iter()
                    .find(|s| {
                        s.metadata.namespace.as_deref().unwrap_or("default") == namespace
                            && s.metadata.name.as_deref() == Some(name.as_str())
                    })
                    .ok_or_else(|| format!("no service {namespace}/{name}"))?;
                self.service(svc, port, entry, *proto)
            }
        }
    }

    fn named(&self, name: &str, port: &PortRef, proto: Option<u8>) -> Result<Resolved, String> {
        let number = |what: &str, addr: Ipv4Addr| {
            match port {
            PortRef::Number(p) => Ok(Resolved {
                addr,
                port: *p,
                proto: proto.unwrap_or(wire::PROTO_TCP),
            }),
            PortRef::Name(n) => Err(format!(
                "{name} is {what}: it has no port named {n:?} (only Services and pods name their ports)"
            )),
        }
        };
        if let Some(p) = self.pods.iter().find(|p| p.name == name) {
            return pod_port(p, port, proto);
        }
        if let Some(n) = self.nodes.iter().find(|n| n.name == name) {
            return number("a node", n.address);
        }
        if let Some(e) = self.externals.iter().find(|e| e.name == name) {
            return number("an external host", e.address);
        }
        if let Some(svc) = self
            .services
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
        {
            return self.service(svc, port, &Entry::ClusterIp, proto);
        }
        Err(format!(
            "{name:?} is not a pod, node, external or service of this scenario"
        ))
    }

    fn service(
        &self,
        svc: &Service,
        port: &PortRef,
        entry: &Entry,
        proto: Option<u8>,
    ) -> Result<Resolved, String> {
        let label = service_name(svc);
        let spec = svc.spec.as_ref();
        let sp = service_port(svc, port, proto)?;
        let proto = proto.unwrap_or_else(|| port_proto(sp.protocol.as_deref()));
        match entry {
            Entry::ClusterIp => {
                let addr = spec
                    .and_then(|s| s.cluster_ip.as_deref())
                    .and_then(|ip| ip.parse().ok())
                    .ok_or_else(|| {
                        format!("service {label} has no cluster IP (headless or ExternalName)")
                    })?;
                Ok(Resolved {
                    addr,
                    port: port_number(sp.port),
                    proto,
                })
            }
            Entry::NodePort { node } => {
                let n = self.nodes.iter().find(|n| &n.name == node).ok_or_else(|| {
                    format!(
                        "no node {node:?} (nodes: {})",
                        self.nodes
                            .iter()
                            .map(|n| n.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?;
                let np = sp.node_port.filter(|p| *p > 0).ok_or_else(|| {
                    format!(
                        "service {label} port {} has no node port (type {})",
                        port_label(sp),
                        spec.and_then(|s| s.type_.as_deref()).unwrap_or("ClusterIP")
                    )
                })?;
                Ok(Resolved {
                    addr: n.address,
                    port: port_number(np),
                    proto,
                })
            }
            Entry::LoadBalancer => {
                let addr = svc
                    .status
                    .as_ref()
                    .and_then(|s| s.load_balancer.as_ref())
                    .and_then(|lb| lb.ingress.as_ref())
                    .into_iter()
                    .flatten()
                    .find_map(|i| i.ip.as_deref()?.parse().ok())
                    .ok_or_else(|| {
                        format!(
                            "service {label} has no load balancer address (status.loadBalancer.ingress has no IP)"
                        )
                    })?;
                Ok(Resolved {
                    addr,
                    port: port_number(sp.port),
                    proto,
                })
            }
        }
    }
}

/// `ns/name`.
fn service_name(svc: &Service) -> String {
    format!(
        "{}/{}",
        svc.metadata.namespace.as_deref().unwrap_or("default"),
        svc.metadata.name.as_deref().unwrap_or("")
    )
}

fn port_proto(p: Option<&str>) -> u8 {
    p.and_then(wire::proto_number).unwrap_or(wire::PROTO_TCP)
}

fn port_number(p: i32) -> u16 {
    p.clamp(0, i32::from(u16::MAX)) as u16
}

/// `http (80/TCP)`, or `80/TCP` for an unnamed port.
fn port_label(p: &ServicePort) -> String {
    let num = format!("{}/{}", p.port, p.protocol.as_deref().unwrap_or("TCP"));
    match p.name.as_deref().filter(|n| !n.is_empty()) {
        Some(n) => format!("{n} ({num})"),
        None => num,
    }
}

/// The Service port a target names: by name, or by number (the one
/// serving `proto` when several do, TCP first when no protocol is given).
fn service_port<'s>(
    svc: &'s Service,
    port: &PortRef,
    proto: Option<u8>,
) -> Result<&'s ServicePort, String> {
    let ports: Vec<&ServicePort> = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .collect();
    let found = match port {
        PortRef::Name(n) => ports.iter().find(|p| p.name.as_deref() == Some(n.as_str())),
        PortRef::Number(n) => {
            let same: Vec<&&ServicePort> =
                ports.iter().filter(|p| p.port == i32::from(*n)).collect();
            let want = proto.unwrap_or(wire::PROTO_TCP);
            same.iter()
                .find(|p| port_proto(p.protocol.as_deref()) == want)
                .or(same.first())
                .copied()
        }
    };
    found.copied().ok_or_else(|| {
        let have: Vec<String> = ports.iter().map(|p| port_label(p)).collect();
        format!(
            "service {} has no port {port} (its ports: {})",
            service_name(svc),
            if have.is_empty() {
                "none".to_string()
            } else {
                have.join(", ")
            }
        )
    })
}

/// A pod's port: a number as given, or a container port by name.
fn pod_port(p: &PodDef, port: &PortRef, proto: Option<u8>) -> Result<Resolved, String> {
    match port {
        PortRef::Number(n) => Ok(Resolved {
            addr: p.ip,
            port: *n,
            proto: proto.unwrap_or(wire::PROTO_TCP),
        }),
        PortRef::Name(n) => p
            .ports
            .iter()
            .find(|(name, _, _)| name.as_deref() == Some(n.as_str()))
            .map(|(_, num, pr)| Resolved {
                addr: p.ip,
                port: *num,
                proto: proto.unwrap_or_else(|| port_proto(Some(pr))),
            })
            .ok_or_else(|| format!("pod {} has no container port named {n:?}", p.name)),
    }
}
