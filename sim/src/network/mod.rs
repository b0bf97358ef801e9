//! The cluster's hosts and the links between them, built from plain
//! descriptions (no Kubernetes types here).
//!
//! The model (contract: `scenario-format.md`, "Network model"):
//!
//! * **Node**: `eth0` with its address on the physical network (`lan`); a
//!   bridge `cni0` holding the first host address of its pod CIDR, to which
//!   its pods attach; `ip_forward` on; a default route out of `eth0`
//!   (on-link: every address on the physical network is reachable
//!   directly). Bridged pod-to-pod traffic passes the node's iptables
//!   (`bridge-nf-call-iptables`), modelled as routed through the node with
//!   `cni0` as both the in and out interface.
//! * **Overlay** ([`Overlay`]): `routed` adds a route to every other pod
//!   CIDR via that node's address; `vxlan` adds a `flannel.1` device holding
//!   the pod CIDR's network address (/32) and on-link routes to the other
//!   pod CIDRs via their `flannel.1` address; packets are encapsulated
//!   between node addresses (UDP 8472, VNI 1).
//! * **Pod**: its own namespace: `eth0` with its address and the pod CIDR's
//!   prefix, default route via the node's `cni0` address. A hostNetwork pod
//!   is its node's stack.
//! * **External**: `eth0` on the physical network with routes to the node
//!   addresses (every address of a node) and to the load balancer
//!   frontends, plus the routes its spec gives (a prefix via a node, as a
//!   router that learnt service addresses by BGP has).
//! * **Load balancer** ([`LoadBalancer`]): traffic on the physical network
//!   for a frontend address (LoadBalancer ingress IP, external IP) is handed
//!   to one of the eligible nodes, each equally likely.
//!
//! Adding a CNI (say, Calico-style routed veths) means another way of
//! building pods' links and routes in [`Network::build`], nothing else.

pub mod sysctl;

use crate::routing::{HostNet, IfaceKind, RouteEntry};
use crate::wire::VXLAN_PORT;
use foldhash::fast::FixedState;
use ipnet::Ipv4Net;
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use sysctl::Sysctl;

/// How pod traffic crosses between nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overlay {
    Routed,
    Vxlan,
}

/// The VXLAN device flannel creates.
pub const VXLAN_DEVICE: &str = "flannel.1";
pub const VXLAN_VNI: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    pub name: String,
    pub address: Ipv4Addr,
    /// More addresses on `eth0` (a second InternalIP, an ExternalIP),
    /// reachable on the physical network like the first.
    pub extra_addresses: Vec<Ipv4Addr>,
    pub pod_cidr: Ipv4Net,
    /// Settings beyond the model's own ([`sysctl::node_defaults`]): what
    /// kube-proxy writes at start.
    pub sysctls: Vec<Sysctl>,
    /// Daemons listening on the node (kube-proxy's health checks).
    pub listeners: Vec<Socket>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSpec {
    pub name: String,
    pub node: String,
    pub ip: Ipv4Addr,
    pub host_network: bool,
    /// Ports the pod listens on (`(protocol number, port)`); empty means
    /// it answers on every port.
    pub listens: Vec<(u8, u16)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalSpec {
    pub name: String,
    pub address: Ipv4Addr,
    /// Routes beyond the node addresses: `(prefix, gateway)`, the gateway
    /// on the physical network (a node's address).
    pub routes: Vec<(Ipv4Net, Ipv4Addr)>,
}

/// How a load balancer hands traffic to nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The packet reaches the node unchanged (destination = frontend).
    Direct,
    /// The LB opens its own connection from `address` to the node's
    /// NodePort (the client's address is lost).
    NodePort { address: Ipv4Addr },
}

