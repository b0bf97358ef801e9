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
use crate::trace::{self, Flow, TraceError};
use rayon::prelude::*;
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
}

/// What one sender sees at one entry point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    pub sender: String,
    pub entry: String,
    /// `pod (probability)` for each receiving pod, or the verdict.
    pub receivers: String,
    /// Sources seen, or `-`.
    pub source: String,
    pub reply: String,
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
    let receivers = if o.delivered.is_empty() {
        o.verdicts.iter().cloned().collect::<Vec<_>>().join("/")
    } else {
        let mut parts: Vec<String> = o
            .delivered
            .iter()
            .map(|(pod, p)| {
                if p.is_one() {
                    pod.clone()
                } else {
                    format!("{pod} ({})", p)
                }
            })
            .collect();
        let lost: Vec<&str> = o
            .verdicts
            .iter()
            .filter(|v| **v != "delivered")
            .cloned()
            .collect();
        if !lost.is_empty() {
            parts.push(format!("else {}", lost.join("/")));
        }
        parts.join(", ")
    };
    let source = if o.sources.is_empty() {
        "-".to_string()
    } else {
        o.sources
            .iter()
            .map(|s| {
                if *s == o.client {
                    format!("{s} (client)")
                } else {
                    s.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let reply = match (o.replies.contains(&true), o.replies.contains(&false)) {
        (true, false) => "ok",
        (false, true) => "broken",
        (true, true) => "ok/broken",
        (false, false) => "-",
    };
    Ok(Cell {
        sender: c.cluster.host_name(sender).to_string(),
        entry: e.label.clone(),
        receivers,
        source,
        reply: reply.into(),
    })
}
