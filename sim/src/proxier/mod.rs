//! What kube-proxy (iptables mode) and kubelet write into a node's
//! netfilter tables, for a set of Services and EndpointSlices.
//!
//! Reproduces the iptables proxier of Kubernetes [`KUBE_PROXY_VERSION`]
//! (`pkg/proxy/iptables/proxier.go`, `syncProxyRules`), with kubelet's
//! `KUBE-FIREWALL` and canary chains:
//!
//! * chain names hashed as upstream ([`names`]);
//! * per service port, in upstream's order: the cluster IP capture (or the
//!   filter REJECT/DROP when there are no usable endpoints), external IPs,
//!   load balancer VIPs (with `KUBE-FW-` chains and `KUBE-PROXY-FIREWALL`
//!   drops for `loadBalancerSourceRanges`), node ports, health check node
//!   ports; the `KUBE-EXT-` chain with the Local-policy short circuits; the
//!   `KUBE-SVC-`/`KUBE-SVL-` chains with session affinity (`-m recent`)
//!   and `statistic` probabilities `%0.10f` of `1/(n-i)`; the `KUBE-SEP-`
//!   chains with the hairpin masquerade and DNAT;
//! * endpoints selected per node as `CategorizeEndpoints` does (ready,
//!   then serving-terminating fallback; Local policies; topology hints);
//! * "large cluster mode" (more than 1000 endpoints): per-endpoint comments
//!   are left out, as upstream does.
//!
//! Upstream iterates a Go map, so the order of services within
//! `KUBE-SERVICES` on a real node is arbitrary; kpsim orders them by
//! service port name (as upstream's own tests sort them). Endpoints are
//! ordered by their `ip:port` string, as kube-proxy's endpoint cache
//! returns them.
//!
//! The output is `iptables-restore` text written the way kube-proxy writes
//! it (its option order); loading it into the netfilter engine and printing
//! gives what `iptables-save` on the node shows.

pub mod health;
pub mod model;
pub mod names;
pub mod nft;
pub mod startup;
pub mod view;

pub use model::{ProxyModel, ServiceNote};
pub use view::{CommonViews, NodeView, ServiceMemo};

use ipnet::Ipv4Net;
use model::{EndpointInfo, ServicePortInfo};
use rayon::prelude::*;
use std::fmt::Write;
use std::net::Ipv4Addr;
use view::ServiceView;

/// The Kubernetes release whose kube-proxy behaviour is reproduced.
pub const KUBE_PROXY_VERSION: &str = "v1.34";

/// Above this many endpoints kube-proxy leaves per-endpoint comments out.
pub const LARGE_CLUSTER_ENDPOINTS_THRESHOLD: usize = 1000;

/// How kube-proxy tells pod traffic from other traffic (`detectLocalMode`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DetectLocal {
    /// `! -s <clusterCIDR>`.
    ClusterCidr(Ipv4Net),
    /// `! -s <node's podCIDR>`.
    NodeCidr,
    /// `! -i <bridge>`.
    BridgeInterface(String),
    /// `! -i <prefix>+`.
    InterfaceNamePrefix(String),
    /// No detector (e.g. ClusterCIDR mode without a cluster CIDR).
    None,
}

/// The kube-proxy settings that change the rules.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProxyConfig {
    /// `iptables.masqueradeBit` (default 14: mark 0x4000).
    pub masquerade_bit: u32,
    /// `iptables.masqueradeAll`.
    pub masquerade_all: bool,
    pub detect_local: DetectLocal,
    /// `nodePortAddresses`; empty means every local address.
    pub node_port_addresses: Vec<Ipv4Net>,
    /// `iptables.localhostNodePorts` (default true).
    pub localhost_node_ports: bool,
    /// `conntrack.tcpBeLiberal` (default false): when false, kube-proxy
    /// drops INVALID packets in `KUBE-FORWARD`.
    pub conntrack_tcp_liberal: bool,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            masquerade_bit: 14,
            masquerade_all: false,
            detect_local: DetectLocal::None,
            node_port_addresses: Vec::new(),
            localhost_node_ports: true,
            conntrack_tcp_liberal: false,
        }
    }
}

