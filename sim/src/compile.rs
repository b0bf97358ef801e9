//! From a scenario to simulated hosts: the network model, each node's
//! kube-proxy rules loaded into the netfilter engine, the load balancer's
//! frontends; and the resolution of `from`/`to` names into flows.
//!
//! Node rules are generated in parallel (rayon); the result is identical
//! to a serial run because each node's rules depend only on its inputs and
//! results keep node order. Nodes that see the cluster alike (the same
//! [`NodeView`] and settings: often all of them) get one set of engines,
//! built once and shared; chains equal on several nodes (most of them) are
//! parsed once and shared ([`Interner`]), so a hundred nodes cost little
//! more than one. Nodes that differ (Local policies) are written and
//! loaded in parts, one per service port ([`proxier::RulesWriter`]): a
//! port's part is made once for all nodes that see the port alike
//! ([`ServiceMemo`]), so a node costs what is its own. [`compile_per_node`] is the plain way, each node on its
//! own, that the shared compile is tested against.

use crate::netfilter::intern::{Interner, Part};
use crate::netfilter::{Engine, LoadError, Ruleset};
use crate::network::sysctl::Sysctl;
use crate::network::{
    Delivery, ExternalSpec, Frontend, HostKind, Network, NetworkSpec, NodeSpec, PodSpec, Socket,
};
use crate::nftables;
use crate::proxier::{
    self, CommonViews, DetectLocal, NodeInfo, NodeView, ProxyConfig, ProxyModel, ServiceMemo,
    ServiceNote, Tables,
};
use crate::scenario::{
    DetectLocalMode, FlowTarget, LbDelivery, LbNodes, NodeDef, ProxyMode, Scenario,
};
use crate::trace::{Cluster, Flow};
use crate::wire;
use foldhash::fast::FixedState;
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::Ipv4Addr;
use std::sync::Arc;

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
    #[error("nftables rules of node {node}{}: {source}", file.as_ref().map(|f| format!(" ({f})")).unwrap_or_default())]
    Nft {
        node: String,
        file: Option<String>,
        source: nftables::NftError,
    },
    #[error("{0}")]
    Flow(String),
}

