//! `kpsim graph`: Graphviz DOT of the topology or of a node's chains,
//! each with a legend, written with petgraph's DOT writer.
//!
//! The topology shows every host (nodes, pods, externals), the pods that
//! share their node's network stack (hostNetwork), the load balancer with
//! the frontends it hands to each node, and the links between them. The
//! chain view shows a table's chains and where each rule sends a packet:
//! into another chain (jump, goto) or to an end (DNAT to an address, DROP,
//! REJECT, ACCEPT, RETURN to the caller, a source NAT, a mark).

use super::{compiled, Fail, RulesOverride, EXIT_OK};
use kpsim::netfilter::{TableName, Target};
use kpsim::network::{Delivery, HostKind, VXLAN_DEVICE};
use petgraph::dot::Dot;
use petgraph::graph::{DiGraph, NodeIndex, UnGraph};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct GraphArgs {
    /// The scenario file.
    scenario: PathBuf,
    /// Draw this node's chain-jump graph instead of the topology.
    #[arg(long)]
    node: Option<String>,
    /// The table to draw for --node.
    #[arg(long, default_value = "nat", value_parser = ["raw", "mangle", "nat", "filter"])]
    table: String,
    #[command(flatten)]
    overrides: RulesOverride,
}

pub fn run(a: GraphArgs) -> Result<i32, Fail> {
    let c = compiled(&a.scenario, &a.overrides)?;
    let dot = match &a.node {
        None => topology(&c),
        Some(n) => chains(&c, n, &a.table)?,
    };
    print!("{dot}");
    Ok(EXIT_OK)
}

/// What a vertex of either graph is; its label is its `Display`.
enum Vertex {
    Network,
    Node(String),
    Pod(String),
    HostNetworkPod(String),
    External(String),
    LoadBalancer(String),
    BuiltinChain(String),
    Chain(String),
    /// Where a rule ends a packet's walk (`DROP`, `DNAT 10.244.2.5:8080`).
    End(String),
    Legend(&'static str),
}

impl fmt::Display for Vertex {
    /// The label; a label of several lines ends with a line break too, so
    /// every line is left-aligned (petgraph writes breaks as `\l`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.text();
        f.write_str(text)?;
        if text.contains('\n') {
            f.write_str("\n")?;
        }
        Ok(())
    }
}

impl Vertex {
    fn text(&self) -> &str {
        match self {
            Vertex::Network => "physical network",
            Vertex::Node(s)
            | Vertex::Pod(s)
            | Vertex::HostNetworkPod(s)
            | Vertex::External(s)
            | Vertex::LoadBalancer(s)
            | Vertex::BuiltinChain(s)
            | Vertex::Chain(s)
            | Vertex::End(s) => s,
            Vertex::Legend(s) => s,
        }
    }

    /// Graphviz attributes (the label comes from `Display`).
    fn attributes(&self) -> &'static str {
        match self {
            Vertex::Network => "shape = plaintext",
            Vertex::Node(_) => "shape = box3d",
            Vertex::Pod(_) => "shape = ellipse",
            Vertex::HostNetworkPod(_) => "shape = ellipse, style = dashed",
            Vertex::External(_) => "shape = house",
            Vertex::LoadBalancer(_) => "shape = hexagon",
            Vertex::BuiltinChain(_) => "shape = box, style = bold",
            Vertex::Chain(_) => "shape = box",
            Vertex::End(_) => "shape = octagon",
            Vertex::Legend(_) => "shape = note, fontsize = 10",
        }
    }
}

const TOPOLOGY_LEGEND: &str = "legend\nbox: node (its addresses)\nellipse: pod\ndashed ellipse: hostNetwork pod (the node's own stack)\nhouse: external host\nhexagon: load balancer (its frontends)\nedges: the interfaces or tunnels between them";

const CHAINS_LEGEND: &str = "legend\nbold box: built-in chain (a hook's entry)\nbox: chain\noctagon: where a rule ends the walk\njump: -j CHAIN, comes back\ngoto: -g CHAIN, returns to the caller's caller\nDNAT to / SNAT / MASQUERADE: address rewritten\nDROP / REJECT / ACCEPT: verdict\nRETURN: back to the calling chain\n(line N): the rule in kpsim rules output";