/// The node a ruleset is written for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    /// The node IP (`--bind-address`/InternalIP).
    pub ip: Ipv4Addr,
    pub pod_cidr: Option<Ipv4Net>,
    pub zone: Option<String>,
    /// Every local address (for `nodePortAddresses`).
    pub addresses: Vec<Ipv4Addr>,
}

/// A node's generated rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRules {
    pub node: String,
    /// `iptables-restore` input for the whole node.
    pub restore_text: String,
    pub rule_count: usize,
}

/// Rules for every node, generated in parallel; identical to a serial run
/// (each node's text depends only on its inputs, and results keep node
/// order).
pub fn cluster_rules(
    config: &ProxyConfig,
    nodes: &[NodeInfo],
    model: &ProxyModel,
) -> Vec<NodeRules> {
    nodes
        .par_iter()
        .map(|n| node_rules(config, n, model))
        .collect()
}

/// Lines of one table: chain declarations and rules, in writing order.
/// A node's whole table is the concatenation of its parts
/// ([`RulesWriter`]): the fixed head, each service port's, the tail.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableText {
    chains: Vec<String>,
    rules: String,
    count: usize,
}

impl TableText {
    fn chain(&mut self, name: &str) {
        self.chains.push(name.to_string());
    }

    fn rule(&mut self, parts: &[&str]) {
        let mut first = true;
        for p in parts.iter().filter(|p| !p.is_empty()) {
            if !first {
                self.rules.push(' ');
            }
            self.rules.push_str(p);
            first = false;
        }
        self.rules.push('\n');
        self.count += 1;
    }

    /// `other`'s lines after this one's, as if written here.
    fn append(&mut self, other: &TableText) {
        self.chains.extend(other.chains.iter().cloned());
        self.rules.push_str(&other.rules);
        self.count += other.count;
    }

    /// About the length of [`TableText::write`]'s text (a little more).
    fn size(&self) -> usize {
        let decls: usize = self.chains.iter().map(|c| c.len() + 10).sum();
        self.rules.len() + decls + 1024
    }

    fn write(&self, out: &mut String, table: &str, builtins: &[&str]) {
        let _ = writeln!(out, "*{table}");
        self.write_lines(out, builtins);
        out.push_str("COMMIT\n");
    }

    /// The declarations (of `builtins` and of the chains declared here)
    /// and rules, as lines of the table's text.
    pub fn write_lines(&self, out: &mut String, builtins: &[&str]) {
        for b in builtins {
            let _ = writeln!(out, ":{b} ACCEPT [0:0]");
        }
        for c in &self.chains {
            let _ = writeln!(out, ":{c} - [0:0]");
        }
        out.push_str(&self.rules);
    }
}