/// One frontend (address, protocol, port) and the nodes that may receive
/// its traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frontend {
    pub address: Ipv4Addr,
    pub proto: u8,
    pub port: u16,
    /// The service's NodePort, used by `Delivery::NodePort`.
    pub node_port: Option<u16>,
    /// Host indexes of the eligible nodes, ascending.
    pub nodes: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadBalancer {
    pub delivery: Delivery,
    pub frontends: Vec<Frontend>,
}

/// Everything needed to build the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkSpec {
    pub overlay: Overlay,
    pub nodes: Vec<NodeSpec>,
    pub pods: Vec<PodSpec>,
    pub externals: Vec<ExternalSpec>,
    pub lb_delivery: Delivery,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostKind {
    Node,
    /// A pod in its own namespace, on node `node` (a host index).
    Pod {
        node: usize,
    },
    External,
}

/// What a listener whose protocol kpsim knows answers: an HTTP status
/// line's code and the body.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HttpAnswer {
    pub status: u16,
    pub body: String,
}

/// A listening socket: who holds it, on which ports and addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Socket {
    /// A pod's name, or a node daemon's (`kube-proxy`).
    pub owner: String,
    /// `(protocol number, port)` it answers on; empty: every port (a pod
    /// that declares no ports).
    pub ports: Vec<(u8, u16)>,
    /// The local addresses it is bound to; empty: all of them.
    pub addresses: Vec<Ipv4Addr>,
    /// What it answers, when kpsim models the service behind it.
    pub answer: Option<HttpAnswer>,
}

impl Socket {
    /// A pod's socket: every local address, its declared ports.
    pub fn pod(name: &str, ports: &[(u8, u16)]) -> Socket {
        Socket {
            owner: name.to_string(),
            ports: ports.to_vec(),
            addresses: Vec::new(),
            answer: None,
        }
    }

    /// Whether it takes a packet for `dst:port` of protocol `proto`.
    pub fn takes(&self, proto: u8, dst: Ipv4Addr, port: u16) -> bool {
        (self.ports.is_empty() || self.ports.contains(&(proto, port)))
            && (self.addresses.is_empty() || self.addresses.contains(&dst))
    }
}

/// One network namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub kind: HostKind,
    pub net: HostNet,
    /// The sockets listening in this namespace: a node's daemons, then its
    /// hostNetwork pods; or the pod itself.
    pub sockets: Vec<Socket>,
    /// The kernel settings the model gives this host (nodes only), in the
    /// order they are set.
    pub sysctls: Vec<Sysctl>,
}

impl Host {
    /// The socket that takes a packet for `dst:port` here, if any.
    pub fn listener(&self, proto: u8, dst: Ipv4Addr, port: u16) -> Option<&Socket> {
        self.sockets.iter().find(|s| s.takes(proto, dst, port))
    }
}

/// Where a packet leaving a host by `out_iface` toward `nexthop` arrives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// At `host`, on `in_iface`.
    Host { host: usize, in_iface: String },
    /// Into the VXLAN device: encapsulate from `outer_src` to `outer_dst`
    /// (node addresses); the inner packet arrives on `host`'s `flannel.1`.
    Vxlan {
        host: usize,
        outer_src: Ipv4Addr,
        outer_dst: Ipv4Addr,
    },
    /// A load balancer frontend address on the physical network.
    LoadBalancer { address: Ipv4Addr },
    /// Back into the same host through loopback.
    Loopback,
    /// Nobody on the link has the next hop's address.
    Nobody,
}

/// The cluster's hosts and links.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    pub hosts: Vec<Host>,
    pub overlay: Overlay,
    pub load_balancer: LoadBalancer,
    /// Address on the physical network → host index (nodes, externals).
    lan: BTreeMap<Ipv4Addr, usize>,
    /// Pod IP → host index, per node.
    bridge: BTreeMap<(usize, Ipv4Addr), usize>,
    /// `flannel.1` address → node host index.
    vteps: BTreeMap<Ipv4Addr, usize>,
    by_name: BTreeMap<String, usize>,
}

