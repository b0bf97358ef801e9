//! What a node's rules depend on, and nothing more.
//!
//! kube-proxy writes nearly the same rules on every node: only a few facts
//! of the node change them (which endpoints are local to it or hinted for
//! it, its pod CIDR for `detectLocalMode: NodeCIDR`, its addresses for the
//! node ports, whether it lies in a LoadBalancer's source ranges). A
//! [`NodeView`] is those facts; the generators ([`super::view_rules`],
//! [`super::nft::view_table`]) read the node only through it, so two nodes
//! with equal views (and equal settings) get the same rules, byte for
//! byte, and a cluster's nodes can be compiled once per distinct view.

use super::model::{categorize, Categorized, EndpointInfo, ServicePortInfo};
use super::{NodeInfo, ProxyModel};
use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;

/// The facts of one node its rules are written from, in the form one rule
/// language uses ([`NodeView::iptables`], [`super::nft::node_view`]).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct NodeView<'a> {
    /// The local-traffic detector's (IfLocal, IfNotLocal) arguments.
    pub(super) detector: Option<(String, String)>,
    /// The addresses node ports are served on, as the language needs them
    /// (`None`: every local address).
    pub(super) node_port_ips: Option<Vec<Ipv4Addr>>,
    /// Per service port of the model, in its order.
    pub(super) services: Vec<ServiceView<'a>>,
}

/// What one service port's rules on a node depend on.
#[derive(Debug)]
pub(super) struct ServiceView<'a> {
    /// The node's categorisation of the service's endpoints.
    pub cat: Categorized<'a>,
    /// Whether the node's IP is in one of `loadBalancerSourceRanges`
    /// (traffic from the node itself to the VIP is then let through).
    pub node_in_source_ranges: bool,
}

impl<'a> ServiceView<'a> {
    fn of(svc: &ServicePortInfo, eps: &'a [EndpointInfo], node: &NodeInfo) -> Self {
        ServiceView {
            cat: categorize(svc, eps, &node.name, node.zone.as_deref()),
            node_in_source_ranges: svc.lb_source_ranges.iter().any(|c| c.contains(&node.ip)),
        }
    }

    /// The endpoint lists, in a fixed order, for comparing and hashing.
    fn lists(&self) -> [&[&'a EndpointInfo]; 3] {
        [&self.cat.cluster, &self.cat.local, &self.cat.reachable]
    }
}

/// Equal when the same endpoints (the model's own, by identity) fall in
/// the same categories: the rules come from the model's endpoints, so the
/// same ones give the same text.
impl PartialEq for ServiceView<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cat.has_any == other.cat.has_any
            && self.node_in_source_ranges == other.node_in_source_ranges
            && self.lists().iter().zip(other.lists()).all(|(a, b)| {
                a.len() == b.len() && a.iter().zip(b.iter()).all(|(x, y)| std::ptr::eq(*x, *y))
            })
    }
}

impl Eq for ServiceView<'_> {}

impl Hash for ServiceView<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        (self.cat.has_any, self.node_in_source_ranges).hash(h);
        for list in self.lists() {
            list.len().hash(h);
            for e in list {
                std::ptr::hash(*e, h);
            }
        }
    }
}

impl<'a> NodeView<'a> {
    /// The view of `node` with the language's own detector and node-port
    /// addresses.
    pub(super) fn new(
        node: &NodeInfo,
        model: &'a ProxyModel,
        detector: Option<(String, String)>,
        node_port_ips: Option<Vec<Ipv4Addr>>,
    ) -> Self {
        NodeView {
            detector,
            node_port_ips,
            services: model
                .ports
                .iter()
                .map(|(svc, eps)| ServiceView::of(svc, eps, node))
                .collect(),
        }
    }
}