/// The tables kube-proxy and kubelet write, in the order they are
/// written, with their built-in chains (declared `ACCEPT`).
pub const TABLES: [(&str, &[&str]); 3] = [
    (
        "mangle",
        &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
    ),
    ("filter", &["INPUT", "FORWARD", "OUTPUT"]),
    ("nat", &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"]),
];

/// Lines for each of [`TABLES`], in their order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tables(pub [TableText; 3]);

impl Tables {
    /// The filter and nat tables, apart.
    fn filter_nat(&mut self) -> (&mut TableText, &mut TableText) {
        let [_, filter, nat] = &mut self.0;
        (filter, nat)
    }

    fn append(&mut self, other: &Tables) {
        for (t, o) in self.0.iter_mut().zip(&other.0) {
            t.append(o);
        }
    }

    /// The `iptables-restore` text of these lines.
    fn write(&self) -> String {
        let mut out = String::with_capacity(self.0.iter().map(TableText::size).sum());
        for ((name, builtins), t) in TABLES.iter().zip(&self.0) {
            t.write(&mut out, name, builtins);
        }
        out
    }

    fn count(&self) -> usize {
        self.0.iter().map(|t| t.count).sum()
    }
}

fn quoted(s: &str) -> String {
    format!("\"{s}\"")
}

/// The local-traffic detector's `IfLocal`/`IfNotLocal` arguments.
fn detector(config: &ProxyConfig, node: &NodeInfo) -> Option<(String, String)> {
    match &config.detect_local {
        DetectLocal::ClusterCidr(c) => Some((format!("-s {c}"), format!("! -s {c}"))),
        DetectLocal::NodeCidr => node
            .pod_cidr
            .map(|c| (format!("-s {c}"), format!("! -s {c}"))),
        DetectLocal::BridgeInterface(b) => Some((format!("-i {b}"), format!("! -i {b}"))),
        DetectLocal::InterfaceNamePrefix(p) => Some((format!("-i {p}+"), format!("! -i {p}+"))),
        DetectLocal::None => None,
    }
}

/// What kubelet alone writes into iptables (nftables mode: kube-proxy
/// writes none): its canary chains.
pub fn kubelet_rules() -> String {
    let mut t = Tables::default();
    for table in &mut t.0 {
        table.chain("KUBE-KUBELET-CANARY");
    }
    t.write()
}

/// Everything kube-proxy and kubelet write on `node`.
pub fn node_rules(config: &ProxyConfig, node: &NodeInfo, model: &ProxyModel) -> NodeRules {
    let (restore_text, rule_count) = write_rules(
        config,
        &NodeView::iptables(config, node, &CommonViews::new(model)),
        model,
    );
    NodeRules {
        node: node.name.clone(),
        restore_text,
        rule_count,
    }
}

impl<'a> NodeView<'a> {
    /// What iptables-mode rules depend on of `node` (see [`view`]), a
    /// node of the cluster `common` is of.
    pub fn iptables(config: &ProxyConfig, node: &NodeInfo, common: &CommonViews<'a>) -> Self {
        let node_port_ips = (!config.node_port_addresses.is_empty()).then(|| {
            let mut ips: Vec<Ipv4Addr> = node
                .addresses
                .iter()
                .chain(std::iter::once(&Ipv4Addr::LOCALHOST))
                .filter(|a| config.node_port_addresses.iter().any(|c| c.contains(*a)))
                .copied()
                .collect();
            ips.sort();
            ips.dedup();
            ips
        });
        NodeView::new(node, common, detector(config, node), node_port_ips)
    }
}

/// The `iptables-restore` text kube-proxy and kubelet write on a node seen
/// as `view` (what [`node_rules`] gives for that node).
pub fn view_rules(config: &ProxyConfig, view: &NodeView, model: &ProxyModel) -> String {
    write_rules(config, view, model).0
}

/// The restore text for a node seen as `view`, and its number of rules:
/// the head, every service port's part in the model's order, the tail.
fn write_rules(config: &ProxyConfig, view: &NodeView, model: &ProxyModel) -> (String, usize) {
    let w = RulesWriter::new(config, view, model);
    let mut t = w.head();
    for port in 0..model.ports.len() {
        w.service_into(port, &mut t);
    }
    t.append(&w.tail());
    (t.write(), t.count())
}

/// Writes the rules of a node seen as `view` part by part: the fixed
/// [`RulesWriter::head`], each service port's [`RulesWriter::service`],
/// the [`RulesWriter::tail`]. Their lines, concatenated table by table,
/// are the node's rules ([`view_rules`]). A service port's part depends
/// only on the port, its [`view::ServiceView`] and
/// [`RulesWriter::service_key`], so nodes can share it.
pub struct RulesWriter<'a> {
    ctx: Ctx<'a>,
    view: &'a NodeView<'a>,
    model: &'a ProxyModel,
    mark: String,
    mark_mask: String,
}

/// Everything a service port's part depends on besides the port and its
/// [`view::ServiceView`]: what [`Ctx::service`] reads of the settings and
/// the node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    masquerade_all: bool,
    detector: Option<(String, String)>,
    large: bool,
}

impl<'a> RulesWriter<'a> {
    pub fn new(config: &'a ProxyConfig, view: &'a NodeView<'a>, model: &'a ProxyModel) -> Self {
        let mark = format!("0x{:x}", 1u32 << config.masquerade_bit);
        let mark_mask = format!("{mark}/{mark}");
        let large = model.ports.iter().map(|(_, e)| e.len()).sum::<usize>()
            > LARGE_CLUSTER_ENDPOINTS_THRESHOLD;
        let det = view.detector.as_ref();
        RulesWriter {
            ctx: Ctx { config, det, large },
            view,
            model,
            mark,
            mark_mask,
        }
    }