/// The proxier's settings for the scenario, in its kube-proxy mode (each
/// mode has its own mark bit and masquerade-all).
pub fn proxy_config(s: &Scenario) -> ProxyConfig {
    let kp = &s.kube_proxy;
    let nft = kp.mode == ProxyMode::Nftables;
    ProxyConfig {
        masquerade_bit: if nft {
            kp.nftables_masquerade_bit
        } else {
            kp.masquerade_bit
        },
        masquerade_all: if nft {
            kp.nftables_masquerade_all
        } else {
            kp.masquerade_all
        },
        detect_local: match kp.detect_local_mode {
            DetectLocalMode::ClusterCidr => match kp.cluster_cidr {
                Some(c) => DetectLocal::ClusterCidr(c),
                None => DetectLocal::None,
            },
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
        conntrack_tcp_liberal: kp.conntrack.tcp_be_liberal,
    }
}

/// The proxier's settings on one node: `nodePortAddresses: [primary]`
/// means the node's own primary IP.
pub fn node_proxy_config(s: &Scenario, node_ip: Ipv4Addr) -> ProxyConfig {
    let mut cfg = proxy_config(s);
    if s.kube_proxy.node_port_primary {
        cfg.node_port_addresses
            .push(ipnet::Ipv4Net::new(node_ip, 32).expect("/32"));
    }
    cfg
}

/// kube-proxy's listeners on a node: a health-check server per service
/// with a health-check node port, on the node-port addresses (every address
/// when `nodePortAddresses` is empty), and its own `/healthz`.
pub fn kube_proxy_listeners(s: &Scenario, node: &NodeDef, model: &ProxyModel) -> Vec<Socket> {
    let cfg = node_proxy_config(s, node.address);
    let node_port_ips: Vec<Ipv4Addr> = if cfg.node_port_addresses.is_empty() {
        Vec::new()
    } else {
        std::iter::once(node.address)
            .chain(node.extra_addresses.iter().copied())
            .chain(std::iter::once(Ipv4Addr::LOCALHOST))
            .filter(|a| cfg.node_port_addresses.iter().any(|c| c.contains(a)))
            .collect()
    };
    let mut out: Vec<Socket> = proxier::health::service_health(model, &node.name)
        .into_iter()
        .map(|h| Socket {
            owner: KUBE_PROXY.into(),
            ports: vec![(wire::PROTO_TCP, h.port)],
            addresses: node_port_ips.clone(),
            answer: Some(h.answer()),
        })
        .collect();
    let (addr, port) = s.kube_proxy.healthz;
    out.push(Socket {
        owner: KUBE_PROXY.into(),
        ports: vec![(wire::PROTO_TCP, port)],
        addresses: addr.into_iter().collect(),
        answer: Some(proxier::health::healthz_answer()),
    });
    out
}

/// The name kube-proxy's listeners answer as (a check's `delivered`).
pub const KUBE_PROXY: &str = "kube-proxy";

/// What kube-proxy writes into the node's kernel settings at start.
pub fn kube_proxy_sysctls(s: &Scenario, node: &NodeDef) -> Vec<Sysctl> {
    proxier::startup::sysctls(
        &node_proxy_config(s, node.address),
        &s.kube_proxy.conntrack,
        node.cpus,
    )
}

/// Compile a scenario; `overrides` replaces nodes' generated rules with
/// `iptables-save` dumps (node name → (file name, text)).
pub fn compile(
    s: &Scenario,
    overrides: &BTreeMap<String, (String, String)>,
) -> Result<Compiled, CompileError> {
    Ok(build(s, overrides, Sharing::Shared)?.with(s.clone()))
}

/// [`compile`] a scenario the caller hands over: it goes into the
/// [`Compiled`] as it is, not copied (for a cluster of 50,000 pods a copy
/// costs tens of milliseconds, and so does dropping the original).
pub fn compile_owned(
    s: Scenario,
    overrides: &BTreeMap<String, (String, String)>,
) -> Result<Compiled, CompileError> {
    Ok(build(&s, overrides, Sharing::Shared)?.with(s))
}

/// [`compile`] the plain way: every node's rules generated from its own
/// facts ([`proxier::node_rules`], [`proxier::nft::node_table`]) and
/// loaded on their own, nothing shared. Slower and bigger; what the shared
/// compile must equal, node for node.
pub fn compile_per_node(
    s: &Scenario,
    overrides: &BTreeMap<String, (String, String)>,
) -> Result<Compiled, CompileError> {
    Ok(build(s, overrides, Sharing::None)?.with(s.clone()))
}

/// A [`Compiled`] but for its scenario.
struct Built {
    cluster: Cluster,
    notes: Vec<ServiceNote>,
    replaced: Vec<String>,
}

impl Built {
    /// The compilation of scenario `s` (the one it was built from).
    fn with(self, s: Scenario) -> Compiled {
        Compiled {
            scenario: s,
            cluster: self.cluster,
            notes: self.notes,
            replaced: self.replaced,
        }
    }
}

/// Whether nodes share what they have in common.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sharing {
    /// One engine per distinct node view; chains and tables interned.
    Shared,
    /// Each node generated, parsed and checked by itself.
    None,
}

