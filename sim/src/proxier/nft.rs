//! What kube-proxy in `nftables` mode (v1.34, `pkg/proxy/nftables/
//! proxier.go`) writes for a node: its `ip kube-proxy` table.
//!
//! * base chains `filter-prerouting-pre-dnat` and `filter-output-pre-dnat`
//!   (priority -110, the LoadBalancerSourceRanges check before DNAT),
//!   `filter-input`, `filter-forward`, `filter-output` (priority 0: the
//!   no-endpoint and cluster-IP checks), `nat-prerouting`, `nat-output`
//!   (-100) and `nat-postrouting` (100), with the jumps upstream lists in
//!   `nftablesJumpChains`;
//! * service dispatch through the verdict maps `service-ips`
//!   (address . protocol . port) and `service-nodeports` (protocol .
//!   port), node ports only for the addresses in `nodeport-ips`
//!   (`nodePortAddresses`, which nftables mode defaults to the node's
//!   primary address; localhost is never one);
//! * `no-endpoint-services`/`no-endpoint-nodeports` (drop, or goto
//!   `reject-chain`), `firewall-ips` with a `firewall-…` chain per
//!   LoadBalancer with source ranges, `cluster-ips` and the
//!   `cluster-ips-check` reject/drop for unknown ports and unallocated
//!   cluster IPs;
//! * per service port `service-`, `local-`, `external-`, `firewall-` and
//!   per endpoint `endpoint-` chains, named `PREFIX` + hash + base
//!   ([`names::nft`]); `numgen random mod N vmap` load balancing;
//!   ClientIP affinity through `affinity-` sets with timeouts;
//!   masquerading by mark (`mark-for-masquerade`, `masquerading` with
//!   `masquerade fully-random`).
//!
//! The text is a ruleset listing (objects in the order kube-proxy's first
//! full sync creates them); parsed, it prints as `nft list ruleset` shows
//! it. Services are in sorted order, as in iptables mode.

use super::model::{EndpointInfo, ServicePortInfo};
use super::names::nft as names;
use super::view::{CommonViews, NodeView, ServiceView};
use super::{DetectLocal, NodeInfo, ProxyConfig, ProxyModel};
use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::Ipv4Addr;

/// Settings of nftables mode beyond [`ProxyConfig`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NftConfig {
    /// The cluster's service CIDRs (ServiceCIDR objects): the drop of
    /// unallocated cluster IPs.
    pub service_cidrs: Vec<Ipv4Net>,
}

/// A node's `ip kube-proxy` table as ruleset text.
pub fn node_table(
    config: &ProxyConfig,
    nft: &NftConfig,
    node: &NodeInfo,
    model: &ProxyModel,
) -> String {
    let view = node_view(config, node, &CommonViews::new(model));
    view_table(config, nft, &view, model)
}

/// What nftables-mode rules depend on of `node` (see [`super::view`]), a
/// node of the cluster `common` is of.
pub fn node_view<'a>(
    config: &ProxyConfig,
    node: &NodeInfo,
    common: &CommonViews<'a>,
) -> NodeView<'a> {
    NodeView::new(
        node,
        common,
        detector(config, node),
        nodeport_ips(config, node),
    )
}

/// The table of a node seen as `view` (what [`node_table`] gives for
/// that node).
pub fn view_table(
    config: &ProxyConfig,
    nft: &NftConfig,
    view: &NodeView,
    model: &ProxyModel,
) -> String {
    let mut g = Gen::default();
    g.setup(config, nft, view);
    let mark = 1u32 << config.masquerade_bit;
    let det = view.detector.as_ref();
    for ((svc, _), seen) in model.ports.iter().zip(view.services()) {
        g.service(config, det, svc, seen);
    }
    g.write(mark)
}

/// Node-port addresses: `None` for "every local address" (a CIDR of
/// 0.0.0.0/0), else the node's addresses in the configured CIDRs, or its
/// primary address when none are configured (nftables mode's default);
/// never loopback.
pub fn nodeport_ips(config: &ProxyConfig, node: &NodeInfo) -> Option<Vec<Ipv4Addr>> {
    if config.node_port_addresses.is_empty() {
        return Some(vec![node.ip]);
    }
    if config
        .node_port_addresses
        .iter()
        .any(|c| c.prefix_len() == 0)
    {
        return None;
    }
    let mut ips: Vec<Ipv4Addr> = node
        .addresses
        .iter()
        .filter(|a| !a.is_loopback())
        .filter(|a| config.node_port_addresses.iter().any(|c| c.contains(*a)))
        .copied()
        .collect();
    ips.sort();
    ips.dedup();
    Some(ips)
}