    /// What the service ports' parts depend on besides each port and its
    /// view.
    pub fn service_key(&self) -> ServiceKey {
        ServiceKey {
            masquerade_all: self.ctx.config.masquerade_all,
            detector: self.ctx.det.cloned(),
            large: self.ctx.large,
        }
    }

    /// What comes before the services: the fixed chains and rules.
    pub fn head(&self) -> Tables {
        let config = self.ctx.config;
        let (mark, mark_mask) = (&self.mark, &self.mark_mask);
        let mut t = Tables::default();
        // Canary chains (kubelet and kube-proxy watch them to detect flushes).
        for table in &mut t.0 {
            table.chain("KUBE-KUBELET-CANARY");
            table.chain("KUBE-PROXY-CANARY");
        }
        let (filter, nat) = t.filter_nat();

        // filter: fixed chains and the jump rules kube-proxy prepends (the last
        // prepended ends up first) and kubelet's appended KUBE-FIREWALL jumps.
        for c in [
            "KUBE-SERVICES",
            "KUBE-EXTERNAL-SERVICES",
            "KUBE-FORWARD",
            "KUBE-NODEPORTS",
            "KUBE-PROXY-FIREWALL",
            "KUBE-FIREWALL",
        ] {
            filter.chain(c);
        }
        let new = "-m conntrack --ctstate NEW";
        let fw =
            "-m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL";
        filter.rule(&["-A INPUT", new, fw]);
        filter.rule(&[
            "-A INPUT -m comment --comment \"kubernetes health check service ports\" -j KUBE-NODEPORTS",
        ]);
        filter.rule(&["-A INPUT", new, "-m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES"]);
        filter.rule(&["-A INPUT -j KUBE-FIREWALL"]);
        filter.rule(&["-A FORWARD", new, fw]);
        filter.rule(&[
            "-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD",
        ]);
        filter.rule(&[
            "-A FORWARD",
            new,
            "-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
        ]);
        filter.rule(&["-A FORWARD", new, "-m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES"]);
        filter.rule(&["-A OUTPUT", new, fw]);
        filter.rule(&[
            "-A OUTPUT",
            new,
            "-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
        ]);
        filter.rule(&["-A OUTPUT -j KUBE-FIREWALL"]);

        // nat: fixed chains and jumps.
        for c in [
            "KUBE-SERVICES",
            "KUBE-NODEPORTS",
            "KUBE-POSTROUTING",
            "KUBE-MARK-MASQ",
        ] {
            nat.chain(c);
        }
        nat.rule(&[
            "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
        ]);
        nat.rule(&[
            "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
        ]);
        nat.rule(&[
            "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING",
        ]);

        // Fixed rules. The localnet guard (issue 90259: with route_localnet on,
        // another host could reach services bound to 127.0.0.1) is kube-proxy's
        // when it serves localhost node ports, and kubelet writes the same rule
        // in any case, so a node always has exactly one copy.
        filter.rule(&["-A KUBE-FIREWALL -m comment --comment \"block incoming localnet connections\" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"]);
        if !config.conntrack_tcp_liberal {
            filter.rule(&["-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP"]);
        }
        filter.rule(&[
            "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark",
            mark_mask,
            "-j ACCEPT",
        ]);
        filter.rule(&["-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"]);
        nat.rule(&[
            "-A KUBE-POSTROUTING -m mark ! --mark",
            mark_mask,
            "-j RETURN",
        ]);
        nat.rule(&["-A KUBE-POSTROUTING -j MARK --xor-mark", mark]);
        nat.rule(&["-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully"]);
        nat.rule(&["-A KUBE-MARK-MASQ -j MARK --or-mark", mark]);

        t
    }

    /// Service port `port`'s part (the model's `port`-th).
    pub fn service(&self, port: usize) -> Tables {
        let mut t = Tables::default();
        self.service_into(port, &mut t);
        t
    }