fn dot<G>(g: G, vertex: impl Fn(NodeIndex) -> &'static str) -> String
where
    G: petgraph::visit::IntoNodeReferences<NodeId = NodeIndex>
        + petgraph::visit::IntoEdgeReferences
        + petgraph::visit::NodeIndexable
        + petgraph::visit::GraphProp,
    G::EdgeWeight: fmt::Display,
    G::NodeWeight: fmt::Display,
{
    let nodes = |_, n: G::NodeRef| {
        use petgraph::visit::NodeRef;
        vertex(n.id()).to_string()
    };
    format!(
        "{}",
        Dot::with_attr_getters(g, &[], &|_, _| String::new(), &nodes)
    )
}

fn topology(c: &kpsim::compile::Compiled) -> String {
    let net = &c.cluster.network;
    let mut g: UnGraph<Vertex, String> = UnGraph::new_undirected();
    let lan = g.add_node(Vertex::Network);
    let idx: Vec<NodeIndex> = net
        .hosts
        .iter()
        .map(|h| {
            let addrs: Vec<String> = h.net.addresses().iter().map(|a| a.to_string()).collect();
            let label = format!("{}\n{}", h.name, addrs.join(", "));
            g.add_node(match h.kind {
                HostKind::Node => Vertex::Node(label),
                HostKind::Pod { .. } => Vertex::Pod(label),
                HostKind::External => Vertex::External(label),
            })
        })
        .collect();
    for (i, h) in net.hosts.iter().enumerate() {
        match h.kind {
            HostKind::Node | HostKind::External => {
                g.add_edge(idx[i], lan, "eth0".into());
            }
            HostKind::Pod { node } => {
                g.add_edge(idx[i], idx[node], "eth0 - cni0".into());
            }
        }
        if h.kind == HostKind::Node {
            // Pods that live in the node's own namespace (kube-proxy's own
            // listeners are the node's, not a pod's).
            let pods = h
                .sockets
                .iter()
                .map(|s| &s.owner)
                .filter(|o| **o != h.name && o.as_str() != kpsim::compile::KUBE_PROXY);
            for pod in pods {
                let p = g.add_node(Vertex::HostNetworkPod(format!("{pod}\nhostNetwork")));
                g.add_edge(p, idx[i], "node's stack".into());
            }
        }
    }
    if net.overlay == kpsim::network::Overlay::Vxlan {
        let nodes: Vec<usize> = (0..net.hosts.len())
            .filter(|&i| net.hosts[i].kind == HostKind::Node)
            .collect();
        for (k, &a) in nodes.iter().enumerate() {
            for &b in &nodes[k + 1..] {
                g.add_edge(idx[a], idx[b], format!("{VXLAN_DEVICE} (VXLAN, UDP 8472)"));
            }
        }
    }
    let lb = &net.load_balancer;
    if !lb.frontends.is_empty() {
        let frontend = |f: &kpsim::network::Frontend| {
            format!(
                "{}:{}/{}",
                f.address,
                f.port,
                kpsim::wire::proto_name(f.proto)
            )
        };
        let how = match lb.delivery {
            Delivery::Direct => "delivery: direct (destination kept)".to_string(),
            Delivery::NodePort { address } => format!("delivery: node port, from {address}"),
        };
        let all: Vec<String> = lb.frontends.iter().map(frontend).collect();
        let v = g.add_node(Vertex::LoadBalancer(format!(
            "load balancer\n{}\n{how}",
            all.join("\n")
        )));
        g.add_edge(v, lan, "frontends".into());
        // Per node, the frontends it may be handed.
        let mut per_node: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for f in &lb.frontends {
            for &n in &f.nodes {
                let via = match (&lb.delivery, f.node_port) {
                    (Delivery::NodePort { .. }, Some(np)) => format!("{} -> :{np}", frontend(f)),
                    _ => frontend(f),
                };
                per_node.entry(n).or_default().push(via);
            }
        }
        for (n, fs) in per_node {
            g.add_edge(v, idx[n], fs.join("\n"));
        }
    }
    g.add_node(Vertex::Legend(TOPOLOGY_LEGEND));
    dot(&g, |n| g[n].attributes())
}

fn chains(c: &kpsim::compile::Compiled, node: &str, table: &str) -> Result<String, Fail> {
    let i = c
        .scenario
        .nodes
        .iter()
        .position(|n| n.name == node)
        .ok_or_else(|| Fail::input(format!("--node {node}: no such node")))?;
    let want = match table {
        "raw" => TableName::Raw,
        "mangle" => TableName::Mangle,
        "filter" => TableName::Filter,
        _ => TableName::Nat,
    };
    let mut g: DiGraph<Vertex, String> = DiGraph::new();
    let Some(t) = c.rules(i).tables.iter().find(|t| t.name == want) else {
        g.add_node(Vertex::Legend(CHAINS_LEGEND));
        return Ok(dot(&g, |n| g[n].attributes()));
    };
    let mut ids = BTreeMap::new();
    for ch in &t.chains {
        let v = if ch.policy.is_some() {
            Vertex::BuiltinChain(ch.name.clone())
        } else {
            Vertex::Chain(ch.name.clone())
        };
        ids.insert(ch.name.clone(), g.add_node(v));
    }
    let mut ends: BTreeMap<String, NodeIndex> = BTreeMap::new();
    for ch in &t.chains {
        for r in ch.rules.iter() {
            let Some(target) = &r.target else { continue };
            let line = ch.line_of(r);
            let (label, to) = match target {
                Target::Jump(to) => ("jump".to_string(), ids.get(to).copied()),
                Target::Goto(to) => ("goto".to_string(), ids.get(to).copied()),
                other => {
                    let (label, end) = end_of(other);
                    let id = *ends
                        .entry(end.clone())
                        .or_insert_with(|| g.add_node(Vertex::End(end)));
                    (label, Some(id))
                }
            };
            let Some(to) = to else { continue };
            let label = if line > 0 {
                format!("{label} (line {line})")
            } else {
                label
            };
            g.add_edge(ids[&ch.name], to, label);
        }
    }
    g.add_node(Vertex::Legend(CHAINS_LEGEND));
    Ok(dot(&g, |n| g[n].attributes()))
}

/// A target that ends a rule's walk (or acts and goes on): the edge's
/// label, and the end it leads to (`DNAT` targets each lead to their own
/// address; the others share one end per kind).
fn end_of(t: &Target) -> (String, String) {
    match t {
        Target::Dnat(_) => {
            let text = t.to_iptables_save();
            let to = text.trim_start_matches("DNAT --to-destination ");
            ("DNAT to".into(), to.to_string())
        }
        Target::Mark { .. } | Target::Connmark(_) => (t.name().into(), t.to_iptables_save()),
        _ => (t.name().into(), t.name().into()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn legends_name_every_edge_kind() {
        for kind in ["jump", "goto", "DNAT to", "DROP", "REJECT", "RETURN"] {
            assert!(super::CHAINS_LEGEND.contains(kind), "{kind}");
        }
    }
}
