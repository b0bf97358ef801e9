//! The source-IP matrix: every sender against every service entry point.
//!
//! Senders: each external, each node (host network), and the first pod on
//! each node. Entry points: per service port, the cluster IP, each node's
//! address on the node port, each LoadBalancer ingress IP and each
//! external IP. Cells are traced in parallel (rayon); the result is in a
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
    pub addr: Ipv4Addr,
    pub port: u16,
    pub proto: u8,
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
        let proto = match svc.protocol.as_str() {
            "udp" => crate::wire::PROTO_UDP,
            "sctp" => crate::wire::PROTO_SCTP,
            _ => crate::wire::PROTO_TCP,
        };
        let name = format!("{}/{}", svc.spn, svc.protocol);
        out.push(Entry {
            label: format!("{name} cluster IP"),
            addr: svc.cluster_ip,
            port: svc.port,
            proto,
        });
        if svc.node_port != 0 {
            for n in &c.scenario.nodes {
                out.push(Entry {
                    label: format!("{name} node port on {}", n.name),
                    addr: n.address,
                    port: svc.node_port,
                    proto,
                });
            }
        }
        for ip in &svc.lb_vips {
            out.push(Entry {
                label: format!("{name} loadbalancer IP {ip}"),
                addr: *ip,
                port: svc.port,
                proto,
            });
        }
        for ip in &svc.external_ips {
            out.push(Entry {
                label: format!("{name} external IP {ip}"),
                addr: *ip,
                port: svc.port,
                proto,
            });
        }
    }
    out
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
    let flow = Flow {
        from: sender,
        dst: e.addr,
        proto: e.proto,
        dport: e.port,
        sport: None,
        at: 0,
    };
    let results = trace::trace(&c.cluster, std::slice::from_ref(&flow))?;
    let o = observe(c, &results);
    Ok(Cell {
        sender: c.cluster.host_name(sender).to_string(),
        entry: e.clone(),
        received_by: o.delivered.into_iter().collect(),
        lost: o.lost.into_iter().map(|(v, (p, _))| (v, p)).collect(),
        sources: o.sources.iter().map(|s| (*s, *s == o.client)).collect(),
        replies: o.replies,
    })
}
