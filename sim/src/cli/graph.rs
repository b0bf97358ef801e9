//! `kpsim graph`: Graphviz DOT of the topology or of a node's chains.

use super::{compiled, Fail, RulesOverride, EXIT_OK};
use kpsim::netfilter::{TableName, Target};
use kpsim::network::{HostKind, VXLAN_DEVICE};
use petgraph::dot::{Config, Dot};
use petgraph::graph::{DiGraph, UnGraph};
use std::collections::BTreeMap;
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
    println!("{dot}");
    Ok(EXIT_OK)
}

fn topology(c: &kpsim::compile::Compiled) -> String {
    let net = &c.cluster.network;
    let mut g: UnGraph<String, String> = UnGraph::new_undirected();
    let lan = g.add_node("physical network".to_string());
    let idx: Vec<_> = net
        .hosts
        .iter()
        .map(|h| {
            let addrs: Vec<String> = h.net.addresses().iter().map(|a| a.to_string()).collect();
            g.add_node(format!("{} ({})", h.name, addrs.join(", ")))
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
    }
    if net.overlay == kpsim::network::Overlay::Vxlan {
        let nodes: Vec<usize> = (0..net.hosts.len())
            .filter(|&i| net.hosts[i].kind == HostKind::Node)
            .collect();
        for (k, &a) in nodes.iter().enumerate() {
            for &b in &nodes[k + 1..] {
                g.add_edge(idx[a], idx[b], VXLAN_DEVICE.into());
            }
        }
    }
    format!("{}", Dot::with_config(&g, &[]))
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
    let mut g: DiGraph<String, String> = DiGraph::new();
    let Some(t) = c.rules(i).tables.iter().find(|t| t.name == want) else {
        return Ok(format!("{}", Dot::with_config(&g, &[Config::EdgeNoLabel])));
    };
    let mut ids = BTreeMap::new();
    for ch in &t.chains {
        ids.insert(ch.name.clone(), g.add_node(ch.name.clone()));
    }
    for ch in &t.chains {
        for r in &ch.rules {
            if let Some(Target::Jump(to) | Target::Goto(to)) = &r.target {
                if let Some(&b) = ids.get(to) {
                    let label = if matches!(r.target, Some(Target::Goto(_))) {
                        "goto"
                    } else {
                        "jump"
                    };
                    g.add_edge(ids[&ch.name], b, label.into());
                }
            }
        }
    }
    Ok(format!("{}", Dot::with_config(&g, &[])))
}
