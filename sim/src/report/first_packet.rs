//! First-packet work, counted by the engine: for every service entry
//! point and every kind of sender, the rules the kernel tries for a
//! connection's first packet on its way to a socket (or to its verdict),
//! across every host it crosses, and what became of its source address.
//!
//! Senders, per node: the node's first pod, the node itself (host
//! network), and an external client, which reaches the node's node ports
//! directly and LoadBalancer/external IPs through the load balancer (a
//! path the load balancer hands to this node counts for this node).
//! Entry points are [`crate::matrix::entries`]; pods and nodes try every
//! cluster IP, LoadBalancer and external IP and their own node's ports.
//!
//! Every load-balancing path counts with its exact probability, so each
//! (sender, entry point) pair weighs one in the distribution.
//!
//! The count is the linear walk's, as `ipt_do_table` does it: within a
//! chain, every rule up to the one that jumps, returns or decides; a chain
//! left by falling off its end counts all its rules. The engine's index
//! skips rules it can prove do not match, so the count is rebuilt from the
//! matched steps and the chains' lengths ([`rules_tried`]); a test holds
//! it against the engine's own linear walk.

use crate::compile::Compiled;
use crate::matrix::{self, Entry, EntryKind};
use crate::netfilter::{Engine, Event, NatKind, Step, TableName, Target};
use crate::network::HostKind;
use crate::trace::{self, Flow, FlowResult, LegStep, LinkEvent, TraceError};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;

/// Who sends the first packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SenderClass {
    /// The node's first pod.
    Pod,
    /// The node itself (host network).
    Node,
    /// A client outside the cluster.
    External,
}

impl SenderClass {
    pub const ALL: [SenderClass; 3] = [SenderClass::Pod, SenderClass::Node, SenderClass::External];

    pub fn as_str(self) -> &'static str {
        match self {
            SenderClass::Pod => "pod",
            SenderClass::Node => "node",
            SenderClass::External => "external",
        }
    }
}

/// What became of a first packet's source address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fate {
    /// Delivered; the pod saw the client's own address.
    Preserved,
    /// Delivered from another address (SNAT/MASQUERADE on the way).
    Masqueraded,
    /// Refused (REJECT, or a closed port's reset).
    Refused,
    /// Dropped, unroutable or looping.
    Dropped,
}

impl Fate {
    pub const ALL: [Fate; 4] = [
        Fate::Preserved,
        Fate::Masqueraded,
        Fate::Refused,
        Fate::Dropped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Fate::Preserved => "preserved",
            Fate::Masqueraded => "masqueraded",
            Fate::Refused => "refused",
            Fate::Dropped => "dropped",
        }
    }
}

/// The weighted distribution of one node's first packets.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeWork {
    /// Rules tried → total weight.
    pub rules: BTreeMap<u64, f64>,
    /// Per sender class, rules tried → weight.
    pub rules_by_sender: BTreeMap<SenderClass, BTreeMap<u64, f64>>,
    /// (sender, entry kind, fate) → weight.
    pub fates: BTreeMap<(SenderClass, KindName, Fate), f64>,
    /// (sender, entry point) pairs measured.
    pub pairs: usize,
}

/// An entry kind without its node (node ports are per node already).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KindName {
    ClusterIp,
    NodePort,
    LoadBalancer,
    ExternalIp,
}