    fn service_into(&self, port: usize, t: &mut Tables) {
        let (filter, nat) = t.filter_nat();
        let svc = &self.model.ports[port].0;
        self.ctx.service(svc, self.view.service(port), filter, nat);
    }

    /// What comes after the services: the tail call to KUBE-NODEPORTS.
    pub fn tail(&self) -> Tables {
        let mut t = Tables::default();
        let (_, nat) = t.filter_nat();
        let np_comment = "-m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\"";
        if let Some(ips) = &self.view.node_port_ips {
            for &ip in ips {
                if ip.is_loopback() && !self.ctx.config.localhost_node_ports {
                    continue;
                }
                let d = format!("-d {ip}");
                nat.rule(&["-A KUBE-SERVICES", np_comment, &d, "-j KUBE-NODEPORTS"]);
            }
        } else {
            let localhost = if self.ctx.config.localhost_node_ports {
                ""
            } else {
                "! -d 127.0.0.0/8"
            };
            nat.rule(&[
                "-A KUBE-SERVICES",
                np_comment,
                "-m addrtype --dst-type LOCAL",
                localhost,
                "-j KUBE-NODEPORTS",
            ]);
        }

        t
    }
}

struct Ctx<'a> {
    config: &'a ProxyConfig,
    /// (IfLocal, IfNotLocal) arguments.
    det: Option<&'a (String, String)>,
    large: bool,
}