/// (IfLocal, IfNotLocal) as nft matches.
fn detector(config: &ProxyConfig, node: &NodeInfo) -> Option<(String, String)> {
    match &config.detect_local {
        DetectLocal::ClusterCidr(c) => Some((format!("ip saddr {c}"), format!("ip saddr != {c}"))),
        DetectLocal::NodeCidr => node
            .pod_cidr
            .map(|c| (format!("ip saddr {c}"), format!("ip saddr != {c}"))),
        DetectLocal::BridgeInterface(b) => {
            Some((format!("iifname \"{b}\""), format!("iifname != \"{b}\"")))
        }
        DetectLocal::InterfaceNamePrefix(p) => {
            Some((format!("iifname \"{p}*\""), format!("iifname != \"{p}*\"")))
        }
        DetectLocal::None => None,
    }
}

#[derive(Default)]
struct Gen {
    /// Chains in creation order with their rules.
    chains: Vec<(String, Option<&'static str>, Vec<String>)>,
    index: BTreeMap<String, usize>,
    cluster_ips: Vec<String>,
    nodeport_ips: Option<Vec<String>>,
    no_endpoint_services: Vec<String>,
    no_endpoint_nodeports: Vec<String>,
    firewall_ips: Vec<String>,
    service_ips: Vec<String>,
    service_nodeports: Vec<String>,
    /// (name, timeout seconds).
    affinity: Vec<(String, u32)>,
}

/// Base chains in upstream's list order: (name, declaration).
const BASE_CHAINS: [(&str, &str); 8] = [
    (
        "filter-prerouting-pre-dnat",
        "type filter hook prerouting priority -110",
    ),
    (
        "filter-output-pre-dnat",
        "type filter hook output priority -110",
    ),
    ("filter-input", "type filter hook input priority 0"),
    ("filter-forward", "type filter hook forward priority 0"),
    ("filter-output", "type filter hook output priority 0"),
    ("nat-prerouting", "type nat hook prerouting priority -100"),
    ("nat-output", "type nat hook output priority -100"),
    ("nat-postrouting", "type nat hook postrouting priority 100"),
];

/// `nftablesJumpChains`: (target, from, condition).
const JUMPS: [(&str, &str, &str); 11] = [
    ("nodeport-endpoints-check", "filter-input", "ct state new "),
    ("service-endpoints-check", "filter-input", "ct state new "),
    ("service-endpoints-check", "filter-forward", "ct state new "),
    ("service-endpoints-check", "filter-output", "ct state new "),
    (
        "firewall-check",
        "filter-prerouting-pre-dnat",
        "ct state new ",
    ),
    ("firewall-check", "filter-output-pre-dnat", "ct state new "),
    ("services", "nat-output", ""),
    ("services", "nat-prerouting", ""),
    ("masquerading", "nat-postrouting", ""),
    ("cluster-ips-check", "filter-forward", "ct state new "),
    ("cluster-ips-check", "filter-output", "ct state new "),
];

impl Gen {
    fn ensure(&mut self, chain: &str) -> usize {
        if let Some(&i) = self.index.get(chain) {
            return i;
        }
        self.chains.push((chain.to_string(), None, Vec::new()));
        self.index.insert(chain.to_string(), self.chains.len() - 1);
        self.chains.len() - 1
    }

    fn rule(&mut self, chain: &str, text: String) {
        let i = self.ensure(chain);
        self.chains[i].2.push(text);
    }