impl Network {
    /// Build every host, interface and route. Host order: nodes, then pods
    /// (hostNetwork pods are not hosts: they resolve to their node), then
    /// externals, each in spec order.
    pub fn build(spec: &NetworkSpec) -> Network {
        // Room for every host at once: the pods' hosts are tens of
        // thousands, and growing past them would copy them all.
        let mut hosts =
            Vec::with_capacity(spec.nodes.len() + spec.pods.len() + spec.externals.len());
        let mut lan = BTreeMap::new();
        let mut vteps = BTreeMap::new();
        // Host-network pods by node name, in pod order.
        let mut host_network: BTreeMap<&str, Vec<&PodSpec>> = BTreeMap::new();
        for p in spec.pods.iter().filter(|p| p.host_network) {
            host_network.entry(p.node.as_str()).or_default().push(p);
        }
        for node in &spec.nodes {
            lan.insert(node.address, hosts.len());
            for a in &node.extra_addresses {
                lan.insert(*a, hosts.len());
            }
            vteps.insert(node.pod_cidr.network(), hosts.len());
            let mut sysctls = sysctl::node_defaults();
            sysctls.extend(node.sysctls.iter().cloned());
            hosts.push(Host {
                name: node.name.clone(),
                kind: HostKind::Node,
                net: node_net(node, spec, &sysctls),
                sysctls,
                sockets: node
                    .listeners
                    .iter()
                    .cloned()
                    .chain(
                        host_network
                            .get(node.name.as_str())
                            .into_iter()
                            .flatten()
                            .map(|p| Socket::pod(&p.name, &p.listens)),
                    )
                    .collect(),
            });
        }
        let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
        for (i, h) in hosts.iter().enumerate() {
            by_name.insert(h.name.clone(), i);
        }
        // What `by_name` holds (nodes, then host-network pods), hashed:
        // asked once per pod.
        let mut named: HashMap<&str, usize, FixedState> = spec
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.as_str(), i))
            .collect();
        // Pods on a bridge, with their node: each becomes a host, made in
        // parallel and added in pod order.
        let mut bridged: Vec<(&PodSpec, usize)> = Vec::with_capacity(spec.pods.len());
        let mut on_bridge: Vec<((usize, Ipv4Addr), usize)> = Vec::with_capacity(spec.pods.len());
        for pod in &spec.pods {
            let Some(&node) = named.get(pod.node.as_str()) else {
                continue;
            };
            if pod.host_network {
                by_name.insert(pod.name.clone(), node);
                named.insert(&pod.name, node);
                continue;
            }
            on_bridge.push(((node, pod.ip), hosts.len() + bridged.len()));
            bridged.push((pod, node));
        }
        // Sorted and built at once; of a pod IP met twice on a node, the
        // later pod is kept, as inserting one by one would keep it.
        let bridge: BTreeMap<(usize, Ipv4Addr), usize> = on_bridge.into_iter().collect();
        hosts.par_extend(
            bridged
                .into_par_iter()
                .map(|(pod, node)| pod_host(pod, node, &spec.nodes[node])),
        );
        for ext in &spec.externals {
            lan.insert(ext.address, hosts.len());
            let mut net = HostNet::new(false);
            net.add_interface(
                "eth0",
                IfaceKind::Ethernet,
                vec![Ipv4Net::new(ext.address, 32).expect("/32")],
            );
            for node in &spec.nodes {
                net.add_route(host_route(node.address, "eth0"));
                for a in &node.extra_addresses {
                    net.add_route(host_route(*a, "eth0"));
                }
            }
            for (dst, via) in &ext.routes {
                net.add_route(RouteEntry {
                    dst: dst.trunc(),
                    via: Some(*via),
                    dev: "eth0".into(),
                    onlink: true,
                    src: None,
                });
            }
            hosts.push(Host {
                name: ext.name.clone(),
                kind: HostKind::External,
                net,
                sockets: Vec::new(),
                sysctls: Vec::new(),
            });
        }
        // Every other host by its name, the first of a name: sorted and
        // added at once (tens of thousands of pods).
        let mut rest: Vec<(&str, usize)> = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (h.name.as_str(), i))
            .filter(|(name, _)| !named.contains_key(name))
            .collect();
        rest.par_sort_by_key(|&(name, _)| name);
        rest.dedup_by_key(|&mut (name, _)| name);
        let mut rest: BTreeMap<String, usize> = rest
            .into_iter()
            .map(|(name, i)| (name.to_string(), i))
            .collect();
        by_name.append(&mut rest);
        Network {
            hosts,
            overlay: spec.overlay,
            load_balancer: LoadBalancer {
                delivery: spec.lb_delivery.clone(),
                frontends: Vec::new(),
            },
            lan,
            bridge,
            vteps,
            by_name,
        }
    }

    /// Register load balancer frontends; externals get a route to each.
    pub fn set_frontends(&mut self, frontends: Vec<Frontend>) {
        let addrs: std::collections::BTreeSet<Ipv4Addr> =
            frontends.iter().map(|f| f.address).collect();
        for h in &mut self.hosts {
            if h.kind == HostKind::External {
                for a in &addrs {
                    if !h.net.routes().iter().any(|r| r.dst.contains(a)) {
                        h.net.add_route(host_route(*a, "eth0"));
                    }
                }
            }
        }
        self.load_balancer.frontends = frontends;
    }

    pub fn host_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The host that owns `addr` as one of its addresses (a node or
    /// external by its physical address, a pod by its IP).
    pub fn host_by_address(&self, addr: Ipv4Addr) -> Option<usize> {
        if let Some(&h) = self.lan.get(&addr) {
            return Some(h);
        }
        self.hosts.iter().position(|h| {
            h.kind != HostKind::External
                && h.net
                    .interfaces
                    .iter()
                    .filter(|i| i.kind != IfaceKind::Loopback)
                    .any(|i| i.addrs.iter().any(|a| a.addr() == addr))
        })
    }

    /// The node a host runs on (itself for a node).
    pub fn node_of(&self, host: usize) -> Option<usize> {
        match self.hosts[host].kind {
            HostKind::Node => Some(host),
            HostKind::Pod { node } => Some(node),
            HostKind::External => None,
        }
    }

    /// Link-layer delivery of a packet sent by `from` out of `out_iface`
    /// toward `nexthop`.
    pub fn arrival(&self, from: usize, out_iface: &str, nexthop: Ipv4Addr) -> Arrival {
        let host = &self.hosts[from];
        if out_iface == "lo" {
            return Arrival::Loopback;
        }
        match (&host.kind, out_iface) {
            (HostKind::Pod { node }, "eth0") => {
                // Pods sit on their node's bridge: the node (gateway) or a
                // sibling pod; both pass the node's netfilter.
                Arrival::Host {
                    host: *node,
                    in_iface: "cni0".into(),
                }
            }
            (HostKind::Node, "cni0") => match self.bridge.get(&(from, nexthop)) {
                Some(&pod) => Arrival::Host {
                    host: pod,
                    in_iface: "eth0".into(),
                },
                None => Arrival::Nobody,
            },
            (HostKind::Node, VXLAN_DEVICE) => match self.vteps.get(&nexthop) {
                Some(&peer) => Arrival::Vxlan {
                    host: peer,
                    outer_src: self.node_address(from),
                    outer_dst: self.node_address(peer),
                },
                None => Arrival::Nobody,
            },
            (_, "eth0") => self.lan_arrival(from, nexthop),
            _ => Arrival::Nobody,
        }
    }

    fn lan_arrival(&self, from: usize, nexthop: Ipv4Addr) -> Arrival {
        if let Some(&h) = self.lan.get(&nexthop) {
            if h != from {
                return Arrival::Host {
                    host: h,
                    in_iface: "eth0".into(),
                };
            }
        }
        if self
            .load_balancer
            .frontends
            .iter()
            .any(|f| f.address == nexthop)
        {
            Arrival::LoadBalancer { address: nexthop }
        } else {
            Arrival::Nobody
        }
    }

    /// A node's address on the physical network.
    pub fn node_address(&self, node: usize) -> Ipv4Addr {
        self.hosts[node]
            .net
            .interface("eth0")
            .and_then(|i| i.addrs.first())
            .map(|a| a.addr())
            .unwrap_or(Ipv4Addr::UNSPECIFIED)
    }
}