fn build(
    s: &Scenario,
    overrides: &BTreeMap<String, (String, String)>,
    sharing: Sharing,
) -> Result<Built, CompileError> {
    for node in overrides.keys() {
        if s.node(node).is_none() {
            return Err(CompileError::UnknownNode { node: node.clone() });
        }
    }
    let mut model = ProxyModel::build(&s.services, &s.slices);
    let mut network = Network::build(&network_spec(s, &model));
    let gen = NodeRulesGen {
        scenario: s,
        inputs: proxier_inputs(s, &network),
        model: &model,
        overrides,
        interner: Interner::default(),
        common: CommonViews::new(&model),
        services: ServiceMemo::new(&model),
    };
    let node_engines = match sharing {
        Sharing::Shared => gen.shared()?,
        Sharing::None => gen
            .inputs
            .par_iter()
            .map(|i| gen.unshared(i))
            .collect::<Result<_, _>>()?,
    };
    // The generator's memos are freed while the hosts get their engines.
    let ((), (frontends, engines, nft)) = rayon::join(
        || drop(gen),
        || {
            let (engines, nft) = host_engines(s, &network, node_engines);
            (frontends(s, &network, &model), engines, nft)
        },
    );
    network.set_frontends(frontends);
    Ok(Built {
        cluster: Cluster {
            network,
            engines,
            nft,
            opts: Default::default(),
        },
        notes: std::mem::take(&mut model.notes),
        replaced: overrides.keys().cloned().collect(),
    })
}

/// Each host's engines, in host order: a node's own (`node_engines`, in
/// node order), none for pods and externals.
fn host_engines(
    s: &Scenario,
    network: &Network,
    node_engines: Vec<NodeEngines>,
) -> (Vec<Engine>, Vec<Option<Arc<nftables::Engine>>>) {
    let mut node_engines: Vec<Option<NodeEngines>> = node_engines.into_iter().map(Some).collect();
    let no_rules = Engine::new(Ruleset::default()).expect("no rules, no errors");
    network
        .hosts
        .iter()
        .map(|h| match h.kind {
            HostKind::Node => {
                let node = s.nodes.iter().position(|n| n.name == h.name).expect("node");
                node_engines[node].take().expect("one host per node")
            }
            _ => (no_rules.clone(), None),
        })
        .unzip()
}

/// The network of scenario `s`: its hosts with kube-proxy's settings and
/// listeners on the nodes, and the load balancer's delivery.
fn network_spec(s: &Scenario, model: &ProxyModel) -> NetworkSpec {
    NetworkSpec {
        overlay: s.cluster.network,
        nodes: s
            .nodes
            .iter()
            .map(|n| NodeSpec {
                name: n.name.clone(),
                address: n.address,
                extra_addresses: n.extra_addresses.clone(),
                pod_cidr: n.pod_cidr,
                sysctls: kube_proxy_sysctls(s, n),
                listeners: kube_proxy_listeners(s, n, model),
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
                routes: e.routes.clone(),
            })
            .collect(),
        lb_delivery: match s.cluster.load_balancer.delivery {
            LbDelivery::Direct => Delivery::Direct,
            LbDelivery::NodePort => Delivery::NodePort {
                address: s.cluster.load_balancer.address,
            },
        },
    }
}

/// What kube-proxy on each node is given, in node order: its settings
/// (`nodePortAddresses: [primary]` narrowed to the node's own address)
/// and what it knows of its node (name, IP, podCIDR, zone, local
/// addresses). Feeding these to [`proxier::node_rules`] gives the text
/// each node's kube-proxy writes.
pub fn proxier_inputs(s: &Scenario, network: &Network) -> Vec<(ProxyConfig, NodeInfo)> {
    s.nodes
        .iter()
        .map(|n| {
            let host = network.host_index(&n.name).expect("nodes are hosts");
            let info = node_info(n, network.hosts[host].net.addresses());
            (node_proxy_config(s, n.address), info)
        })
        .collect()
}

/// What kube-proxy knows of its node, given the node's local addresses
/// (in any order: kept sorted, as the proxier expects).
pub fn node_info(n: &NodeDef, mut addresses: Vec<Ipv4Addr>) -> NodeInfo {
    addresses.sort();
    NodeInfo {
        name: n.name.clone(),
        ip: n.address,
        pod_cidr: Some(n.pod_cidr),
        zone: n.zone.clone(),
        addresses,
    }
}

/// What each node's engine is made from.
struct NodeRulesGen<'a> {
    scenario: &'a Scenario,
    /// Each node's proxier settings and node facts ([`proxier_inputs`]).
    inputs: Vec<(ProxyConfig, NodeInfo)>,
    model: &'a ProxyModel,
    overrides: &'a BTreeMap<String, (String, String)>,
    /// Chains seen on earlier nodes, parsed once and shared.
    interner: Interner,
    /// What all nodes see alike, worked out once.
    common: CommonViews<'a>,
    /// Each service port's part of the iptables rules, per way nodes see
    /// it, as parts for the interner (one per table).
    services: ServiceMemo<'a, [Arc<Part>; 3]>,
}

