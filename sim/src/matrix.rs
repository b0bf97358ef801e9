//! The source-IP matrix: every sender against every service entry point.
//!
//! Senders: each external, each node (host network), and the first pod on
//! each node. Entry points: per service port, the cluster IP, each node's
//! address on the node port, each LoadBalancer ingress IP and each
//! external IP; then each service's health-check node port on every node
//! address. Cells are traced in parallel (rayon); the result is in a
//! fixed order, so output is identical with one thread or many.

use crate::check::observe;
use crate::compile::Compiled;
use crate::network::HostKind;
use crate::prob::Probability;
use crate::trace::{self, Flow, TraceError, Verdict};
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::Serialize;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// One entry point of one service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// `ns/name:port` and the kind of address (`cluster IP`, `node-a node
    /// port`, `loadbalancer IP`, `external IP`).
    pub label: String,
    pub kind: EntryKind,
    pub addr: Ipv4Addr,
    pub port: u16,
    pub proto: u8,
}

impl Entry {
    /// The flow a sender sends to this entry point.
    pub fn flow(&self, from: usize) -> Flow {
        Flow {
            from,
            dst: self.addr,
            proto: self.proto,
            dport: self.port,
            sport: None,
            at: 0,
        }
    }
}

/// Which of a service port's addresses an entry point is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntryKind {
    ClusterIp,
    /// The node port on the `n`-th node of the scenario.
    NodePort {
        node: usize,
    },
    LoadBalancer,
    ExternalIp,
    /// kube-proxy's health-check node port on the `n`-th node: its own
    /// listener, not a path to the service's endpoints.
    HealthCheck {
        node: usize,
    },
}

/// What one sender sees at one entry point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    pub sender: String,
    pub entry: Entry,
    /// Pods that receive it, with the total probability of each.
    pub received_by: Vec<(String, Probability)>,
    /// Outcomes that reach no pod: verdict and total probability.
    pub lost: Vec<(Verdict, Probability)>,
    /// Sources the pods see, each marked when it is the sender's own.
    pub sources: Vec<(Ipv4Addr, bool)>,
    /// Reply results of the delivered outcomes.
    pub replies: BTreeSet<bool>,
    /// What the listeners that took it answer, where kpsim models them
    /// (kube-proxy's health checks).
    pub http_status: BTreeSet<u16>,
}

impl Cell {
    /// `pod (probability)` for each receiving pod, or the verdicts.
    pub fn receivers(&self) -> String {
        let mut lost: Vec<&str> = self.lost.iter().map(|(v, _)| v.as_str()).collect();
        lost.sort_unstable();
        if self.received_by.is_empty() {
            return lost.join("/");
        }
        let mut parts: Vec<String> = self
            .received_by
            .iter()
            .map(|(pod, p)| {
                if p.is_one() {
                    pod.clone()
                } else {
                    format!("{pod} ({p})")
                }
            })
            .collect();
        if !self.http_status.is_empty() {
            let codes: Vec<String> = self.http_status.iter().map(u16::to_string).collect();
            parts.push(format!("HTTP {}", codes.join("/")));
        }
        if !lost.is_empty() {
            parts.push(format!("else {}", lost.join("/")));
        }
        parts.join(", ")
    }