    fn setup(&mut self, config: &ProxyConfig, nft: &NftConfig, view: &NodeView) {
        for (name, decl) in BASE_CHAINS {
            let i = self.ensure(name);
            self.chains[i].1 = Some(decl);
        }
        for (target, from, cond) in JUMPS {
            self.ensure(target);
            self.rule(from, format!("{cond}jump {target}"));
        }
        for c in [
            "services",
            "cluster-ips-check",
            "masquerading",
            "mark-for-masquerade",
        ] {
            self.ensure(c);
        }
        let mark = 1u32 << config.masquerade_bit;
        self.rule(
            "mark-for-masquerade",
            format!("meta mark set meta mark | 0x{mark:x}"),
        );
        self.rule(
            "masquerading",
            format!("meta mark & 0x{mark:x} == 0 return"),
        );
        self.rule(
            "masquerading",
            format!("meta mark set meta mark ^ 0x{mark:x}"),
        );
        self.rule("masquerading", "masquerade fully-random".into());
        self.rule(
            "cluster-ips-check",
            "ip daddr @cluster-ips reject comment \"Reject traffic to invalid ports of ClusterIPs\""
                .into(),
        );
        if !nft.service_cidrs.is_empty() {
            let cidrs: Vec<String> = nft.service_cidrs.iter().map(|c| c.to_string()).collect();
            self.rule(
                "cluster-ips-check",
                format!(
                    "ip daddr {{ {} }} drop comment \"Drop traffic to unallocated ClusterIPs\"",
                    cidrs.join(", ")
                ),
            );
        }
        self.nodeport_ips = view
            .node_port_ips
            .as_ref()
            .map(|v| v.iter().map(|a| a.to_string()).collect());
        let i = self.ensure("reject-chain");
        self.chains[i].1 =
            Some("comment \"helper for @no-endpoint-services / @no-endpoint-nodeports\"");
        self.rule("reject-chain", "reject".into());
        self.rule(
            "service-endpoints-check",
            "ip daddr . meta l4proto . th dport vmap @no-endpoint-services".into(),
        );
        let (np_check, np_dispatch) = if self.nodeport_ips.is_some() {
            ("ip daddr @nodeport-ips", "ip daddr @nodeport-ips")
        } else {
            (
                "ip daddr != 127.0.0.0/8",
                "fib daddr type local ip daddr != 127.0.0.0/8",
            )
        };
        self.rule(
            "nodeport-endpoints-check",
            format!("{np_check} meta l4proto . th dport vmap @no-endpoint-nodeports"),
        );
        self.rule(
            "firewall-check",
            "ip daddr . meta l4proto . th dport vmap @firewall-ips".into(),
        );
        self.rule(
            "services",
            "ip daddr . meta l4proto . th dport vmap @service-ips".into(),
        );
        self.rule(
            "services",
            format!("{np_dispatch} meta l4proto . th dport vmap @service-nodeports"),
        );
    }