impl KindName {
    pub fn of(k: EntryKind) -> KindName {
        match k {
            EntryKind::ClusterIp => KindName::ClusterIp,
            EntryKind::NodePort { .. } => KindName::NodePort,
            EntryKind::LoadBalancer => KindName::LoadBalancer,
            EntryKind::ExternalIp => KindName::ExternalIp,
            EntryKind::HealthCheck { .. } => {
                unreachable!("health-check listeners are left out of first-packet work")
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KindName::ClusterIp => "cluster IP",
            KindName::NodePort => "node port",
            KindName::LoadBalancer => "LoadBalancer IP",
            KindName::ExternalIp => "external IP",
        }
    }
}

/// Summary statistics of a weighted distribution of rule counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Quantiles {
    pub min: u64,
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

/// The smallest value whose cumulative weight reaches `q` of the total
/// (nearest rank); min and max are over values of any positive weight.
pub fn quantiles(dist: &BTreeMap<u64, f64>) -> Option<Quantiles> {
    let total: f64 = dist.values().sum();
    if dist.is_empty() || total <= 0.0 {
        return None;
    }
    let at = |q: f64| {
        // A little slack so exact shares (1/2 of a total summed in
        // floating point) land where exact arithmetic would put them.
        let want = q * total * (1.0 - 1e-12);
        let mut acc = 0.0;
        for (v, w) in dist {
            acc += w;
            if acc >= want {
                return *v;
            }
        }
        *dist.keys().next_back().expect("non-empty")
    };
    Some(Quantiles {
        min: *dist.keys().next().expect("non-empty"),
        p50: at(0.5),
        p99: at(0.99),
        max: *dist.keys().next_back().expect("non-empty"),
    })
}

/// One trace to run and whom it counts for.
struct Job<'a> {
    sender: usize,
    class: SenderClass,
    entry: &'a Entry,
    /// The node (scenario index) the pair counts for; `None`: the node
    /// the load balancer hands each path to.
    node: Option<usize>,
}

/// One path's contribution: (node, class, kind, rules, weight, fate).
type Contribution = (usize, SenderClass, KindName, u64, f64, Fate);

/// Measure every node's first packets. Traces run in parallel; results
/// are folded in job order, so the output is the same for any thread
/// count.
pub fn measure(c: &Compiled) -> Result<Vec<NodeWork>, TraceError> {
    let net = &c.cluster.network;
    // The service's data path: kube-proxy's health-check listeners are not
    // part of it.
    let entries: Vec<Entry> = matrix::entries(c)
        .into_iter()
        .filter(|e| !matches!(e.kind, EntryKind::HealthCheck { .. }))
        .collect();
    let node_host: Vec<usize> = c
        .scenario
        .nodes
        .iter()
        .map(|n| net.host_index(&n.name).expect("every node is a host"))
        .collect();
    let mut jobs = Vec::new();
    for (node, &host) in node_host.iter().enumerate() {
        let pod = (0..net.hosts.len()).find(|&h| net.hosts[h].kind == HostKind::Pod { node: host });
        let senders = pod
            .map(|p| (p, SenderClass::Pod))
            .into_iter()
            .chain([(host, SenderClass::Node)]);
        for (sender, class) in senders {
            for e in &entries {
                let mine = match e.kind {
                    EntryKind::NodePort { node: n } => n == node,
                    _ => true,
                };
                if mine {
                    jobs.push(Job {
                        sender,
                        class,
                        entry: e,
                        node: Some(node),
                    });
                }
            }
        }
    }
    if let Some(ext) = (0..net.hosts.len()).find(|&h| net.hosts[h].kind == HostKind::External) {
        for e in &entries {
            let node = match e.kind {
                EntryKind::NodePort { node } => Some(node),
                EntryKind::LoadBalancer | EntryKind::ExternalIp => None,
                // Externals have no route to cluster IPs.
                EntryKind::ClusterIp | EntryKind::HealthCheck { .. } => continue,
            };
            jobs.push(Job {
                sender: ext,
                class: SenderClass::External,
                entry: e,
                node,
            });
        }
    }
    let done: Vec<Vec<Contribution>> = jobs
        .par_iter()
        .map(|j| run(c, &node_host, j))
        .collect::<Result<_, _>>()?;
    let mut out = vec![NodeWork::default(); node_host.len()];
    for (job, contributions) in jobs.iter().zip(done) {
        if let Some(n) = job.node {
            out[n].pairs += 1;
        }
        let mut seen_nodes: Vec<usize> = Vec::new();
        for (node, class, kind, rules, weight, fate) in contributions {
            let w = &mut out[node];
            *w.rules.entry(rules).or_default() += weight;
            *w.rules_by_sender
                .entry(class)
                .or_default()
                .entry(rules)
                .or_default() += weight;
            *w.fates.entry((class, kind, fate)).or_default() += weight;
            if job.node.is_none() && !seen_nodes.contains(&node) {
                seen_nodes.push(node);
                out[node].pairs += 1;
            }
        }
    }
    Ok(out)
}