/// The host of a pod on node `node` (spec `node_spec`)'s bridge: its
/// address on `eth0`, the node's pod network on link, the default route
/// via the bridge.
fn pod_host(pod: &PodSpec, node: usize, node_spec: &NodeSpec) -> Host {
    let mut net = HostNet::new(false);
    let prefix = node_spec.pod_cidr.prefix_len();
    net.add_interface(
        "eth0",
        IfaceKind::Ethernet,
        vec![Ipv4Net::new(pod.ip, prefix).expect("prefix from a valid net")],
    );
    net.add_route(RouteEntry {
        dst: node_spec.pod_cidr.trunc(),
        via: None,
        dev: "eth0".into(),
        onlink: false,
        src: Some(pod.ip),
    });
    net.add_route(RouteEntry {
        dst: Ipv4Net::default(),
        via: Some(bridge_address(&node_spec.pod_cidr)),
        dev: "eth0".into(),
        onlink: false,
        src: None,
    });
    Host {
        name: pod.name.clone(),
        kind: HostKind::Pod { node },
        net,
        sockets: vec![Socket::pod(&pod.name, &pod.listens)],
        sysctls: Vec::new(),
    }
}

/// The first host address of a pod CIDR: `cni0`'s address.
pub fn bridge_address(pod_cidr: &Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(pod_cidr.network()) + 1)
}

