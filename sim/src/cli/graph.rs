//! `kpsim graph`: Graphviz DOT of the topology, of a node's chains or of
//! the kernel's hook order, each with a legend, written with petgraph's
//! DOT writer.
//!
//! The topology shows every host (nodes, pods, externals), the pods that
//! share their node's network stack (hostNetwork), the load balancer with
//! the frontends it hands to each node, and the links between them; with
//! `--from`/`--to` it also draws a flow's way across them, hop by hop, with
//! the packet as it crossed each link, and the reply's way back. The
//! chain view shows a table's chains and where each rule sends a packet:
//! into another chain (jump, goto) or to an end (DNAT to an address, DROP,
//! REJECT, ACCEPT, RETURN to the caller, a source NAT, a mark). The hook
//! view shows the order in which a host's netfilter hooks, tables and
//! conntrack see a packet, as the engine walks them.

use super::{compiled, Fail, RulesOverride, EXIT_OK};
use kpsim::netfilter::{Hook, Outcome, TableName, Target};
use kpsim::network::{Delivery, HostKind, VXLAN_DEVICE};
use kpsim::prob::Probability;
use kpsim::trace::{FlowResult, Leg, LegStep, LinkEvent};
use kpsim::wire::Headers;
use petgraph::dot::Dot;
use petgraph::graph::{DiGraph, NodeIndex, UnGraph};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct GraphArgs {
    /// The scenario file (not with --hooks).
    #[arg(required_unless_present = "hooks")]
    scenario: Option<PathBuf>,
    /// Draw this node's chain-jump graph instead of the topology.
    #[arg(long, conflicts_with = "from")]
    node: Option<String>,
    /// The table to draw for --node.
    #[arg(long, default_value = "nat", value_parser = ["raw", "mangle", "nat", "filter"])]
    table: String,
    /// Draw a flow's way on the topology: from this sender (as in `trace`).
    #[arg(long, requires = "to")]
    from: Option<String>,
    /// ... to this target (as in `trace`): every outcome's hops, numbered,
    /// each link labelled with the packet as it crossed it; the reply dashed.
    #[arg(long, requires = "from")]
    to: Option<String>,
    /// Draw the order in which a host's netfilter hooks, tables and
    /// conntrack see a packet (no scenario).
    #[arg(long, conflicts_with_all = ["scenario", "node", "from"])]
    hooks: bool,
    #[command(flatten)]
    overrides: RulesOverride,
}

pub fn run(a: GraphArgs) -> Result<i32, Fail> {
    let Some(scenario) = &a.scenario else {
        print!("{}", hooks());
        return Ok(EXIT_OK);
    };
    let c = compiled(scenario, &a.overrides)?;
    let dot = match (&a.node, &a.from, &a.to) {
        (Some(n), _, _) => chains(&c, n, &a.table)?,
        (None, Some(from), Some(to)) => {
            let flow = c
                .flow(from, to, None, 0)
                .map_err(|e| Fail::input(format!("{}: {e}", scenario.display())))?;
            let outcomes = kpsim::trace::trace(&c.cluster, &[flow])
                .map_err(|e| Fail::input(format!("{}: {e}", scenario.display())))?;
            topology(&c, &outcomes)
        }
        _ => topology(&c, &[]),
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
    /// A hook with the tables and conntrack steps it runs, in order.
    Hook(String),
    /// Where a packet enters or leaves a host's netfilter, or a routing
    /// decision between hooks.
    Waypoint(String),
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
            | Vertex::End(s)
            | Vertex::Hook(s)
            | Vertex::Waypoint(s) => s,
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
            Vertex::Hook(_) => "shape = box, style = bold",
            Vertex::Waypoint(_) => "shape = ellipse",
            Vertex::Legend(_) => "shape = note, fontsize = 10",
        }
    }
}

const TOPOLOGY_LEGEND: &str = "legend\nbox: node (its addresses)\nellipse: pod\ndashed ellipse: hostNetwork pod (the node's own stack)\nhouse: external host\nhexagon: load balancer (its frontends)\nedges: the interfaces or tunnels between them";

const PATH_LEGEND: &str = "legend\nbox: node (its addresses)\nellipse: pod\ndashed ellipse: hostNetwork pod (the node's own stack)\nhouse: external host\nhexagon: load balancer (its frontends)\nthin edges: the interfaces or tunnels between them\nbold arrows: the packet's way, numbered, each with the packet as it crossed\n(in VXLAN: the packet inside the tunnel)\ndashed arrows: the reply's way back (r1, r2, ...)\n[p] before a number: the outcome's probability, when there are several";