/// A node's rule languages: its iptables ruleset, and its nftables one.
type NodeEngines = (Engine, Option<Arc<nftables::Engine>>);

/// Whether a rules dump is `nft list ruleset` text rather than
/// `iptables-save`: its first statement is a `table` block.
pub fn is_nft_text(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .is_some_and(|l| l.starts_with("table "))
}

/// A value with its hash, worked out once: a map of such values hashes
/// only the stored hash, and compares values only when the hashes agree.
struct Prehashed<T> {
    hash: u64,
    value: T,
}

impl<T: Hash> Prehashed<T> {
    fn new(value: T) -> Self {
        Prehashed {
            hash: FixedState::default().hash_one(&value),
            value,
        }
    }
}

impl<T> Hash for Prehashed<T> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_u64(self.hash);
    }
}

impl<T: PartialEq> PartialEq for Prehashed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.value == other.value
    }
}

impl<T: Eq> Eq for Prehashed<T> {}

/// Nodes whose views are worked out together: enough to keep every core
/// busy, few enough that views of nodes that turn out alike do not pile
/// up (a view holds a categorisation per service).
const VIEW_BATCH: usize = 16;

impl<'a> NodeRulesGen<'a> {
    /// Every node's engines, in node order, shared between nodes that see
    /// the cluster alike: one engine is built per distinct (settings,
    /// [`NodeView`]), by the first node with it, and the nodes like it get
    /// that engine. The generators read a node only through its view, so
    /// they would have written the same text for each of them.
    fn shared(&self) -> Result<Vec<NodeEngines>, CompileError> {
        // Per node, the first node seen alike (itself when it is the first,
        // or when its rules come from a dump).
        let mut first_alike: Vec<usize> = Vec::with_capacity(self.inputs.len());
        let mut distinct: HashMap<Prehashed<(&ProxyConfig, NodeView)>, usize, FixedState> =
            HashMap::default();
        for (b, batch) in self.inputs.chunks(VIEW_BATCH).enumerate() {
            // A view holds a list per service port: hashed where it is
            // made, in parallel, so the map only compares.
            let views: Vec<Option<Prehashed<(&ProxyConfig, NodeView)>>> = batch
                .par_iter()
                .map(|i| Some(Prehashed::new((&i.0, self.view(i)?))))
                .collect();
            for (k, view) in views.into_iter().enumerate() {
                let node = b * VIEW_BATCH + k;
                first_alike.push(match view {
                    Some(v) => *distinct.entry(v).or_insert(node),
                    None => node,
                });
            }
        }
        let mut views: BTreeMap<usize, NodeView> =
            distinct.into_iter().map(|(v, n)| (n, v.value.1)).collect();
        let builders: Vec<usize> = (0..self.inputs.len())
            .filter(|&n| first_alike[n] == n)
            .collect();
        let build = |n: usize| match views.get(&n) {
            Some(v) => self.generated(&self.inputs[n], v),
            None => self.dump(&self.inputs[n].1),
        };
        // The first node parses every chain (in parallel, chain by chain)
        // before the others start, so they find the chains rather than
        // parse them again at the same time.
        let mut built: Vec<Result<NodeEngines, CompileError>> =
            builders.first().map(|&n| build(n)).into_iter().collect();
        built.par_extend(builders.par_iter().skip(1).map(|&n| build(n)));
        views.clear();
        let built: BTreeMap<usize, NodeEngines> = builders
            .into_iter()
            .zip(built)
            .map(|(n, e)| e.map(|e| (n, e)))
            .collect::<Result<_, _>>()?;
        Ok(first_alike.iter().map(|n| built[n].clone()).collect())
    }