impl Ctx<'_> {
    /// `appendServiceCommentLocked`: no comment in large cluster mode.
    fn comment(&self, text: &str) -> String {
        if self.large {
            String::new()
        } else if text.contains(' ') {
            format!("-m comment --comment {}", quoted(text))
        } else {
            format!("-m comment --comment {text}")
        }
    }

    fn service(
        &self,
        svc: &ServicePortInfo,
        seen: &ServiceView,
        filter: &mut TableText,
        nat: &mut TableText,
    ) {
        let cat = &seen.cat;
        let spn = &svc.spn;
        let proto = format!("-m {0} -p {0}", svc.protocol);
        let uses_cluster_chain = !cat.cluster.is_empty() && svc.uses_cluster_endpoints();
        let uses_local_chain = !cat.local.is_empty() && svc.uses_local_endpoints();
        let has_any = cat.has_any;
        let (internal_chain, has_internal) = if svc.internal_policy_local {
            (&svc.svl_chain, has_any && !cat.local.is_empty())
        } else {
            (&svc.svc_chain, has_any)
        };
        let (external_policy_chain, has_external) = if svc.external_policy_local {
            (&svc.svl_chain, has_any && !cat.local.is_empty())
        } else {
            (&svc.svc_chain, has_any)
        };
        let ext_chain = &svc.ext_chain;
        let uses_ext = has_any && svc.externally_accessible();
        let uses_fw = has_any && !svc.lb_vips.is_empty() && !svc.lb_source_ranges.is_empty();
        let lb_chain = if uses_fw { &svc.fw_chain } else { ext_chain };
        let (int_target, int_comment, ext_target, ext_comment) = if !has_any {
            let c = quoted(&format!("{spn} has no endpoints"));
            ("REJECT", c.clone(), "REJECT", c)
        } else {
            let c = quoted(&format!("{spn} has no local endpoints"));
            ("DROP", c.clone(), "DROP", c)
        };
        let port = svc.port.to_string();
        let cip = svc.cluster_ip.to_string();

        // One rule that sends `[-d ADDR] --dport PORT` of this service's
        // protocol somewhere, in kube-proxy's argument order.
        let port_rule = |table: &mut TableText,
                         chain: &str,
                         comment: &str,
                         addrtype: &str,
                         dst: Option<&str>,
                         dport: &str,
                         target: &str| {
            let c = format!("-m comment --comment {comment}");
            let d = dst.map(|d| format!("-d {d}")).unwrap_or_default();
            let j = format!("-j {target}");
            table.rule(&[chain, &c, addrtype, &proto, &d, "--dport", dport, &j]);
        };

        // The cluster IP.
        if has_internal {
            let c = quoted(&format!("{spn} cluster IP"));
            port_rule(
                nat,
                "-A KUBE-SERVICES",
                &c,
                "",
                Some(&cip),
                &port,
                internal_chain,
            );
        } else {
            port_rule(
                filter,
                "-A KUBE-SERVICES",
                &int_comment,
                "",
                Some(&cip),
                &port,
                int_target,
            );
        }
        // External IPs: captured when there are endpoints, refused by the
        // filter table when there are none for external traffic.
        for ip in &svc.external_ips {
            let ip = ip.to_string();
            if has_any {
                let c = quoted(&format!("{spn} external IP"));
                port_rule(nat, "-A KUBE-SERVICES", &c, "", Some(&ip), &port, ext_chain);
            }
            if !has_external {
                let ch = "-A KUBE-EXTERNAL-SERVICES";
                port_rule(filter, ch, &ext_comment, "", Some(&ip), &port, ext_target);
            }
        }
        // Load balancer VIPs.
        for ip in &svc.lb_vips {
            let ip = ip.to_string();
            if has_any {
                let c = quoted(&format!("{spn} loadbalancer IP"));
                port_rule(nat, "-A KUBE-SERVICES", &c, "", Some(&ip), &port, lb_chain);
            }
            if uses_fw {
                let c = quoted(&format!("{spn} traffic not accepted by {}", svc.fw_chain));
                port_rule(
                    filter,
                    "-A KUBE-PROXY-FIREWALL",
                    &c,
                    "",
                    Some(&ip),
                    &port,
                    "DROP",
                );
            }
        }
        if !has_external {
            for ip in &svc.lb_vips {
                let ip = ip.to_string();
                let ch = "-A KUBE-EXTERNAL-SERVICES";
                port_rule(filter, ch, &ext_comment, "", Some(&ip), &port, ext_target);
            }
        }
        // Node ports.
        if svc.node_port != 0 {
            let np = svc.node_port.to_string();
            if has_any {
                port_rule(nat, "-A KUBE-NODEPORTS", spn, "", None, &np, ext_chain);
            }
            if !has_external {
                let local = "-m addrtype --dst-type LOCAL";
                let ch = "-A KUBE-EXTERNAL-SERVICES";
                port_rule(filter, ch, &ext_comment, local, None, &np, ext_target);
            }
        }
        // Health check node port: served by kube-proxy over HTTP; the rule
        // only lets it in.
        if svc.health_check_node_port != 0 {
            let c = format!(
                "-m comment --comment {}",
                quoted(&format!("{spn} health check node port"))
            );
            let hc = svc.health_check_node_port.to_string();
            filter.rule(&[
                "-A KUBE-NODEPORTS",
                &c,
                "-m tcp -p tcp --dport",
                &hc,
                "-j ACCEPT",
            ]);
        }

        // Internal traffic: masquerade off-cluster sources.
        let cluster_comment = format!(
            "-m comment --comment {}",
            quoted(&format!("{spn} cluster IP"))
        );
        if has_internal {
            if self.config.masquerade_all {
                nat.rule(&[
                    "-A",
                    internal_chain,
                    &cluster_comment,
                    &proto,
                    "-d",
                    &cip,
                    "--dport",
                    &port,
                    "-j KUBE-MARK-MASQ",
                ]);
            } else if let Some((_, if_not_local)) = self.det {
                nat.rule(&[
                    "-A",
                    internal_chain,
                    &cluster_comment,
                    &proto,
                    "-d",
                    &cip,
                    "--dport",
                    &port,
                    if_not_local,
                    "-j KUBE-MARK-MASQ",
                ]);
            }
        }
        // External traffic.
        if uses_ext {
            nat.chain(ext_chain);
            if !svc.external_policy_local {
                let c = quoted(&format!(
                    "masquerade traffic for {spn} external destinations"
                ));
                nat.rule(&[
                    "-A",
                    ext_chain,
                    "-m comment --comment",
                    &c,
                    "-j KUBE-MARK-MASQ",
                ]);
            } else {
                if let Some((if_local, _)) = self.det {
                    let c = quoted(&format!("pod traffic for {spn} external destinations"));
                    nat.rule(&[
                        "-A",
                        ext_chain,
                        "-m comment --comment",
                        &c,
                        if_local,
                        "-j",
                        &svc.svc_chain,
                    ]);
                }
                let c = quoted(&format!(
                    "masquerade LOCAL traffic for {spn} external destinations"
                ));
                nat.rule(&[
                    "-A",
                    ext_chain,
                    "-m comment --comment",
                    &c,
                    "-m addrtype --src-type LOCAL -j KUBE-MARK-MASQ",
                ]);
                let c = quoted(&format!(
                    "route LOCAL traffic for {spn} external destinations"
                ));
                nat.rule(&[
                    "-A",
                    ext_chain,
                    "-m comment --comment",
                    &c,
                    "-m addrtype --src-type LOCAL -j",
                    &svc.svc_chain,
                ]);
            }
            if has_external {
                nat.rule(&["-A", ext_chain, "-j", external_policy_chain]);
            }
        }
        // Firewall chain for loadBalancerSourceRanges.
        if uses_fw {
            let fw = &svc.fw_chain;
            nat.chain(fw);
            let c = format!(
                "-m comment --comment {}",
                quoted(&format!("{spn} loadbalancer IP"))
            );
            for cidr in &svc.lb_source_ranges {
                let s = cidr.to_string();
                nat.rule(&["-A", fw, &c, "-s", &s, "-j", ext_chain]);
            }
            if seen.node_in_source_ranges {
                for ip in &svc.lb_vips {
                    let s = ip.to_string();
                    nat.rule(&["-A", fw, &c, "-s", &s, "-j", ext_chain]);
                }
            }
            let c = quoted(&format!(
                "other traffic to {spn} will be dropped by KUBE-PROXY-FIREWALL"
            ));
            nat.rule(&["-A", fw, "-m comment --comment", &c]);
        }
        if uses_cluster_chain {
            nat.chain(&svc.svc_chain);
            self.service_to_endpoints(nat, svc, &svc.svc_chain, &cat.cluster);
        }
        if uses_local_chain {
            nat.chain(&svc.svl_chain);
            self.service_to_endpoints(nat, svc, &svc.svl_chain, &cat.local);
        }
        // Endpoint chains.
        for ep in &cat.reachable {
            nat.chain(&ep.chain);
            let c = self.comment(spn);
            let src = ep.ip.to_string();
            nat.rule(&["-A", &ep.chain, &c, "-s", &src, "-j KUBE-MARK-MASQ"]);
            let recent = if svc.affinity_timeout.is_some() {
                format!("-m recent --name {} --set", ep.chain)
            } else {
                String::new()
            };
            nat.rule(&[
                "-A",
                &ep.chain,
                &c,
                &recent,
                &proto,
                "-j DNAT --to-destination",
                &ep.text,
            ]);
        }
    }

    /// `writeServiceToEndpointRules`.
    fn service_to_endpoints(
        &self,
        nat: &mut TableText,
        svc: &ServicePortInfo,
        chain: &str,
        eps: &[&EndpointInfo],
    ) {
        if let Some(timeout) = svc.affinity_timeout {
            let t = timeout.to_string();
            for ep in eps {
                let c = self.comment(&format!("{} -> {}", svc.spn, ep.text));
                nat.rule(&[
                    "-A",
                    chain,
                    &c,
                    "-m recent --name",
                    &ep.chain,
                    "--rcheck --seconds",
                    &t,
                    "--reap -j",
                    &ep.chain,
                ]);
            }
        }
        let n = eps.len();
        for (i, ep) in eps.iter().enumerate() {
            let c = self.comment(&format!("{} -> {}", svc.spn, ep.text));
            if i + 1 < n {
                let p = format!("{:.10}", 1.0 / (n - i) as f64);
                nat.rule(&[
                    "-A",
                    chain,
                    &c,
                    "-m statistic --mode random --probability",
                    &p,
                    "-j",
                    &ep.chain,
                ]);
            } else {
                nat.rule(&["-A", chain, &c, "-j", &ep.chain]);
            }
        }
    }
}

#[cfg(test)]
mod tests;
