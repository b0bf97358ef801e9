//! The simulated network as Linux commands: which namespaces, devices,
//! addresses, routes, neighbours and sysctls make the kernel hold what
//! [`crate::network::Network`] models. Pure: it only writes commands, so it
//! is unit-tested without root.
//!
//! Namespaces: one per host (node, pod, external) plus `lan`, the physical
//! network: a bridge joining every node's and external's `eth0`. A pod's
//! `eth0` is one end of a veth pair whose other end (`vethN`) is a port of
//! its node's `cni0`. VXLAN devices get a fixed MAC per node and permanent
//! neighbour and forwarding entries to every other node, as flannel writes.

use crate::network::{HostKind, Network};
use crate::routing::{IfaceKind, RouteEntry};
use std::net::Ipv4Addr;

/// The bridge in the `lan` namespace.
pub const LAN_BRIDGE: &str = "lan";

/// What to run in one namespace, in phases (see [`Plan`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NsPlan {
    /// `ip` commands creating bridges (after the veth pairs, before they
    /// are attached).
    pub devices: Vec<String>,
    /// Veth pairs created from this namespace, their peer end in another.
    pub links: Vec<Veth>,
    /// `ip` commands run once every device exists: ports, VXLAN, addresses,
    /// links up, routes, neighbours.
    pub config: Vec<String>,
    /// `bridge` commands (VXLAN forwarding entries).
    pub fdb: Vec<String>,
    /// `sysctl` settings.
    pub sysctls: Vec<(String, String)>,
}

/// Which namespace holds the far end of a veth pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// The physical network's namespace.
    Lan,
    /// Host `i`'s namespace.
    Host(usize),
}

/// A veth pair: `eth0` here, `peer_name` in `peer`'s namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Veth {
    pub peer: Peer,
    pub peer_name: String,
}

impl Veth {
    /// The `ip` command, given the peer namespace's name.
    pub fn command(&self, peer_netns: &str) -> String {
        format!(
            "link add eth0 type veth peer name {} netns {peer_netns}",
            self.peer_name
        )
    }
}

/// The whole lab: `hosts[i]` is host `i` of the network.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub lan: NsPlan,
    pub hosts: Vec<NsPlan>,
}

/// A VXLAN device's MAC: fixed per node so neighbours can be written.
pub fn vtep_mac(host: usize) -> String {
    format!("02:6b:70:00:{:02x}:{:02x}", (host >> 8) & 0xff, host & 0xff)
}

/// The `lan` bridge port of host `host`.
fn lan_port(host: usize) -> String {
    format!("l{host}")
}

/// The node-side end of pod `host`'s veth.
fn pod_port(host: usize) -> String {
    format!("veth{host}")
}

