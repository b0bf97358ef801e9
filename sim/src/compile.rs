//! From a scenario to simulated hosts: the network model, each node's
//! kube-proxy rules loaded into the netfilter engine, the load balancer's
//! frontends; and the resolution of `from`/`to` names into flows.
//!
//! Node rules are generated in parallel (rayon); the result is identical
//! to a serial run because each node's rules depend only on its inputs and
//! results keep node order. Chains equal on several nodes (most of them)
//! are parsed once and shared ([`Interner`]), so a hundred nodes cost
//! little more than one.

use crate::netfilter::{intern::Interner, Engine, LoadError, Ruleset};
use crate::network::{
    Delivery, ExternalSpec, Frontend, HostKind, Network, NetworkSpec, NodeSpec, PodSpec,
};
use crate::proxier::{self, DetectLocal, NodeInfo, ProxyConfig, ProxyModel, ServiceNote};
use crate::scenario::{DetectLocalMode, FlowTarget, LbDelivery, LbNodes, Scenario};
use crate::trace::{Cluster, Flow};
use crate::wire;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// A compiled scenario.
#[derive(Clone, Debug)]
pub struct Compiled {
    pub scenario: Scenario,
    /// Holds each node's ruleset once, inside its engine; see
    /// [`Compiled::rules`].
    pub cluster: Cluster,
    /// Services kube-proxy writes nothing for, and why.
    pub notes: Vec<ServiceNote>,
    /// Nodes whose rules came from a dump (`--rules NODE=FILE`).
    pub replaced: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("--rules {node}: no node of that name in the scenario")]
    UnknownNode { node: String },
    #[error("rules of node {node}{}: {source}", file.as_ref().map(|f| format!(" ({f})")).unwrap_or_default())]
    Rules {
        node: String,
        file: Option<String>,
        source: Box<LoadError>,
    },
    #[error("rules of {node}: {source}")]
    Engine {
        node: String,
        source: crate::netfilter::EvalError,
    },
    #[error("{0}")]
    Flow(String),
}

/// The proxier's settings for the scenario.
pub fn proxy_config(s: &Scenario) -> ProxyConfig {
    let kp = &s.kube_proxy;
    ProxyConfig {
        masquerade_bit: kp.masquerade_bit,
        masquerade_all: kp.masquerade_all,
        detect_local: match kp.detect_local_mode {
            DetectLocalMode::ClusterCidr => DetectLocal::ClusterCidr(kp.cluster_cidr),
            DetectLocalMode::NodeCidr => DetectLocal::NodeCidr,
            DetectLocalMode::BridgeInterface => {
                DetectLocal::BridgeInterface(kp.bridge_interface.clone())
            }
            DetectLocalMode::InterfaceNamePrefix => {
                DetectLocal::InterfaceNamePrefix(kp.interface_name_prefix.clone())
            }
        },
        node_port_addresses: kp.node_port_addresses.clone(),
        localhost_node_ports: kp.localhost_node_ports,
        conntrack_tcp_liberal: kp.tcp_be_liberal,
    }
}

/// Compile a scenario; `overrides` replaces nodes' generated rules with
/// `iptables-save` dumps (node name → (file name, text)).
pub fn compile(
    s: &Scenario,
    overrides: &BTreeMap<String, (String, String)>,
) -> Result<Compiled, CompileError> {
    for node in overrides.keys() {
        if s.node(node).is_none() {
            return Err(CompileError::UnknownNode { node: node.clone() });
        }
    }
    let spec = NetworkSpec {
        overlay: s.cluster.network,
        nodes: s
            .nodes
            .iter()
            .map(|n| NodeSpec {
                name: n.name.clone(),
                address: n.address,
                pod_cidr: n.pod_cidr,
            })
            .collect(),
        pods: s
            .pods
            .iter()
            .map(|p| PodSpec {
                name: p.name.clone(),
                node: p.node.clone(),
                ip: p.ip,
                host_network: p.host_network,
                listens: p
                    .ports
                    .iter()
                    .map(|(_, port, proto)| (proto_number(proto), *port))
                    .collect(),
            })
            .collect(),
        externals: s
            .externals
            .iter()
            .map(|e| ExternalSpec {
                name: e.name.clone(),
                address: e.address,
            })
            .collect(),
        lb_delivery: match s.cluster.load_balancer.delivery {
            LbDelivery::Direct => Delivery::Direct,
            LbDelivery::NodePort => Delivery::NodePort {
                address: s.cluster.load_balancer.address,
            },
        },
    };
    let mut network = Network::build(&spec);
    let model = ProxyModel::build(&s.services, &s.slices);
    let gen = NodeRulesGen {
        inputs: proxier_inputs(s, &network),
        model: &model,
        overrides,
        interner: Interner::default(),
    };
    // The first node parses every chain (in parallel, chain by chain)
    // before the others start, so they find the chains rather than parse
    // them again at the same time.
    let mut node_engines: Vec<Result<Engine, CompileError>> = gen
        .inputs
        .first()
        .map(|i| gen.engine(i))
        .into_iter()
        .collect();
    node_engines.par_extend(gen.inputs.par_iter().skip(1).map(|i| gen.engine(i)));
    drop(gen);
    let mut node_engines: Vec<Option<Engine>> = node_engines
        .into_iter()
        .map(|r| r.map(Some))
        .collect::<Result<_, _>>()?;
    network.set_frontends(frontends(s, &network, &model));
    let mut engines = Vec::with_capacity(network.hosts.len());
    for h in &network.hosts {
        engines.push(match h.kind {
            HostKind::Node => {
                let node = s.nodes.iter().position(|n| n.name == h.name).expect("node");
                node_engines[node].take().expect("one host per node")
            }
            _ => Engine::new(Ruleset::default()).expect("no rules, no errors"),
        });
    }
    Ok(Compiled {
        scenario: s.clone(),
        cluster: Cluster {
            network,
            engines,
            opts: Default::default(),
        },
        notes: model.notes.clone(),
        replaced: overrides.keys().cloned().collect(),
    })
}