    /// How `node`'s kube-proxy sees the cluster; `None` when its rules
    /// come from a dump.
    fn view(&self, (cfg, info): &(ProxyConfig, NodeInfo)) -> Option<NodeView<'a>> {
        if self.overrides.contains_key(&info.name) {
            return None;
        }
        Some(match self.scenario.kube_proxy.mode {
            ProxyMode::Iptables => NodeView::iptables(cfg, info, &self.common),
            ProxyMode::Nftables => proxier::nft::node_view(cfg, info, &self.common),
        })
    }

    /// The engines of the node whose rules come from its `--rules` dump,
    /// as written (iptables-save or nft text, told apart by content; it
    /// stands for the node's whole netfilter).
    fn dump(&self, info: &NodeInfo) -> Result<NodeEngines, CompileError> {
        let (file, text) = &self.overrides[&info.name];
        if is_nft_text(text) {
            let empty = Engine::new(Ruleset::default()).expect("no rules, no errors");
            return Ok((empty, Some(Arc::new(nft_engine(info, Some(file), text)?))));
        }
        let engine = Engine::load(text).map_err(rules_error(info, Some(file)))?;
        Ok((engine, None))
    }

    /// What kube-proxy in the scenario's mode writes on a node seen as
    /// `view`, in engines sharing chains with other nodes'.
    fn generated(
        &self,
        (cfg, info): &(ProxyConfig, NodeInfo),
        view: &NodeView<'a>,
    ) -> Result<NodeEngines, CompileError> {
        match self.scenario.kube_proxy.mode {
            ProxyMode::Iptables => Ok((self.iptables_in_parts(cfg, view, info)?, None)),
            ProxyMode::Nftables => {
                let text = proxier::nft::view_table(cfg, &self.nft_config(), view, self.model);
                let ipt = self.iptables(proxier::kubelet_rules(), info)?;
                Ok((ipt, Some(Arc::new(nft_engine(info, None, &text)?))))
            }
        }
    }

    /// The node's engines the plain way ([`compile_per_node`]).
    fn unshared(&self, (cfg, info): &(ProxyConfig, NodeInfo)) -> Result<NodeEngines, CompileError> {
        if self.overrides.contains_key(&info.name) {
            return self.dump(info);
        }
        match self.scenario.kube_proxy.mode {
            ProxyMode::Iptables => Ok((
                standalone_engine(
                    info,
                    &proxier::node_rules(cfg, info, self.model).restore_text,
                )?,
                None,
            )),
            ProxyMode::Nftables => {
                let text = proxier::nft::node_table(cfg, &self.nft_config(), info, self.model);
                let ipt = standalone_engine(info, &proxier::kubelet_rules())?;
                Ok((ipt, Some(Arc::new(nft_engine(info, None, &text)?))))
            }
        }
    }

    fn nft_config(&self) -> proxier::nft::NftConfig {
        proxier::nft::NftConfig {
            service_cidrs: vec![self.scenario.cluster.service_cidr],
        }
    }

    /// The iptables engine of a node seen as `view`, its rules written
    /// and loaded part by part: each service port's part is written and
    /// cut into chains once for all nodes that see the port alike
    /// ([`ServiceMemo`]), so a node costs what is its own, and the chains
    /// the parts append to. The same ruleset as [`proxier::view_rules`]'s
    /// text loaded whole (which is what a part the interner does not
    /// take falls back to).
    fn iptables_in_parts(
        &self,
        cfg: &ProxyConfig,
        view: &NodeView<'a>,
        info: &NodeInfo,
    ) -> Result<Engine, CompileError> {
        if let Some(mut rs) = self.interner.load_parts(&self.parts(cfg, view)) {
            rs.number_as_saved();
            if let Ok(e) = self.interner.engine(rs) {
                return Ok(e);
            }
        }
        self.iptables(proxier::view_rules(cfg, view, self.model), info)
    }

    /// The iptables rules of a node seen as `view`, per table as parts:
    /// the head, each service port's (as made for the first node that
    /// sees the port alike), the tail.
    fn parts(&self, cfg: &ProxyConfig, view: &NodeView<'a>) -> Vec<(&'static str, Vec<Arc<Part>>)> {
        let writer = proxier::RulesWriter::new(cfg, view, self.model);
        let key = writer.service_key();
        let services: Vec<Arc<[Arc<Part>; 3]>> = (0..self.model.ports.len())
            .into_par_iter()
            .map(|port| {
                self.services
                    .get(&key, view, port, || parts(&writer.service(port), false))
            })
            .collect();
        let (head, tail) = (parts(&writer.head(), true), parts(&writer.tail(), false));
        proxier::TABLES
            .iter()
            .enumerate()
            .map(|(t, (name, _))| {
                let mut all = Vec::with_capacity(services.len() + 2);
                all.push(head[t].clone());
                all.extend(services.iter().map(|s| s[t].clone()));
                all.push(tail[t].clone());
                (*name, all)
            })
            .collect()
    }

    /// An iptables engine for generated `iptables-restore` text, its
    /// chains shared with other nodes'.
    fn iptables(&self, text: String, info: &NodeInfo) -> Result<Engine, CompileError> {
        if let Some(mut rs) = self.interner.load(&text) {
            rs.number_as_saved(); // already in save order
            if let Ok(e) = self.interner.engine(rs) {
                return Ok(e);
            }
        }
        // Unshared, from scratch: a load error names the line at fault.
        standalone_engine(info, &text)
    }
}