/// What the lab sets beyond the model, in every namespace of a kind: kernel
/// behaviour the model leaves out, turned off so that the kernel is
/// compared on what the model does describe (the README lists each).
pub fn neutralised(kind: &HostKind) -> Vec<(String, String)> {
    let mut v = vec![
        // ICMP errors are rate-limited per peer (icmp_ratelimit: one every
        // 1000 ms after a burst of six) and overall (icmp_msgs_per_sec);
        // the model sends every one. A zero mask exempts every ICMP type
        // from both limits; icmp_ratelimit=0 says the same of the per-peer
        // one to a reader.
        ("net.ipv4.icmp_ratelimit", "0"),
        ("net.ipv4.icmp_ratemask", "0"),
    ];
    if *kind == HostKind::Node {
        // The model leaves reverse-path filtering out.
        v.push(("net.ipv4.conf.all.rp_filter", "0"));
        v.push(("net.ipv4.conf.default.rp_filter", "0"));
    }
    v.into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn plan(net: &Network) -> Plan {
    let mut p = Plan {
        lan: NsPlan::default(),
        hosts: vec![NsPlan::default(); net.hosts.len()],
    };
    p.lan
        .devices
        .push(format!("link add {LAN_BRIDGE} type bridge"));
    p.lan.config.push(format!("link set {LAN_BRIDGE} up"));
    for (i, h) in net.hosts.iter().enumerate() {
        let ns = &mut p.hosts[i];
        match h.kind {
            HostKind::Node | HostKind::External => {
                ns.links.push(Veth {
                    peer: Peer::Lan,
                    peer_name: lan_port(i),
                });
                p.lan
                    .config
                    .push(format!("link set {} master {LAN_BRIDGE} up", lan_port(i)));
            }
            HostKind::Pod { node } => {
                ns.links.push(Veth {
                    peer: Peer::Host(node),
                    peer_name: pod_port(i),
                });
            }
        }
        // The model's settings for the host (what the node and kube-proxy
        // set), where a namespace has its own copy; then the lab's own.
        ns.sysctls.extend(
            h.sysctls
                .iter()
                .filter(|s| s.per_namespace())
                .filter_map(|s| Some((s.key.clone(), s.value.clone()?))),
        );
        ns.sysctls.extend(neutralised(&h.kind));
    }
    for (i, h) in net.hosts.iter().enumerate() {
        if let HostKind::Pod { node } = h.kind {
            let port = pod_port(i);
            p.hosts[node]
                .config
                .push(format!("link set {port} master cni0 up"));
            // The CNI bridge plugin's hairpinMode (flannel turns it on): a
            // pod reaching itself through a service gets its packet back
            // out of the port it came in by.
            p.hosts[node]
                .config
                .push(format!("link set {port} type bridge_slave hairpin on"));
        }
    }
    for (i, h) in net.hosts.iter().enumerate() {
        configure_host(net, i, &mut p.hosts[i]);
        if h.kind == HostKind::Node {
            vxlan_peers(net, i, &mut p.hosts[i]);
        }
    }
    p
}

fn configure_host(net: &Network, i: usize, ns: &mut NsPlan) {
    let h = &net.hosts[i];
    for iface in &h.net.interfaces {
        match &iface.kind {
            IfaceKind::Loopback => continue,
            IfaceKind::Ethernet => {}
            IfaceKind::Bridge => ns
                .devices
                .push(format!("link add {} type bridge", iface.name)),
            IfaceKind::Vxlan { vni, port } => {
                ns.config.push(format!(
                    "link add {} type vxlan id {vni} local {} dev eth0 dstport {port} nolearning",
                    iface.name,
                    net.node_address(i)
                ));
                ns.config
                    .push(format!("link set {} address {}", iface.name, vtep_mac(i)));
            }
        }
        for a in &iface.addrs {
            ns.config.push(format!("addr add {a} dev {}", iface.name));
        }
        ns.config.push(format!("link set {} up", iface.name));
    }
    for r in h.net.routes() {
        ns.config.push(route_command(r));
    }
}

/// `route replace`, so a route the kernel already added for an address's
/// prefix is taken over instead of failing.
pub fn route_command(r: &RouteEntry) -> String {
    let mut s = String::from("route replace ");
    if r.dst.prefix_len() == 0 {
        s.push_str("default");
    } else {
        s.push_str(&r.dst.to_string());
    }
    if let Some(v) = r.via {
        s.push_str(&format!(" via {v}"));
    }
    s.push_str(&format!(" dev {}", r.dev));
    if r.onlink && r.via.is_some() {
        s.push_str(" onlink");
    }
    if let Some(src) = r.src {
        s.push_str(&format!(" src {src}"));
    }
    s
}

/// flannel's static entries: for every other node, the neighbour (its VTEP
/// address → MAC) and the forwarding entry (MAC → its node address).
fn vxlan_peers(net: &Network, i: usize, ns: &mut NsPlan) {
    let Some(dev) = vxlan_device(net, i) else {
        return;
    };
    for (j, other) in net.hosts.iter().enumerate() {
        if j == i || other.kind != HostKind::Node {
            continue;
        }
        let Some(vtep) = vtep_address(net, j) else {
            continue;
        };
        ns.config.push(format!(
            "neigh replace {vtep} lladdr {} dev {dev} nud permanent",
            vtep_mac(j)
        ));
        ns.fdb.push(format!(
            "fdb append {} dev {dev} dst {}",
            vtep_mac(j),
            net.node_address(j)
        ));
    }
}

fn vxlan_device(net: &Network, host: usize) -> Option<String> {
    net.hosts[host]
        .net
        .interfaces
        .iter()
        .find(|i| matches!(i.kind, IfaceKind::Vxlan { .. }))
        .map(|i| i.name.clone())
}

fn vtep_address(net: &Network, host: usize) -> Option<Ipv4Addr> {
    let dev = vxlan_device(net, host)?;
    net.hosts[host]
        .net
        .interface(&dev)?
        .addrs
        .first()
        .map(|a| a.addr())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::{Delivery, ExternalSpec, NetworkSpec, NodeSpec, Overlay, PodSpec};

    fn net(overlay: Overlay) -> Network {
        Network::build(&NetworkSpec {
            overlay,
            nodes: vec![
                NodeSpec {
                    name: "node-a".into(),
                    address: "192.168.10.11".parse().unwrap(),
                    extra_addresses: vec![],
                    pod_cidr: "10.244.1.0/24".parse().unwrap(),
                    sysctls: vec![],
                    listeners: vec![],
                },
                NodeSpec {
                    name: "node-b".into(),
                    address: "192.168.10.12".parse().unwrap(),
                    extra_addresses: vec![],
                    pod_cidr: "10.244.2.0/24".parse().unwrap(),
                    sysctls: vec![],
                    listeners: vec![],
                },
            ],
            pods: vec![PodSpec {
                name: "web-1".into(),
                node: "node-b".into(),
                ip: "10.244.2.5".parse().unwrap(),
                host_network: false,
                listens: vec![],
            }],
            externals: vec![ExternalSpec {
                name: "laptop".into(),
                address: "203.0.113.7".parse().unwrap(),
                routes: vec![],
            }],
            lb_delivery: Delivery::Direct,
        })
    }

    #[test]
    fn nodes_and_externals_join_the_lan_pods_their_bridge() {
        let p = plan(&net(Overlay::Routed));
        assert_eq!(
            p.hosts[0].links,
            [Veth {
                peer: Peer::Lan,
                peer_name: "l0".into()
            }]
        );
        assert_eq!(
            p.hosts[0].links[0].command("lab-lan"),
            "link add eth0 type veth peer name l0 netns lab-lan"
        );
        assert_eq!(
            p.hosts[2].links,
            [Veth {
                peer: Peer::Host(1),
                peer_name: "veth2".into()
            }]
        );
        assert!(p.hosts[1]
            .config
            .contains(&"link set veth2 master cni0 up".to_string()));
        assert!(p
            .lan
            .config
            .contains(&"link set l3 master lan up".to_string()));
        assert_eq!(p.hosts[1].devices, ["link add cni0 type bridge"]);
    }

    #[test]
    fn routes_are_the_models() {
        let p = plan(&net(Overlay::Routed));
        let a = &p.hosts[0].config;
        assert!(a.contains(&"route replace default dev eth0".to_string()));
        assert!(a.contains(
            &"route replace 10.244.2.0/24 via 192.168.10.12 dev eth0 onlink".to_string()
        ));
        assert!(a.contains(&"route replace 10.244.1.0/24 dev cni0 src 10.244.1.1".to_string()));
        let pod = &p.hosts[2].config;
        assert!(pod.contains(&"route replace default via 10.244.2.1 dev eth0".to_string()));
        let ext = &p.hosts[3].config;
        assert!(ext.contains(&"route replace 192.168.10.11/32 dev eth0".to_string()));
        assert!(!ext.iter().any(|c| c.contains("10.244")));
    }

    #[test]
    fn vxlan_peers_are_static() {
        let p = plan(&net(Overlay::Vxlan));
        let a = &p.hosts[0];
        assert!(a.config.contains(
            &"link add flannel.1 type vxlan id 1 local 192.168.10.11 dev eth0 dstport 8472 nolearning"
                .to_string()
        ));
        assert!(a.config.contains(
            &"neigh replace 10.244.2.0 lladdr 02:6b:70:00:00:01 dev flannel.1 nud permanent"
                .to_string()
        ));
        assert_eq!(
            a.fdb,
            ["fdb append 02:6b:70:00:00:01 dev flannel.1 dst 192.168.10.12"]
        );
        assert!(a.config.contains(
            &"route replace 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink".to_string()
        ));
    }

    #[test]
    fn nodes_forward_and_bridge_through_iptables() {
        let p = plan(&net(Overlay::Routed));
        assert!(p.hosts[0]
            .sysctls
            .contains(&("net.bridge.bridge-nf-call-iptables".into(), "1".into())));
        assert!(p.hosts[0]
            .sysctls
            .contains(&("net.ipv4.ip_forward".into(), "1".into())));
        assert!(!p.hosts[2]
            .sysctls
            .iter()
            .any(|(k, _)| k == "net.ipv4.ip_forward"));
    }

    #[test]
    fn every_namespace_sends_every_icmp_error() {
        let p = plan(&net(Overlay::Routed));
        for h in &p.hosts {
            assert!(h
                .sysctls
                .contains(&("net.ipv4.icmp_ratemask".into(), "0".into())));
        }
    }

    #[test]
    fn kube_proxy_settings_reach_the_node_but_not_the_machine_wide_ones() {
        use crate::network::sysctl::{self, SetBy, Sysctl};
        let mut n = net(Overlay::Routed);
        n.hosts[0].sysctls.extend([
            Sysctl::new(sysctl::ROUTE_LOCALNET, 1, SetBy::KubeProxy, "test"),
            Sysctl::new(sysctl::NF_CONNTRACK_MAX, 131072, SetBy::KubeProxy, "test"),
        ]);
        let p = plan(&n);
        assert!(p.hosts[0]
            .sysctls
            .contains(&("net.ipv4.conf.all.route_localnet".into(), "1".into())));
        assert!(!p.hosts[0]
            .sysctls
            .iter()
            .any(|(k, _)| k == sysctl::NF_CONNTRACK_MAX));
    }
}