const HOOKS_LEGEND: &str = "legend\nbold box: a hook, its tables in the order they run\nconntrack: the connection is looked up (or a new one begun)\nnat: only a connection's first packet walks it;\n  later packets and replies reuse its binding\nconfirm: a new connection is entered in the table\nrouting: the routing decision (local or forward, which interface)";

const CHAINS_LEGEND: &str = "legend\nbold box: built-in chain (a hook's entry)\nbox: chain\noctagon: where a rule ends the walk\njump: -j CHAIN, comes back\ngoto: -g CHAIN, returns to the caller's caller\nDNAT to / SNAT / MASQUERADE: address rewritten\nDROP / REJECT / ACCEPT: verdict\nRETURN: back to the calling chain\n(line N): the rule in kpsim rules output";

/// The graph as DOT, each vertex and edge with its Graphviz attributes
/// (shape; colour, direction, style).
fn dot<G>(
    g: G,
    vertex: impl Fn(NodeIndex) -> &'static str,
    edge: impl Fn(&G::EdgeWeight) -> String,
) -> String
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
    let edges = |_, e: G::EdgeRef| {
        use petgraph::visit::EdgeRef;
        edge(e.weight())
    };
    format!("{}", Dot::with_attr_getters(g, &[], &edges, &nodes))
}

/// An edge of the topology: a link between hosts, or a flow's packet
/// crossing one.
enum Edge {
    Link(String),
    Crossing {
        label: String,
        reply: bool,
        colour: &'static str,
    },
}

impl fmt::Display for Edge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Edge::Link(s) | Edge::Crossing { label: s, .. } => f.write_str(s),
        }
    }
}

impl Edge {
    fn attributes(&self) -> String {
        match self {
            Edge::Link(_) => "color = gray40, fontcolor = gray40".into(),
            Edge::Crossing { reply, colour, .. } => format!(
                "dir = forward, color = {colour}, fontcolor = {colour}, style = {}",
                if *reply { "dashed" } else { "bold" }
            ),
        }
    }
}

/// Colours of the outcomes drawn on one topology, in outcome order.
const OUTCOME_COLOURS: [&str; 6] = [
    "blue",
    "darkorange3",
    "purple",
    "darkgreen",
    "firebrick",
    "deeppink3",
];

fn topology(c: &kpsim::compile::Compiled, outcomes: &[(Probability, Vec<FlowResult>)]) -> String {
    let net = &c.cluster.network;
    let mut g: UnGraph<Vertex, Edge> = UnGraph::new_undirected();
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
                g.add_edge(idx[i], lan, Edge::Link("eth0".into()));
            }
            HostKind::Pod { node } => {
                g.add_edge(idx[i], idx[node], Edge::Link("eth0 - cni0".into()));
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
                g.add_edge(p, idx[i], Edge::Link("node's stack".into()));
            }
        }
    }
    if net.overlay == kpsim::network::Overlay::Vxlan {
        let nodes: Vec<usize> = (0..net.hosts.len())
            .filter(|&i| net.hosts[i].kind == HostKind::Node)
            .collect();
        for (k, &a) in nodes.iter().enumerate() {
            for &b in &nodes[k + 1..] {
                g.add_edge(
                    idx[a],
                    idx[b],
                    Edge::Link(format!("{VXLAN_DEVICE} (VXLAN, UDP 8472)")),
                );
            }
        }
    }
    let lb = &net.load_balancer;
    let mut lb_vertex = None;
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
        lb_vertex = Some(v);
        g.add_edge(v, lan, Edge::Link("frontends".into()));
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
            g.add_edge(v, idx[n], Edge::Link(fs.join("\n")));
        }
    }
    let place = |p: Place| match p {
        Place::Host(h) => idx[h],
        Place::LoadBalancer => lb_vertex.expect("a load-balanced leg has a load balancer"),
    };
    for (k, (p, flows)) in outcomes.iter().enumerate() {
        let colour = OUTCOME_COLOURS[k % OUTCOME_COLOURS.len()];
        let prefix = if outcomes.len() > 1 {
            format!("[{}] ", p.readable())
        } else {
            String::new()
        };
        for r in flows {
            let legs =
                std::iter::once((&r.forward, false)).chain(r.reply.iter().map(|l| (l, true)));
            for (leg, reply) in legs {
                for (n, x) in crossings(leg).into_iter().enumerate() {
                    let number = if reply {
                        format!("r{}", n + 1)
                    } else {
                        (n + 1).to_string()
                    };
                    let tunnel = if x.tunnelled { " (in VXLAN)" } else { "" };
                    let label = format!("{prefix}{number}: {}{tunnel}", x.packet);
                    g.add_edge(
                        place(x.from),
                        place(x.to),
                        Edge::Crossing {
                            label,
                            reply,
                            colour,
                        },
                    );
                }
            }
        }
    }
    let legend = if outcomes.is_empty() {
        TOPOLOGY_LEGEND
    } else {
        PATH_LEGEND
    };
    g.add_node(Vertex::Legend(legend));
    dot(&g, |n| g[n].attributes(), Edge::attributes)
}