    /// Sources seen, or `-`.
    pub fn source(&self) -> String {
        if self.sources.is_empty() {
            return "-".into();
        }
        self.sources
            .iter()
            .map(|(s, client)| {
                if *client {
                    format!("{s} (client)")
                } else {
                    s.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `ok`, `broken`, `ok/broken` or `-`.
    pub fn reply(&self) -> &'static str {
        match (self.replies.contains(&true), self.replies.contains(&false)) {
            (true, false) => "ok",
            (false, true) => "broken",
            (true, true) => "ok/broken",
            (false, false) => "-",
        }
    }
}

/// `kpsim matrix --format json`: every sender against every entry point.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct MatrixDocument {
    pub cells: Vec<MatrixCell>,
}

/// One sender at one entry point.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct MatrixCell {
    /// The sending host.
    pub sender: String,
    pub entry: EntryDoc,
    /// Pods that receive it, with their total probability.
    pub received_by: Vec<Share>,
    /// Outcomes that reach no pod, by verdict.
    pub not_delivered: Vec<VerdictShare>,
    /// Sources the receiving pods see.
    pub sources_seen: Vec<SourceSeenDoc>,
    /// Whether the replies of the delivered outcomes get home: `ok`,
    /// `broken`, `mixed`; `null` when nothing was delivered.
    pub reply: Option<ReplySummary>,
    /// HTTP statuses the receiving listeners answer, where kpsim models
    /// them (kube-proxy's health-check servers); empty otherwise.
    pub http_status: Vec<u16>,
}

/// A service entry point.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct EntryDoc {
    /// `ns/name:port/proto` and the kind of address, in words.
    pub label: String,
    #[schemars(with = "String")]
    pub address: Ipv4Addr,
    pub port: u16,
    pub protocol: String,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Share {
    pub pod: String,
    pub probability: f64,
    pub probability_exact: String,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct VerdictShare {
    pub verdict: Verdict,
    pub probability: f64,
    pub probability_exact: String,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct SourceSeenDoc {
    #[schemars(with = "String")]
    pub address: Ipv4Addr,
    /// The sender's own address (not masqueraded).
    pub client: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ReplySummary {
    Ok,
    Broken,
    Mixed,
}

impl MatrixDocument {
    pub fn of(cells: &[Cell]) -> MatrixDocument {
        MatrixDocument {
            cells: cells
                .iter()
                .map(|c| MatrixCell {
                    sender: c.sender.clone(),
                    entry: EntryDoc {
                        label: c.entry.label.clone(),
                        address: c.entry.addr,
                        port: c.entry.port,
                        protocol: crate::wire::proto_name(c.entry.proto),
                    },
                    received_by: c
                        .received_by
                        .iter()
                        .map(|(pod, p)| Share {
                            pod: pod.clone(),
                            probability: p.to_f64(),
                            probability_exact: p.exact_string(),
                        })
                        .collect(),
                    not_delivered: c
                        .lost
                        .iter()
                        .map(|(v, p)| VerdictShare {
                            verdict: *v,
                            probability: p.to_f64(),
                            probability_exact: p.exact_string(),
                        })
                        .collect(),
                    sources_seen: c
                        .sources
                        .iter()
                        .map(|(a, client)| SourceSeenDoc {
                            address: *a,
                            client: *client,
                        })
                        .collect(),
                    http_status: c.http_status.iter().copied().collect(),
                    reply: match c.reply() {
                        "ok" => Some(ReplySummary::Ok),
                        "broken" => Some(ReplySummary::Broken),
                        "ok/broken" => Some(ReplySummary::Mixed),
                        _ => None,
                    },
                })
                .collect(),
        }
    }
}

/// `kpsim matrix --mode A,B --format json`: the cells where two
/// compilations of one cluster (kube-proxy's modes) differ.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct ModeComparison {
    /// The two modes, in the order of each pair.
    pub modes: [String; 2],
    /// How many cells were compared.
    pub cells: usize,
    /// Each differing cell, as each mode sees it.
    pub differ: Vec<[MatrixCell; 2]>,
}

impl ModeComparison {
    pub fn of(
        pairs: &[(Cell, Cell)],
        differ: &[&(Cell, Cell)],
        modes: [&str; 2],
    ) -> ModeComparison {
        let doc = |c: &Cell| {
            MatrixDocument::of(std::slice::from_ref(c))
                .cells
                .pop()
                .expect("one cell in, one out")
        };
        ModeComparison {
            modes: modes.map(str::to_string),
            cells: pairs.len(),
            differ: differ.iter().map(|(x, y)| [doc(x), doc(y)]).collect(),
        }
    }
}

/// Senders in order: externals, nodes, then the first pod of each node.
pub fn senders(c: &Compiled) -> Vec<usize> {
    let net = &c.cluster.network;
    let mut v: Vec<usize> = (0..net.hosts.len())
        .filter(|&h| net.hosts[h].kind == HostKind::External)
        .collect();
    v.extend((0..net.hosts.len()).filter(|&h| net.hosts[h].kind == HostKind::Node));
    for node in (0..net.hosts.len()).filter(|&h| net.hosts[h].kind == HostKind::Node) {
        if let Some(p) = (0..net.hosts.len()).find(|&h| net.hosts[h].kind == HostKind::Pod { node })
        {
            v.push(p);
        }
    }
    v
}

/// Entry points in order: by service port, then kind.
pub fn entries(c: &Compiled) -> Vec<Entry> {
    let model = crate::proxier::ProxyModel::build(&c.scenario.services, &c.scenario.slices);
    let mut out = Vec::new();
    for (svc, _) in &model.ports {
        let proto = crate::wire::proto_number(&svc.protocol).unwrap_or(crate::wire::PROTO_TCP);
        let name = format!("{}/{}", svc.spn, svc.protocol);
        out.push(Entry {
            label: format!("{name} cluster IP"),
            kind: EntryKind::ClusterIp,
            addr: svc.cluster_ip,
            port: svc.port,
            proto,
        });
        if svc.node_port != 0 {
            for (node, n) in c.scenario.nodes.iter().enumerate() {
                out.push(Entry {
                    label: format!("{name} node port on {}", n.name),
                    kind: EntryKind::NodePort { node },
                    addr: n.address,
                    port: svc.node_port,
                    proto,
                });
                for a in &n.extra_addresses {
                    out.push(Entry {
                        label: format!("{name} node port on {} ({a})", n.name),
                        kind: EntryKind::NodePort { node },
                        addr: *a,
                        port: svc.node_port,
                        proto,
                    });
                }
            }
        }
        for ip in &svc.lb_vips {
            out.push(Entry {
                label: format!("{name} loadbalancer IP {ip}"),
                kind: EntryKind::LoadBalancer,
                addr: *ip,
                port: svc.port,
                proto,
            });
        }
        for ip in &svc.external_ips {
            out.push(Entry {
                label: format!("{name} external IP {ip}"),
                kind: EntryKind::ExternalIp,
                addr: *ip,
                port: svc.port,
                proto,
            });
        }
    }
    out.extend(health_checks(c, &model));
    out
}

/// kube-proxy's health-check node ports, one per service, on every node
/// address.
fn health_checks(c: &Compiled, model: &crate::proxier::ProxyModel) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (svc, _) in &model.ports {
        let key = (&svc.namespace, &svc.name);
        if svc.health_check_node_port == 0 || !seen.insert(key) {
            continue;
        }
        for (node, n) in c.scenario.nodes.iter().enumerate() {
            for addr in std::iter::once(n.address).chain(n.extra_addresses.iter().copied()) {
                out.push(Entry {
                    label: format!(
                        "{}/{} health check node port on {} ({addr})",
                        svc.namespace, svc.name, n.name
                    ),
                    kind: EntryKind::HealthCheck { node },
                    addr,
                    port: svc.health_check_node_port,
                    proto: crate::wire::PROTO_TCP,
                });
            }
        }
    }
    out
}

/// A service port and where the cluster exposes it: what a reader needs
/// to name its entry points (the node port kube-proxy was given, the load
/// balancer's address) without reading the rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// `ns/name:port/proto`, as entry labels begin.
    pub name: String,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    /// The allocated node port, if the Service has one.
    pub node_port: Option<u16>,
    pub load_balancers: Vec<Ipv4Addr>,
    pub external_ips: Vec<Ipv4Addr>,
}

/// Every service port kube-proxy programs, in the order of [`entries`].
pub fn service_ports(c: &Compiled) -> Vec<ServicePort> {
    let model = crate::proxier::ProxyModel::build(&c.scenario.services, &c.scenario.slices);
    model
        .ports
        .iter()
        .map(|(svc, _)| ServicePort {
            name: format!("{}/{}", svc.spn, svc.protocol),
            cluster_ip: svc.cluster_ip,
            port: svc.port,
            node_port: (svc.node_port != 0).then_some(svc.node_port),
            load_balancers: svc.lb_vips.clone(),
            external_ips: svc.external_ips.clone(),
        })
        .collect()
}

/// Every cell, sender-major.
pub fn compute(c: &Compiled) -> Result<Vec<Cell>, TraceError> {
    let senders = senders(c);
    let entries = entries(c);
    let jobs: Vec<(usize, &Entry)> = senders
        .iter()
        .flat_map(|s| entries.iter().map(move |e| (*s, e)))
        .collect();
    jobs.par_iter().map(|(s, e)| cell(c, *s, e)).collect()
}

fn cell(c: &Compiled, sender: usize, e: &Entry) -> Result<Cell, TraceError> {
    let flow = e.flow(sender);
    let results = trace::trace(&c.cluster, std::slice::from_ref(&flow))?;
    let o = observe(c, &results);
    Ok(Cell {
        sender: c.cluster.host_name(sender).to_string(),
        entry: e.clone(),
        received_by: o.delivered.into_iter().collect(),
        lost: o.lost.into_iter().map(|(v, (p, _))| (v, p)).collect(),
        sources: o.sources.iter().map(|s| (*s, *s == o.client)).collect(),
        replies: o.replies,
        http_status: o.http_status,
    })
}

/// Entry points where kube-proxy's modes are known to part ways, beyond
/// [`entries`], each with the senders it is probed from:
/// * from the first pod: each cluster IP on a port no service uses, and an
///   unallocated address of the service CIDR (nftables mode rejects and
///   drops them, iptables mode lets them be routed on);
/// * from each node's pod and the node itself: each node port on every
///   other local address of the node (nftables mode serves node ports on
///   the node's primary address by default, iptables mode on every local
///   address) and on 127.0.0.1 (iptables mode's `localhostNodePorts`;
///   nftables mode never).
pub fn corner_entries(c: &Compiled) -> Vec<(usize, Entry)> {
    let net = &c.cluster.network;
    let model = crate::proxier::ProxyModel::build(&c.scenario.services, &c.scenario.slices);
    let mut out = Vec::new();
    let first_pod =
        (0..net.hosts.len()).find(|&h| matches!(net.hosts[h].kind, HostKind::Pod { .. }));
    if let Some(pod) = first_pod {
        let used = |ip: Ipv4Addr, port: u16| {
            model
                .ports
                .iter()
                .any(|(s, _)| s.cluster_ip == ip && s.port == port)
        };
        let mut ips: Vec<Ipv4Addr> = model.ports.iter().map(|(s, _)| s.cluster_ip).collect();
        ips.sort();
        ips.dedup();
        for ip in &ips {
            let port = (1..=u16::MAX)
                .map(|d| 80u16.wrapping_add(d))
                .find(|p| !used(*ip, *p));
            if let Some(port) = port {
                out.push((
                    pod,
                    Entry {
                        label: format!("cluster IP {ip} on unused port {port}"),
                        kind: EntryKind::ClusterIp,
                        addr: *ip,
                        port,
                        proto: crate::wire::PROTO_TCP,
                    },
                ));
            }
        }
        let cidr = c.scenario.cluster.service_cidr;
        if let Some(free) = cidr.hosts().rev().find(|a| !ips.contains(a)) {
            out.push((
                pod,
                Entry {
                    label: format!("unallocated service address {free}"),
                    kind: EntryKind::ClusterIp,
                    addr: free,
                    port: 80,
                    proto: crate::wire::PROTO_TCP,
                },
            ));
        }
    }
    for (svc, _) in model.ports.iter().filter(|(s, _)| s.node_port != 0) {
        let proto = match svc.protocol.as_str() {
            "udp" => crate::wire::PROTO_UDP,
            "sctp" => crate::wire::PROTO_SCTP,
            _ => crate::wire::PROTO_TCP,
        };
        let name = format!("{}/{}", svc.spn, svc.protocol);
        for (node, n) in c.scenario.nodes.iter().enumerate() {
            let Some(host) = net.host_index(&n.name) else {
                continue;
            };
            let pod =
                (0..net.hosts.len()).find(|&h| net.hosts[h].kind == HostKind::Pod { node: host });
            let mut addrs = net.hosts[host].net.addresses();
            addrs.sort();
            for a in addrs
                .into_iter()
                .filter(|a| *a != n.address && !a.is_loopback())
            {
                let e = Entry {
                    label: format!("{name} node port on {} address {a}", n.name),
                    kind: EntryKind::NodePort { node },
                    addr: a,
                    port: svc.node_port,
                    proto,
                };
                out.extend(pod.map(|p| (p, e.clone())));
                out.push((host, e));
            }
            out.push((
                host,
                Entry {
                    label: format!("{name} node port on {} 127.0.0.1", n.name),
                    kind: EntryKind::NodePort { node },
                    addr: std::net::Ipv4Addr::LOCALHOST,
                    port: svc.node_port,
                    proto,
                },
            ));
        }
    }
    out
}

/// The same cells (every sender × entry, then the corner entries) in two
/// compilations of one cluster, side by side: compare kube-proxy's modes.
pub fn side_by_side(a: &Compiled, b: &Compiled) -> Result<Vec<(Cell, Cell)>, TraceError> {
    let mut jobs: Vec<(usize, Entry)> = senders(a)
        .into_iter()
        .flat_map(|s| entries(a).into_iter().map(move |e| (s, e)))
        .collect();
    jobs.extend(corner_entries(a));
    jobs.par_iter()
        .map(|(s, e)| Ok((cell(a, *s, e)?, cell(b, *s, e)?)))
        .collect()
}