/// What kube-proxy on each node is given, in node order: its settings
/// (`nodePortAddresses: [primary]` narrowed to the node's own address)
/// and what it knows of its node (name, IP, podCIDR, zone, local
/// addresses). Feeding these to [`proxier::node_rules`] gives the text
/// each node's kube-proxy writes.
pub fn proxier_inputs(s: &Scenario, network: &Network) -> Vec<(ProxyConfig, NodeInfo)> {
    let mut config = proxy_config(s);
    if s.kube_proxy.node_port_primary {
        // `nodePortAddresses: [primary]`: each node's own primary IP.
        config.node_port_addresses.clear();
    }
    s.nodes
        .iter()
        .map(|n| {
            let host = network.host_index(&n.name).expect("nodes are hosts");
            let mut addresses = network.hosts[host].net.addresses();
            addresses.sort();
            let mut cfg = config.clone();
            if s.kube_proxy.node_port_primary {
                cfg.node_port_addresses
                    .push(ipnet::Ipv4Net::new(n.address, 32).expect("/32"));
            }
            let info = NodeInfo {
                name: n.name.clone(),
                ip: n.address,
                pod_cidr: Some(n.pod_cidr),
                zone: n.zone.clone(),
                addresses,
            };
            (cfg, info)
        })
        .collect()
}

/// What each node's engine is made from.
struct NodeRulesGen<'a> {
    /// Each node's proxier settings and node facts ([`proxier_inputs`]).
    inputs: Vec<(ProxyConfig, NodeInfo)>,
    model: &'a ProxyModel,
    overrides: &'a BTreeMap<String, (String, String)>,
    /// Chains seen on earlier nodes, parsed once and shared.
    interner: Interner,
}

impl NodeRulesGen<'_> {
    /// The node's engine, loaded with its dump from `--rules` as written, or
    /// with kube-proxy's rules as `iptables-save` on the node would show
    /// them, numbered as `kpsim rules` prints them.
    fn engine(&self, (cfg, info): &(ProxyConfig, NodeInfo)) -> Result<Engine, CompileError> {
        if let Some((file, text)) = self.overrides.get(&info.name) {
            return engine(info, load(info, Some(file), text)?);
        }
        let text = proxier::node_rules(cfg, info, self.model).restore_text;
        if let Some(mut rs) = self.interner.load(&text) {
            rs.number_as_saved(); // already in save order
            if let Ok(e) = self.interner.engine(rs) {
                return Ok(e);
            }
        }
        // Unshared, from scratch: a load error names the line at fault.
        let mut rs = load(info, None, &text)?;
        rs.sort_as_saved();
        rs.number_as_saved();
        engine(info, rs)
    }
}

/// Parse and validate a node's rules, unshared.
fn load(info: &NodeInfo, file: Option<&String>, text: &str) -> Result<Ruleset, CompileError> {
    Ruleset::load(text).map_err(|source| CompileError::Rules {
        node: info.name.clone(),
        file: file.cloned(),
        source: Box::new(source),
    })
}

fn engine(info: &NodeInfo, rs: Ruleset) -> Result<Engine, CompileError> {
    Engine::new(rs).map_err(|source| CompileError::Engine {
        node: info.name.clone(),
        source,
    })
}