    fn service(
        &mut self,
        config: &ProxyConfig,
        det: Option<&(String, String)>,
        svc: &ServicePortInfo,
        seen: &ServiceView,
    ) {
        let cat = &seen.cat;
        let proto = svc.protocol.as_str();
        let base = names::service_base(&svc.namespace, &svc.name, proto, &svc.port_name);
        let cluster_chain = format!("service-{base}");
        let local_chain = format!("local-{base}");
        let ext_chain = format!("external-{base}");
        let fw_chain = format!("firewall-{base}");
        let ep_base = |e: &EndpointInfo| {
            names::endpoint_base(
                &svc.namespace,
                &svc.name,
                proto,
                &svc.port_name,
                e.ip,
                e.port,
            )
        };
        let has_any = cat.has_any;
        for e in &cat.reachable {
            self.ensure(&format!("endpoint-{}", ep_base(e)));
        }
        let uses_cluster = !cat.cluster.is_empty() && svc.uses_cluster_endpoints();
        if uses_cluster {
            self.ensure(&cluster_chain);
        }
        let uses_local = !cat.local.is_empty() && svc.uses_local_endpoints();
        if uses_local {
            self.ensure(&local_chain);
        }
        let (internal_chain, has_internal) = if svc.internal_policy_local {
            (&local_chain, has_any && !cat.local.is_empty())
        } else {
            (&cluster_chain, has_any)
        };
        let (external_policy_chain, has_external) = if svc.external_policy_local {
            (&local_chain, has_any && !cat.local.is_empty())
        } else {
            (&cluster_chain, has_any)
        };
        let uses_ext = has_any && svc.externally_accessible();
        if uses_ext {
            self.ensure(&ext_chain);
        }
        let (int_verdict, ext_verdict) = if !has_any {
            ("goto reject-chain", "goto reject-chain")
        } else {
            ("drop", "drop")
        };
        let port = svc.port;
        let cip = svc.cluster_ip;
        let spn = &svc.spn;
        self.cluster_ips.push(cip.to_string());
        if has_internal {
            self.service_ips
                .push(format!("{cip} . {proto} . {port} : goto {internal_chain}"));
        } else {
            self.no_endpoint_services.push(format!(
                "{cip} . {proto} . {port} comment \"{spn}\" : {int_verdict}"
            ));
        }
        for ip in &svc.external_ips {
            if has_any {
                self.service_ips
                    .push(format!("{ip} . {proto} . {port} : goto {ext_chain}"));
            }
            if !has_external {
                self.no_endpoint_services.push(format!(
                    "{ip} . {proto} . {port} comment \"{spn}\" : {ext_verdict}"
                ));
            }
        }
        let uses_fw = !svc.lb_vips.is_empty() && !svc.lb_source_ranges.is_empty();
        if uses_fw {
            self.ensure(&fw_chain);
        }
        for ip in &svc.lb_vips {
            if has_any {
                self.service_ips
                    .push(format!("{ip} . {proto} . {port} : goto {ext_chain}"));
            }
            if uses_fw {
                self.firewall_ips
                    .push(format!("{ip} . {proto} . {port} : goto {fw_chain}"));
            }
        }
        if !has_external {
            for ip in &svc.lb_vips {
                self.no_endpoint_services.push(format!(
                    "{ip} . {proto} . {port} comment \"{spn}\" : {ext_verdict}"
                ));
            }
        }
        if svc.node_port != 0 {
            let np = svc.node_port;
            if has_any {
                self.service_nodeports
                    .push(format!("{proto} . {np} : goto {ext_chain}"));
            }
            if !has_external {
                self.no_endpoint_nodeports
                    .push(format!("{proto} . {np} comment \"{spn}\" : {ext_verdict}"));
            }
        }
        // Internal traffic: masquerade off-cluster sources.
        if has_internal {
            if config.masquerade_all {
                self.rule(
                    internal_chain,
                    format!("ip daddr {cip} jump mark-for-masquerade"),
                );
            } else if let Some((_, if_not_local)) = det {
                self.rule(
                    internal_chain,
                    format!("ip daddr {cip} {if_not_local} jump mark-for-masquerade"),
                );
            }
        }
        if uses_ext {
            if !svc.external_policy_local {
                self.rule(&ext_chain, "jump mark-for-masquerade".into());
            } else {
                if let Some((if_local, _)) = det {
                    self.rule(
                        &ext_chain,
                        format!(
                            "{if_local} goto {cluster_chain} comment \"short-circuit pod traffic\""
                        ),
                    );
                }
                self.rule(
                    &ext_chain,
                    "fib saddr type local jump mark-for-masquerade comment \"masquerade local traffic\""
                        .into(),
                );
                self.rule(
                    &ext_chain,
                    format!("fib saddr type local goto {cluster_chain} comment \"short-circuit local traffic\""),
                );
            }
            if has_external {
                self.rule(&ext_chain, format!("goto {external_policy_chain}"));
            }
        }
        if uses_fw {
            let mut sources: Vec<String> =
                svc.lb_source_ranges.iter().map(|c| c.to_string()).collect();
            if seen.node_in_source_ranges {
                sources.extend(svc.lb_vips.iter().map(|ip| ip.to_string()));
            }
            self.rule(
                &fw_chain,
                format!("ip saddr != {{ {} }} drop", sources.join(", ")),
            );
        }
        if let Some(t) = svc.affinity_timeout {
            for e in &cat.reachable {
                self.affinity.push((format!("affinity-{}", ep_base(e)), t));
            }
        }
        let affinity = svc.affinity_timeout.is_some();
        let to_endpoints = |g: &mut Gen, chain: &str, eps: &[&EndpointInfo]| {
            if affinity {
                for e in eps {
                    let b = ep_base(e);
                    g.rule(chain, format!("ip saddr @affinity-{b} goto endpoint-{b}"));
                }
            }
            let elems: Vec<String> = eps
                .iter()
                .enumerate()
                .map(|(i, e)| format!("{i} : goto endpoint-{}", ep_base(e)))
                .collect();
            g.rule(
                chain,
                format!(
                    "numgen random mod {} vmap {{ {} }}",
                    eps.len(),
                    elems.join(", ")
                ),
            );
        };
        if uses_cluster {
            to_endpoints(self, &cluster_chain, &cat.cluster);
        }
        if uses_local {
            to_endpoints(self, &local_chain, &cat.local);
        }
        for e in &cat.reachable {
            let b = ep_base(e);
            let chain = format!("endpoint-{b}");
            self.rule(
                &chain,
                format!("ip saddr {} jump mark-for-masquerade", e.ip),
            );
            if affinity {
                self.rule(&chain, format!("update @affinity-{b} {{ ip saddr }}"));
            }
            self.rule(
                &chain,
                format!("meta l4proto {proto} dnat to {}:{}", e.ip, e.port),
            );
        }
    }

