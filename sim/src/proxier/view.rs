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
use super::{NodeInfo, ProxyModel, ServiceKey};
use rayon::prelude::*;
use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

/// The facts of one node its rules are written from, in the form one rule
/// language uses ([`NodeView::iptables`], [`super::nft::node_view`]).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct NodeView<'a> {
    /// The local-traffic detector's (IfLocal, IfNotLocal) arguments.
    pub(super) detector: Option<(String, String)>,
    /// The addresses node ports are served on, as the language needs them
    /// (`None`: every local address).
    pub(super) node_port_ips: Option<Vec<Ipv4Addr>>,
    /// The views every node has ([`CommonViews`]), shared rather than
    /// copied into each node's view (a cluster has thousands of ports).
    common: SharedViews<'a>,
    /// Per service port of the model, in its order: the node's own view,
    /// `None` where the common one is the view.
    own: Vec<Option<ServiceView<'a>>>,
}

/// Per service port, its view when no node's facts can change it.
/// Equal (and hashed) by identity: the nodes of one cluster share one
/// list, and two lists are never the same cluster's (at worst nodes are
/// then told apart that need not be, never the other way round).
#[derive(Clone, Debug)]
struct SharedViews<'a>(Arc<[Option<ServiceView<'a>>]>);

impl PartialEq for SharedViews<'_> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SharedViews<'_> {}

impl Hash for SharedViews<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        std::ptr::hash(Arc::as_ptr(&self.0).cast::<()>(), h);
    }
}

/// What one service port's rules on a node depend on.
#[derive(Clone, Debug)]
pub(super) struct ServiceView<'a> {
    /// The node's categorisation of the service's endpoints (shared by
    /// the nodes of a cluster when it cannot depend on the node, see
    /// [`CommonViews`]).
    pub cat: Arc<Categorized<'a>>,
    /// Whether the node's IP is in one of `loadBalancerSourceRanges`
    /// (traffic from the node itself to the VIP is then let through).
    pub node_in_source_ranges: bool,
}

impl<'a> ServiceView<'a> {
    fn of(svc: &ServicePortInfo, eps: &'a [EndpointInfo], node: &NodeInfo) -> Self {
        ServiceView {
            cat: Arc::new(categorize(svc, eps, &node.name, node.zone.as_deref())),
            node_in_source_ranges: svc.lb_source_ranges.iter().any(|c| c.contains(&node.ip)),
        }
    }

    /// The view every node has of the port, if no fact of a node can
    /// change it: no Local policy (the only use of which endpoints are
    /// the node's own), no topology hints (the only use of its name and
    /// zone beyond that), no `loadBalancerSourceRanges` (the only use of
    /// its IP).
    fn common(svc: &ServicePortInfo, eps: &'a [EndpointInfo]) -> Option<Self> {
        let hinted = eps
            .iter()
            .any(|e| !e.zone_hints.is_empty() || !e.node_hints.is_empty());
        if svc.uses_local_endpoints() || hinted || !svc.lb_source_ranges.is_empty() {
            return None;
        }
        Some(ServiceView {
            cat: Arc::new(categorize(svc, eps, "", None)),
            node_in_source_ranges: false,
        })
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
        if Arc::ptr_eq(&self.cat, &other.cat) {
            return self.node_in_source_ranges == other.node_in_source_ranges;
        }
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

/// What every node of a cluster sees alike of its service ports, worked
/// out once for all of them: most ports (Cluster policies, no hints) look
/// the same from every node.
pub struct CommonViews<'a> {
    model: &'a ProxyModel,
    /// Per service port of the model, its view when no node's facts can
    /// change it.
    views: SharedViews<'a>,
}

impl<'a> CommonViews<'a> {
    pub fn new(model: &'a ProxyModel) -> Self {
        CommonViews {
            model,
            views: SharedViews(
                model
                    .ports
                    .par_iter()
                    .map(|(svc, eps)| ServiceView::common(svc, eps))
                    .collect::<Vec<_>>()
                    .into(),
            ),
        }
    }
}

impl<'a> NodeView<'a> {
    /// The view of `node` of `common`'s model, with the language's own
    /// detector and node-port addresses.
    pub(super) fn new(
        node: &NodeInfo,
        common: &CommonViews<'a>,
        detector: Option<(String, String)>,
        node_port_ips: Option<Vec<Ipv4Addr>>,
    ) -> Self {
        NodeView {
            detector,
            node_port_ips,
            common: common.views.clone(),
            own: common
                .model
                .ports
                .iter()
                .zip(common.views.0.iter())
                .map(|((svc, eps), seen)| match seen {
                    Some(_) => None,
                    None => Some(ServiceView::of(svc, eps, node)),
                })
                .collect(),
        }
    }

    /// The node's view of service port `port` (the model's `port`-th).
    pub(super) fn service(&self, port: usize) -> &ServiceView<'a> {
        self.own[port]
            .as_ref()
            .or(self.common.0[port].as_ref())
            .expect("a port's view is the node's own or the common one")
    }

    /// The node's view of every service port, in the model's order.
    pub(super) fn services(&self) -> impl Iterator<Item = &ServiceView<'a>> {
        (0..self.own.len()).map(|port| self.service(port))
    }
}

/// What was made of a service port's part for nodes that see it as the
/// view, with the key.
type Made<'m, T> = (ServiceKey, ServiceView<'m>, Arc<T>);

/// What was made of service ports' parts of nodes' rules
/// ([`super::RulesWriter::service`]), kept by what a part depends on: the
/// port, its [`ServiceView`] and the [`ServiceKey`]. Nodes that see a
/// service port alike (most nodes, for most ports) get what the first of
/// them made.
pub struct ServiceMemo<'m, T> {
    /// Per service port of the model: each (key, view) seen, and what was
    /// made for it (few per port: the ways nodes see it).
    ports: Vec<Mutex<Vec<Made<'m, T>>>>,
}

impl<'m, T> ServiceMemo<'m, T> {
    pub fn new(model: &'m ProxyModel) -> Self {
        ServiceMemo {
            ports: model.ports.iter().map(|_| Mutex::default()).collect(),
        }
    }

    /// What `make` makes of port `port`'s part on a node seen as `view`
    /// with `key`: made now if no node seen alike came before. Two nodes
    /// alike asking at once may both make it; the first one kept is
    /// what both get, and they are equal anyway.
    pub fn get(
        &self,
        key: &ServiceKey,
        view: &NodeView<'m>,
        port: usize,
        make: impl FnOnce() -> T,
    ) -> Arc<T> {
        let seen = view.service(port);
        let find = |known: &[Made<'m, T>]| {
            known
                .iter()
                .find(|(k, v, _)| k == key && v == seen)
                .map(|(_, _, made)| made.clone())
        };
        if let Some(made) = find(&self.ports[port].lock().expect("not poisoned")) {
            return made;
        }
        let made = Arc::new(make());
        let mut known = self.ports[port].lock().expect("not poisoned");
        if let Some(first) = find(&known) {
            return first;
        }
        known.push((key.clone(), seen.clone(), made.clone()));
        made
    }
}