fn proto_number(p: &str) -> u8 {
    match p.to_ascii_uppercase().as_str() {
        "UDP" => wire::PROTO_UDP,
        "SCTP" => wire::PROTO_SCTP,
        _ => wire::PROTO_TCP,
    }
}

/// Every LoadBalancer ingress IP and external IP, per port, with the nodes
/// the load balancer may hand its traffic to.
fn frontends(s: &Scenario, network: &Network, model: &ProxyModel) -> Vec<Frontend> {
    let mut out: Vec<Frontend> = Vec::new();
    for (svc, eps) in &model.ports {
        let addrs = svc.lb_vips.iter().chain(svc.external_ips.iter());
        for addr in addrs {
            let nodes: Vec<usize> = s
                .nodes
                .iter()
                .filter(|n| {
                    s.cluster.load_balancer.nodes == LbNodes::All
                        || !svc.external_policy_local
                        || !proxier::model::categorize(svc, eps, &n.name, n.zone.as_deref())
                            .local
                            .is_empty()
                })
                .filter_map(|n| network.host_index(&n.name))
                .collect();
            let fe = Frontend {
                address: *addr,
                proto: proto_number(&svc.protocol),
                port: svc.port,
                node_port: (svc.node_port != 0).then_some(svc.node_port),
                nodes,
            };
            if !out
                .iter()
                .any(|f| f.address == fe.address && f.proto == fe.proto && f.port == fe.port)
            {
                out.push(fe);
            }
        }
    }
    out
}

impl Compiled {
    /// The ruleset of the `node`-th node of the scenario (in node order), as
    /// `iptables-save` prints it; the engine's own copy, so each ruleset is
    /// held once.
    pub fn rules(&self, node: usize) -> &Ruleset {
        let host = self
            .cluster
            .network
            .host_index(&self.scenario.nodes[node].name)
            .expect("every node is a host");
        self.cluster.engines[host].ruleset()
    }

    /// A `from:` name: pod, node or external by name, then an address.
    pub fn resolve_from(&self, from: &str) -> Result<usize, CompileError> {
        let net = &self.cluster.network;
        if let Some(h) = net.host_index(from) {
            return Ok(h);
        }
        if let Ok(a) = from.parse::<Ipv4Addr>() {
            if let Some(h) = net.host_by_address(a) {
                return Ok(h);
            }
        }
        Err(CompileError::Flow(format!(
            "from: {from:?} is not a pod, node or external of scenario {}, nor one of their addresses",
            self.scenario.name
        )))
    }

    /// A `to:` target: (address, port, protocol).
    pub fn resolve_to(&self, to: &FlowTarget) -> Result<(Ipv4Addr, u16, u8), CompileError> {
        let s = &self.scenario;
        Ok(match to {
            FlowTarget::Addr { addr, port, proto } => (*addr, *port, *proto),
            FlowTarget::Service {
                namespace,
                name,
                port,
                proto,
            } => {
                let svc = s
                    .service(namespace, name)
                    .ok_or_else(|| CompileError::Flow(format!("no service {namespace}/{name}")))?;
                (cluster_ip(svc, name)?, *port, *proto)
            }
            FlowTarget::Named { name, port, proto } => {
                let addr = if let Some(p) = s.pod(name) {
                    p.ip
                } else if let Some(n) = s.node(name) {
                    n.address
                } else if let Some(e) = s.externals.iter().find(|e| &e.name == name) {
                    e.address
                } else if let Some(svc) = s.service_named(name) {
                    cluster_ip(svc, name)?
                } else {
                    return Err(CompileError::Flow(format!(
                        "to: {name:?} is not a pod, node, external or service of scenario {}",
                        s.name
                    )));
                };
                (addr, *port, *proto)
            }
        })
    }

    /// The flow a user means by `from` and `to`.
    pub fn flow(
        &self,
        from: &str,
        to: &str,
        sport: Option<u16>,
        at: u64,
    ) -> Result<Flow, CompileError> {
        let target = FlowTarget::parse(to).map_err(CompileError::Flow)?;
        let host = self.resolve_from(from)?;
        let (dst, dport, proto) = self.resolve_to(&target)?;
        Ok(Flow {
            from: host,
            dst,
            proto,
            dport,
            sport,
            at,
        })
    }
}

fn cluster_ip(
    svc: &k8s_openapi::api::core::v1::Service,
    name: &str,
) -> Result<Ipv4Addr, CompileError> {
    svc.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .and_then(|ip| ip.parse().ok())
        .ok_or_else(|| {
            CompileError::Flow(format!(
                "service {name} has no cluster IP (headless or ExternalName)"
            ))
        })
}