fn run(c: &Compiled, node_host: &[usize], j: &Job) -> Result<Vec<Contribution>, TraceError> {
    let flow = Flow {
        from: j.sender,
        dst: j.entry.addr,
        proto: j.entry.proto,
        dport: j.entry.port,
        sport: None,
        at: 0,
    };
    let kind = KindName::of(j.entry.kind);
    let results = trace::trace(&c.cluster, std::slice::from_ref(&flow))?;
    let mut out = Vec::with_capacity(results.len());
    for (p, r) in &results {
        let r = &r[0];
        let node = match j.node {
            Some(n) => Some(n),
            None => handed_to(r).and_then(|h| node_host.iter().position(|&x| x == h)),
        };
        // A path the load balancer hands to no node (none eligible)
        // belongs to no node's work.
        let Some(node) = node else { continue };
        out.push((
            node,
            j.class,
            kind,
            first_packet_rules(c, r),
            p.to_f64(),
            fate(r),
        ));
    }
    Ok(out)
}

/// The node a load balancer handed the request to.
fn handed_to(r: &FlowResult) -> Option<usize> {
    r.forward.steps.iter().find_map(|s| match s {
        LegStep::Link(LinkEvent::LoadBalanced { node, .. }) => Some(*node),
        _ => None,
    })
}

/// Preserved only when no SNAT/MASQUERADE binding was made on the way
/// (MASQUERADE to the sender's own address still takes a port from the
/// NAT range) and the pod saw the sender's address.
fn fate(r: &FlowResult) -> Fate {
    let snat = r.forward.steps.iter().any(|s| match s {
        LegStep::Hop(h) => h.events.iter().any(|e| {
            matches!(
                e,
                Event::Nat {
                    kind: NatKind::Snat,
                    ..
                }
            )
        }),
        LegStep::Link(_) => false,
    });
    match (r.seen(), r.forward.verdict) {
        (Some(seen), _) if seen.src == r.sent.src && !snat => Fate::Preserved,
        (Some(_), _) => Fate::Masqueraded,
        (None, trace::Verdict::Rejected | trace::Verdict::ClosedPort) => Fate::Refused,
        (None, _) => Fate::Dropped,
    }
}

/// Rules the request leg of `r` tried, over every host and table.
pub fn first_packet_rules(c: &Compiled, r: &FlowResult) -> u64 {
    r.forward
        .steps
        .iter()
        .filter_map(|s| match s {
            LegStep::Hop(h) => Some(h),
            LegStep::Link(_) => None,
        })
        .flat_map(|h| {
            let engine = &c.cluster.engines[h.host];
            h.events.iter().map(move |e| match e {
                Event::Table { table, steps, .. } => rules_tried(engine, *table, steps),
                _ => 0,
            })
        })
        .sum()
}

/// One chain being walked: its name and the next rule position.
struct Frame<'a> {
    chain: &'a str,
    next: usize,
    /// Left by an explicit RETURN (no fall-through count).
    returned: bool,
}