    fn write(&self, _mark: u32) -> String {
        let mut out = String::from("table ip kube-proxy {\n\tcomment \"rules for kube-proxy\"\n");
        let set = |out: &mut String,
                   kind: &str,
                   name: &str,
                   ty: &str,
                   comment: &str,
                   elems: &[String]| {
            let _ = writeln!(
                out,
                "\t{kind} {name} {{\n\t\ttype {ty}\n\t\tcomment \"{comment}\""
            );
            if !elems.is_empty() {
                let _ = writeln!(out, "\t\telements = {{ {} }}", elems.join(",\n\t\t\t"));
            }
            out.push_str("\t}\n");
        };
        set(
            &mut out,
            "set",
            "cluster-ips",
            "ipv4_addr",
            "Active ClusterIPs",
            &self.cluster_ips,
        );
        if let Some(ips) = &self.nodeport_ips {
            set(
                &mut out,
                "set",
                "nodeport-ips",
                "ipv4_addr",
                "IPs that accept NodePort traffic",
                ips,
            );
        }
        set(
            &mut out,
            "map",
            "no-endpoint-services",
            "ipv4_addr . inet_proto . inet_service : verdict",
            "vmap to drop or reject packets to services with no endpoints",
            &self.no_endpoint_services,
        );
        set(
            &mut out,
            "map",
            "no-endpoint-nodeports",
            "inet_proto . inet_service : verdict",
            "vmap to drop or reject packets to service nodeports with no endpoints",
            &self.no_endpoint_nodeports,
        );
        set(
            &mut out,
            "map",
            "firewall-ips",
            "ipv4_addr . inet_proto . inet_service : verdict",
            "destinations that are subject to LoadBalancerSourceRanges",
            &self.firewall_ips,
        );
        set(
            &mut out,
            "map",
            "service-ips",
            "ipv4_addr . inet_proto . inet_service : verdict",
            "ClusterIP, ExternalIP and LoadBalancer IP traffic",
            &self.service_ips,
        );
        set(
            &mut out,
            "map",
            "service-nodeports",
            "inet_proto . inet_service : verdict",
            "NodePort traffic",
            &self.service_nodeports,
        );
        for (name, timeout) in &self.affinity {
            // The kernel reports the size it gave the dynamic set.
            let _ = writeln!(
                out,
                "\tset {name} {{\n\t\ttype ipv4_addr\n\t\tsize 65535\n\t\tflags dynamic,timeout\n\t\ttimeout {timeout}s\n\t}}"
            );
        }
        for (name, decl, rules) in &self.chains {
            let _ = writeln!(out, "\tchain {name} {{");
            if let Some(d) = decl {
                if d.starts_with("type") {
                    let _ = writeln!(out, "\t\t{d}; policy accept;");
                } else {
                    let _ = writeln!(out, "\t\t{d}");
                }
            }
            for r in rules {
                let _ = writeln!(out, "\t\t{r}");
            }
            out.push_str("\t}\n");
        }
        out.push_str("}\n");
        out
    }
}

#[cfg(test)]
#[path = "nft_tests.rs"]
mod tests;