/// Each table's lines of `t` as a part for the interner; `head`: the part
/// that declares the built-in chains.
fn parts(t: &Tables, head: bool) -> [Arc<Part>; 3] {
    std::array::from_fn(|i| {
        let (name, builtins) = proxier::TABLES[i];
        let mut text = String::new();
        t.0[i].write_lines(&mut text, if head { builtins } else { &[] });
        Arc::new(Part::new(name, text))
    })
}

/// Parse and check a node's nftables rules.
fn nft_engine(
    info: &NodeInfo,
    file: Option<&String>,
    text: &str,
) -> Result<nftables::Engine, CompileError> {
    let err = |source| CompileError::Nft {
        node: info.name.clone(),
        file: file.cloned(),
        source,
    };
    let mut rs = nftables::Ruleset::parse(text).map_err(err)?;
    if file.is_none() {
        // Generated: number the rules as `kpsim rules` lists them.
        rs.number_as_listed();
    }
    nftables::Engine::new(rs).map_err(err)
}

/// Parse and validate a node's rules, unshared.
fn load(info: &NodeInfo, file: Option<&String>, text: &str) -> Result<Ruleset, CompileError> {
    Ruleset::load(text).map_err(rules_error(info, file))
}

/// A load error in a node's rules (from its dump `file`, if any).
fn rules_error<'a>(
    info: &'a NodeInfo,
    file: Option<&'a String>,
) -> impl FnOnce(LoadError) -> CompileError + 'a {
    move |source| CompileError::Rules {
        node: info.name.clone(),
        file: file.cloned(),
        source: Box::new(source),
    }
}

/// Generated rules parsed, ordered and numbered as saved, and checked, on
/// their own.
fn standalone_engine(info: &NodeInfo, text: &str) -> Result<Engine, CompileError> {
    let mut rs = load(info, None, text)?;
    rs.sort_as_saved();
    rs.number_as_saved();
    engine(info, rs)
}

fn engine(info: &NodeInfo, rs: Ruleset) -> Result<Engine, CompileError> {
    Engine::new(rs).map_err(|source| CompileError::Engine {
        node: info.name.clone(),
        source,
    })
}

/// A Kubernetes protocol name; TCP, Kubernetes' default, otherwise.
fn proto_number(p: &str) -> u8 {
    wire::proto_number(p).unwrap_or(wire::PROTO_TCP)
}