/// Rules a linear walk tries for one table traversal, rebuilt from its
/// steps (see the module documentation).
pub fn rules_tried(engine: &Engine, table: TableName, steps: &[Step]) -> u64 {
    let mut frames: Vec<Frame> = Vec::new();
    let mut goto_pending = false;
    let mut tried = 0u64;
    let fell_off = |f: &Frame| -> u64 {
        if f.returned {
            0
        } else {
            let len = engine.chain_len(table, f.chain).unwrap_or(0);
            len.saturating_sub(f.next) as u64
        }
    };
    for step in steps {
        match step {
            Step::EnterChain { chain, .. } => {
                if goto_pending {
                    frames.pop();
                    goto_pending = false;
                }
                frames.push(Frame {
                    chain,
                    next: 0,
                    returned: false,
                });
            }
            Step::Matched { chain, index, .. } => {
                let Some(top) = frames.last_mut() else {
                    continue;
                };
                debug_assert_eq!(top.chain, chain);
                tried += (index + 1).saturating_sub(top.next) as u64;
                top.next = index + 1;
                match engine
                    .rule(table, chain, *index)
                    .and_then(|r| r.target.as_ref())
                {
                    Some(Target::Goto(_)) => goto_pending = true,
                    Some(Target::Return) => top.returned = true,
                    _ => {}
                }
            }
            Step::Return { .. } => {
                if let Some(f) = frames.pop() {
                    tried += fell_off(&f);
                }
                if let Some(caller) = frames.last_mut() {
                    caller.returned = false;
                }
            }
            Step::Policy { .. } => {
                if let Some(f) = frames.last() {
                    tried += fell_off(f);
                }
            }
            _ => {}
        }
    }
    tried
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netfilter::EvalOptions;

    /// Rules the engine's own linear walk reports (matched and missed).
    fn linear_count(r: &FlowResult) -> u64 {
        r.forward
            .steps
            .iter()
            .filter_map(|s| match s {
                LegStep::Hop(h) => Some(h),
                _ => None,
            })
            .flat_map(|h| &h.events)
            .map(|e| match e {
                Event::Table { steps, .. } => steps
                    .iter()
                    .filter(|s| matches!(s, Step::Matched { .. } | Step::Missed { .. }))
                    .count() as u64,
                _ => 0,
            })
            .sum()
    }

    fn scenarios() -> Vec<crate::scenario::Scenario> {
        let mut v: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .map(|p| crate::scenario::Scenario::load(&p).unwrap().scenario)
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v.push(crate::synth::cluster(60, 3, 2));
        v
    }

    #[test]
    fn the_count_from_indexed_steps_is_the_linear_walks_count() {
        for s in scenarios() {
            let indexed = crate::compile::compile(&s, &Default::default()).unwrap();
            let mut linear = indexed.clone();
            linear.cluster.opts = EvalOptions {
                linear: true,
                explain_misses: true,
            };
            let senders = matrix::senders(&indexed);
            for e in matrix::entries(&indexed) {
                for &from in &senders {
                    let flow = Flow {
                        from,
                        dst: e.addr,
                        proto: e.proto,
                        dport: e.port,
                        sport: None,
                        at: 0,
                    };
                    let a = trace::trace(&indexed.cluster, std::slice::from_ref(&flow)).unwrap();
                    let b = trace::trace(&linear.cluster, std::slice::from_ref(&flow)).unwrap();
                    assert_eq!(a.len(), b.len());
                    for ((_, x), (_, y)) in a.iter().zip(&b) {
                        assert_eq!(
                            first_packet_rules(&indexed, &x[0]),
                            linear_count(&y[0]),
                            "{}: {} from {}",
                            s.name,
                            e.label,
                            indexed.cluster.host_name(from)
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn quantiles_are_nearest_rank_on_weights() {
        let d = BTreeMap::from([(10, 0.5), (20, 0.25), (30, 0.24), (40, 0.01)]);
        let q = quantiles(&d).unwrap();
        assert_eq!((q.min, q.p50, q.p99, q.max), (10, 10, 30, 40));
        assert_eq!(quantiles(&BTreeMap::new()), None);
    }

    #[test]
    fn every_pair_of_a_small_cluster_is_measured_once() {
        let s = crate::synth::cluster(8, 2, 2);
        let c = crate::compile::compile(&s, &Default::default()).unwrap();
        let w = measure(&c).unwrap();
        // Per node: 8 cluster IPs + 2 node ports (svc-0, svc-4), from a pod
        // and from the node; and the external to the 2 node ports.
        assert_eq!(w[0].pairs, 2 * (8 + 2) + 2);
        let total: f64 = w[0].rules.values().sum();
        assert!((total - w[0].pairs as f64).abs() < 1e-9);
        let q = quantiles(&w[0].rules).unwrap();
        assert!(q.min > 0 && q.min <= q.p50 && q.p50 <= q.max);
    }
}