fn host_route(addr: Ipv4Addr, dev: &str) -> RouteEntry {
    RouteEntry {
        dst: Ipv4Net::new(addr, 32).expect("/32"),
        via: None,
        dev: dev.into(),
        onlink: true,
        src: None,
    }
}

fn node_net(node: &NodeSpec, spec: &NetworkSpec, sysctls: &[Sysctl]) -> HostNet {
    let mut net = HostNet::new(sysctl::enabled(sysctls, sysctl::IP_FORWARD));
    net.route_localnet = sysctl::enabled(sysctls, sysctl::ROUTE_LOCALNET);
    let eth0 = std::iter::once(node.address)
        .chain(node.extra_addresses.iter().copied())
        .map(|a| Ipv4Net::new(a, 32).expect("/32"))
        .collect();
    net.add_interface("eth0", IfaceKind::Ethernet, eth0);
    let cidr = node.pod_cidr.trunc();
    let gw = bridge_address(&cidr);
    net.add_interface(
        "cni0",
        IfaceKind::Bridge,
        vec![Ipv4Net::new(gw, cidr.prefix_len()).expect("valid")],
    );
    net.add_route(RouteEntry {
        dst: Ipv4Net::default(),
        via: None,
        dev: "eth0".into(),
        onlink: true,
        src: None,
    });
    net.add_route(RouteEntry {
        dst: cidr,
        via: None,
        dev: "cni0".into(),
        onlink: false,
        src: Some(gw),
    });
    if spec.overlay == Overlay::Vxlan {
        net.add_interface(
            VXLAN_DEVICE,
            IfaceKind::Vxlan {
                vni: VXLAN_VNI,
                port: VXLAN_PORT,
            },
            vec![Ipv4Net::new(cidr.network(), 32).expect("/32")],
        );
    }
    for other in &spec.nodes {
        if other.name == node.name {
            continue;
        }
        let route = match spec.overlay {
            Overlay::Routed => RouteEntry {
                dst: other.pod_cidr.trunc(),
                via: Some(other.address),
                dev: "eth0".into(),
                onlink: true,
                src: None,
            },
            Overlay::Vxlan => RouteEntry {
                dst: other.pod_cidr.trunc(),
                via: Some(other.pod_cidr.network()),
                dev: VXLAN_DEVICE.into(),
                onlink: true,
                src: None,
            },
        };
        net.add_route(route);
    }
    net
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn spec(overlay: Overlay) -> NetworkSpec {
        NetworkSpec {
            overlay,
            nodes: vec![
                NodeSpec {
                    name: "node-a".into(),
                    address: a("192.168.10.11"),
                    extra_addresses: vec![],
                    pod_cidr: "10.244.1.0/24".parse().unwrap(),
                    sysctls: vec![],
                    listeners: vec![],
                },
                NodeSpec {
                    name: "node-b".into(),
                    address: a("192.168.10.12"),
                    extra_addresses: vec![],
                    pod_cidr: "10.244.2.0/24".parse().unwrap(),
                    sysctls: vec![],
                    listeners: vec![],
                },
            ],
            pods: vec![PodSpec {
                name: "web-1".into(),
                node: "node-b".into(),
                ip: a("10.244.2.5"),
                host_network: false,
                listens: vec![],
            }],
            externals: vec![ExternalSpec {
                name: "laptop".into(),
                address: a("203.0.113.7"),
                routes: vec![],
            }],
            lb_delivery: Delivery::Direct,
        }
    }

    #[test]
    fn hosts_in_order_with_bridge_addresses() {
        let n = Network::build(&spec(Overlay::Routed));
        let names: Vec<_> = n.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["node-a", "node-b", "web-1", "laptop"]);
        assert!(n.hosts[1].net.is_local(a("10.244.2.1")));
        assert_eq!(n.host_by_address(a("10.244.2.5")), Some(2));
    }

    #[test]
    fn routed_and_vxlan_links() {
        let n = Network::build(&spec(Overlay::Routed));
        let r = n.hosts[0].net.decide(a("10.244.2.5"));
        let crate::routing::Decision::Via(route, nh) = r else {
            panic!()
        };
        assert_eq!((route.dev.as_str(), nh), ("eth0", a("192.168.10.12")));
        assert_eq!(
            n.arrival(0, "eth0", nh),
            Arrival::Host {
                host: 1,
                in_iface: "eth0".into()
            }
        );
        let v = Network::build(&spec(Overlay::Vxlan));
        let crate::routing::Decision::Via(route, nh) = v.hosts[0].net.decide(a("10.244.2.5"))
        else {
            panic!()
        };
        assert_eq!((route.dev.as_str(), nh), (VXLAN_DEVICE, a("10.244.2.0")));
        assert_eq!(
            v.arrival(0, VXLAN_DEVICE, nh),
            Arrival::Vxlan {
                host: 1,
                outer_src: a("192.168.10.11"),
                outer_dst: a("192.168.10.12")
            }
        );
    }

    #[test]
    fn externals_reach_only_nodes() {
        let n = Network::build(&spec(Overlay::Routed));
        assert_eq!(
            n.hosts[3].net.decide(a("10.244.2.5")),
            crate::routing::Decision::Unreachable
        );
        assert!(matches!(
            n.hosts[3].net.decide(a("192.168.10.11")),
            crate::routing::Decision::Via(..)
        ));
    }

    #[test]
    fn pod_traffic_enters_node_bridge() {
        let n = Network::build(&spec(Overlay::Routed));
        assert_eq!(
            n.arrival(2, "eth0", a("10.244.2.1")),
            Arrival::Host {
                host: 1,
                in_iface: "cni0".into()
            }
        );
        assert_eq!(
            n.arrival(1, "cni0", a("10.244.2.5")),
            Arrival::Host {
                host: 2,
                in_iface: "eth0".into()
            }
        );
    }
}