/// Every LoadBalancer ingress IP and external IP, per port, with the nodes
/// the load balancer may hand its traffic to.
fn frontends(s: &Scenario, network: &Network, model: &ProxyModel) -> Vec<Frontend> {
    let mut out: Vec<Frontend> = Vec::new();
    for (svc, _) in &model.ports {
        let addrs = svc.lb_vips.iter().chain(svc.external_ips.iter());
        for addr in addrs {
            // `nodes: healthy`: the balancer keeps the nodes whose health
            // check passes, as kube-proxy's health-check server answers it.
            let nodes: Vec<usize> = s
                .nodes
                .iter()
                .filter(|n| {
                    s.cluster.load_balancer.nodes == LbNodes::All
                        || !svc.external_policy_local
                        || proxier::health::node_passes(model, &svc.namespace, &svc.name, &n.name)
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

    /// The `node`-th node's nftables ruleset, if it has one.
    pub fn nft_rules(&self, node: usize) -> Option<&nftables::Ruleset> {
        let host = self
            .cluster
            .network
            .host_index(&self.scenario.nodes[node].name)
            .expect("every node is a host");
        self.cluster.nft[host].as_deref().map(|e| e.ruleset())
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
        let r = self
            .scenario
            .targets()
            .resolve(to)
            .map_err(|e| CompileError::Flow(format!("to: {e}")))?;
        Ok((r.addr, r.port, r.proto))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A cluster whose NodePort services have `externalTrafficPolicy:
    /// Local` and whose detector is each node's pod CIDR: most service
    /// ports' parts shared, some per node, the detector per node.
    fn local_cluster(services: usize, endpoints: usize) -> Scenario {
        let mut s = crate::synth::cluster(services, endpoints, 4);
        for svc in &mut s.services {
            let spec = svc.spec.as_mut().expect("spec");
            if spec.type_.as_deref() == Some("NodePort") {
                spec.external_traffic_policy = Some("Local".into());
            }
        }
        s
    }

    /// Each node's rules assembled from parts shared between nodes are
    /// the rules of its whole text: as data, printed, and numbered; in
    /// large-cluster mode too, and with a per-node detector.
    #[test]
    fn parts_are_the_whole_text() {
        let mut node_cidr = local_cluster(40, 3);
        node_cidr.kube_proxy.detect_local_mode = DetectLocalMode::NodeCidr;
        for s in [local_cluster(40, 3), local_cluster(400, 3), node_cidr] {
            let model = ProxyModel::build(&s.services, &s.slices);
            let network = Network::build(&network_spec(&s, &model));
            let gen = NodeRulesGen {
                scenario: &s,
                inputs: proxier_inputs(&s, &network),
                model: &model,
                overrides: &BTreeMap::new(),
                interner: Interner::default(),
                common: CommonViews::new(&model),
                services: ServiceMemo::new(&model),
            };
            let mut nat_parts: Vec<Vec<Arc<Part>>> = Vec::new();
            for (n, (cfg, info)) in gen.inputs.iter().enumerate() {
                let view = gen.view(&gen.inputs[n]).expect("generated");
                let tables = gen.parts(cfg, &view);
                nat_parts.push(tables[2].1.clone());
                let mut parts = gen.interner.load_parts(&tables).expect("parts load");
                let mut whole = Ruleset::load(&proxier::node_rules(cfg, info, &model).restore_text)
                    .expect("loads");
                whole.sort_as_saved();
                for rs in [&mut parts, &mut whole] {
                    rs.number_as_saved();
                }
                assert_eq!(parts, whole, "{} node {n}", s.name);
                assert_eq!(parts.to_iptables_save(), whole.to_iptables_save());
                assert_eq!(parts.line_numbers(), whole.line_numbers());
            }
            // Nodes share the parts of the ports they see alike, only those
            // (none with a detector of their own).
            let (a, b) = (&nat_parts[0], &nat_parts[1]);
            let shared = a.iter().zip(b).filter(|(a, b)| Arc::ptr_eq(a, b)).count();
            if s.kube_proxy.detect_local_mode == DetectLocalMode::NodeCidr {
                assert_eq!(shared, 0);
            } else {
                assert!(
                    shared > 0 && shared < a.len() - 2,
                    "{shared} of {}",
                    a.len()
                );
            }
        }
    }
}