/// Where a packet is between two hops.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Place {
    Host(usize),
    LoadBalancer,
}

/// A packet crossing from one place to the next.
struct Crossing {
    from: Place,
    to: Place,
    /// As it arrived (for a VXLAN packet: the packet it carries).
    packet: Headers,
    tunnelled: bool,
}

/// The links a leg's packet crossed, in order: a hop on another host than
/// the last one is a crossing (the VXLAN packet and the packet it carries
/// are one crossing, shown by the packet inside); the load balancer is a
/// place of its own, reached with what the last host sent.
fn crossings(leg: &Leg) -> Vec<Crossing> {
    let mut out = Vec::new();
    let mut at: Option<Place> = None;
    let mut sent: Option<Headers> = None;
    for step in &leg.steps {
        let (here, packet, tunnelled) = match step {
            LegStep::Hop(h) => (
                Place::Host(h.host),
                h.carrying.unwrap_or(h.packet),
                h.carrying.is_some(),
            ),
            LegStep::Link(LinkEvent::LoadBalanced { .. }) => match sent {
                Some(p) => (Place::LoadBalancer, p, false),
                None => continue,
            },
            LegStep::Link(_) => continue,
        };
        if let LegStep::Hop(h) = step {
            sent = match &h.outcome {
                Outcome::Transmit { headers, .. } => Some(*headers),
                _ => None,
            };
        }
        match at {
            Some(from) if from != here => out.push(Crossing {
                from,
                to: here,
                packet,
                tunnelled,
            }),
            _ => {}
        }
        at = Some(here);
    }
    out
}

/// The kernel's IPv4 hooks in the order a packet meets them, each with
/// the tables it runs ([`Hook::tables`], the engine's own order) and
/// where conntrack looks a packet up and confirms a new connection.
fn hooks() -> String {
    let mut g: DiGraph<Vertex, String> = DiGraph::new();
    let hook = |g: &mut DiGraph<Vertex, String>, h: Hook| {
        let mut lines = vec![h.chain().to_string()];
        for t in h.tables() {
            lines.push(match t {
                TableName::Nat if matches!(h, Hook::Prerouting | Hook::Output) => {
                    "nat (DNAT; first packet only)".to_string()
                }
                TableName::Nat => "nat (SNAT; first packet only)".to_string(),
                t => t.to_string(),
            });
            if t == TableName::Raw {
                lines.push("conntrack".into());
            }
        }
        if matches!(h, Hook::Input | Hook::Postrouting) {
            lines.push("confirm".into());
        }
        g.add_node(Vertex::Hook(lines.join("\n")))
    };
    let wire_in = g.add_node(Vertex::Waypoint("packet in (eth0, cni0, ...)".into()));
    let pre = hook(&mut g, Hook::Prerouting);
    let route_in = g.add_node(Vertex::Waypoint("routing".into()));
    let input = hook(&mut g, Hook::Input);
    let socket = g.add_node(Vertex::Waypoint("local socket".into()));
    let forward = hook(&mut g, Hook::Forward);
    let process = g.add_node(Vertex::Waypoint("local process".into()));
    let route_out = g.add_node(Vertex::Waypoint("routing".into()));
    let output = hook(&mut g, Hook::Output);
    let post = hook(&mut g, Hook::Postrouting);
    let wire_out = g.add_node(Vertex::Waypoint("packet out".into()));
    for (a, b, label) in [
        (wire_in, pre, ""),
        (pre, route_in, ""),
        (route_in, input, "for this host"),
        (input, socket, ""),
        (route_in, forward, "for another host"),
        (forward, post, ""),
        (process, route_out, ""),
        (route_out, output, ""),
        (output, post, "re-routed if nat or mangle changed it"),
        (post, wire_out, ""),
    ] {
        g.add_edge(a, b, label.to_string());
    }
    g.add_node(Vertex::Legend(HOOKS_LEGEND));
    dot(&g, |n| g[n].attributes(), |_| String::new())
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
        return Ok(dot(&g, |n| g[n].attributes(), |_| String::new()));
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
                Target::Jump(to) => ("jump".to_string(), ids.get(to.as_str()).copied()),
                Target::Goto(to) => ("goto".to_string(), ids.get(to.as_str()).copied()),
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
    Ok(dot(&g, |n| g[n].attributes(), |_| String::new()))
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
